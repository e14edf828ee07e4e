//! Where a repository's files' blobs are, for every command that opens its database: in
//! the database's own place (cairn-store's [`FsBlobs`](cairn_store::files::FsBlobs) and
//! [`PgBlobs`](cairn_store::files::PgBlobs)) or, when the database names one
//! ([`BLOB_STORE_KEY`](cairn_store::files::BLOB_STORE_KEY)), an S3 bucket: [`S3Blobs`], here because this crate is the one
//! that reaches object storage.
//!
//! The choice is recorded in the database, not given to each process: every web node,
//! backup, restore and check then finds the blobs in the same place, and a node started
//! without the setting cannot put blobs where the others do not look.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::files::{is_blob_hash, BlobId, BlobReader, BlobStore, LocalStaging};
use cairn_store::{DatabaseUrl, Store, StoreError};

use crate::error::{BackupError, Result};
use crate::repo::objects::Objects;
use crate::repo::s3::{parse_url, S3Objects, S3Settings};

/// Opens the database at `url` with the blob store it names. With `choose` (an
/// `s3://BUCKET/PREFIX` URL), first records that as its blob store (see
/// [`Store::choose_blob_store`]: only before its first file, or the same again).
pub fn open_store(url: &DatabaseUrl, choose: Option<&str>) -> Result<Store> {
    let store = Store::open_with(url, Some(open_named))?;
    let Some(location) = choose else {
        return Ok(store);
    };
    let location = s3_location(location)?;
    // Reached before it is recorded: a typo or a missing bucket is said now, not at the
    // first upload.
    S3Blobs::open(&location)?.check_reachable()?;
    store.choose_blob_store(&location)?;
    drop(store);
    Ok(Store::open_with(url, Some(open_named))?)
}

/// The blob store of a database at `url` that names `recorded` (from its facts, or a
/// backup's manifest), without opening it as a [`Store`].
pub fn blob_store_for(url: &DatabaseUrl, recorded: Option<&str>) -> Result<Arc<dyn BlobStore>> {
    Ok(cairn_store::files::blob_store_for(
        url,
        recorded,
        Some(open_named),
    )?)
}

/// The blob store of the database at `url` as it names it now.
pub fn blob_store_of(url: &DatabaseUrl) -> Result<Arc<dyn BlobStore>> {
    let recorded = cairn_store::peek_database(url)?.and_then(|f| f.blob_store);
    blob_store_for(url, recorded.as_deref())
}

/// `text` as a blob store URL: `s3://BUCKET[/PREFIX]` (a folder is the default, beside the
/// database, and not a choice).
fn s3_location(text: &str) -> Result<String> {
    match parse_url(text) {
        Some(Ok((bucket, prefix))) if prefix.is_empty() => Ok(format!("s3://{bucket}")),
        Some(Ok((bucket, prefix))) => Ok(format!("s3://{bucket}/{prefix}")),
        Some(Err(e)) => Err(e),
        None => Err(BackupError::Invalid(format!(
            "--blob-store takes s3://BUCKET/PREFIX, not {text:?}: without it blobs are kept \
             beside the database (SQLite) or in it (PostgreSQL)"
        ))),
    }
}

/// [`cairn_store::files::OpenBlobStore`]: a blob store named by the database.
fn open_named(location: &str) -> cairn_store::Result<Arc<dyn BlobStore>> {
    let store = S3Blobs::open(location).map_err(|e| StoreError::BlobStore(e.to_string()))?;
    Ok(Arc::new(store))
}

/// Blobs in an S3 bucket: `PREFIX/ab/HASH`, written whole by one request or a multipart
/// upload (S3 makes an object visible only once it is complete and durable), read by
/// ranges. Uploads are staged in a local folder (`cairn-uploads` in the system's temporary
/// folder), as for [`PgBlobs`](cairn_store::files::PgBlobs).
#[derive(Debug)]
pub struct S3Blobs {
    objects: Arc<S3Objects>,
    staging: LocalStaging,
}

impl S3Blobs {
    /// The blobs under `s3://BUCKET/PREFIX`; S3's settings from the `AWS_*` variables.
    pub fn open(location: &str) -> Result<S3Blobs> {
        Self::open_with(location, &S3Settings::default())
    }

