//! A backup of a stopped repository (`cairn backup create --data DIR --to OUT`): the checks
//! that keep it from writing where Cairn would later delete or overwrite it, and from
//! binding an index its database does not vouch for, then [`run_backup`] from the files on
//! disk (or, into S3 or encrypted, [`backup_into`]). The caller holds the data folder's
//! lock: no server runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_store::{CancelToken, Store};

use crate::error::{BackupError, Result};
use crate::files::{is_within, same_path};
use crate::manifest::{BackupKind, Manifest};
use crate::name::target_path;
use crate::repo::create::{backup_into, Destination, Made};
use crate::run::{run_backup, BackupInfo, StoppedSource};

/// What to back up, and where.
pub struct OfflineBackup<'a> {
    /// The data folder (its `index/`; its `backups/` is where a backup may lie inside it).
    pub data_dir: &'a Path,
    /// Its database, opened.
    pub store: Arc<Store>,
    /// The new backup folder.
    pub to: &'a Path,
    /// Index alone, or index and database.
    pub kind: BackupKind,
}

/// Checks `backup` (see the module documentation) and runs it; `info` carries its progress
/// and named steps, `cancel` stops it (leaving no folder).
pub fn backup_stopped(
    backup: &OfflineBackup<'_>,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<Manifest> {
    let (data, to) = (backup.data_dir, backup.to);
    check_folder(data, to)?;
    check_trusted(data, &backup.store)?;
    // `--to DIR/backups/NAME` before any online backup made `DIR/backups`.
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(crate::error::io(format!(
            "create the folder {}",
            parent.display()
        )))?;
    }
    let source = StoppedSource {
        store: backup.store.clone(),
        index_dir: data.join("index"),
    };
    run_backup(&source, backup.kind, to, info, cancel)
}

/// A backup of a stopped repository into a repository (`dest`): a plain one as
/// [`backup_stopped`] makes it; a packed one (S3, or encrypted) staged in
/// `DIR/backups/.upload-NAME` and uploaded.
pub fn backup_stopped_into(
    data_dir: &Path,
    store: Arc<Store>,
    dest: &Destination,
    kind: BackupKind,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<Made> {
    if let (true, Some(dir)) = (dest.is_plain(), dest.repo.local_dir()) {
        let to = dir.join(&dest.name);
        let manifest = backup_stopped(
            &OfflineBackup {
                data_dir,
                store,
                to: &to,
                kind,
            },
            info,
            cancel,
        )?;
        let stored_bytes = manifest.files.iter().map(|f| f.size).sum();
        return Ok(Made {
            manifest,
            stored_bytes,
        });
    }
    if let Some(dir) = dest.repo.local_dir() {
        check_folder(data_dir, &dir.join(&dest.name))?;
    }
    check_trusted(data_dir, &store)?;
    let source = StoppedSource {
        store,
        index_dir: data_dir.join("index"),
    };
    let staging = crate::repo::create::staging_in(&data_dir.join("backups"), &dest.name);
    backup_into(&source, kind, dest, &staging, info, cancel)
}

/// Refuses a backup folder `to` where Cairn would later delete or overwrite it: inside the
/// index, or inside the data folder but for `DIR/backups/NAME`.
pub fn check_folder(data: &Path, to: &Path) -> Result<()> {
    let refused = |m: String| Err(BackupError::Refused(m));
    let index_dir = data.join("index");
    if is_within(to, &index_dir) {
        return refused(format!(
            "{} lies inside the index {}, which the next rebuild empties: back up elsewhere",
            to.display(),
            index_dir.display()
        ));
    }
    // Inside the data folder only as a backup of its own backups folder: elsewhere in it
    // (a restore's staging, the history file) Cairn would delete or overwrite it.
    let backups = data.join("backups");
    if is_within(to, data) {
        let in_backups = to.parent().is_some_and(|p| same_path(p, &backups));
        let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !in_backups || target_path(&backups, name).is_err() {
            return refused(format!(
                "{} lies inside the data folder {}: back up to {}/NAME (a plain name) or \
                 outside it",
                to.display(),
                data.display(),
                backups.display()
            ));
        }
    }
    Ok(())
}

/// Refuses a stopped repository whose index its database does not vouch for (none, of
/// another repository, ahead or diverged): a backup binds the two, and verify and restore
/// would refuse what it bound.
fn check_trusted(data: &Path, store: &Store) -> Result<()> {
    let refused = |m: String| Err(BackupError::Refused(m));
    let Some((state, _)) = cairn_index::stored_state(&data.join("index"))? else {
        return refused(format!(
            "{} has no index; start the repository once (it rebuilds the index) before \
             backing it up",
            data.display()
        ));
    };
    let repository = store.repository_id().to_string();
    let why = if !state.repository_id.is_empty() && state.repository_id != repository {
        Some("the index belongs to another repository".to_string())
    } else {
        cairn_index::divergence(store, &state)?
    };
    if let Some(why) = why {
        return refused(format!(
            "the index of {} cannot be trusted against its database: {why}; start the \
             repository once (it repairs the index) before backing it up",
            data.display()
        ));
    }
    Ok(())
}
