//! A query wrapper that keeps Tantivy's phrase scorers away from `seek_danger`.
//!
//! Tantivy 0.27's `PhraseScorer::seek_danger` asserts (in debug builds) that the target is
//! not behind its current document, which the `seek_danger` contract does not promise: an
//! excluded phrase (`-"a b"`, `NOT Body:"x y"`) makes a debug build panic while searching.
//! Excluded sub-queries that are themselves boolean over a fast-field range hit a second
//! one (an overflow in `RangeDocSet::seek_danger`).
//!
//! [`SafeSeek`] wraps such a query; its scorer answers `seek_danger` with the default,
//! `seek`-based implementation, which only moves forward. Results are unchanged.

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, Term};

/// Wraps a query whose scorer must not receive `seek_danger` calls.
#[derive(Debug)]
pub(crate) struct SafeSeek(pub Box<dyn Query>);

impl Clone for SafeSeek {
    fn clone(&self) -> Self {
        SafeSeek(self.0.box_clone())
    }
}

impl SafeSeek {
    /// `query`, wrapped.
    pub fn wrap(query: Box<dyn Query>) -> Box<dyn Query> {
        Box::new(SafeSeek(query))
    }
}

impl Query for SafeSeek {
    fn weight(&self, enable_scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(SafeSeekWeight(self.0.weight(enable_scoring)?)))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.0.query_terms(visitor)
    }
}

struct SafeSeekWeight(Box<dyn Weight>);

impl Weight for SafeSeekWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(SafeSeekScorer(self.0.scorer(reader, boost)?)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.0.explain(reader, doc)
    }
}

struct SafeSeekScorer(Box<dyn Scorer>);

impl DocSet for SafeSeekScorer {
    fn advance(&mut self) -> DocId {
        self.0.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.0.seek(target)
    }

    // `seek_danger` is left to the default: `seek` when behind the target, else compare.

    fn doc(&self) -> DocId {
        self.0.doc()
    }

    fn size_hint(&self) -> u32 {
        self.0.size_hint()
    }

    fn cost(&self) -> u64 {
        self.0.cost()
    }
}

impl Scorer for SafeSeekScorer {
    fn score(&mut self) -> Score {
        self.0.score()
    }
}
