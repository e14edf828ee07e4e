//! Blobs in PostgreSQL itself (the default when several web nodes share one database):
//! table `blobs` (hash, length) and `blob_chunks` (the bytes in rows of [`CHUNK`]). A blob
//! is inserted in one transaction of its own, committed before the row that names it;
//! `pg_dump`, the WAL and point-in-time recovery carry blobs with the rest of the database.
//!
//! Chosen over large objects (`lo_*`): rows are dumped, replicated and checked like any
//! other, a blob is one `INSERT` per MiB with no server-side handle to keep open, and a
//! range is read by fetching only the rows that hold it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{is_blob_hash, BlobId, BlobReader, BlobStore};
use crate::error::{Result, StoreError};

/// Bytes per row of `blob_chunks`.
pub const CHUNK: usize = 1 << 20;

/// Blobs in the PostgreSQL database at `url`; uploads are staged in `staging` (a local
/// folder: by default `cairn-uploads` in the system's temporary folder).
#[derive(Debug)]
pub struct PgBlobs {
    url: String,
    staging: super::LocalStaging,
}

impl PgBlobs {
    /// The blob store of the database at `url`.
    pub fn new(url: &str) -> PgBlobs {
        PgBlobs {
            url: url.to_string(),
            staging: super::LocalStaging::default(),
        }
    }

    fn connect(&self) -> Result<postgres::Client> {
        crate::db::postgres::connect(&self.url)
    }
}

impl BlobStore for PgBlobs {
    fn put_file(&self, staged: &Path, id: &BlobId) -> Result<()> {
        if !is_blob_hash(&id.hash) {
            return Err(StoreError::Corrupt(format!(
                "{:?} is not a blob hash",
                id.hash
            )));
        }
        let mut client = self.connect()?;
        let mut tx = client.transaction()?;
        let size = i64::try_from(id.size).unwrap_or(i64::MAX);
        // A concurrent upload of the same bytes waits here for the first to commit.
        let new = tx.execute(
            "INSERT INTO blobs (hash, size) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
            &[&id.hash, &size],
        )?;
        if new == 1 {
            let mut f = std::fs::File::open(staged).map_err(|e| StoreError::io(staged, e))?;
            let mut buf = vec![0u8; CHUNK];
            let mut seq = 0i32;
            loop {
                let mut n = 0;
                while n < CHUNK {
                    let k = f
                        .read(&mut buf[n..])
                        .map_err(|e| StoreError::io(staged, e))?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                if n == 0 {
                    break;
                }
                tx.execute(
                    "INSERT INTO blob_chunks (hash, seq, data) VALUES ($1, $2, $3)",
                    &[&id.hash, &seq, &&buf[..n]],
                )?;
                seq += 1;
            }
        }
        tx.commit()?;
        std::fs::remove_file(staged).map_err(|e| StoreError::io(staged, e))?;
        Ok(())
    }

    fn open(&self, hash: &str) -> Result<Option<(Box<dyn BlobReader>, u64)>> {
        if !is_blob_hash(hash) {
            return Ok(None);
        }
        let mut client = self.connect()?;
        let Some(row) = client.query_opt("SELECT size FROM blobs WHERE hash = $1", &[&hash])?
        else {
            return Ok(None);
        };
        let size = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        let reader = PgBlobReader {
            client,
            hash: hash.to_string(),
            size,
            pos: 0,
            row: None,
            ranged: false,
        };
        Ok(Some((Box::new(reader), size)))
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut client = self.connect()?;
        Ok(client
            .query("SELECT hash FROM blobs ORDER BY hash", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn remove(&self, hash: &str) -> Result<u64> {
        let mut client = self.connect()?;
        // Its rows go with it (ON DELETE CASCADE).
        let row = client.query_opt("DELETE FROM blobs WHERE hash = $1 RETURNING size", &[&hash])?;
        Ok(row.map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        self.staging.dir()
    }

    fn sweep_staging(&self, older_than: std::time::Duration) -> Result<usize> {
        self.staging.sweep(older_than)
    }
}

/// Reads a blob a row at a time, from any position.
struct PgBlobReader {
    client: postgres::Client,
    hash: String,
    size: u64,
    pos: u64,
    /// The row read last: its number and bytes.
    row: Option<(u64, Vec<u8>)>,
    /// Set by a seek: the next read is of a range (a download's `Range`), so it fetches
    /// only the bytes asked for, not the row around them; reads after it go by rows.
    ranged: bool,
}

impl Read for PgBlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let seq = self.pos / CHUNK as u64;
        let at = (self.pos % CHUNK as u64) as usize;
        let cached = self.row.as_ref().is_some_and(|(s, _)| *s == seq);
        if std::mem::take(&mut self.ranged) && !cached {
            let (n, from, len) = (
                i32::try_from(seq).map_err(std::io::Error::other)?,
                (at + 1) as i32,
                out.len().min(CHUNK - at) as i32,
            );
            let bytes: Vec<u8> = self
                .client
                .query_opt(
                    "SELECT substring(data FROM $3 FOR $4) FROM blob_chunks \
                     WHERE hash = $1 AND seq = $2",
                    &[&self.hash, &n, &from, &len],
                )
                .map_err(std::io::Error::other)?
                .map(|r| r.get(0))
                .unwrap_or_default();
            if bytes.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("blob {} is shorter than its length", self.hash),
                ));
            }
            out[..bytes.len()].copy_from_slice(&bytes);
            self.pos += bytes.len() as u64;
            return Ok(bytes.len());
        }
        if !cached {
            let n = i32::try_from(seq).map_err(std::io::Error::other)?;
            let row = self
                .client
                .query_opt(
                    "SELECT data FROM blob_chunks WHERE hash = $1 AND seq = $2",
                    &[&self.hash, &n],
                )
                .map_err(std::io::Error::other)?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("blob {} has no row {seq}", self.hash),
                    )
                })?;
            self.row = Some((seq, row.get(0)));
        }
        let Some((_, data)) = &self.row else {
            return Ok(0);
        };
        if at >= data.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("blob {} is shorter than its length", self.hash),
            ));
        }
        let n = out.len().min(data.len() - at);
        out[..n].copy_from_slice(&data[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PgBlobReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::seek_position(self.pos, self.size, to)?;
        self.ranged = true;
        Ok(self.pos)
    }
}
