//! Downloading a finished backup from wherever it is served (a server's `/backups`), into
//! a new local folder that is a backup only once everything in it was checked.
//!
//! Nothing the source says is trusted: the manifest must pass [`Manifest::parse`]'s layout
//! rule before a byte is written, every file goes into a staging folder beside the target,
//! and the staging folder becomes the target (one rename) only after every size and
//! checksum matched and the manifest was written last. A hostile server, or anyone in the
//! middle of a plain-HTTP connection, can make a download fail, never write a file outside
//! it or leave a folder that looks like a good backup.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{io, BackupError, Result};
use cairn_store::durable::{sync_dir, sync_files};
use cairn_store::CancelToken;

use crate::files::copy_stream_checksummed;
use crate::manifest::{Manifest, MANIFEST_FILE};

/// Where a download reads from.
pub trait BackupSourceFiles {
    /// The manifest's text.
    fn manifest(&self) -> Result<String>;
    /// One file the manifest names (its `path`, as in the manifest), as a stream.
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>>;
}

/// What a download did.
#[derive(Clone, Debug)]
pub struct DownloadReport {
    /// The manifest of the downloaded backup.
    pub manifest: Manifest,
    /// Files downloaded.
    pub files: u64,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// The staging folder of a download into `to`: a hidden sibling, so that the final rename
/// stays on one file system.
fn staging_for(to: &Path) -> Result<PathBuf> {
    let name = to.file_name().ok_or_else(|| {
        BackupError::Refused(format!("{} names no folder to download into", to.display()))
    })?;
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(".cairn-download");
    Ok(to.with_file_name(staged))
}

/// Downloads the backup that `source` serves into the new folder `to` (its parent is
/// created when missing), checking every file against the manifest; `progress(done,
/// total)` in bytes. On any error nothing is left but what was there before.
pub fn download(
    source: &dyn BackupSourceFiles,
    to: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<DownloadReport> {
    if std::fs::symlink_metadata(to).is_ok() {
        return Err(BackupError::Refused(format!(
            "{} exists already: give a new folder to download into",
            to.display()
        )));
    }
    // The layout rule first: a manifest that names any path outside index/ and database/
    // is refused before anything is written.
    let manifest = Manifest::parse(&source.manifest()?)?;
    let staging = staging_for(to)?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    // What an interrupted download left is Cairn's own (the name says so), and unusable.
    if std::fs::symlink_metadata(&staging).is_ok() {
        std::fs::remove_dir_all(&staging)
            .map_err(io(format!("remove the leftover {}", staging.display())))?;
    }
    std::fs::create_dir(&staging).map_err(io(format!("create {}", staging.display())))?;
    match fill(source, &manifest, &staging, progress) {
        Ok(bytes) => {
            std::fs::rename(&staging, to).map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                BackupError::Io {
                    context: format!("rename {} to {}", staging.display(), to.display()),
                    cause: e,
                }
            })?;
            if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(DownloadReport {
                files: manifest.files.len() as u64,
                bytes,
                manifest,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Downloads every file into `staging` and checks it, then writes the manifest last.
fn fill(
    source: &dyn BackupSourceFiles,
    manifest: &Manifest,
    staging: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<u64> {
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let never = CancelToken::new();
    let mut done = 0u64;
    let mut written = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let dst = staging.join(&f.path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        // One byte past the manifest's size is enough to tell a file too long: a source that
        // sends more (a hostile server declaring a gigabyte) is not read further, and cannot
        // fill this disk.
        let mut reader = source.open(&f.path)?.take(f.size.saturating_add(1));
        let (sha256, size) =
            copy_stream_checksummed(&mut reader, &f.path, &dst, &never, &mut |n| {
                done += n;
                progress(done, total);
            })?;
        if size > f.size {
            return Err(BackupError::Invalid(format!(
                "{}: the download is longer than the manifest's {} bytes; stopped reading it",
                f.path, f.size
            )));
        }
        if size != f.size || sha256 != f.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: the download does not match the manifest ({size} bytes, SHA-256 {sha256}; \
                 the manifest says {} bytes, {})",
                f.path, f.size, f.sha256
            )));
        }
        written.push(dst);
    }
    sync_files(&written)?;
    // Every folder a file was written into, and the folders above them (`blobs/ab`).
    let mut dirs: std::collections::BTreeSet<&Path> = std::collections::BTreeSet::new();
    for f in &written {
        let mut d = f.parent();
        while let Some(p) = d.filter(|p| p.starts_with(staging) && *p != staging) {
            dirs.insert(p);
            d = p.parent();
        }
    }
    for d in dirs.into_iter().rev() {
        sync_dir(d)?;
    }
    manifest.write(staging)?;
    debug_assert!(staging.join(MANIFEST_FILE).is_file());
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A source that serves what it is given, as a hostile server would.
    struct Served {
        manifest: String,
        files: HashMap<String, Vec<u8>>,
    }

    impl BackupSourceFiles for Served {
        fn manifest(&self) -> Result<String> {
            Ok(self.manifest.clone())
        }
        fn open(&self, path: &str) -> Result<Box<dyn Read + '_>> {
            let bytes = self.files.get(path).map(Vec::as_slice).unwrap_or(b"");
            Ok(Box::new(bytes))
        }
    }

    fn manifest_with(paths: &[(&str, &[u8])]) -> String {
        use sha2::Digest;
        let files: Vec<_> = paths
            .iter()
            .map(|(p, b)| {
                serde_json::json!({
                    "path": p, "size": b.len(),
                    "sha256": crate::files::hex(&sha2::Sha256::digest(b)),
                })
            })
            .collect();
        serde_json::json!({
            "format": 1, "kind": "Index", "repository_id": "r", "cairn_version": "0",
            "started_at": "", "finished_at": "",
            "index": {"completion_state": {"format": 1, "repository_id": "r",
                      "last_activity_id": 0, "fingerprint": 0, "gaps": []},
                      "documents": 0, "format": "tantivy-0.27"},
            "database": null, "files": files,
        })
        .to_string()
    }

    #[test]
    fn a_path_outside_the_backup_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("victim");
        for bad in ["../victim", "index/../../victim", "/tmp/victim", "other/x"] {
            let source = Served {
                manifest: manifest_with(&[("index/meta.json", b"{}"), (bad, b"owned")]),
                files: HashMap::from([(bad.to_string(), b"owned".to_vec())]),
            };
            let to = dir.path().join("down").join("b1");
            let e = download(&source, &to, &|_, _| {}).unwrap_err();
            assert!(matches!(e, BackupError::Invalid(_)), "{bad}: {e}");
            assert!(!outside.exists(), "{bad}: wrote outside the download");
            assert!(!to.exists(), "{bad}: left the target");
            assert!(
                !staging_for(&to).unwrap().exists(),
                "{bad}: left the staging folder"
            );
        }
    }

