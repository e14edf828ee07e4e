//! A file being received: written to the blob store's staging folder while its SHA-256 is
//! computed, so that the bytes are read once. Removed when dropped unfinished.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{hex, BlobId, BlobStore};
use crate::durable::WriteBehind;
use crate::error::{Result, StoreError};

/// Bytes of a staged file that may be on their way to the disk, not waited for: a chunked
/// upload's request (1 MB from the published client) then rarely waits for the disk, and
/// the writeback still runs behind the writes (no gigabyte of dirty pages at the end).
/// Measured with `cairn-files-bench`: see docs/benchmarks.md.
const STAGE_LAG: u64 = 32 << 20;

/// A staged file (see the module documentation).
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    behind: WriteBehind,
    kept: bool,
}

/// Where a staged file stood: see [`StagedFile::mark`] and [`StagedFile::rewind`].
#[derive(Clone, Debug)]
pub struct StageMark {
    hasher: Sha256,
    written: u64,
}

impl StagedFile {
    /// A new, empty file in `blobs`' staging folder.
    pub fn create(blobs: &dyn BlobStore) -> Result<StagedFile> {
        let dir = blobs.staging_dir()?;
        let path = dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = File::create_new(&path).map_err(|e| StoreError::io(&path, e))?;
        Ok(StagedFile {
            path,
            file,
            hasher: Sha256::new(),
            written: 0,
            behind: WriteBehind::with_lag(STAGE_LAG),
            kept: false,
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.behind.advance(&self.file, self.written);
        Ok(())
    }

    /// Appends the whole file at `src`, telling `progress` of every piece; returns its
    /// length.
    pub fn copy_from(&mut self, src: &Path, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        use std::io::Read;
        let mut f = File::open(src).map_err(|e| StoreError::io(src, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = f.read(&mut buf).map_err(|e| StoreError::io(src, e))?;
            if n == 0 {
                return Ok(total);
            }
            self.write(&buf[..n])?;
            total += n as u64;
            progress(n as u64);
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing is written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file stands now, to [`StagedFile::rewind`] to if what follows fails.
    pub fn mark(&self) -> StageMark {
        StageMark {
            hasher: self.hasher.clone(),
            written: self.written,
        }
    }

    /// Forgets everything written after `mark`.
    pub fn rewind(&mut self, mark: StageMark) -> Result<()> {
        self.file
            .set_len(mark.written)
            .and_then(|()| self.file.seek(SeekFrom::Start(mark.written)).map(|_| ()))
            .map_err(|e| StoreError::io(&self.path, e))?;
        self.hasher = mark.hasher;
        self.written = mark.written;
        self.behind = WriteBehind::with_lag(STAGE_LAG);
        Ok(())
    }

    /// The complete file as a blob in `blobs` (synced there); returns its name and length.
    pub fn into_blob(mut self, blobs: &dyn BlobStore) -> Result<BlobId> {
        let id = BlobId {
            hash: hex(&self.hasher.clone().finalize()),
            size: self.written,
        };
        self.file
            .flush()
            .map_err(|e| StoreError::io(&self.path, e))?;
        blobs.put_file(&self.path, &id)?;
        self.kept = true;
        Ok(id)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FsBlobs;
    use std::io::Read;

    #[test]
    fn a_staged_file_becomes_a_blob_once_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::new(&dir.path().join("blobs"));
        let mut s = StagedFile::create(&blobs).unwrap();
        s.write(b"hello ").unwrap();
        let mark = s.mark();
        s.write(b"wrong").unwrap();
        s.rewind(mark).unwrap();
        s.write(b"world").unwrap();
        let id = s.into_blob(&blobs).unwrap();
        // sha256("hello world")
        assert_eq!(
            id.hash,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(id.size, 11);
        let (mut r, len) = blobs.open(&id.hash).unwrap().unwrap();
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!((got.as_str(), len), ("hello world", 11));
        // The same bytes again: stored once, the staged copy removed.
        let mut again = StagedFile::create(&blobs).unwrap();
        again.write(b"hello world").unwrap();
        let staged = again.path().to_path_buf();
        assert_eq!(again.into_blob(&blobs).unwrap(), id);
        assert!(!staged.exists());
        assert_eq!(blobs.list().unwrap(), vec![id.hash.clone()]);
        let dropped = StagedFile::create(&blobs).unwrap();
        let p = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!p.exists());
        assert!(blobs.open(&"0".repeat(64)).unwrap().is_none());
        assert!(blobs.open("../../etc/passwd").unwrap().is_none());
    }
}
