//! Blobs as files: `ROOT/ab/abcdef…` (the first two hex digits of the hash as a folder, so
//! that no folder holds millions of entries), uploads staged in `ROOT/.staging`.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{is_blob_hash, BlobId, BlobReader, BlobStore};
use crate::durable::{publish, sync_dir};
use crate::error::{Result, StoreError};

/// Blobs in a folder (by default `DIR/blobs`, beside the SQLite database).
#[derive(Debug)]
pub struct FsBlobs {
    root: PathBuf,
    staging: PathBuf,
}

impl FsBlobs {
    /// The blob folder `root`, made at the first upload (opening a database copy for a
    /// check makes no folder beside it).
    pub fn new(root: &Path) -> FsBlobs {
        FsBlobs {
            root: root.to_path_buf(),
            staging: root.join(".staging"),
        }
    }

    /// Where the blob `hash` is (or would be).
    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(hash)
    }
}

impl BlobStore for FsBlobs {
    fn put_file(&self, staged: &Path, id: &BlobId) -> Result<()> {
        if !is_blob_hash(&id.hash) {
            return Err(StoreError::Corrupt(format!(
                "{:?} is not a blob hash",
                id.hash
            )));
        }
        let dest = self.path_of(&id.hash);
        if dest.exists() {
            std::fs::remove_file(staged).map_err(|e| StoreError::io(staged, e))?;
            return Ok(());
        }
        let dir = self.root.join(&id.hash[..2]);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            sync_dir(&self.root)?;
        }
        // Synced, renamed, the folder synced: durable before any row names it.
        publish(staged, &dir, &id.hash)?;
        Ok(())
    }

    fn open(&self, hash: &str) -> Result<Option<(Box<dyn BlobReader>, u64)>> {
        if !is_blob_hash(hash) {
            return Ok(None);
        }
        let path = self.path_of(hash);
        match File::open(&path) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| StoreError::io(&path, e))?.len();
                Ok(Some((Box::new(f), len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let top = match std::fs::read_dir(&self.root) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&self.root, e)),
        };
        for d in top {
            let d = d.map_err(|e| StoreError::io(&self.root, e))?;
            let name = d.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !d.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path()).map_err(|e| StoreError::io(d.path(), e))? {
                let f = f.map_err(|e| StoreError::io(d.path(), e))?;
                if let Some(h) = f.file_name().to_str().filter(|h| is_blob_hash(h)) {
                    out.push(h.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn sweep_staging(&self, older_than: std::time::Duration) -> Result<usize> {
        sweep_folder(&self.staging, older_than)
    }

    fn remove(&self, hash: &str) -> Result<u64> {
        if !is_blob_hash(hash) {
            return Ok(0);
        }
        let path = self.path_of(hash);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(len),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging).map_err(|e| StoreError::io(&self.staging, e))?;
        Ok(self.staging.clone())
    }
}

/// Removes the files of `dir` not written to for `older_than`; returns how many.
pub(crate) fn sweep_folder(dir: &Path, older_than: std::time::Duration) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let idle = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if idle.is_some_and(|idle| idle >= older_than) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}
