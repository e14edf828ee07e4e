//! The integrity check: compares the database with the index, item by item, by id and
//! timestamp, and names every difference the way sensenet does.

use cairn_store::{ActivityId, NodeId, Store};
use serde::{Deserialize, Serialize};
use tantivy::schema::Term;
use tantivy::Searcher;

use crate::error::Result;
use crate::indexer::Indexer;
use crate::schema::IndexSchema;

/// What kind of difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DifferenceKind {
    /// In the database, not in the index.
    NotInIndex,
    /// In the index, not in the database.
    NotInDatabase,
    /// More than one document for one item.
    MoreDocument,
    /// The document was made from another version of the item.
    DifferentTimestamp,
}

/// One difference between the database and the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Difference {
    /// What kind.
    pub kind: DifferenceKind,
    /// The item's id.
    pub node_id: i64,
    /// Its path (from the database, else from the index).
    pub path: String,
    /// Its timestamp in the database.
    pub db_timestamp: Option<i64>,
    /// Its timestamp in the index.
    pub ix_timestamp: Option<i64>,
}

/// The result of a check, shaped like sensenet's `CheckIndexIntegrity` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IntegrityReport {
    /// The database's last activity id.
    pub last_stored_activity: ActivityId,
    /// The index's `LastActivityId`.
    pub last_processed_activity: ActivityId,
    /// The index's gaps.
    pub gaps: Vec<ActivityId>,
    /// Items in the database.
    pub database_items: u64,
    /// Documents in the index.
    pub index_documents: u64,
    /// Every difference found.
    pub differences: Vec<Difference>,
}

impl IntegrityReport {
    /// True when the index matches the database.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// The bookkeeping fields of one live document.
#[derive(Clone, Copy, Debug)]
pub struct IndexEntry {
    /// `Id`.
    pub id: i64,
    /// `Timestamp`.
    pub timestamp: i64,
    /// `_ActivityId`.
    pub activity: i64,
    /// `_Fingerprint`.
    pub fingerprint: i64,
}

/// Reads the bookkeeping fields of every live document from the fast fields.
pub fn index_entries(searcher: &Searcher, _schema: &IndexSchema) -> Result<Vec<IndexEntry>> {
    let mut out = Vec::with_capacity(searcher.num_docs() as usize);
    for segment in searcher.segment_readers() {
        let ff = segment.fast_fields();
        let id = ff.i64("Id")?;
        let ts = ff.i64("Timestamp")?;
        let act = ff.i64(crate::schema::names::ACTIVITY_ID)?;
        let fp = ff.i64(crate::schema::names::FINGERPRINT)?;
        let alive = segment.alive_bitset();
        for doc in 0..segment.max_doc() {
            if alive.is_some_and(|a| !a.is_alive(doc)) {
                continue;
            }
            out.push(IndexEntry {
                id: id.first(doc).unwrap_or(0),
                timestamp: ts.first(doc).unwrap_or(0),
                activity: act.first(doc).unwrap_or(0),
                fingerprint: fp.first(doc).unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// Compares every item of the database with `entries` (sorted here by id). Both sides are
/// walked in id order, the database a page at a time, so that nothing the size of the
/// repository is held but `entries` themselves (a map of every id took ~1 GB at 10M items).
pub fn compare(store: &Store, entries: &mut [IndexEntry]) -> Result<Vec<Difference>> {
    entries.sort_unstable_by_key(|e| (e.id, e.timestamp));
    let mut rest: &[IndexEntry] = entries;
    // The documents of the lowest id left: their timestamps, in order.
    let next_group = |rest: &mut &[IndexEntry]| -> Option<(i64, Vec<i64>)> {
        let id = rest.first()?.id;
        let n = rest.iter().take_while(|e| e.id == id).count();
        let (group, tail) = rest.split_at(n);
        *rest = tail;
        Some((id, group.iter().map(|e| e.timestamp).collect()))
    };
    let only_in_index = |id: i64, ts: Vec<i64>| Difference {
        kind: if ts.len() > 1 {
            DifferenceKind::MoreDocument
        } else {
            DifferenceKind::NotInDatabase
        },
        node_id: id,
        path: String::new(),
        db_timestamp: None,
        ix_timestamp: ts.iter().copied().max(),
    };
    let mut out = Vec::new();
    let mut after = NodeId(0);
    loop {
        let page = store.scan_stamps(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for s in page {
            while rest.first().is_some_and(|e| e.id < s.id.0) {
                if let Some((id, ts)) = next_group(&mut rest) {
                    out.push(only_in_index(id, ts));
                }
            }
            let ts = if rest.first().is_some_and(|e| e.id == s.id.0) {
                next_group(&mut rest).map(|g| g.1).unwrap_or_default()
            } else {
                Vec::new()
            };
            let (kind, ix_timestamp) = match ts.as_slice() {
                [] => (DifferenceKind::NotInIndex, None),
                [one] if *one != s.timestamp => (DifferenceKind::DifferentTimestamp, Some(*one)),
                [_] => continue,
                many => (DifferenceKind::MoreDocument, many.iter().copied().max()),
            };
            out.push(Difference {
                kind,
                node_id: s.id.0,
                path: s.path,
                db_timestamp: Some(s.timestamp),
                ix_timestamp,
            });
        }
    }
    while let Some((id, ts)) = next_group(&mut rest) {
        out.push(only_in_index(id, ts));
    }
    out.sort_by_key(|d| d.node_id);
    Ok(out)
}

/// The path of the document of `id` (lower-cased: the `Path` column's), if any.
fn indexed_path(searcher: &Searcher, schema: &IndexSchema, id: i64) -> Option<String> {
    let q = tantivy::query::TermQuery::new(
        Term::from_field_i64(schema.id, id),
        tantivy::schema::IndexRecordOption::Basic,
    );
    let top = searcher
        .search(
            &q,
            &tantivy::collector::TopDocs::with_limit(1).order_by_score(),
        )
        .ok()?;
    let (_, addr) = top.first()?;
    crate::search::path_of(searcher, *addr).ok().flatten()
}

impl Indexer {
    /// Catches up, then compares the database with the index. Differences that a write
    /// racing the check could explain are checked once more after another catch-up, so a
    /// live repository reports only real differences.
    pub fn check_integrity(&self) -> Result<IntegrityReport> {
        self.catch_up()?;
        let searcher = self.searcher();
        let mut entries = index_entries(&searcher, self.schema())?;
        let mut differences = compare(self.store(), &mut entries)?;
        drop(entries);
        if !differences.is_empty() {
            self.catch_up()?;
            let searcher = self.searcher();
            let mut entries: Vec<IndexEntry> = index_entries(&searcher, self.schema())?;
            let suspects: std::collections::HashSet<i64> =
                differences.iter().map(|d| d.node_id).collect();
            let again = compare(self.store(), &mut entries)?;
            differences = again
                .into_iter()
                .filter(|d| suspects.contains(&d.node_id))
                .collect();
        }
        let searcher = self.searcher();
        for d in differences.iter_mut().filter(|d| d.path.is_empty()) {
            d.path = indexed_path(&searcher, self.schema(), d.node_id).unwrap_or_default();
        }
        let state = self.state();
        Ok(IntegrityReport {
            last_stored_activity: self.store().last_activity_id()?,
            last_processed_activity: state.last_activity_id,
            gaps: state.gap_ids(),
            database_items: self.store().count_nodes()?,
            index_documents: searcher.num_docs(),
            differences,
        })
    }
}
