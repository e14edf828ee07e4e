//! `cairn restore`: verify, refuse what must not be restored, copy into a staging folder,
//! then swap in. An interrupted restore leaves the old data usable: nothing of it is
//! touched until the new copies are complete and checked, and each swap is a rename.
//!
//! The caller holds the data folder's lock (no server may run beside a restore).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_store::durable::{sync_dir, sync_files};
use cairn_store::{CancelToken, DatabaseKind, DatabaseUrl};

use crate::error::{failure_point, io, BackupError, Result};
use crate::files::copy_checksummed;
use crate::manifest::{FileEntry, Manifest, BLOBS_DIR, DATABASE_DIR, INDEX_DIR};

/// What to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    /// The index and the database.
    Both,
    /// The index alone (the next start catches it up).
    IndexOnly,
    /// The database alone; the index is emptied, and the next start rebuilds it.
    DatabaseOnly,
}

/// Where to restore to.
#[derive(Clone, Debug)]
pub struct RestoreTarget {
    /// The data folder.
    pub data_dir: PathBuf,
    /// Its database.
    pub database: DatabaseUrl,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    /// The manifest of the restored backup.
    pub manifest: Manifest,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Seconds taken, verify included.
    pub seconds: f64,
    /// Warnings (a forced restore of another repository's backup).
    pub warnings: Vec<String>,
}

fn same_fs_rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io(format!("rename {} to {}", from.display(), to.display())))
}

/// The repository id of the database at `url`, if it holds one.
fn current_repository(url: &DatabaseUrl) -> Result<Option<String>> {
    Ok(cairn_store::existing_repository_id(url)?)
}

/// Refuses while Cairn sessions are connected to the PostgreSQL database `url`: a web node
/// still connected would go on writing into the restored database (the data folder's lock
/// covers a local server only).
fn refuse_live_sessions(target: &DatabaseUrl) -> Result<()> {
    let DatabaseUrl::Postgres(url) = target else {
        return Ok(());
    };
    let live = cairn_store::cairn_sessions(url)?;
    if live.is_empty() {
        return Ok(());
    }
    Err(BackupError::Refused(format!(
        "{} is in use by {} Cairn session(s): {}; stop every web node and the search \
         service first",
        target.redacted(),
        live.len(),
        live.join(", ")
    )))
}

/// Refuses a restore from `from` into `data_dir` when the two overlap: the data folder in
/// the backup (the restore would change the backup it restores), or the backup in the index
/// it would replace. A backup in `DIR/backups` is where backups live, and fine.
pub fn refuse_overlap(from: &Path, data_dir: &Path, database: &DatabaseUrl) -> Result<()> {
    if crate::files::is_within(data_dir, from) {
        return Err(BackupError::Refused(format!(
            "the data folder {} lies inside the backup {}: the restore would change the \
             backup it restores; give another --data",
            data_dir.display(),
            from.display()
        )));
    }
    if crate::files::is_within(from, &data_dir.join("index")) {
        return Err(BackupError::Refused(format!(
            "the backup {} lies inside the index it would replace; move it out first",
            from.display()
        )));
    }
    if let DatabaseUrl::Sqlite(db) = database {
        if crate::files::is_within(db, from) || crate::files::is_within(db, &data_dir.join("index"))
        {
            return Err(BackupError::Refused(format!(
                "the database {} would lie inside the backup or inside the index, which the \
                 restore replaces; give another --database",
                db.display()
            )));
        }
    }
    Ok(())
}

