//! Catching up: reading the activities after the completion state (and its gaps), moving
//! the state over them, and applying each by re-deriving what it names from the database
//! as it is now (delete the covered documents, add the current rows). Applying is
//! idempotent and order-independent, so late gaps, repeated rounds and restored indexes
//! all converge.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use cairn_store::{Activity, ActivityId, ActivityKind, Horizon, Node, NodeId};
use tantivy::indexer::UserOperation;
use tantivy::schema::Term;
use tantivy::IndexWriter;

use crate::completion::{CompletionState, Gap};
use crate::document::{self, WrittenBy};
use crate::error::Result;
use crate::indexer::{CatchUpReport, Indexer};

/// Up to this many documents, a batch goes to the writer as one message (see `apply`).
const SMALL_BATCH: usize = 4_096;

impl Indexer {
    /// Applies the gaps and everything after `LastActivityId`, committing as it goes.
    pub fn catch_up(&self) -> Result<CatchUpReport> {
        self.catch_up_inner(false)
    }

    pub(crate) fn catch_up_inner(&self, final_pass: bool) -> Result<CatchUpReport> {
        self.with_writer(|writer| self.catch_up_with(writer, final_pass))
    }

    fn catch_up_with(&self, writer: &mut IndexWriter, final_pass: bool) -> Result<CatchUpReport> {
        let mut state = self.state();
        let mut report = CatchUpReport::default();
        let mut dirty = false;
        let mut docs_since_commit = 0usize;
        let mut last_commit = Instant::now();
        // When the round that the next commit ends began: what a writer waits for.
        let mut cycle_start: Option<Instant> = None;
        loop {
            if !final_pass && self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let round = Instant::now();
            let gap_ids = state.gap_ids();
            let batch = self.store.read_activities(
                state.last_activity_id,
                &gap_ids,
                self.options.batch_size,
            )?;
            let (changed, applied) =
                advance(&mut state, &batch.activities, batch.horizon, &mut report);
            if !changed {
                break;
            }
            dirty = true;
            cycle_start.get_or_insert(round);
            let docs = self.apply(writer, &applied)?;
            report.activities += applied.len() as u64;
            self.last_work_ms.store(
                u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            report.documents += docs as u64;
            docs_since_commit += docs;
            let more = batch.activities.len() >= self.options.batch_size;
            if !more
                || docs_since_commit >= self.options.commit_docs
                || last_commit.elapsed() >= self.options.commit_interval
            {
                self.commit(writer, &state)?;
                if let Some(start) = cycle_start.take() {
                    self.commit_cycles.record(start.elapsed());
                }
                report.commits += 1;
                dirty = false;
                docs_since_commit = 0;
                last_commit = Instant::now();
            }
            if !more {
                break;
            }
        }
        if dirty {
            self.commit(writer, &state)?;
            if let Some(start) = cycle_start {
                self.commit_cycles.record(start.elapsed());
            }
            report.commits += 1;
        }
        Ok(report)
    }

    /// Re-derives what `activities` name from the database. Returns documents written.
    fn apply(&self, writer: &IndexWriter, activities: &[Activity]) -> Result<usize> {
        let by_of = |a: &Activity| WrittenBy {
            activity: a.id.0,
            fingerprint: a.fingerprint,
        };
        let mut trees: Vec<(String, WrittenBy)> = Vec::new();
        let mut nodes: HashMap<NodeId, WrittenBy> = HashMap::new();
        for a in activities {
            match a.kind {
                ActivityKind::Add | ActivityKind::Update => {
                    nodes.insert(a.node_id, by_of(a));
                }
                ActivityKind::Remove | ActivityKind::AddTree => {
                    trees.push((a.path.clone(), by_of(a)))
                }
                ActivityKind::Move => {
                    trees.push((a.path.clone(), by_of(a)));
                    if let Some(old) = &a.old_path {
                        trees.push((old.clone(), by_of(a)));
                    }
                }
            }
        }
        let mut seen_trees = HashSet::new();
        trees.retain(|(p, _)| seen_trees.insert(cairn_store::content::path_key(p)));
        let mut current: HashMap<NodeId, (Node, WrittenBy)> = HashMap::new();
        // Deletes come first and take lower opstamps than the adds, so they never hide
        // the documents that replace what they delete.
        let mut ops: Vec<UserOperation> = Vec::new();
        for (path, by) in &trees {
            ops.push(UserOperation::Delete(Term::from_field_text(
                self.schema.in_tree,
                &cairn_store::content::path_key(path),
            )));
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .scan_tree(path, after.as_deref(), self.options.batch_size)?;
                let full = page.len() >= self.options.batch_size;
                after = page.last().map(|n| cairn_store::content::path_key(&n.path));
                for n in page {
                    let entry = current.entry(n.id).or_insert((n.clone(), *by));
                    if by.activity > entry.1.activity {
                        *entry = (n, *by);
                    }
                }
                if !full {
                    break;
                }
            }
        }
        let wanted: Vec<NodeId> = nodes
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        for n in self.store.nodes_by_ids(&wanted)? {
            let by = nodes[&n.id];
            current.insert(n.id, (n, by));
        }
        for id in nodes.keys().chain(current.keys()) {
            ops.push(UserOperation::Delete(Term::from_field_i64(
                self.schema.id,
                id.0,
            )));
        }
        let types = self.store.types();
        let docs = current.len();
        if docs <= SMALL_BATCH {
            // One message to the writer: a single indexing thread takes it, so a small
            // (live) batch makes one segment per commit instead of one per thread. Each
            // segment costs its files, fsyncs and hash table however few documents it
            // holds; with two threads a 64-create commit took twice as long.
            for (node, by) in current.values() {
                ops.push(UserOperation::Add(document::build(
                    &self.schema,
                    types,
                    node,
                    *by,
                )));
            }
            writer.run(ops)?;
        } else {
            writer.run(ops)?;
            for (node, by) in current.values() {
                writer.add_document(document::build(&self.schema, types, node, *by))?;
            }
        }
        Ok(docs)
    }
}

