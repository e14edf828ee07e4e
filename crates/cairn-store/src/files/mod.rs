//! Files: the bytes of binary fields, kept as immutable, content-addressed blobs named by
//! their SHA-256, and the text extracted from them for the index.
//!
//! - A blob is written and synced before the transaction that names it commits
//!   ([`BlobStore::put_file`], then [`crate::Store::save_binary`]): a crash between the two
//!   leaves an orphan blob, never a row naming bytes that are not there.
//! - The same bytes uploaded twice are stored once.
//! - Where blobs live: [`FsBlobs`], a folder beside the SQLite database (`DIR/blobs`);
//!   [`PgBlobs`], tables of the PostgreSQL database (so that every web node sees them).
//! - Unreferenced blobs (an overwritten file's old bytes, an upload cut short) are
//!   collected offline ([`collect_unreferenced`]), see there for what is kept.

mod extract;
mod fs;
mod gc;
mod postgres;
mod referenced;
mod staged;

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub use extract::{extract_text, guess_content_type, ExtractLimits, Extracted};
pub use fs::FsBlobs;
pub use gc::{collect_unreferenced, Collected};
pub use postgres::PgBlobs;
pub use referenced::{check_blobs, referenced_blobs_in_backup, BlobCheck};
pub use staged::{StageMark, StagedFile};

use crate::error::Result;

/// The blob store of the database at `url`: `blobs/` beside an SQLite file, tables of a
/// PostgreSQL database.
pub fn blob_store_for(url: &crate::DatabaseUrl) -> std::sync::Arc<dyn BlobStore> {
    match url {
        crate::DatabaseUrl::Sqlite(path) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::sync::Arc::new(FsBlobs::new(&dir.join("blobs")))
        }
        crate::DatabaseUrl::Postgres(u) => std::sync::Arc::new(PgBlobs::new(u)),
    }
}

/// A blob's name and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobId {
    /// SHA-256 of the bytes, 64 lower-case hex digits.
    pub hash: String,
    /// Length in bytes.
    pub size: u64,
}

/// True when `s` can name a blob: 64 lower-case hex digits.
pub fn is_blob_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The lower-case hex form of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A blob opened for reading, from any position.
pub trait BlobReader: Read + Seek + Send {}
impl<T: Read + Seek + Send> BlobReader for T {}

/// Where blobs are kept. Every method blocks; call it from a blocking thread.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Makes the file at `staged` (already complete, `id` its hash and length, computed
    /// while it was written) a durable blob, and removes `staged`. When the blob exists
    /// already the file is only removed.
    fn put_file(&self, staged: &Path, id: &BlobId) -> Result<()>;
    /// The blob `hash` with its length, or `None` when there is no such blob.
    fn open(&self, hash: &str) -> Result<Option<(Box<dyn BlobReader>, u64)>>;
    /// Every blob's hash (for checks and backups).
    fn list(&self) -> Result<Vec<String>>;
    /// A folder on the same file system as the blobs (made if missing), where uploads are
    /// staged so that [`BlobStore::put_file`] can rename rather than copy.
    fn staging_dir(&self) -> Result<PathBuf>;
    /// Removes staged files not written to for `older_than` (uploads abandoned, or cut
    /// short by a crash); returns how many.
    fn sweep_staging(&self, older_than: std::time::Duration) -> Result<usize>;
    /// Deletes the blob `hash` (only [`collect_unreferenced`] does, with nothing else
    /// running); returns the bytes freed.
    fn remove(&self, hash: &str) -> Result<u64>;
}

/// The binary value of the complete file `staged`, named `file_name`: its text extracted
/// (within the default limits; a failure is a note, never an error), then made a durable
/// blob. `content_type` is the media type given, else guessed from the name.
pub fn into_binary(
    blobs: &dyn BlobStore,
    staged: StagedFile,
    file_name: &str,
    content_type: Option<&str>,
) -> Result<crate::content::BinaryValue> {
    let content_type = content_type
        .filter(|m| !m.is_empty() && *m != "application/octet-stream")
        .unwrap_or_else(|| guess_content_type(file_name))
        .to_string();
    let x = extract_text(
        staged.path(),
        &content_type,
        file_name,
        ExtractLimits::default(),
    );
    if let Some(note) = &x.note {
        tracing::warn!(file = %file_name, "{note}");
    }
    let id = staged.into_blob(blobs)?;
    Ok(crate::content::BinaryValue {
        hash: id.hash,
        size: i64::try_from(id.size).unwrap_or(i64::MAX),
        content_type,
        file_name: file_name.to_string(),
        text: x.text,
        extract_note: x.note,
    })
}

/// Stores the file at `src` as a blob of `blobs` (read once: copied while hashed) and
/// returns its binary value, as [`into_binary`].
pub fn store_file(
    blobs: &dyn BlobStore,
    src: &Path,
    file_name: &str,
    content_type: Option<&str>,
) -> Result<crate::content::BinaryValue> {
    let mut staged = StagedFile::create(blobs)?;
    staged.copy_from(src, &mut |_| {})?;
    into_binary(blobs, staged, file_name, content_type)
}