    /// [`S3Blobs::open`] with S3's settings given.
    pub fn open_with(location: &str, settings: &S3Settings) -> Result<S3Blobs> {
        let Some(parsed) = parse_url(location) else {
            return Err(BackupError::Invalid(format!(
                "{location:?} is not an s3:// blob store"
            )));
        };
        let (bucket, prefix) = parsed?;
        Ok(S3Blobs {
            objects: Arc::new(S3Objects::open(&bucket, &prefix, settings)?),
            staging: LocalStaging::default(),
        })
    }

    /// Lists the bucket once: a clear error now when it cannot be reached.
    fn check_reachable(&self) -> Result<()> {
        self.objects.list("00/").map(|_| ())
    }

    fn key(hash: &str) -> String {
        format!("{}/{hash}", &hash[..2])
    }

    fn err(e: BackupError) -> StoreError {
        StoreError::BlobStore(e.to_string())
    }
}

impl BlobStore for S3Blobs {
    fn put_file(&self, staged: &Path, id: &BlobId) -> cairn_store::Result<()> {
        if !is_blob_hash(&id.hash) {
            return Err(StoreError::Corrupt(format!(
                "{:?} is not a blob hash",
                id.hash
            )));
        }
        let key = Self::key(&id.hash);
        if self.objects.head(&key).map_err(Self::err)?.is_none() {
            self.objects.put_file(&key, staged).map_err(Self::err)?;
        }
        std::fs::remove_file(staged).map_err(|e| StoreError::io(staged, e))
    }

    fn open(&self, hash: &str) -> cairn_store::Result<Option<(Box<dyn BlobReader>, u64)>> {
        if !is_blob_hash(hash) {
            return Ok(None);
        }
        let key = Self::key(hash);
        let Some(size) = self.objects.head(&key).map_err(Self::err)? else {
            return Ok(None);
        };
        let reader = S3BlobReader {
            objects: self.objects.clone(),
            key,
            size,
            pos: 0,
            window: None,
        };
        Ok(Some((Box::new(reader), size)))
    }

    fn list(&self) -> cairn_store::Result<Vec<String>> {
        let mut hashes: Vec<String> = self
            .objects
            .list("")
            .map_err(Self::err)?
            .into_iter()
            .filter_map(|(key, _)| {
                let (dir, hash) = key.split_once('/')?;
                (is_blob_hash(hash) && hash.starts_with(dir)).then(|| hash.to_string())
            })
            .collect();
        hashes.sort();
        Ok(hashes)
    }

    fn staging_dir(&self) -> cairn_store::Result<PathBuf> {
        self.staging.dir()
    }

    fn sweep_staging(&self, older_than: std::time::Duration) -> cairn_store::Result<usize> {
        self.staging.sweep(older_than)
    }

    fn remove(&self, hash: &str) -> cairn_store::Result<u64> {
        if !is_blob_hash(hash) {
            return Ok(0);
        }
        let key = Self::key(hash);
        let size = self.objects.head(&key).map_err(Self::err)?.unwrap_or(0);
        self.objects.delete(&key).map_err(Self::err)?;
        Ok(size)
    }
}

/// Bytes fetched by one ranged read: a download streams in requests of this size.
const WINDOW: u64 = 4 << 20;

/// Reads a blob by ranges of [`WINDOW`], from any position.
struct S3BlobReader {
    objects: Arc<S3Objects>,
    key: String,
    size: u64,
    pos: u64,
    /// The range read last: where it starts, and its bytes.
    window: Option<(u64, Vec<u8>)>,
}

impl Read for S3BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let inside = |(start, bytes): &(u64, Vec<u8>)| {
            self.pos >= *start && self.pos < start + bytes.len() as u64
        };
        if !self.window.as_ref().is_some_and(inside) {
            let end = (self.pos + WINDOW).min(self.size);
            let bytes = self
                .objects
                .get_range(&self.key, self.pos, end)
                .map_err(std::io::Error::other)?;
            if bytes.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than its length", self.key),
                ));
            }
            self.window = Some((self.pos, bytes));
        }
        let Some((start, bytes)) = &self.window else {
            return Ok(0);
        };
        let at = (self.pos - start) as usize;
        let n = out.len().min(bytes.len() - at);
        out[..n].copy_from_slice(&bytes[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for S3BlobReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = cairn_store::files::seek_position(self.pos, self.size, to)?;
        Ok(self.pos)
    }
}
