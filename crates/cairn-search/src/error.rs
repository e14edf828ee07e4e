//! Why a search failed: the question (a query that does not parse or compile), or the
//! index.

use thiserror::Error;

/// Errors of a search.
#[derive(Debug, Error)]
pub enum SearchError {
    /// The query or filter is not valid; the message says where and why.
    #[error(transparent)]
    Query(#[from] cairn_query::QueryError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] cairn_index::IndexError),
    /// Tantivy failed reading the index.
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}
