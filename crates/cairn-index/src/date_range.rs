//! A date range answered from the date's column, each segment's column opened once.
//!
//! Dates are columns only (see [`crate::IndexSchema`]); Tantivy's `RangeQuery` answers a
//! range from the column too, but opens the column on every query, which for a block-wise
//! linear column decodes the header of every block of 512 values (see
//! [`crate::columns`]). [`DateRangeQuery`] reads the column through the index's
//! [`OpenColumns`]. The matching itself is the column's own
//! (`get_docids_for_value_range`), in growing windows of documents.

use std::ops::{Bound, RangeInclusive};

use tantivy::columnar::{Cardinality, Column, MonotonicallyMappableToU64};
use tantivy::query::{
    AllScorer, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::schema::Field;
use tantivy::{
    DocId, DocSet, Score, SeekDangerResult, SegmentReader, TantivyError, Term, TERMINATED,
};

use crate::columns::OpenColumns;

/// The documents whose date `field` lies within the bounds (date terms of that field, as
/// for Tantivy's `RangeQuery`), every match scoring the same.
#[derive(Clone, Debug)]
pub struct DateRangeQuery {
    field: Field,
    lower: Bound<u64>,
    upper: Bound<u64>,
    columns: OpenColumns,
}

impl DateRangeQuery {
    /// A range of `field` between `lower` and `upper` (date terms of `field`), read through
    /// `columns`.
    pub fn new(
        field: Field,
        lower: Bound<Term>,
        upper: Bound<Term>,
        columns: &OpenColumns,
    ) -> tantivy::Result<DateRangeQuery> {
        let value = |t: Term| -> tantivy::Result<u64> {
            if t.field() != field {
                return Err(TantivyError::InvalidArgument(
                    "a date range bound of another field".into(),
                ));
            }
            t.value().as_date().map(|d| d.to_u64()).ok_or_else(|| {
                TantivyError::InvalidArgument("a date range bound that is not a date".into())
            })
        };
        let map = |b: Bound<Term>| -> tantivy::Result<Bound<u64>> {
            Ok(match b {
                Bound::Included(t) => Bound::Included(value(t)?),
                Bound::Excluded(t) => Bound::Excluded(value(t)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        Ok(DateRangeQuery {
            field,
            lower: map(lower)?,
            upper: map(upper)?,
            columns: columns.clone(),
        })
    }

    /// The values within the bounds, given the column's least and greatest (`None`: none).
    fn values(&self, min: u64, max: u64) -> Option<RangeInclusive<u64>> {
        let start = match self.lower {
            Bound::Included(v) => v,
            Bound::Excluded(v) => v.checked_add(1)?,
            Bound::Unbounded => min,
        };
        let end = match self.upper {
            Bound::Included(v) => v,
            Bound::Excluded(v) => v.checked_sub(1)?,
            Bound::Unbounded => max,
        };
        (start <= end && start <= max && end >= min).then(|| start.max(min)..=end.min(max))
    }
}

impl Query for DateRangeQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        if let Some(searcher) = scoring.searcher() {
            self.columns.keep_only(searcher);
        }
        Ok(Box::new(self.clone()))
    }
}

impl Weight for DateRangeQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let Some(column) = self.columns.date(reader, self.field)? else {
            return Ok(Box::new(EmptyScorer));
        };
        let Some(values) = self.values(column.min_value(), column.max_value()) else {
            return Ok(Box::new(EmptyScorer));
        };
        if column.index.get_cardinality() == Cardinality::Full
            && *values.start() <= column.min_value()
            && *values.end() >= column.max_value()
        {
            return Ok(Box::new(ConstScorer::new(
                AllScorer::new(reader.max_doc()),
                boost,
            )));
        }
        Ok(Box::new(ConstScorer::new(
            ColumnRange::new(column, values),
            boost,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!(
                "document {doc} does not match"
            )));
        }
        Ok(Explanation::new("date range", scorer.score()))
    }
}

/// The first window of documents a [`ColumnRange`] reads; each next one is twice as long,
/// up to [`LAST_WINDOW`]. A first page needs a few hundred; a count reads them all.
const FIRST_WINDOW: u32 = 256;
const LAST_WINDOW: u32 = 1 << 16;

/// The documents of one segment whose value in `column` is within `values`, in order.
struct ColumnRange {
    column: Column<u64>,
    values: RangeInclusive<u64>,
    /// The next document not yet read.
    next: DocId,
    window: u32,
    /// Matches of the windows read, from `pos` on not yet visited.
    found: Vec<DocId>,
    pos: usize,
}

impl ColumnRange {
    fn new(column: Column<u64>, values: RangeInclusive<u64>) -> ColumnRange {
        let mut r = ColumnRange {
            column,
            values,
            next: 0,
            window: FIRST_WINDOW,
            found: Vec::new(),
            pos: 0,
        };
        r.read_on();
        r
    }

    /// Reads windows from `next` until one has a match or the segment ends; the current
    /// document is then the first match found (or `TERMINATED`).
    fn read_on(&mut self) -> DocId {
        let end_doc = self.column.num_docs();
        self.found.clear();
        self.pos = 0;
        while self.found.is_empty() && self.next < end_doc {
            let end = self.next.saturating_add(self.window).min(end_doc);
            self.column.get_docids_for_value_range(
                self.values.clone(),
                self.next..end,
                &mut self.found,
            );
            // A document with several values in the range is named once (windows are of
            // documents, so all of a document's values are in one).
            self.found.dedup();
            self.next = end;
            self.window = self.window.saturating_mul(2).min(LAST_WINDOW);
        }
        self.doc()
    }
}

impl DocSet for ColumnRange {
    fn advance(&mut self) -> DocId {
        self.pos += 1;
        if self.pos < self.found.len() {
            return self.found[self.pos];
        }
        self.read_on()
    }

    fn doc(&self) -> DocId {
        self.found.get(self.pos).copied().unwrap_or(TERMINATED)
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc() >= target {
            return self.doc();
        }
        if self.found.last().is_none_or(|&l| l < target) {
            // Past what was read: read on from the target, in short windows again (the
            // next seek may jump as far).
            self.next = self.next.max(target);
            self.window = FIRST_WINDOW;
            self.found.clear();
            self.pos = 0;
            return self.read_on();
        }
        while self.doc() < target {
            self.pos += 1;
        }
        self.doc()
    }

    fn seek_danger(&mut self, target: DocId) -> SeekDangerResult {
        // Whether `target` itself matches is one lookup, not a scan to the next match.
        if target >= self.column.num_docs() {
            return SeekDangerResult::SeekLowerBound(TERMINATED);
        }
        if self
            .column
            .values_for_doc(target)
            .any(|v| self.values.contains(&v))
        {
            self.found.clear();
            self.found.push(target);
            self.pos = 0;
            self.next = target + 1;
            self.window = FIRST_WINDOW;
            SeekDangerResult::Found
        } else {
            SeekDangerResult::SeekLowerBound(target + 1)
        }
    }

    fn size_hint(&self) -> u32 {
        // Unknown without reading; Tantivy's own range guesses a tenth of the documents.
        self.column.num_docs() / 10
    }

    fn cost(&self) -> u64 {
        // Driving it reads the column (as Tantivy's own range says of itself).
        u64::from(self.column.num_docs()) * 4 / 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::{Count, DocSetCollector};
    use tantivy::index::SegmentId;
    use tantivy::query::RangeQuery;
    use tantivy::schema::{DateOptions, DateTimePrecision, Schema, FAST, STRING};
    use tantivy::{doc, DateTime, Index, IndexWriter};

    /// An index of `docs` documents in several segments, most with a date (seconds from a
    /// fixed start, in a pseudo-random order), some without.
    fn index(docs: u32) -> (Index, Field, Field) {
        let mut b = Schema::builder();
        let date = b.add_date_field(
            "PublishDate",
            (DateOptions::default() | FAST).set_precision(DateTimePrecision::Microseconds),
        );
        let name = b.add_text_field("Name", STRING);
        let index = Index::create_in_ram(b.build());
        let mut w: IndexWriter = index.writer_with_num_threads(1, 20_000_000).unwrap();
        for i in 0..docs {
            let n = format!("n{i}");
            if i % 7 == 3 {
                w.add_document(doc!(name => n)).unwrap();
            } else {
                let secs = i64::from((i.wrapping_mul(2_654_435_761)) % 100_000);
                w.add_document(
                    doc!(name => n, date => DateTime::from_timestamp_micros(secs * 1_000_000 + 17)),
                )
                .unwrap();
            }
            if i % 1_500 == 1_499 {
                w.commit().unwrap();
            }
        }
        w.commit().unwrap();
        (index, date, name)
    }

    fn term(f: Field, secs: i64) -> Term {
        Term::from_field_date(f, DateTime::from_timestamp_micros(secs * 1_000_000 + 17))
    }

    #[test]
    fn answers_what_tantivys_range_answers_and_opens_each_column_once() {
        let (index, date, _) = index(6_000);
        let reader = crate::columns::manual_reader(&index);
        let searcher = reader.searcher();
        assert!(searcher.segment_readers().len() >= 4);
        let columns = OpenColumns::default();
        let bounds = [
            (
                Bound::Included(term(date, 100)),
                Bound::Excluded(term(date, 20_000)),
            ),
            (
                Bound::Excluded(term(date, 100)),
                Bound::Included(term(date, 20_000)),
            ),
            (Bound::Unbounded, Bound::Included(term(date, 5))),
            (Bound::Included(term(date, 99_990)), Bound::Unbounded),
            (
                Bound::Included(term(date, 500)),
                Bound::Included(term(date, 500)),
            ),
            (
                Bound::Included(term(date, 7_000)),
                Bound::Excluded(term(date, 7_000)),
            ),
            (
                Bound::Included(term(date, -50)),
                Bound::Included(term(date, 200_000)),
            ),
        ];
        for (lo, hi) in bounds {
            let ours = DateRangeQuery::new(date, lo.clone(), hi.clone(), &columns).unwrap();
            let theirs = RangeQuery::new(lo.clone(), hi.clone());
            let a = searcher.search(&ours, &DocSetCollector).unwrap();
            let b = searcher.search(&theirs, &DocSetCollector).unwrap();
            assert_eq!(a, b, "{lo:?}..{hi:?}");
            assert_eq!(
                searcher.search(&ours, &Count).unwrap(),
                b.len(),
                "{lo:?}..{hi:?}"
            );
        }
        // One column per segment, whatever the number of queries.
        assert_eq!(columns.opened(), searcher.segment_readers().len());
    }

    #[test]
    fn intersected_with_a_term_it_seeks_right() {
        let (index, date, name) = index(4_000);
        let searcher = index.reader().unwrap().searcher();
        let columns = OpenColumns::default();
        use tantivy::query::{BooleanQuery, Occur, TermQuery};
        use tantivy::schema::IndexRecordOption;
        for (lo, hi) in [(0, 30_000), (50_000, 50_500), (0, 100_000)] {
            for k in [0u32, 8, 1_499, 1_500, 3_999, 3] {
                let t = TermQuery::new(
                    Term::from_field_text(name, &format!("n{k}")),
                    IndexRecordOption::Basic,
                );
                let both = |q: Box<dyn Query>| {
                    BooleanQuery::new(vec![
                        (Occur::Must, Box::new(t.clone()) as Box<dyn Query>),
                        (Occur::Must, q),
                    ])
                };
                let (l, h) = (
                    Bound::Included(term(date, lo)),
                    Bound::Included(term(date, hi)),
                );
                let ours = both(Box::new(
                    DateRangeQuery::new(date, l.clone(), h.clone(), &columns).unwrap(),
                ));
                let theirs = both(Box::new(RangeQuery::new(l, h)));
                assert_eq!(
                    searcher.search(&ours, &DocSetCollector).unwrap(),
                    searcher.search(&theirs, &DocSetCollector).unwrap(),
                    "n{k} in {lo}..{hi}"
                );
            }
        }
    }

    #[test]
    fn columns_of_merged_segments_are_let_go() {
        let (index, date, _) = index(4_500);
        let reader = crate::columns::manual_reader(&index);
        let columns = OpenColumns::default();
        let q = DateRangeQuery::new(
            date,
            Bound::Included(term(date, 0)),
            Bound::Included(term(date, 50_000)),
            &columns,
        )
        .unwrap();
        let before = reader.searcher().search(&q, &Count).unwrap();
        assert_eq!(columns.opened(), reader.searcher().segment_readers().len());
        let mut w: IndexWriter = index.writer_with_num_threads(1, 20_000_000).unwrap();
        let ids = index.searchable_segment_ids().unwrap();
        futures_merge(&mut w, &ids);
        reader.reload().unwrap();
        let searcher = reader.searcher();
        assert_eq!(searcher.segment_readers().len(), 1);
        assert_eq!(searcher.search(&q, &Count).unwrap(), before);
        assert_eq!(columns.opened(), 1);
    }

    fn futures_merge(w: &mut IndexWriter, ids: &[SegmentId]) {
        let merge = w.merge(ids);
        // The merge runs on Tantivy's own thread; `wait` blocks until it is done.
        merge.wait().unwrap();
        w.commit().unwrap();
        w.garbage_collect_files().wait().unwrap();
    }
}
