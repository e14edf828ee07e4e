//! A file's identity on disk (device, inode, size, modification time) and when its inode
//! last changed: what lets an incremental backup know a live file's checksum, and share an
//! earlier backup's copy, without reading either again.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A file's identity on disk: the same device, inode, size and modification time mean
/// the same bytes (the file was not replaced or written since). For Tantivy's write-once
/// segment files this holds until the file is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// The identity (see [`SourceFile`]) of a file with metadata `m`; `None` on a platform
/// without inode numbers.
pub fn identity(m: &std::fs::Metadata) -> Option<SourceFile> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = u64::try_from(m.mtime()).ok()?.checked_mul(1_000_000_000)?
            + u64::try_from(m.mtime_nsec()).ok()?;
        Some(SourceFile {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns,
        })
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// True when `path` still looks as it did when a backup whose manifest was written at
/// `manifest_written` recorded it with `size` bytes: same size, and its inode not changed
/// since (strictly before the manifest, so a change within the file system's timestamp
/// granularity counts as a change). This is the check that lets an incremental backup
/// hard-link an earlier backup's file without reading it again; a damaged copy written
/// over it is not linked. The inode's change time (ctime) is used, not the modification
/// time: a write whose mtime was put back (`touch -d`, `cp -p`, `rsync -t`) still moves
/// the ctime, which no user can set. Bit rot that touches no metadata is what
/// `cairn backup verify` (every byte, every checksum) is for.
pub fn unchanged_since(path: &Path, size: u64, manifest_written: SystemTime) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file() && m.len() == size && changed_at(&m).is_some_and(|t| t < manifest_written)
    })
}

/// When the file's inode last changed (its ctime); its mtime where there is no ctime.
pub(crate) fn changed_at(m: &std::fs::Metadata) -> Option<SystemTime> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let secs = u64::try_from(m.ctime()).ok()?;
        let nanos = u32::try_from(m.ctime_nsec()).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
    }
    #[cfg(not(unix))]
    {
        m.modified().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_since_needs_same_size_and_no_later_write() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("seg");
        std::fs::write(&f, b"segment bytes").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert!(unchanged_since(&f, 13, later));
        assert!(!unchanged_since(&f, 12, later), "another size");
        assert!(!unchanged_since(&dir.path().join("gone"), 13, later));
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        assert!(!unchanged_since(&f, 13, before), "not strictly before");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let manifest = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"segment bytez").unwrap();
        assert!(
            !unchanged_since(&f, 13, manifest),
            "written after the manifest"
        );
        // A write after the manifest with its mtime put back (what `touch -d` does to
        // hide bit rot, or `cp -p` over the file) is a change too: the ctime moved.
        let g = dir.path().join("seg2");
        std::fs::write(&g, b"segment bytes").unwrap();
        let old_mtime = std::fs::metadata(&g).unwrap().modified().unwrap();
        // File times come from the kernel's coarse clock: the manifest's time is a file's,
        // as in a backup, and the rewrite waits until the file clock has moved past it.
        let probe = dir.path().join("probe");
        let file_time_after = |t: SystemTime| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                std::fs::write(&probe, b"{}").unwrap();
                let now = std::fs::metadata(&probe).unwrap().modified().unwrap();
                if now > t {
                    return now;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the file clock stands still"
                );
                std::thread::yield_now();
            }
        };
        let manifest = file_time_after(old_mtime);
        assert!(unchanged_since(&g, 13, manifest), "untouched since");
        file_time_after(manifest);
        let file = std::fs::OpenOptions::new().write(true).open(&g).unwrap();
        std::io::Write::write_all(&mut &file, b"SEG").unwrap();
        file.set_modified(old_mtime).unwrap();
        drop(file);
        assert_eq!(
            std::fs::metadata(&g).unwrap().modified().unwrap(),
            old_mtime
        );
        assert!(
            !unchanged_since(&g, 13, manifest),
            "rewritten, mtime put back"
        );
    }
}
