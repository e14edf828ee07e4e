//! The manifest: what binds an index backup and a database backup into one repository
//! backup (design invariant 7). It is written last, by rename; a folder without one is not
//! a backup. Every format version has its reader; this build writes version 1.

use std::collections::HashSet;
use std::path::{Component, Path};

use cairn_index::CompletionState;
use cairn_store::DatabaseBackup;
use serde::{Deserialize, Serialize};

pub use crate::identity::SourceFile;

use crate::error::{io, BackupError, Result};

/// The manifest's file name in a backup folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this build writes.
pub const MANIFEST_FORMAT: u32 = 1;
/// The index format this build writes and reads (`IndexPart::format`).
pub use cairn_index::INDEX_FORMAT;
/// The index folder inside a backup.
pub const INDEX_DIR: &str = "index";
/// The database folder inside a backup.
pub const DATABASE_DIR: &str = "database";
/// The folder of the files' blobs inside a repository backup: `blobs/ab/abcdef…`, each
/// named by its SHA-256, as in the blob store.
pub const BLOBS_DIR: &str = "blobs";

/// The path in a backup of the blob `hash`.
pub fn blob_path(hash: &str) -> String {
    format!("{BLOBS_DIR}/{}/{hash}", &hash[..2.min(hash.len())])
}

/// What a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    /// The index alone (`BackupIndex`).
    Index,
    /// The index, then the database (`BackupRepository`).
    Repository,
}

/// One file of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup folder, with `/` separators (`index/abc.idx`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// For an index file: which live file it was copied from, so that the next backup
    /// knows that file's checksum without reading it while the file is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFile>,
}

/// The index part: the completion state of the copied commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexPart {
    /// `LastActivityId`, gaps and fingerprint of the copied commit.
    pub completion_state: CompletionState,
    /// Live documents in the copied commit.
    pub documents: u64,
    /// The index format (`tantivy-0.27`).
    pub format: String,
}

