//! File work of backups: checksummed copies in chunks (cancel and progress between
//! chunks), the check that lets unchanged files be hard-linked, durable writes, and the
//! backup thread's priority.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

use cairn_store::durable::WriteBehind;
use cairn_store::CancelToken;
use sha2::{Digest, Sha256};

use crate::error::{io, BackupError, Result};

/// Bytes copied between two cancel checks.
const CHUNK: usize = 1 << 20;

/// Lower-case hex of bytes (the store's, as blobs are named).
pub use cairn_store::files::hex;

/// `p` made absolute, through symlinks, as far as it exists (the rest of it appended):
/// paths that do not exist yet compare too.
fn resolved(p: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(c) = at.canonicalize() {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return abs,
        }
    }
}

/// Whether `inner` is `outer` or lies inside it, after symlinks and relative parts.
pub fn is_within(inner: &Path, outer: &Path) -> bool {
    resolved(inner).starts_with(resolved(outer))
}

/// Whether `a` and `b` name one file or folder, after symlinks and relative parts (either
/// may not exist yet).
pub fn same_path(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b)
}

/// SHA-256 of a file, reading it in chunks; `cancel` is checked between chunks.
pub fn sha256_file(path: &Path, cancel: &CancelToken) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(io(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if cancel.is_cancelled() {
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

/// Copies `src` to `dst` (which must not exist), hashing as it goes. The SHA-256 runs on
/// a second thread while this one reads and writes, so a copy from the page cache costs
/// the slower of the two, not their sum. The written data is handed to the disk as it goes
/// ([`WriteBehind`]), but the copy is **not** fsynced: call [`sync_files`] on everything
/// copied before anything refers to it (a manifest, a swap).
/// `progress(bytes)` is told of every chunk; `cancel` is checked between chunks. On any
/// error or a cancel `dst` is removed. Returns the SHA-256 and the size.
pub fn copy_checksummed(
    src: &Path,
    dst: &Path,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(u64),
) -> Result<(String, u64)> {
    let mut from = File::open(src).map_err(io(format!("open {}", src.display())))?;
    copy_stream_checksummed(&mut from, &src.display().to_string(), dst, cancel, progress)
}

/// [`copy_checksummed`] from any reader (`what` names it in errors): a download, say.
pub fn copy_stream_checksummed(
    from: &mut dyn Read,
    what: &str,
    dst: &Path,
    cancel: &CancelToken,
    progress: &mut dyn FnMut(u64),
) -> Result<(String, u64)> {
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io(format!("create {}", dst.display())))?;
    let result = std::thread::scope(|s| {
        // Filled chunks go to the hasher, which hands the buffers back for reuse: at most
        // a few CHUNK buffers exist at once.
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let hasher = s.spawn(move || {
            let mut hasher = Sha256::new();
            for buf in full_rx {
                hasher.update(&buf);
                let _ = empty_tx.send(buf);
            }
            hasher.finalize()
        });
        let mut total = 0u64;
        let mut write_behind = WriteBehind::new();
        let copied = (|| -> Result<()> {
            loop {
                if cancel.is_cancelled() {
                    return Err(BackupError::Canceled);
                }
                let mut buf = empty_rx.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let n = from.read(&mut buf).map_err(io(format!("read {what}")))?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                to.write_all(&buf)
                    .map_err(io(format!("write {}", dst.display())))?;
                total += n as u64;
                write_behind.advance(&to, total);
                progress(n as u64);
                if full_tx.send(buf).is_err() {
                    return Err(BackupError::Invalid("the checksum thread stopped".into()));
                }
            }
        })();
        drop(full_tx);
        let digest = hasher
            .join()
            .map_err(|_| BackupError::Invalid("the checksum thread panicked".into()))?;
        copied.map(|()| (hex(&digest), total))
    });
    if result.is_err() {
        drop(to);
        let _ = std::fs::remove_file(dst);
    }
    result
}

/// Lowers the calling thread's CPU priority (nice 10) and I/O priority (the lowest
/// best-effort level), so that a backup running beside a live server yields the cores
/// and the disk to the requests it serves. Linux only; a failure is logged and ignored:
/// the backup is just as correct at normal priority.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id, with constant
        // arguments; no memory is passed.
        let (nice, ioprio) = unsafe {
            let tid = libc::gettid();
            (
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10),
                // ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, 7))
                libc::syscall(libc::SYS_ioprio_set, 1, tid, (2 << 13) | 7),
            )
        };
        if nice != 0 || ioprio != 0 {
            tracing::debug!(
                "could not lower the backup thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn within_follows_symlinks_and_paths_yet_to_exist() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(is_within(&a, &a));
        assert!(is_within(&a.join("new/deeper"), &a));
        assert!(is_within(&link.join("new"), &a));
        assert!(is_within(&a.join("x"), &link));
        assert!(is_within(&a.join("b/../x"), &a));
        assert!(!is_within(&a, &a.join("x")));
        assert!(!is_within(&dir.path().join("ab"), &a));
        assert!(same_path(&link.join("x"), &a.join("x")));
        assert!(!same_path(&a.join("x"), &a));
    }
    use super::*;

    #[test]
    fn copies_hash_and_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, b"hello").unwrap();
        let stop = CancelToken::new();
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
        stop.cancel();
        let r = copy_checksummed(&src, &dir.path().join("c"), &stop, &mut |_| {});
        assert!(matches!(r, Err(BackupError::Canceled)));
        assert!(!dir.path().join("c").exists());
    }
}