    /// A backup whose manifest lists `index/a` as "good", served with `sent` as its bytes.
    fn index_a_served_as(sent: &[u8]) -> Served {
        Served {
            manifest: manifest_with(&[("index/a", b"good"), ("index/meta.json", b"{}")]),
            files: HashMap::from([
                ("index/a".to_string(), sent.to_vec()),
                ("index/meta.json".to_string(), b"{}".to_vec()),
            ]),
        }
    }

    #[test]
    fn a_bad_checksum_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = index_a_served_as(b"evil");
        let to = dir.path().join("b1");
        let e = download(&source, &to, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("index/a"), "{e}");
        assert!(!to.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Serves the manifest of [`index_a_served_as`], and for `index/a` a stream of 64 MiB,
    /// counting what is read of it.
    struct Endless {
        read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl BackupSourceFiles for Endless {
        fn manifest(&self) -> Result<String> {
            index_a_served_as(b"good").manifest()
        }
        fn open(&self, path: &str) -> Result<Box<dyn Read + '_>> {
            struct Counting<'a>(
                &'a std::sync::atomic::AtomicU64,
                std::io::Take<std::io::Repeat>,
            );
            impl Read for Counting<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.1.read(buf)?;
                    self.0
                        .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                    Ok(n)
                }
            }
            let len = if path == "index/a" { 64 << 20 } else { 2 };
            let byte = if path == "index/a" { b'x' } else { b'{' };
            Ok(Box::new(Counting(
                &self.read,
                std::io::repeat(byte).take(len),
            )))
        }
    }

    #[test]
    fn a_file_longer_than_its_manifest_says_is_not_read_on() {
        let dir = tempfile::tempdir().unwrap();
        let source = Endless {
            read: Default::default(),
        };
        let to = dir.path().join("b1");
        let e = download(&source, &to, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("longer than the manifest"), "{e}");
        let read = source.read.load(std::sync::atomic::Ordering::SeqCst);
        assert!(read <= 1 << 20, "read {read} bytes of a 4-byte file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_good_download_becomes_the_target_with_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let source = index_a_served_as(b"good");
        // A leftover of an interrupted download is replaced.
        let to = dir.path().join("b1");
        std::fs::create_dir_all(staging_for(&to).unwrap().join("index")).unwrap();
        let r = download(&source, &to, &|_, _| {}).unwrap();
        assert_eq!((r.files, r.bytes), (2, 6));
        assert_eq!(std::fs::read(to.join("index/a")).unwrap(), b"good");
        assert_eq!(Manifest::read(&to).unwrap().files.len(), 2);
        assert!(!staging_for(&to).unwrap().exists());
        // And a second download into the same folder is refused.
        assert!(matches!(
            download(&source, &to, &|_, _| {}),
            Err(BackupError::Refused(_))
        ));
    }
}
