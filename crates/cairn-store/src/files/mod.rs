//! Files: the bytes of binary fields, kept as immutable, content-addressed blobs named by
//! their SHA-256, and the text extracted from them for the index.
//!
//! - A blob is written and synced before the transaction that names it commits
//!   ([`BlobStore::put_file`], then [`crate::Store::save_binary`]): a crash between the two
//!   leaves an orphan blob, never a row naming bytes that are not there.
//! - The same bytes uploaded twice are stored once.
//! - Where blobs live: [`FsBlobs`], a folder beside the SQLite database (`DIR/blobs`);
//!   [`PgBlobs`], tables of the PostgreSQL database (so that every web node sees them); or
//!   an S3 bucket the database names ([`BLOB_STORE_KEY`], reached through cairn-backup).
//! - Unreferenced blobs (an overwritten file's old bytes, an upload cut short) are
//!   collected offline ([`collect_unreferenced`]), see there for what is kept.

pub mod contract;
mod extract;
mod fs;
mod gc;
mod postgres;
mod referenced;
mod staged;

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use extract::{extract_text, guess_content_type, ExtractLimits, Extracted};
pub use fs::FsBlobs;
pub use gc::{collect_unreferenced, Collected};
pub use postgres::PgBlobs;
pub use referenced::{check_blobs, referenced_blobs_in_backup, BlobCheck};
pub use staged::{StageMark, StagedFile};

use crate::error::{Result, StoreError};

/// The `meta` key under which a database records a blob store of its own choosing (an
/// `s3://BUCKET/PREFIX` URL), for every process that opens it (every web node, backup,
/// restore and check) to find its blobs in the same place. Without it blobs are in the
/// database's own place ([`blob_store_for`]).
pub const BLOB_STORE_KEY: &str = "blob_store";

/// Opens a blob store that a database names by URL (`s3://...`). The crate that reaches
/// object storage (cairn-backup) provides it, so that this crate has no S3 client.
pub type OpenBlobStore = fn(&str) -> Result<Arc<dyn BlobStore>>;

/// The blob store of the database at `url`: the one it `recorded` (see [`BLOB_STORE_KEY`],
/// opened by `remote`), else `blobs/` beside an SQLite file or tables of a PostgreSQL
/// database.
pub fn blob_store_for(
    url: &crate::DatabaseUrl,
    recorded: Option<&str>,
    remote: Option<OpenBlobStore>,
) -> Result<Arc<dyn BlobStore>> {
    if let Some(location) = recorded {
        let open = remote.ok_or_else(|| {
            StoreError::BlobStore(format!(
                "the repository keeps its blobs in {location}, which this command cannot reach"
            ))
        })?;
        return open(location);
    }
    Ok(match url {
        crate::DatabaseUrl::Sqlite(path) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            Arc::new(FsBlobs::new(&dir.join("blobs")))
        }
        crate::DatabaseUrl::Postgres(u) => Arc::new(PgBlobs::new(u)),
    })
}

impl crate::Store {
    /// Records `location` (an `s3://` URL) as where this repository keeps its blobs, on a
    /// repository that has none yet or the same one; open it again to use it. Moving blobs
    /// that exist is not done here: it is refused with a clear error.
    pub fn choose_blob_store(&self, location: &str) -> Result<()> {
        let named = self.referenced_blobs()?.len();
        self.write_tx(
            &mut |conn| match crate::db::schema::get_meta(conn, BLOB_STORE_KEY)? {
                Some(now) if now == location => Ok(()),
                Some(now) => Err(StoreError::NotAllowed(format!(
                    "this repository keeps its blobs in {now}; moving them to {location} is \
                     not supported"
                ))),
                None if named > 0 => Err(StoreError::NotAllowed(format!(
                    "this repository already keeps {named} file(s) in its own blob store; \
                     a blob store is chosen before the first file is stored"
                ))),
                None => crate::db::schema::set_meta(conn, BLOB_STORE_KEY, location),
            },
        )
    }
}

/// A local folder where uploads are staged for a blob store that is not a local folder
/// (PostgreSQL, S3): `cairn-uploads` in the system's temporary folder.
#[derive(Debug, Clone)]
pub struct LocalStaging(PathBuf);

impl Default for LocalStaging {
    fn default() -> Self {
        LocalStaging(std::env::temp_dir().join("cairn-uploads"))
    }
}

impl LocalStaging {
    /// The folder, made if missing ([`BlobStore::staging_dir`]).
    pub fn dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.0).map_err(|e| StoreError::io(&self.0, e))?;
        Ok(self.0.clone())
    }

    /// Removes what was not written to for `older_than` ([`BlobStore::sweep_staging`]).
    pub fn sweep(&self, older_than: std::time::Duration) -> Result<usize> {
        fs::sweep_folder(&self.0, older_than)
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

/// Where a seek `to` leads a reader at `pos` of a blob of `size` bytes (for readers that
/// fetch by ranges: a seek is only a position until the next read).
pub fn seek_position(pos: u64, size: u64, to: std::io::SeekFrom) -> std::io::Result<u64> {
    let pos = match to {
        std::io::SeekFrom::Start(p) => Some(p),
        std::io::SeekFrom::End(d) => size.checked_add_signed(d),
        std::io::SeekFrom::Current(d) => pos.checked_add_signed(d),
    };
    pos.ok_or_else(|| std::io::Error::other("seek before the start"))
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
