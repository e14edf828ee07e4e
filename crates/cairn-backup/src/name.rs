//! A backup's name: one rule for the server's backup folder and for repositories.

use std::path::{Path, PathBuf};

use crate::error::{BackupError, Result};

/// The server's backup history, beside its backups (`DIR/backups/history.json`).
pub(crate) const HISTORY_FILE: &str = "history.json";

/// Checks that `name` is a backup's name: a plain folder name (no `/`, `\\`, control
/// characters, not starting with `.`, at most 100 bytes) that is not the history's.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 100
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
        || name.starts_with('.')
        || name.starts_with(HISTORY_FILE)
    {
        return Err(BackupError::BadTarget(name.to_string()));
    }
    Ok(())
}

/// Checks that `name` is a plain folder name and returns its path under `root`.
pub fn target_path(root: &Path, name: &str) -> Result<PathBuf> {
    let bad = || BackupError::BadTarget(name.to_string());
    check_name(name)?;
    let path = root.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => Err(bad()),
        Ok(_) => Err(BackupError::TargetExists(name.to_string())),
        Err(_) => Ok(path),
    }
}
