//! The index's columns that every query reads, opened once per segment.
//!
//! Opening a column is not free: a block-wise linear column (Tantivy's codec for values
//! that are not one straight line, such as dates or the ids of a merged segment) decodes
//! the header of every block of 512 values when it opens: 0.005 ms at 100k items, 0.025 ms
//! at 1M, 0.19 ms at 10M, per column and query, whatever the query then reads (a first page
//! reads a few hundred values). [`OpenColumns`] keeps each segment's opened date columns
//! (read by [`crate::date_range::DateRangeQuery`]) and its `Id` column (read by
//! [`crate::search::search`] for every page of hits). Segments never change, so an opened
//! column stays right as long as its segment is searched; the columns of segments the
//! searcher no longer has (merged away, or an index replaced) are let go at the next
//! query, so that their files are not kept mapped. An entry is a few bytes per block and a
//! share of the segment's memory map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tantivy::columnar::{Column, ColumnType};
use tantivy::index::SegmentId;
use tantivy::schema::Field;
use tantivy::{Searcher, SegmentReader};

/// The opened columns of an index's segments, shared by every query of that index (a
/// clone shares them).
#[derive(Clone, Default)]
pub struct OpenColumns {
    inner: Arc<Mutex<Opened>>,
}

#[derive(Default)]
struct Opened {
    /// The searcher generation whose segments the entries were last matched against.
    generation: Option<u64>,
    /// Date columns (`None`: no document of the segment has the date).
    dates: HashMap<(SegmentId, Field), Option<Column<u64>>>,
    ids: HashMap<SegmentId, Column<i64>>,
}

impl std::fmt::Debug for OpenColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.lock();
        f.debug_struct("OpenColumns")
            .field("dates", &o.dates.len())
            .field("ids", &o.ids.len())
            .finish()
    }
}

impl OpenColumns {
    fn lock(&self) -> MutexGuard<'_, Opened> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Columns opened so far (of segments the last searcher had): dates and ids.
    pub fn opened(&self) -> usize {
        let o = self.lock();
        o.dates.len() + o.ids.len()
    }

    /// Forgets the columns of segments that `searcher` does not have. Cheap when its
    /// generation is the one seen last.
    pub(crate) fn keep_only(&self, searcher: &Searcher) {
        let generation = searcher.generation();
        let mut o = self.lock();
        if o.generation == Some(generation.generation_id()) {
            return;
        }
        let segments = generation.segments();
        o.dates.retain(|(s, _), _| segments.contains_key(s));
        o.ids.retain(|s, _| segments.contains_key(s));
        o.generation = Some(generation.generation_id());
    }

    /// The date column `field` of `reader`'s segment (`None`: no document has it).
    pub(crate) fn date(
        &self,
        reader: &SegmentReader,
        field: Field,
    ) -> tantivy::Result<Option<Column<u64>>> {
        let key = (reader.segment_id(), field);
        if let Some(c) = self.lock().dates.get(&key) {
            return Ok(c.clone());
        }
        // Opened outside the lock: two queries may each open it once; either is right.
        let name = reader.schema().get_field_name(field).to_string();
        let column = reader
            .fast_fields()
            .u64_lenient_for_type(Some(&[ColumnType::DateTime]), &name)?
            .map(|(c, _)| c);
        self.lock().dates.insert(key, column.clone());
        Ok(column)
    }

    /// The `Id` column of `reader`'s segment.
    pub(crate) fn id(&self, reader: &SegmentReader) -> tantivy::Result<Column<i64>> {
        let key = reader.segment_id();
        if let Some(c) = self.lock().ids.get(&key) {
            return Ok(c.clone());
        }
        let column = reader.fast_fields().i64("Id")?;
        self.lock().ids.insert(key, column.clone());
        Ok(column)
    }
}

/// A reader of `index` that sees a new commit only when reloaded (tests: the searcher
/// before and after a merge).
#[cfg(test)]
pub(crate) fn manual_reader(index: &tantivy::Index) -> tantivy::IndexReader {
    index
        .reader_builder()
        .reload_policy(tantivy::ReloadPolicy::Manual)
        .try_into()
        .expect("a reader of an index in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{NumericOptions, Schema, FAST};
    use tantivy::{doc, Index, IndexWriter};

    #[test]
    fn an_id_column_is_opened_once_per_segment_and_let_go_with_it() {
        let mut b = Schema::builder();
        let id = b.add_i64_field("Id", NumericOptions::default() | FAST);
        let index = Index::create_in_ram(b.build());
        let mut w: IndexWriter = index.writer_with_num_threads(1, 20_000_000).unwrap();
        for i in 0..3_000i64 {
            // Not one straight line, as the ids of a merged segment.
            w.add_document(doc!(id => (i * 7919) % 3_001)).unwrap();
            if i % 1_000 == 999 {
                w.commit().unwrap();
            }
        }
        let reader = manual_reader(&index);
        let searcher = reader.searcher();
        let open = OpenColumns::default();
        for _ in 0..3 {
            open.keep_only(&searcher);
            for r in searcher.segment_readers() {
                let c = open.id(r).unwrap();
                assert_eq!(c.first(5), r.fast_fields().i64("Id").unwrap().first(5));
            }
        }
        assert_eq!(open.opened(), 3);
        let ids = index.searchable_segment_ids().unwrap();
        w.merge(&ids).wait().unwrap();
        w.commit().unwrap();
        reader.reload().unwrap();
        let searcher = reader.searcher();
        open.keep_only(&searcher);
        assert_eq!(open.opened(), 0);
        open.id(&searcher.segment_readers()[0]).unwrap();
        assert_eq!(open.opened(), 1);
    }
}
