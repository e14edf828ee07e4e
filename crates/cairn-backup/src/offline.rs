//! A backup of a stopped repository (`cairn backup create --data DIR --to OUT`): the checks
//! that keep it from writing where Cairn would later delete or overwrite it, and from
//! binding an index its database does not vouch for, then [`run_backup`] from the files on
//! disk. The caller holds the data folder's lock: no server runs.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_store::{CancelToken, Store};

use crate::error::{BackupError, Result};
use crate::files::{is_within, same_path};
use crate::job::target_path;
use crate::manifest::{BackupKind, Manifest};
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
    let refused = |m: String| Err(BackupError::Refused(m));
    let (data, to) = (backup.data_dir, backup.to);
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
    let Some((state, _)) = cairn_index::stored_state(&index_dir)? else {
        return refused(format!(
            "{} has no index; start the repository once (it rebuilds the index) before \
             backing it up",
            data.display()
        ));
    };
    // A backup binds an index to its database: one the next start would repair or rebuild
    // would give a backup that verify and restore refuse.
    let repository = backup.store.repository_id().to_string();
    let why = if !state.repository_id.is_empty() && state.repository_id != repository {
        Some("the index belongs to another repository".to_string())
    } else {
        cairn_index::divergence(&backup.store, &state)?
    };
    if let Some(why) = why {
        return refused(format!(
            "the index of {} cannot be trusted against its database: {why}; start the \
             repository once (it repairs the index) before backing it up",
            data.display()
        ));
    }
    // `--to DIR/backups/NAME` before any online backup made `DIR/backups`.
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(crate::error::io(format!(
            "create the folder {}",
            parent.display()
        )))?;
    }
    let source = StoppedSource {
        store: backup.store.clone(),
        index_dir,
    };
    run_backup(&source, backup.kind, to, info, cancel)
}
