//! File work of backups: checksummed copies in chunks (cancel and progress between
//! chunks), hard links for unchanged files, durable writes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{io, BackupError, Result};

/// Bytes copied between two cancel checks.
const CHUNK: usize = 1 << 20;

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io(format!("create {}", path.display())))?;
    f.write_all(bytes)
        .map_err(io(format!("write {}", path.display())))?;
    f.sync_all().map_err(io(format!("sync {}", path.display())))
}

/// Fsyncs a folder, so that renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("sync {}", dir.display())))
}

/// SHA-256 of a file, reading it in chunks; `cancel` is checked between chunks.
pub fn sha256_file(path: &Path, cancel: &AtomicBool) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(io(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(BackupError::Canceled);
        }
        let n = f
            .read(&mut buf)
            .map_err(io(format!("read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// Copies `src` to `dst` (which must not exist), hashing as it goes, fsyncing at the end.
/// `progress(bytes)` is told of every chunk; `cancel` is checked between chunks. Returns
/// the SHA-256 and the size.
pub fn copy_checksummed(
    src: &Path,
    dst: &Path,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(String, u64)> {
    let mut from = File::open(src).map_err(io(format!("open {}", src.display())))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io(format!("create {}", dst.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            drop(to);
            let _ = std::fs::remove_file(dst);
            return Err(BackupError::Canceled);
        }
        let n = from
            .read(&mut buf)
            .map_err(io(format!("read {}", src.display())))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n])
            .map_err(io(format!("write {}", dst.display())))?;
        hasher.update(&buf[..n]);
        total += n as u64;
        progress(n as u64);
    }
    to.sync_all()
        .map_err(io(format!("sync {}", dst.display())))?;
    Ok((hex(&hasher.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_hash_and_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"hello").unwrap();
        let stop = AtomicBool::new(false);
        let mut seen = 0;
        let (sum, n) =
            copy_checksummed(&src, &dir.path().join("b"), &stop, &mut |b| seen += b).unwrap();
        assert_eq!(n, 5);
        assert_eq!(seen, 5);
        assert_eq!(
            sum,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(sha256_file(&dir.path().join("b"), &stop).unwrap().0, sum);
        stop.store(true, Ordering::Relaxed);
        let r = copy_checksummed(&src, &dir.path().join("c"), &stop, &mut |_| {});
        assert!(matches!(r, Err(BackupError::Canceled)));
        assert!(!dir.path().join("c").exists());
    }
}
