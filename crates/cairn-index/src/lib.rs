//! # cairn-index
//!
//! The search index of a Cairn repository: a Tantivy index derived from the database's
//! activity log, and the machinery that keeps it trustworthy.
//!
//! - [`IndexSchema`] maps content types to index fields; [`document::build`] makes one
//!   document per item.
//! - [`Indexer`] is the only writer: it applies activities in batches and commits the
//!   [`CompletionState`] (`LastActivityId` and gaps) in the same commit. Opening it rebuilds
//!   an empty index, repairs one that is ahead of the database, and catches up.
//! - [`Indexer::check_integrity`] compares the index with the database.
//! - [`Indexer::replace_with`] swaps a new index (rebuilt, or restored) in for the live one
//!   while it serves.
//! - [`date_range::DateRangeQuery`] answers a date range from the date's column;
//!   [`columns::OpenColumns`] keeps the columns every query reads open per segment.
//! - [`search::search`] runs a query with sort and paging and returns item ids.
#![warn(missing_docs)]

mod catch_up;
pub mod columns;
mod completion;
pub mod date_range;
pub mod document;
mod error;
mod indexer;
pub mod integrity;
mod rebuild;
mod schema;
pub mod search;
mod snapshot;
mod swap;
mod writer;

pub use completion::{divergence, judge_divergence, CompletionState, Gap, PAYLOAD_FORMAT};
pub use error::{IndexError, Result};
pub use indexer::{
    index_exists, stored_state, CatchUpReport, Indexer, IndexerOptions, OpenReport,
    RebuildProgress, StartupAction,
};
pub use integrity::{Difference, DifferenceKind, IntegrityReport};
pub use schema::{names, IndexSchema, IndexedAs, KEYWORD_TOKENIZER, TEXT_TOKENIZER};
pub use search::{search, SearchRequest, SearchResult, SortField};
pub use snapshot::{IndexCopy, IndexSnapshot, INDEX_FORMAT};
pub use swap::{beside_dir, recover_interrupted_swap, replaced_dir, Replaced, SwapStep};
