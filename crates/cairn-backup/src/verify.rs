//! `cairn backup verify`: checksums, the index opens with the manifest's document count,
//! the database passes its engine's check, and the positions in the manifest agree.
//! Stops at the first problem and names it.

use std::path::Path;
use std::time::Instant;

use cairn_index::{CompletionState, IndexCopy};
use cairn_store::CancelToken;

use crate::error::{BackupError, Result};
use crate::files::sha256_file;
use crate::manifest::{Manifest, BLOBS_DIR, DATABASE_DIR, INDEX_DIR, INDEX_FORMAT};

/// What a successful verify checked.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The manifest.
    pub manifest: Manifest,
    /// Files checked.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
}

fn invalid(msg: impl Into<String>) -> BackupError {
    BackupError::Invalid(msg.into())
}

/// Verifies the backup in `dir`; `progress(done, total)` in bytes.
pub fn verify(dir: &Path, progress: &dyn Fn(u64, u64)) -> Result<VerifyReport> {
    verify_parts(dir, true, progress, &CancelToken::new())
}

/// Verifies the backup in `dir`; with `database` false, the database files are left out
/// (an index-only restore reads nothing else). `cancel` stops it between chunks.
pub fn verify_parts(
    dir: &Path,
    database: bool,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<VerifyReport> {
    let started = Instant::now();
    // Reading a manifest checks its layout (`Manifest::parse`).
    let manifest = Manifest::read(dir)?;
    let checked: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| {
            database
                || !(f.path.starts_with(&format!("{DATABASE_DIR}/"))
                    || f.path.starts_with(&format!("{BLOBS_DIR}/")))
        })
        .collect();
    let total: u64 = checked.iter().map(|f| f.size).sum();
    let mut done = 0u64;
    for f in checked.iter().copied() {
        let p = dir.join(&f.path);
        let meta =
            std::fs::symlink_metadata(&p).map_err(|_| invalid(format!("{}: missing", f.path)))?;
        // A backup holds its own bytes: a link out of it, of the file or of a folder on its
        // way, would restore whatever it points at.
        let inside = match (p.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => a.starts_with(b),
            _ => false,
        };
        if !meta.is_file() || !inside {
            return Err(invalid(format!(
                "{}: not a regular file of the backup",
                f.path
            )));
        }
        if meta.len() != f.size {
            return Err(invalid(format!(
                "{}: size {} differs from the manifest's {} (truncated or changed)",
                f.path,
                meta.len(),
                f.size
            )));
        }
        let (sum, _) = sha256_file(&p, cancel)?;
        if sum != f.sha256 {
            return Err(invalid(format!(
                "{}: checksum mismatch (the file is corrupted or was changed)",
                f.path
            )));
        }
        done += f.size;
        progress(done, total);
    }
    // The index opens and holds what the manifest says (read only: a backup may be on
    // read-only storage).
    let state = check_index(&dir.join(INDEX_DIR), &manifest)?;
    // The database passes its engine's check, and its position agrees.
    if let Some(db) = manifest.database.as_ref().filter(|_| database) {
        let path = dir.join(DATABASE_DIR).join(&db.file_name);
        let checked = cairn_store::verify_database_file(db.kind, &path)
            .map_err(|e| invalid(format!("{DATABASE_DIR}/{}: {e}", db.file_name)))?;
        if let Some(id) = &checked.repository_id {
            if *id != manifest.repository_id || db.repository_id != manifest.repository_id {
                return Err(invalid(
                    "the database belongs to another repository than the manifest",
                ));
            }
        }
        if let Some(last) = checked.last_activity_id {
            if last != db.last_activity_id {
                return Err(invalid(format!(
                    "positions inconsistent: the database's last activity is {last}, the manifest says {}",
                    db.last_activity_id
                )));
            }
        }
        // Every blob the database names is in the backup (its bytes were checked above).
        crate::blobs::check_complete(dir, &manifest)?;
        if state.last_activity_id > db.last_activity_id {
            return Err(invalid(format!(
                "positions inconsistent: the index ({}) is ahead of the database ({}); \
                 a repository backup copies the index first",
                state.last_activity_id, db.last_activity_id
            )));
        }
    }
    Ok(VerifyReport {
        files: checked.len() as u64,
        bytes: total,
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    })
}

/// Opens the backup's index: its document count, completion state and repository must
/// be the manifest's. Returns the completion state.
fn check_index(index_dir: &Path, manifest: &Manifest) -> Result<CompletionState> {
    let copy =
        IndexCopy::open(index_dir).map_err(|e| invalid(format!("the index does not open: {e}")))?;
    // Restore copies the listed files only: every file the index needs must be listed, or
    // the restored index would not open.
    let listed: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    for file in &copy.needed_files {
        let rel = format!("{INDEX_DIR}/{}", file.display());
        if index_dir.join(file).exists() && !listed.contains(rel.as_str()) {
            return Err(invalid(format!(
                "{rel}: the index needs it, but the manifest does not list it"
            )));
        }
    }
    if manifest.index.format != INDEX_FORMAT {
        return Err(invalid(format!(
            "the index format is {:?}; this build reads {INDEX_FORMAT:?}",
            manifest.index.format
        )));
    }
    let docs = copy.documents;
    if docs != manifest.index.documents {
        return Err(invalid(format!(
            "the index holds {docs} documents, the manifest says {}",
            manifest.index.documents
        )));
    }
    if copy.opened_documents != docs {
        return Err(invalid("the index's segments disagree with its meta.json"));
    }
    let state = copy.state;
    if state.repository_id != manifest.index.completion_state.repository_id {
        return Err(invalid(format!(
            "the index belongs to repository {:?}, the manifest's index part says {:?}",
            state.repository_id, manifest.index.completion_state.repository_id
        )));
    }
    if state != manifest.index.completion_state {
        return Err(invalid(format!(
            "positions inconsistent: the index is at {state}, the manifest says {}",
            manifest.index.completion_state
        )));
    }
    if !state.repository_id.is_empty() && state.repository_id != manifest.repository_id {
        return Err(invalid(
            "the index belongs to another repository than the manifest",
        ));
    }
    Ok(state)
}