/// Restores the backup in `from` into `target`. `cancel` stops it while it verifies and
/// copies into the staging folder (which is then removed: nothing changed); at the swap it
/// [commits](CancelToken::commit) and runs to its end, a few renames.
pub fn restore(
    from: &Path,
    target: &RestoreTarget,
    mode: RestoreMode,
    force: bool,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<RestoreReport> {
    let started = Instant::now();
    refuse_overlap(from, &target.data_dir, &target.database)?;
    let report =
        crate::verify::verify_parts(from, mode != RestoreMode::IndexOnly, &|_, _| {}, cancel)?;
    let manifest = report.manifest;
    let mut warnings = Vec::new();
    if mode != RestoreMode::IndexOnly && manifest.database.is_none() {
        return Err(BackupError::Refused(
            "this backup holds the index alone; restore it with --index-only".into(),
        ));
    }
    if let Some(db) = manifest
        .database
        .as_ref()
        .filter(|_| mode != RestoreMode::IndexOnly)
    {
        match (&db.kind, &target.database) {
            (DatabaseKind::Sqlite, DatabaseUrl::Sqlite(_)) => {}
            (DatabaseKind::Postgres, DatabaseUrl::Postgres(_)) => {
                refuse_live_sessions(&target.database)?
            }
            (kind, url) => {
                return Err(BackupError::Refused(format!(
                    "the backup holds a {kind:?} database, but the target database is {}: \
                     give --database of the same kind",
                    url.redacted()
                )))
            }
        }
    }
    // The database now in place: its repository, if it can be read at all.
    let current = match current_repository(&target.database) {
        Ok(current) => current,
        // A damaged database is what a restore is for; it goes aside like any other.
        Err(e) if force && mode != RestoreMode::IndexOnly => {
            let w = format!("the current database cannot be read ({e}); replacing it (--force)");
            tracing::warn!("{w}");
            warnings.push(w);
            None
        }
        Err(e) => {
            return Err(BackupError::Refused(format!(
                "the current database {} cannot be read ({e}){}",
                target.database.redacted(),
                if mode == RestoreMode::IndexOnly {
                    ": an index alone cannot be restored beside it; restore the database too"
                } else {
                    ": restore with --force to replace it"
                }
            )))
        }
    };
    if mode == RestoreMode::IndexOnly && current.is_none() {
        // An index alone is of use only beside its repository's database.
        return Err(BackupError::Refused(format!(
            "there is no repository in {}: an index alone is restored beside its database",
            target.database.redacted()
        )));
    }
    if let Some(current) = current {
        if current != manifest.repository_id {
            if !force {
                return Err(BackupError::OtherRepository {
                    backup: manifest.repository_id.clone(),
                    current,
                });
            }
            let w = format!(
                "restoring a backup of repository {} over repository {current} (--force)",
                manifest.repository_id
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    let data = &target.data_dir;
    std::fs::create_dir_all(data).map_err(io(format!("create {}", data.display())))?;
    let staging = data.join(".restore-staging");
    let old = data.join(".restore-old");
    // What an interrupted restore moved aside may be the only copy of the data it replaced.
    let kept = std::fs::read_dir(&old).is_ok_and(|mut d| d.next().is_some());
    if kept {
        return Err(BackupError::Refused(format!(
            "{} holds what an interrupted restore moved aside (the data from before it); \
             move it elsewhere (or delete it), then restore again",
            old.display()
        )));
    }
    for dir in [&staging, &old] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(format!("remove {}", dir.display())))?;
        }
    }
    std::fs::create_dir(&staging).map_err(io(format!("create {}", staging.display())))?;
    std::fs::create_dir(&old).map_err(io(format!("create {}", old.display())))?;

    // 1. Copy into staging, checking every checksum again.
    let wanted: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| match mode {
            RestoreMode::Both => !f.path.starts_with(&format!("{BLOBS_DIR}/")),
            RestoreMode::IndexOnly => f.path.starts_with(&format!("{INDEX_DIR}/")),
            RestoreMode::DatabaseOnly => f.path.starts_with(&format!("{DATABASE_DIR}/")),
        })
        .cloned()
        .collect();
    let blob_bytes: u64 = if mode == RestoreMode::IndexOnly {
        0
    } else {
        manifest.blobs().map(|f| f.size).sum()
    };
    let total: u64 = wanted.iter().map(|f| f.size).sum::<u64>() + blob_bytes;
    // The files' blobs go straight into the target's blob store (those it lacks), before
    // the database that names them: blobs are immutable and named by their bytes, so one
    // already there is the same, and one added for a restore that then fails is only an
    // unreferenced blob.
    let staged = stage(from, &staging, &wanted, total, progress, cancel).and_then(|()| {
        if mode == RestoreMode::IndexOnly {
            return Ok(());
        }
        let base: u64 = wanted.iter().map(|f| f.size).sum();
        let mut done = base;
        crate::blobs::restore(
            from,
            &manifest,
            &target.database,
            &mut |n| {
                done += n;
                progress(done, total);
            },
            cancel,
        )
        .map(|_| ())
    });
    if let Err(e) = staged {
        // Nothing was swapped yet: leave no staging behind (`old` is still empty).
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&old);
        return Err(e);
    }

    // 2. Swap in.
    // The point of no return: a cancel that came during the last copy or sync wins, and
    // from here on one is refused (Ctrl-C says the restore is finishing).
    let committed = failure_point("restore::swap", "swap the restored data in")
        .and_then(|()| cancel.commit().map_err(|_| BackupError::Canceled));
    if let Err(e) = committed {
        // Nothing was swapped yet: as after a failed staging.
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir_all(&old);
        return Err(e);
    }
    if mode != RestoreMode::IndexOnly {
        let db = manifest
            .database
            .as_ref()
            .ok_or_else(|| BackupError::Invalid("the manifest has no database".into()))?;
        let staged = staging.join(DATABASE_DIR).join(&db.file_name);
        match (&db.kind, &target.database) {
            (DatabaseKind::Sqlite, DatabaseUrl::Sqlite(path)) => swap_sqlite(&staged, path, &old)?,
            (DatabaseKind::Postgres, DatabaseUrl::Postgres(url)) => {
                // Once more, now that staging is done: a node may have started meanwhile.
                let loaded = refuse_live_sessions(&target.database).and_then(|()| {
                    cairn_store::restore_postgres(&staged, url, cairn_store::RESTORE_LOCK_TIMEOUT)
                        .map_err(BackupError::from)
                });
                if let Err(e) = loaded {
                    // pg_restore runs in one transaction, and nothing was swapped yet: the
                    // repository is as it was, and so leaves no staging behind.
                    let _ = std::fs::remove_dir_all(&staging);
                    let _ = std::fs::remove_dir_all(&old);
                    return Err(e);
                }
            }
            (kind, url) => {
                return Err(BackupError::Invalid(format!(
                    "the backup holds a {kind:?} database but the target is {}",
                    url.redacted()
                )))
            }
        }
    }
    let index = data.join("index");
    // Between the two swaps: the restored database beside the old index, which the next
    // start repairs (`.restore-old` and `.restore-staging` are left for a person).
    failure_point("restore::swap_index", "swap the restored index in")?;
    match mode {
        RestoreMode::Both | RestoreMode::IndexOnly => {
            if index.exists() {
                same_fs_rename(&index, &old.join("index"))?;
            }
            same_fs_rename(&staging.join(INDEX_DIR), &index)?;
        }
        RestoreMode::DatabaseOnly => {
            // Restoring without an index: the next start rebuilds it.
            if index.exists() {
                same_fs_rename(&index, &old.join("index"))?;
            }
        }
    }
    sync_dir(data)?;
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&staging);
    let blob_files = if mode == RestoreMode::IndexOnly {
        0
    } else {
        manifest.blobs().count() as u64
    };
    Ok(RestoreReport {
        manifest,
        files: wanted.len() as u64 + blob_files,
        bytes: total,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Copies the `wanted` files of the backup `from` into `staging`, checking every checksum
/// again, and syncs them.
fn stage(
    from: &Path,
    staging: &Path,
    wanted: &[FileEntry],
    total: u64,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<()> {
    for dir in [INDEX_DIR, DATABASE_DIR] {
        std::fs::create_dir(staging.join(dir)).map_err(io("create the staging folders"))?;
    }
    copy_listed(from, staging, "", wanted.iter(), total, progress, cancel)?;
    sync_dir(&staging.join(INDEX_DIR))?;
    sync_dir(&staging.join(DATABASE_DIR))?;
    Ok(())
}

/// Copies each of `files` of the backup in `from` to `to` (its path there without the
/// prefix `strip`), each checked against its manifest checksum, all synced. `total` is
/// the bytes of them all, for `progress`.
pub(crate) fn copy_listed<'a>(
    from: &Path,
    to: &Path,
    strip: &str,
    files: impl Iterator<Item = &'a FileEntry>,
    total: u64,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<()> {
    let mut done = 0u64;
    let mut copied: Vec<PathBuf> = Vec::new();
    for f in files {
        fail::fail_point!("restore::stage_file");
        let dst = to.join(f.path.strip_prefix(strip).unwrap_or(&f.path));
        let (sum, _) = copy_checksummed(&from.join(&f.path), &dst, cancel, &mut |n| {
            done += n;
            progress(done, total);
        })?;
        if sum != f.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: checksum mismatch while copying",
                f.path
            )));
        }
        copied.push(dst);
    }
    sync_files(&copied)?;
    Ok(())
}

/// Puts the SQLite file `staged` in place of `db`. The old database is checkpointed first
/// (its WAL emptied into the main file), then its files are kept in `old` until the new one
/// is in place; the final step is one atomic rename.
fn swap_sqlite(staged: &Path, db: &Path, old: &Path) -> Result<()> {
    if db.exists() {
        // Best effort: a damaged database (restored over with --force) may not checkpoint;
        // its side files go aside with it all the same.
        if let Err(e) = cairn_store::checkpoint_sqlite(db) {
            tracing::warn!("the current database did not checkpoint ({e}); kept as it is");
        }
        std::fs::hard_link(db, old.join("cairn.db")).map_err(io("keep the old database"))?;
    }
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            same_fs_rename(&side, &old.join(format!("cairn.db{suffix}")))?;
        }
    }
    if let Some(parent) = db.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    same_fs_rename(staged, db)
}
