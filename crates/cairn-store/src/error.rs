//! The store's error type: every way a content operation or a database call can fail.

use thiserror::Error;

/// Errors of the store. Input errors (names, types, fields, values, conflicts) are distinct
/// variants so that callers can map them to client errors; database faults carry their source.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The addressed content (or its parent) does not exist.
    #[error("content not found: {0}")]
    NotFound(String),
    /// A sibling with the same name (case-insensitively) already exists.
    #[error("content already exists: {0}")]
    AlreadyExists(String),
    /// The name is empty, too long or holds a forbidden character.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A path is malformed (it must start with /Root, no empty segments).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The rejected path.
        path: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No content type has this name.
    #[error("unknown content type: {0}")]
    UnknownType(String),
    /// The content type has no field of this name.
    #[error("content type {type_name} has no field {field:?}")]
    UnknownField {
        /// The content type.
        type_name: String,
        /// The field that it lacks.
        field: String,
    },
    /// Another user has this login name (case-insensitively).
    #[error("the login name {0} is taken by another user")]
    LoginTaken(String),
    /// A field value does not fit the field's type.
    #[error("invalid value for field {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: String,
        /// What was expected and what was given.
        reason: String,
    },
    /// The field is maintained by the repository and cannot be written.
    #[error("field {0} is read-only")]
    ReadOnlyField(String),
    /// The operation is not allowed on this content (deleting /Root, moving into itself, ...).
    #[error("operation not allowed: {0}")]
    NotAllowed(String),
    /// The disk of the database is full: nothing of the write was committed.
    #[error("the disk of the database {database} is full ({detail})")]
    DiskFull {
        /// The database (its path, or its redacted URL).
        database: String,
        /// What the database said.
        detail: String,
    },
    /// The caller may not do this (only the administrator changes users and groups).
    #[error("{0}")]
    Forbidden(String),
    /// The database was written by a newer version of Cairn.
    #[error("database schema version {found} is newer than this build supports ({supported}); upgrade cairn")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The database URL is not `sqlite://PATH` or `postgres://...`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    /// The blob store the database names cannot be reached or answered an error.
    #[error("blob store: {0}")]
    BlobStore(String),
    /// The database holds data that this build cannot read (corruption or manual edits).
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    /// A long operation (a backup) was cancelled by its caller; nothing was left behind.
    #[error("cancelled")]
    Cancelled,
    /// An external program (`pg_dump`, `pg_restore`) is missing or failed.
    #[error("{tool}: {message}")]
    Tool {
        /// The program, e.g. `pg_dump`.
        tool: String,
        /// What went wrong: that it is not installed (and how to install it), or its own
        /// error output.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {cause}", .path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error (part of the message, named once in a printed
        /// error chain).
        cause: std::io::Error,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
}

impl StoreError {
    /// A unique-key violation as what it means for a path: an item is there already.
    pub(crate) fn existing_at(self, path: &str) -> StoreError {
        if self.is_unique_violation() {
            StoreError::AlreadyExists(path.to_string())
        } else {
            self
        }
    }

    /// True when the error says the disk (or the quota) of the database is full: SQLite's
    /// SQLITE_FULL, PostgreSQL's disk_full (53100), or ENOSPC/EDQUOT on a file.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Io { cause, .. } => crate::fault::is_disk_full(cause),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// True when the error was caused by the caller's input, not by a fault of the store.
    ///
    /// [`StoreError::Cancelled`] is not an input error either: nothing was wrong with the
    /// request, it was stopped on purpose; callers that cancel check for it by name.
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            StoreError::Sqlite(_)
                | StoreError::Postgres(_)
                | StoreError::DiskFull { .. }
                | StoreError::Corrupt(_)
                | StoreError::SchemaTooNew { .. }
                | StoreError::Cancelled
                | StoreError::Tool { .. }
                | StoreError::Io { .. }
        )
    }

    /// True when the database could not be reached or dropped the connection (PostgreSQL
    /// down, restarting, or a session ended by an administrator): nothing is wrong with
    /// the request, and the same request may succeed once the database is back.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Postgres(e) = self else {
            return false;
        };
        if e.is_closed() {
            return true;
        }
        match e.code() {
            // Class 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown,
            // cannot connect now (starting up or shutting down).
            Some(c) => {
                c.code().starts_with("08") || matches!(c.code(), "57P01" | "57P02" | "57P03")
            }
            // No SQL state: the socket itself failed (refused, reset).
            None => std::error::Error::source(e)
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
        }
    }

    /// An [`StoreError::Io`] for `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, cause: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            cause,
        }
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The server's own message when there is one (`db error` alone names nothing), with its
/// detail and hint.
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; {h}"));
            }
            m
        }
        None => e.to_string(),
    }
}
