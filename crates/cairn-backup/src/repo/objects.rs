//! The objects of a repository: named blobs in a local folder or in an S3 bucket, behind
//! one synchronous trait, so that writing, listing, reading and deleting backups is written
//! once for both.
//!
//! Keys are `/`-separated and relative to the repository (`NAME/manifest.json`,
//! `.packs/ab/abcd...`). Every write is atomic (a reader sees the whole object or none), and
//! [`Objects::put_new`] creates only what does not exist yet: the one conditional write the
//! repository needs (a manifest, a lease).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{BackupError, Result};

/// A store of objects (see the module documentation).
pub trait Objects: Send + Sync {
    /// Where it is, for messages (`s3://bucket/prefix`, a folder).
    fn location(&self) -> String;
    /// Writes `key`, replacing what was there.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Writes `key` only if nothing is there; `false` when something was.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool>;
    /// The bytes of `key`; [`BackupError::NotFound`] when there is none.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// The bytes `start..end` of `key`.
    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>>;
    /// The keys (and sizes) under `prefix` (`""`: all), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Deletes `key`; nothing there is no error.
    fn delete(&self, key: &str) -> Result<()>;
}

/// Objects as files under a folder (a local repository that needs objects: an encrypted
/// one). A write goes to a hidden temporary file, is synced, and is renamed into place.
#[derive(Debug)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    /// The objects under `root` (a folder made by the first write).
    pub fn open_lazy(root: &Path) -> Self {
        LocalObjects {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if key.is_empty() || !plain {
            return Err(BackupError::Invalid(format!(
                "{key:?} is not an object key"
            )));
        }
        Ok(self.root.join(rel))
    }

    /// Writes `bytes` to a temporary file beside `path`, synced; its path.
    fn staged(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let parent = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent)
            .map_err(crate::error::io(format!("create {}", parent.display())))?;
        let tmp = parent.join(format!(".tmp-{}-{}", std::process::id(), uuid_like()));
        let mut f = std::fs::File::create(&tmp)
            .map_err(crate::error::io(format!("create {}", tmp.display())))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                BackupError::Io {
                    context: format!("write {}", tmp.display()),
                    cause: e,
                }
            })?;
        Ok(tmp)
    }
}

/// A name unique enough for a temporary file of this process.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{t:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Objects for LocalObjects {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.staged(&path, bytes)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            BackupError::Io {
                context: format!("rename into {}", path.display()),
                cause: e,
            }
        })?;
        if let Some(parent) = path.parent() {
            cairn_store::durable::sync_dir(parent)?;
        }
        Ok(())
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(key)?;
        let tmp = self.staged(&path, bytes)?;
        // A hard link fails if the name exists: the create is atomic and exclusive.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    cairn_store::durable::sync_dir(parent)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(BackupError::Io {
                context: format!("create {}", path.display()),
                cause: e,
            }),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                BackupError::NotFound(format!("{} has no {key}", self.location()))
            }
            _ => BackupError::Io {
                context: format!("read {}", path.display()),
                cause: e,
            },
        })
    }

    fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path(key)?;
        let mut f = std::fs::File::open(&path)
            .map_err(crate::error::io(format!("open {}", path.display())))?;
        f.seek(SeekFrom::Start(start))
            .map_err(crate::error::io(format!("seek {}", path.display())))?;
        let mut out = vec![0u8; end.saturating_sub(start) as usize];
        f.read_exact(&mut out)
            .map_err(crate::error::io(format!("read {}", path.display())))?;
        Ok(out)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        // Only the folder the prefix is inside is walked, not the whole repository.
        let start = match prefix.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => self.root.join(dir),
            _ => self.root.clone(),
        };
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(BackupError::Io {
                        context: format!("list {}", dir.display()),
                        cause: e,
                    })
                }
            };
            for entry in entries.flatten() {
                let p = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let name = rel
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                if key.starts_with(prefix) && !name.starts_with(".tmp-") {
                    out.push((key, meta.len()));
                }
            }
        }
        // In key order, as S3 lists.
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackupError::Io {
                context: format!("delete {}", path.display()),
                cause: e,
            }),
        }
    }
}