/// Moves `state` forward over `activities` (read in one snapshot with `horizon`): fills
/// gaps that appeared, records new gaps, drops gaps that can no longer be filled. Returns
/// whether anything changed and the activities to apply.
fn advance(
    state: &mut CompletionState,
    activities: &[Activity],
    horizon: Horizon,
    report: &mut CatchUpReport,
) -> (bool, Vec<Activity>) {
    let mut changed = false;
    let found: HashSet<ActivityId> = activities.iter().map(|a| a.id).collect();
    let before = state.gaps.len();
    state.gaps.retain(|g| !found.contains(&g.id));
    report.gaps_filled += (before - state.gaps.len()) as u64;
    changed |= before != state.gaps.len();
    let mark = horizon.mark();
    let mut applied = Vec::with_capacity(activities.len());
    let mut expected = state.last_activity_id.0 + 1;
    for a in activities {
        if a.id > state.last_activity_id {
            for missing in expected.max(state.last_activity_id.0 + 1)..a.id.0 {
                state.gaps.push(Gap {
                    id: ActivityId(missing),
                    mark,
                });
            }
            expected = a.id.0 + 1;
        }
        applied.push(a.clone());
    }
    if let Some(last) = activities
        .iter()
        .rev()
        .find(|a| a.id > state.last_activity_id)
    {
        state.last_activity_id = last.id;
        state.fingerprint = last.fingerprint;
        changed = true;
    }
    let before = state.gaps.len();
    // A gap first missed by this very read settles only if nothing was in flight.
    state.gaps.retain(|g| !horizon.settles(g.mark));
    let dropped = before - state.gaps.len();
    if dropped > 0 {
        tracing::info!(
            dropped,
            "dropped gaps that no transaction in flight can fill (rolled back, or activities \
             removed by retention)"
        );
    }
    report.gaps_dropped += dropped as u64;
    changed |= dropped > 0;
    (changed, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::NodeId;

    fn act(id: i64) -> Activity {
        Activity {
            id: ActivityId(id),
            kind: ActivityKind::Update,
            node_id: NodeId(1),
            path: "/Root".into(),
            old_path: None,
            creation_date: time::OffsetDateTime::UNIX_EPOCH,
            fingerprint: id * 10,
        }
    }

    #[test]
    fn gaps_are_kept_until_the_horizon_passes_them() {
        let mut s = CompletionState::default();
        let mut r = CatchUpReport::default();
        let h1 = Horizon::Snapshot {
            xmin: 100,
            xmax: 105,
        };
        let (changed, applied) = advance(&mut s, &[act(1), act(2), act(5)], h1, &mut r);
        assert!(changed);
        assert_eq!(applied.len(), 3);
        assert_eq!(s.to_string(), "5(3,4)");
        assert_eq!(s.fingerprint, 50);
        // 4 commits late; 3 is still missing but transactions from before are still running.
        let h2 = Horizon::Snapshot {
            xmin: 104,
            xmax: 110,
        };
        advance(&mut s, &[act(4)], h2, &mut r);
        assert_eq!(s.to_string(), "5(3)");
        assert_eq!(r.gaps_filled, 1);
        // Everything in flight at the first read has finished: 3 was rolled back.
        let h3 = Horizon::Snapshot {
            xmin: 105,
            xmax: 111,
        };
        let (changed, _) = advance(&mut s, &[], h3, &mut r);
        assert!(changed);
        assert_eq!(s.to_string(), "5");
        assert_eq!(r.gaps_dropped, 1);
        let (changed, _) = advance(&mut s, &[], h3, &mut r);
        assert!(!changed);
    }

    #[test]
    fn sqlite_never_keeps_gaps() {
        let mut s = CompletionState::default();
        let mut r = CatchUpReport::default();
        advance(&mut s, &[act(1), act(3)], Horizon::AllCommitted, &mut r);
        assert_eq!(s.to_string(), "3");
    }
}
