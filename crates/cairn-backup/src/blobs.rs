//! The files' blobs in a repository backup: exactly the blobs its database copy names,
//! under `blobs/ab/HASH`, each checked against its name. A blob the previous backup in the
//! same folder holds is hard-linked (content addressing makes every backup incremental in
//! its blobs); restore puts them into the target's blob store before the database that
//! names them; verify checks that every named blob is there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cairn_store::durable::{sync_dir, sync_files};
use cairn_store::files::{referenced_blobs_in_backup, BlobStore, StagedFile};
use cairn_store::{CancelToken, DatabaseBackup, DatabaseUrl};

use crate::error::{io, BackupError, Result};
use crate::files::copy_stream_checksummed;
use crate::identity::unchanged_since;
use crate::manifest::{blob_path, FileEntry, Manifest, DATABASE_DIR};

/// The blobs named by the database copy `db` of the backup in `dir`.
pub(crate) fn named_by(dir: &Path, db: &DatabaseBackup) -> Result<BTreeMap<String, u64>> {
    let path = dir.join(DATABASE_DIR).join(&db.file_name);
    Ok(referenced_blobs_in_backup(db.kind, &path)?)
}

/// An earlier backup whose blobs may be linked: its folder, manifest and when its manifest
/// was written.
pub(crate) type Earlier<'a> = Option<(&'a Path, &'a Manifest, SystemTime)>;

/// Copies into the backup `target` every blob its database copy `db` names, from `live`
/// (or links it from `earlier`); returns their manifest entries. `copied` is told of
/// every byte, `file_done` of every blob.
pub(crate) fn back_up(
    live: &dyn BlobStore,
    target: &Path,
    db: &DatabaseBackup,
    earlier: Earlier<'_>,
    copied: &mut dyn FnMut(u64),
    file_done: &mut dyn FnMut(),
    cancel: &CancelToken,
) -> Result<Vec<FileEntry>> {
    let named = named_by(target, db)?;
    let mut entries = Vec::with_capacity(named.len());
    let mut written: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (hash, size) in named {
        if cancel.is_cancelled() {
            return Err(BackupError::Canceled);
        }
        let rel = blob_path(&hash);
        let dst = target.join(&rel);
        if let Some(parent) = dst.parent() {
            if !parent.is_dir() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("create {}", parent.display())))?;
                dirs.push(parent.to_path_buf());
            }
        }
        let linked = earlier.and_then(|(dir, m, written_at)| {
            let e = m.files.iter().find(|e| e.path == rel && e.sha256 == hash)?;
            let src = dir.join(&rel);
            // As for index files: only a copy untouched since that backup was finished.
            (unchanged_since(&src, e.size, written_at) && std::fs::hard_link(&src, &dst).is_ok())
                .then(|| e.clone())
        });
        let entry = match linked {
            Some(e) => {
                copied(e.size);
                e
            }
            None => {
                let (mut reader, _) = live.open(&hash)?.ok_or_else(|| {
                    BackupError::Invalid(format!(
                        "the blob {hash} ({size} bytes), named by the database, is missing \
                         from the blob store: run `cairn blob check`"
                    ))
                })?;
                let (sha256, n) = copy_stream_checksummed(&mut reader, &rel, &dst, cancel, copied)?;
                if sha256 != hash {
                    let _ = std::fs::remove_file(&dst);
                    return Err(BackupError::Invalid(format!(
                        "the blob {hash} in the blob store is damaged (its bytes hash to \
                         {sha256}): run `cairn blob check`"
                    )));
                }
                written.push(dst);
                FileEntry {
                    path: rel,
                    size: n,
                    sha256,
                    source: None,
                }
            }
        };
        file_done();
        entries.push(entry);
    }
    sync_files(&written)?;
    for d in &dirs {
        sync_dir(d)?;
    }
    if let Some(top) = dirs.first().and_then(|d| d.parent()) {
        sync_dir(top)?;
    }
    Ok(entries)
}

/// Refuses a backup whose database names a blob the backup does not hold.
pub(crate) fn check_complete(dir: &Path, manifest: &Manifest) -> Result<usize> {
    let Some(db) = &manifest.database else {
        return Ok(0);
    };
    let named = named_by(dir, db)?;
    let held: std::collections::HashSet<&str> =
        manifest.blobs().map(|f| f.sha256.as_str()).collect();
    let missing: Vec<&String> = named
        .keys()
        .filter(|h| !held.contains(h.as_str()))
        .collect();
    if let Some(first) = missing.first() {
        return Err(BackupError::Invalid(format!(
            "the database names {} blob(s) the backup does not hold (the first: {first})",
            missing.len()
        )));
    }
    Ok(named.len())
}

/// Puts the blobs of the backup in `from` into the blob store of `database` (those it
/// lacks), each checked against its name and synced: before the database that names them
/// is swapped in. Returns the bytes copied.
pub(crate) fn restore(
    from: &Path,
    manifest: &Manifest,
    database: &DatabaseUrl,
    progress: &mut dyn FnMut(u64),
    cancel: &CancelToken,
) -> Result<u64> {
    let mut entries = manifest.blobs().peekable();
    if entries.peek().is_none() {
        return Ok(0);
    }
    // Into the blob store the restored database names (an S3 bucket's blobs are most
    // likely there still, and each one there is skipped).
    let named = manifest
        .database
        .as_ref()
        .and_then(|d| d.blob_store.as_deref());
    let store = crate::blob_stores::blob_store_for(database, named)?;
    let mut bytes = 0;
    for f in entries {
        if cancel.is_cancelled() {
            return Err(BackupError::Canceled);
        }
        if store.open(&f.sha256)?.is_some() {
            continue;
        }
        let mut staged = StagedFile::create(&*store)?;
        bytes += staged.copy_from(&from.join(&f.path), progress)?;
        let id = staged.into_blob(&*store)?;
        if id.hash != f.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: checksum mismatch while restoring",
                f.path
            )));
        }
    }
    Ok(bytes)
}