/// A backup's manifest (format 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Index alone, or index and database.
    pub kind: BackupKind,
    /// The repository's identity.
    pub repository_id: String,
    /// The version of Cairn that wrote it.
    pub cairn_version: String,
    /// When the backup began (RFC 3339).
    pub started_at: String,
    /// When it was finished (RFC 3339).
    pub finished_at: String,
    /// The index position and content.
    pub index: IndexPart,
    /// The database position and file (repository backups).
    pub database: Option<DatabaseBackup>,
    /// Every file with its size and checksum.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads a manifest of any known format; bad input is an [`BackupError::Invalid`].
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        if !dir.is_dir() {
            return Err(BackupError::Invalid(format!(
                "{} {}: a backup is a folder",
                dir.display(),
                if dir.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                }
            )));
        }
        if !path.exists() {
            return Err(BackupError::Invalid(format!(
                "{} has no {MANIFEST_FILE}: it is not a finished backup (interrupted, canceled or still being written)",
                dir.display()
            )));
        }
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses a manifest's text, and checks its layout ([`Manifest::check_layout`]): every
    /// reader of a manifest (verify, restore, a download) gets only one whose paths stay
    /// inside the backup.
    pub fn parse(text: &str) -> Result<Manifest> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| BackupError::Invalid(format!("{MANIFEST_FILE} is not JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_u64()) {
            Some(1) => {
                let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
                    BackupError::Invalid(format!("{MANIFEST_FILE} (format 1): {e}"))
                })?;
                manifest.check_layout()?;
                Ok(manifest)
            }
            Some(n) => Err(BackupError::Invalid(format!(
                "{MANIFEST_FILE} has format {n}, newer than this build reads ({MANIFEST_FORMAT}); upgrade cairn"
            ))),
            None => Err(BackupError::Invalid(format!("{MANIFEST_FILE} has no format number"))),
        }
    }

    /// The one rule of a backup's layout: the manifest names a repository, and only files
    /// inside the backup's `index/` and `database/` folders, and blobs (`blobs/ab/HASH`
    /// whose checksum is their name, in repository backups), each once, plain relative
    /// paths (no `..`, no absolute path); its database file is one of them. Whatever a
    /// tampered manifest or a hostile server says, Cairn reads and writes nothing else.
    pub fn check_layout(&self) -> Result<()> {
        let invalid = |m: String| Err(BackupError::Invalid(m));
        if self.repository_id.is_empty() {
            return invalid("the manifest names no repository".into());
        }
        let mut seen = HashSet::new();
        for f in &self.files {
            let blob = f.path.starts_with(&format!("{BLOBS_DIR}/"));
            if blob
                && (self.kind != BackupKind::Repository
                    || !cairn_store::files::is_blob_hash(&f.sha256)
                    || f.path != blob_path(&f.sha256))
            {
                return invalid(format!(
                    "{}: a blob is at blobs/ab/HASH, named by its checksum, in a repository backup",
                    f.path
                ));
            }
            let inside = blob
                || [INDEX_DIR, DATABASE_DIR]
                    .iter()
                    .any(|d| f.path.strip_prefix(d).is_some_and(|r| r.starts_with('/')));
            if !is_plain_relative(&f.path) || !inside {
                return invalid(format!(
                    "{}: a path outside the backup's {INDEX_DIR} and {DATABASE_DIR} folders",
                    f.path
                ));
            }
            if !seen.insert(f.path.as_str()) {
                return invalid(format!("{}: listed twice", f.path));
            }
        }
        match (&self.database, self.kind) {
            (None, BackupKind::Index) => Ok(()),
            (Some(db), BackupKind::Repository) => {
                let listed = format!("{DATABASE_DIR}/{}", db.file_name);
                if !is_plain_relative(&db.file_name)
                    || db.file_name.contains('/')
                    || !seen.contains(listed.as_str())
                {
                    return invalid(format!(
                        "the database file {:?} is not one of the backup's files",
                        db.file_name
                    ));
                }
                Ok(())
            }
            (None, BackupKind::Repository) => {
                invalid("a repository backup without its database part".into())
            }
            (Some(_), BackupKind::Index) => invalid("an index backup with a database part".into()),
        }
    }

    /// Writes the manifest into `dir` last and atomically: a temp file, fsync, rename,
    /// fsync of the folder.
    ///
    /// Its time is a later tick of the file clock than the last change of every file it
    /// lists: the next incremental backup links only files not changed since the manifest
    /// ([`crate::files::unchanged_since`]), and a file linked or copied within the same
    /// tick would count as changed and be copied again. At most a tick (a few ms) is waited.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| BackupError::Invalid(e.to_string()))?;
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let newest = self
            .files
            .iter()
            .filter_map(|f| {
                crate::identity::changed_at(&std::fs::metadata(dir.join(&f.path)).ok()?)
            })
            .max();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            cairn_store::durable::write_synced(&tmp, text.as_bytes())?;
            let written = std::fs::metadata(&tmp).and_then(|m| m.modified()).ok();
            let later = match (written, newest) {
                (Some(w), Some(n)) => w > n,
                _ => true,
            };
            if later || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let dst = dir.join(MANIFEST_FILE);
        std::fs::rename(&tmp, &dst).map_err(io(format!("rename {}", tmp.display())))?;
        Ok(cairn_store::durable::sync_dir(dir)?)
    }

    /// The blobs' entries.
    pub fn blobs(&self) -> impl Iterator<Item = &FileEntry> + '_ {
        self.files_in(BLOBS_DIR)
    }

    /// The files under `prefix/` (`index`, `database` or `blobs`).
    pub fn files_in<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.files
            .iter()
            .filter(move |f| f.path.starts_with(prefix) && f.path[prefix.len()..].starts_with('/'))
    }
}

/// True when `rel` is a relative path that stays where it is joined: only plain names
/// (`index/a.idx`), no `..`, no root, no empty path.
fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside() {
        assert!(is_plain_relative("index/a.idx"));
        for bad in ["", "../x", "/etc/passwd", "index/../../x", "./x"] {
            assert!(!is_plain_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_manifests_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            "{\"format\":1}",
            "{\"format\":99}",
            "{\"format\":\"1\"}",
            "null",
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad:?} accepted");
        }
        let mut seed: u64 = 7;
        let pieces = [
            "{",
            "}",
            "\"format\"",
            ":",
            "1",
            ",",
            "\"files\"",
            "[",
            "]",
            "\"x\"",
            "null",
        ];
        for _ in 0..5000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(pieces[((seed >> 33) % pieces.len() as u64) as usize]);
            }
            let _ = Manifest::parse(&s);
        }
    }
}
