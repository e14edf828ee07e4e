//! Which blobs a database names: what a backup must hold, what a blob check looks for,
//! and (one day) what the collector of unreferenced blobs must keep.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value as Json};

use crate::content::{BinaryValue, ContentTypes, FieldKind};
use crate::db::Conn;
use crate::error::Result;
use crate::store::Store;
use crate::DatabaseKind;

/// What a file name must not hold as such in an SQLite URI.
const URI_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b'?').add(b'#').add(b'%');

/// Rows that may hold a binary value (a cheap filter; each row is then parsed).
const ROWS_WITH_BINARIES: &str =
    "SELECT type, fields FROM nodes WHERE fields LIKE '%\"Hash\"%' ORDER BY id";

/// Adds the blobs named by the stored fields `raw` of an item of type `type_name`.
fn add_blobs(types: &ContentTypes, type_name: &str, raw: &str, out: &mut BTreeMap<String, u64>) {
    let Ok(t) = types.get(type_name) else { return };
    let Ok(fields) = serde_json::from_str::<Map<String, Json>>(raw) else {
        return;
    };
    for def in t.fields.iter().filter(|f| f.kind == FieldKind::Binary) {
        if let Some(b) = fields.get(def.name).and_then(BinaryValue::from_stored_json) {
            out.insert(b.hash, b.size as u64);
        }
    }
}

fn referenced(conn: &mut dyn Conn, types: &ContentTypes) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for row in conn.query(ROWS_WITH_BINARIES, &[])? {
        add_blobs(types, &row.text(0)?, &row.text(1)?, &mut out);
    }
    Ok(out)
}

impl Store {
    /// Every blob the database names now, with its size.
    pub fn referenced_blobs(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|conn| referenced(conn, &self.types))
    }
}

/// Every blob named by the database backup at `path`, with its size. An SQLite copy is
/// opened read-only and immutable (no side file is made beside it). A PostgreSQL dump
/// holds its blobs itself (in the tables of [`super::PgBlobs`]): none to add.
pub fn referenced_blobs_in_backup(
    kind: DatabaseKind,
    path: &Path,
) -> Result<BTreeMap<String, u64>> {
    if kind == DatabaseKind::Postgres {
        return Ok(BTreeMap::new());
    }
    // Immutable (no lock, no side file made) unless a write-ahead log is beside it (a
    // database just restored and written to): then a plain read-only open reads it.
    let wal = Path::new(&format!("{}-wal", path.display())).exists();
    let uri = format!(
        "file:{}{}",
        percent_encoding::utf8_percent_encode(&path.to_string_lossy(), URI_PATH),
        if wal { "" } else { "?immutable=1" },
    );
    let conn = rusqlite::Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    let types = ContentTypes::built_in();
    let mut out = BTreeMap::new();
    let mut stmt = conn.prepare(ROWS_WITH_BINARIES)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (t, raw): (String, String) = (r.get(0)?, r.get(1)?);
        add_blobs(&types, &t, &raw, &mut out);
    }
    Ok(out)
}

/// What [`check_blobs`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlobCheck {
    /// Blobs the database names.
    pub named: usize,
    /// Named blobs that are not in the blob store.
    pub missing: Vec<String>,
    /// Named blobs whose bytes do not hash to their name, or whose length is not the one
    /// the database says.
    pub damaged: Vec<String>,
    /// Blobs in the store that the database does not name (uploads cut short, old versions).
    pub unreferenced: usize,
    /// Bytes read.
    pub bytes: u64,
}

impl BlobCheck {
    /// True when every named blob is there and intact.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.damaged.is_empty()
    }
}

/// Checks that every blob the database of `store` names is in its blob store, with the
/// bytes its name (their SHA-256) and length say. Reads every named blob;
/// `progress(done, total)` in bytes.
pub fn check_blobs(store: &Store, progress: &dyn Fn(u64, u64)) -> Result<BlobCheck> {
    use sha2::Digest;
    use std::io::Read;
    let named = store.referenced_blobs()?;
    let blobs = store.blobs();
    let total: u64 = named.values().sum();
    let mut out = BlobCheck {
        named: named.len(),
        ..BlobCheck::default()
    };
    let mut buf = vec![0u8; 1 << 20];
    for (hash, size) in &named {
        let Some((mut r, len)) = blobs.open(hash)? else {
            out.missing.push(hash.clone());
            continue;
        };
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        loop {
            let k = r
                .read(&mut buf)
                .map_err(|e| crate::StoreError::io(std::path::Path::new(hash), e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
            out.bytes += k as u64;
            progress(out.bytes, total);
        }
        if super::hex(&h.finalize()) != *hash || n != len || n != *size {
            out.damaged.push(hash.clone());
        }
    }
    out.unreferenced = blobs
        .list()?
        .iter()
        .filter(|h| !named.contains_key(*h))
        .count();
    Ok(out)
}
