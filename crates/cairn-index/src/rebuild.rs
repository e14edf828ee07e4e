//! Building an index from the database (an empty, foreign or outdated one: invariant 3)
//! and repairing one that is ahead of or diverged from it (invariant 5).

use std::collections::HashSet;

use cairn_store::{ActivityId, NodeId};
use tantivy::schema::Term;
use tantivy::IndexWriter;

use crate::completion::{CompletionState, Gap, PAYLOAD_FORMAT};
use crate::document::{self, WrittenBy};
use crate::error::Result;
use crate::indexer::{Indexer, RebuildProgress};

impl Indexer {
    /// Where the database's log stands now: its last visible activity, the ids below it
    /// that may still appear, and that activity's fingerprint.
    fn database_position(&self) -> Result<CompletionState> {
        let probe = self.store.read_activities(ActivityId(i64::MAX), &[], 0)?;
        let last = probe.last_visible;
        let from = ActivityId((last.0 - self.options.gap_window).max(0));
        let mark = probe.horizon.mark();
        let gaps = self
            .store
            .missing_activity_ids(from, last)?
            .into_iter()
            .map(|id| Gap { id, mark })
            .collect();
        let fingerprint = match self.store.activity(last)? {
            Some(a) => a.fingerprint,
            None => 0,
        };
        Ok(CompletionState {
            format: PAYLOAD_FORMAT,
            repository_id: self.store.repository_id().to_string(),
            last_activity_id: last,
            fingerprint,
            gaps,
        })
    }

    /// Drops every document and indexes the whole database again (invariant 3): remember the
    /// database's position first, index every item, commit with that position; the caller
    /// then catches up what was written meanwhile.
    pub fn rebuild(&self, progress: &dyn Fn(RebuildProgress)) -> Result<u64> {
        self.with_writer(|writer| self.rebuild_with(writer, progress))
    }

    fn rebuild_with(
        &self,
        writer: &mut IndexWriter,
        progress: &dyn Fn(RebuildProgress),
    ) -> Result<u64> {
        let state = self.database_position()?;
        let total = self.store.count_nodes()?;
        let by = WrittenBy {
            activity: state.last_activity_id.0,
            fingerprint: state.fingerprint,
        };
        writer.delete_all_documents()?;
        let types = self.store.types();
        let mut after = NodeId(0);
        let mut done = 0u64;
        progress(RebuildProgress { done, total });
        loop {
            fail::fail_point!("index::rebuild_page");
            self.options.cancel.check()?;
            let page = self.store.scan_nodes(after, self.options.batch_size)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for node in &page {
                writer.add_document(document::build(&self.schema, types, node, by))?;
            }
            done += page.len() as u64;
            progress(RebuildProgress {
                done,
                total: total.max(done),
            });
            // A short page is the end of the table as it was read: items written since are
            // indexed by the catch-up that follows. (Paging on until an empty page never
            // ended while writes filled each next page, on a serving repository.)
            if page.len() < self.options.batch_size {
                break;
            }
        }
        fail::fail_point!("index::rebuild_commit");
        self.commit(writer, &state)?;
        tracing::info!(documents = done, state = %state, "index rebuilt");
        Ok(done)
    }

    /// Re-derives from the database every document written by an activity the database
    /// does not have, and every document that differs from it; then resets the completion
    /// state to the database's position. Returns the documents refreshed.
    pub fn repair(&self) -> Result<u64> {
        self.with_writer(|writer| self.repair_with(writer))
    }

    fn repair_with(&self, writer: &mut IndexWriter) -> Result<u64> {
        let state = self.database_position()?;
        let searcher = self.searcher();
        let mut entries = crate::integrity::index_entries(&searcher, &self.schema)?;
        let activity_ids: Vec<ActivityId> = entries
            .iter()
            .map(|e| ActivityId(e.activity))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let known = self.store.activity_fingerprints(&activity_ids)?;
        let mut refresh: HashSet<i64> = entries
            .iter()
            .filter(|e| known.get(&ActivityId(e.activity)) != Some(&e.fingerprint))
            .map(|e| e.id)
            .collect();
        for d in crate::integrity::compare(&self.store, &mut entries)? {
            refresh.insert(d.node_id);
        }
        let ids: Vec<NodeId> = refresh.iter().map(|&i| NodeId(i)).collect();
        for id in &ids {
            writer.delete_term(Term::from_field_i64(self.schema.id, id.0));
        }
        let by = WrittenBy {
            activity: state.last_activity_id.0,
            fingerprint: state.fingerprint,
        };
        let types = self.store.types();
        for node in self.store.nodes_by_ids(&ids)? {
            writer.add_document(document::build(&self.schema, types, &node, by))?;
        }
        self.commit(writer, &state)?;
        Ok(ids.len() as u64)
    }
}
