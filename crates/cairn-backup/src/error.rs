//! The backup crate's error type.

use thiserror::Error;

/// Errors of backups, verification and restores.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The target name climbs out of the backup folder or is not a plain name.
    #[error("invalid backup target {0:?}: give a plain folder name under the backup folder")]
    BadTarget(String),
    /// The object store (S3) failed or refused: unreachable, credentials, a bucket missing.
    #[error("{0}")]
    Storage(String),
    /// No finished backup (or no file of one) by that name.
    #[error("{0}")]
    NotFound(String),
    /// The target already holds something.
    #[error("backup target {0:?} already exists")]
    TargetExists(String),
    /// Another process of the same database (a search replica) runs a backup now.
    #[error("{0}")]
    Busy(String),
    /// The backup was canceled by its caller.
    #[error("the backup was canceled")]
    Canceled,
    /// The folder is not a usable backup; the message names the first problem.
    #[error("not a valid backup: {0}")]
    Invalid(String),
    /// The restore cannot run against this target; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The backup belongs to another repository.
    #[error("the backup belongs to repository {backup}, but the data folder holds repository {current}; use --force to restore it anyway")]
    OtherRepository {
        /// The backup's repository id.
        backup: String,
        /// The data folder's repository id.
        current: String,
    },
    /// A file operation failed. The cause is part of the message, not a separate source,
    /// so that a printed error chain names it once.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        cause: std::io::Error,
    },
    /// The index failed.
    #[error(transparent)]
    Index(#[from] cairn_index::IndexError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
}

/// Result alias of the backup crate.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Fails the step `point` (`backup::manifest`, ...) when that failure point is configured:
/// a named failure point (see `cairn_store::fault`), compiled in only for tests.
pub(crate) fn failure_point(point: &str, context: &str) -> Result<()> {
    fail::fail_point!(point, |m| Err(BackupError::Io {
        context: context.to_string(),
        cause: cairn_store::fault::injected(point, m),
    }));
    let _ = (point, context);
    Ok(())
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |cause| BackupError::Io { context, cause }
}
