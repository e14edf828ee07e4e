//! Raw Tantivy baseline: index the corpus rows with a plain Tantivy writer, for
//! comparison with Cairn's own index.
//!
//! Schema ([`schema`]): `Id` (i64, indexed + fast + stored — the only stored
//! field, as an index that points back into a store would have), `Path`,
//! `ParentPath`, `Name`, `Type`, `Category` as raw-tokenized keywords
//! ([`STRING`]), `DisplayName`, `Description`, `Body` as full text ([`TEXT`]:
//! default tokenizer, positions), `PublishDate` as an indexed date fast field
//! (second precision), `Rating` f64 fast, `ReadCount` i64 fast.
//!
//! [`index_all`] uses `writer_with_num_threads(2, 256 MB)`, adds every row,
//! commits once and waits for background merges; all of that (plus building the
//! documents from typed [`Row`]s) is timed. The reported size is the index
//! directory after the merges.

use std::fs;
use std::path::Path;

use anyhow::Context;
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, NumericOptions, Schema, FAST, INDEXED, STORED, STRING,
    TEXT,
};
use tantivy::{DateTime, Index, IndexWriter, TantivyDocument, Term};

use crate::corpus::Row;
use crate::measure::{dir_size, Stats, Timer};

/// Indexing threads used by [`index_all`].
pub const DEFAULT_THREADS: usize = 2;
/// Overall writer memory budget used by [`index_all`].
pub const DEFAULT_HEAP_BYTES: usize = 256 * 1024 * 1024;

/// Handles of the schema's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub path: Field,
    pub parent_path: Field,
    pub name: Field,
    pub type_name: Field,
    pub category: Field,
    pub display_name: Field,
    pub description: Field,
    pub body: Field,
    pub publish_date: Field,
    pub rating: Field,
    pub read_count: Field,
}

/// The baseline schema and its field handles.
pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_i64_field("Id", INDEXED | FAST | STORED),
        path: b.add_text_field("Path", STRING),
        parent_path: b.add_text_field("ParentPath", STRING),
        name: b.add_text_field("Name", STRING),
        type_name: b.add_text_field("Type", STRING),
        category: b.add_text_field("Category", STRING),
        display_name: b.add_text_field("DisplayName", TEXT),
        description: b.add_text_field("Description", TEXT),
        body: b.add_text_field("Body", TEXT),
        publish_date: b.add_date_field(
            "PublishDate",
            DateOptions::default()
                .set_indexed()
                .set_fast()
                .set_precision(DateTimePrecision::Seconds),
        ),
        rating: b.add_f64_field("Rating", NumericOptions::default().set_fast()),
        read_count: b.add_i64_field("ReadCount", NumericOptions::default().set_fast()),
    };
    (b.build(), fields)
}

/// The Tantivy document for one row (absent optional values are left out).
pub fn to_document(row: &Row, f: &Fields) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_i64(f.id, row.id);
    doc.add_text(f.path, &row.path);
    doc.add_text(f.parent_path, &row.parent_path);
    doc.add_text(f.name, &row.name);
    doc.add_text(f.type_name, &row.type_name);
    if !row.category.is_empty() {
        doc.add_text(f.category, &row.category);
    }
    doc.add_text(f.display_name, &row.display_name);
    if !row.description.is_empty() {
        doc.add_text(f.description, &row.description);
    }
    if !row.body.is_empty() {
        doc.add_text(f.body, &row.body);
    }
    if let Some(d) = row.publish_date {
        doc.add_date(f.publish_date, DateTime::from_timestamp_secs(d));
    }
    if let Some(r) = row.rating {
        doc.add_f64(f.rating, r);
    }
    if let Some(n) = row.read_count {
        doc.add_i64(f.read_count, n);
    }
    doc
}

/// Indexes `rows` into a new index in `dir` (created if missing; must not hold
/// an index yet) with [`DEFAULT_THREADS`] threads and [`DEFAULT_HEAP_BYTES`].
pub fn index_all(rows: &[Row], dir: &Path) -> anyhow::Result<Stats> {
    index_all_with(rows, dir, DEFAULT_THREADS, DEFAULT_HEAP_BYTES)
}

/// [`index_all`] with an explicit thread count and overall memory budget.
pub fn index_all_with(
    rows: &[Row],
    dir: &Path,
    threads: usize,
    heap_bytes: usize,
) -> anyhow::Result<Stats> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (schema, fields) = schema();

    let timer = Timer::start();
    let index = Index::create_in_dir(dir, schema)
        .with_context(|| format!("creating index in {}", dir.display()))?;
    let mut writer: IndexWriter<TantivyDocument> =
        index.writer_with_num_threads(threads.max(1), heap_bytes)?;
    for row in rows {
        writer.add_document(to_document(row, &fields))?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    let seconds = timer.secs();

    Ok(Stats {
        items: rows.len() as u64,
        seconds,
        bytes: dir_size(dir)?,
    })
}

/// Number of segments of the index in `dir`.
pub fn segment_count(dir: &Path) -> anyhow::Result<usize> {
    Ok(Index::open_in_dir(dir)?.searchable_segment_ids()?.len())
}

/// Document frequency of each word in the `Body` field of the index in `dir`
/// (words must be lowercase, as the default tokenizer lowercases).
pub fn body_doc_freqs(dir: &Path, words: &[&str]) -> anyhow::Result<Vec<u64>> {
    let index = Index::open_in_dir(dir)?;
    let body = index.schema().get_field("Body")?;
    let searcher = index.reader()?.searcher();
    words
        .iter()
        .map(|w| Ok(searcher.doc_freq(&Term::from_field_text(body, w))?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus;

    #[test]
    fn indexes_everything() {
        let dir = std::env::temp_dir().join(format!("cairn-bench-tantivy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let rows: Vec<Row> = corpus::items(3000, 5)
            .enumerate()
            .map(|(i, it)| Row::from_item(i as i64 + 1, &it))
            .collect();
        let stats = index_all_with(&rows, &dir, 1, 50_000_000).unwrap();
        assert_eq!(stats.items, 3000);
        assert!(stats.bytes > 0);
        let index = Index::open_in_dir(&dir).unwrap();
        let searcher = index.reader().unwrap().searcher();
        assert_eq!(searcher.num_docs(), 3000);
        let articles = rows.iter().filter(|r| r.type_name == "Article").count() as u64;
        let freqs = body_doc_freqs(&dir, &[corpus::word(0), corpus::word(1999)]).unwrap();
        assert!(freqs[0] >= articles * 9 / 10, "{freqs:?} of {articles}");
        assert!(freqs[1] < articles / 20, "{freqs:?} of {articles}");
        let type_field = index.schema().get_field("Type").unwrap();
        let n = searcher
            .doc_freq(&Term::from_field_text(type_field, "Article"))
            .unwrap();
        assert_eq!(n, articles);
        assert!(index_all_with(&rows, &dir, 1, 50_000_000).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
