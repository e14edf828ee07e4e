//! Files' blobs in a continuous archive (SQLite): shipped as they appear in the blob
//! store, before the changes that name them, so that a restore to any time finds every
//! blob its database names. Each blob is `pitr-blobs/HASH/NNNNNN` (parts of [`PART`]
//! bytes) and then `pitr-blobs/HASH/done` (its length), written last: a blob without it is
//! not shipped. (On PostgreSQL blobs are rows of the database: its WAL carries them.)

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use cairn_store::files::{referenced_blobs_in_backup, BlobStore, StagedFile};
use cairn_store::{CancelToken, DatabaseKind};

use crate::error::{BackupError, Result};
use crate::repo::objects::Objects;

/// The prefix of the archived blobs.
pub const PREFIX: &str = "pitr-blobs/";
/// Bytes per object of a blob.
pub const PART: usize = 8 << 20;

fn done_key(hash: &str) -> String {
    format!("{PREFIX}{hash}/done")
}

/// The blobs the archive holds whole.
pub fn archived(objects: &dyn Objects) -> Result<HashSet<String>> {
    Ok(objects
        .list(PREFIX)?
        .into_iter()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix(PREFIX)?;
            let (hash, tail) = rest.split_once('/')?;
            (tail == "done").then(|| hash.to_string())
        })
        .collect())
}

/// Ships every blob of `live` that `shipped` does not hold yet, adding it there. Stops at
/// the first failure (the caller ships no change after it).
pub fn ship_new(
    live: &dyn BlobStore,
    objects: &dyn Objects,
    shipped: &mut HashSet<String>,
) -> Result<usize> {
    let mut n = 0;
    for hash in live.list()? {
        if shipped.contains(&hash) {
            continue;
        }
        // Gone since it was listed (not possible today: nothing deletes blobs).
        let Some((mut r, len)) = live.open(&hash)? else {
            continue;
        };
        let mut buf = vec![0u8; PART];
        let mut part = 0u32;
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(PART);
            r.read_exact(&mut buf[..want])
                .map_err(|e| BackupError::Invalid(format!("read blob {hash}: {e}")))?;
            objects.put(&format!("{PREFIX}{hash}/{part:06}"), &buf[..want])?;
            part += 1;
            left -= want as u64;
        }
        objects.put(&done_key(&hash), len.to_string().as_bytes())?;
        shipped.insert(hash);
        n += 1;
    }
    Ok(n)
}

/// Puts into `live` every blob the restored SQLite database at `db` names that `live`
/// lacks, from the archive; each is checked against its name. A named blob the archive
/// does not hold is an error.
pub fn restore_named(
    objects: &dyn Objects,
    db: &Path,
    live: &dyn BlobStore,
    cancel: &CancelToken,
) -> Result<usize> {
    let named = referenced_blobs_in_backup(DatabaseKind::Sqlite, db)?;
    let mut n = 0;
    for hash in named.keys() {
        cancel.check()?;
        if live.open(hash)?.is_some() {
            continue;
        }
        let mut parts: Vec<String> = objects
            .list(&format!("{PREFIX}{hash}/"))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if !parts.iter().any(|k| *k == done_key(hash)) {
            return Err(BackupError::Invalid(format!(
                "the restored database names the blob {hash}, which the archive does not hold"
            )));
        }
        parts.retain(|k| *k != done_key(hash));
        parts.sort();
        let mut staged = StagedFile::create(live)?;
        for k in &parts {
            staged.write(&objects.get(k)?)?;
        }
        let id = staged.into_blob(live)?;
        if id.hash != *hash {
            return Err(BackupError::Invalid(format!(
                "the archived blob {hash} is damaged (its bytes hash to {})",
                id.hash
            )));
        }
        n += 1;
    }
    Ok(n)
}
