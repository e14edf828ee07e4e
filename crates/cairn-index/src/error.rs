//! The index's error type.

use thiserror::Error;

/// Errors of the index and the indexer.
#[derive(Debug, Error)]
pub enum IndexError {
    /// Another process (a running server) holds the index's writer lock.
    #[error("the index at {0} is in use by another process (a running `cairn serve`?); stop it first, or use --server")]
    Locked(String),
    /// Tantivy failed.
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Opening the index folder failed.
    #[error("index folder: {0}")]
    OpenDirectory(#[from] tantivy::directory::error::OpenDirectoryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    /// The commit payload could not be read.
    #[error("the index's completion state is unreadable: {0}")]
    BadPayload(String),
    /// A search asked for something the index cannot do.
    #[error("invalid search: {0}")]
    InvalidSearch(String),
    /// The indexer was asked to stop.
    #[error("the indexer is shutting down")]
    ShuttingDown,
    /// A file system operation failed (the cause is part of the message, named once in a
    /// printed error chain).
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        cause: std::io::Error,
    },
}

/// Result alias of the index.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
