//! The indexer under injected I/O faults (named failure points of the `fail` crate,
//! compiled in for tests only): an activity whose documents did not reach a successful
//! commit is never counted as applied, and once the fault clears the indexer catches up on
//! its own, without waiting for another write (invariant 2).
//!
//! Failure points are process-wide, so every test here holds a [`fail::FailScenario`],
//! which runs them one at a time; this file is a test binary of its own for that reason.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_index::{Indexer, IndexerOptions};
use cairn_store::{ActivityId, Store};
use common::*;
use serde_json::json;

/// Two indexing threads, as on a two-core machine: one of them failing must not break
/// what the other one holds.
fn open_two_threads(repo: &Repo, store: &Arc<Store>) -> Arc<Indexer> {
    let options = IndexerOptions {
        writer_memory: 50 << 20,
        writer_threads: 2,
        periodic: Duration::from_secs(3600),
        ..IndexerOptions::default()
    };
    Indexer::open(&repo.index_dir(), store.clone(), options, &|_| {})
        .unwrap()
        .0
}

/// Creates `n` articles under `/Root`, each with a body long enough to fill segments.
fn write_articles(store: &Store, prefix: &str, n: usize) -> ActivityId {
    let body = "lorem ipsum dolor sit amet ".repeat(200);
    let mut last = ActivityId(0);
    for i in 0..n {
        last = store
            .create(
                &"/Root".into(),
                &content(
                    "Article",
                    &format!("{prefix}{i}"),
                    json!({ "Body": format!("{body} {prefix} {i}") }),
                ),
                store.admin_id(),
            )
            .unwrap()
            .activity;
    }
    last
}

/// Turns `point` on while 20 articles are written, checks that none of them is counted
/// as applied, turns it off, and checks that the indexer catches up by itself (no new
/// write), leaves no difference, keeps working, and reopens to the same index.
fn fault_then_heal(point: &str) {
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let ix = open_two_threads(&repo, &store);
    let bg = ix.start();
    let first = write_articles(&store, "before", 5);
    assert!(ix.wait_for(first, Duration::from_secs(10)));

    fail::cfg(point, "return(enospc)").unwrap();
    let last = write_articles(&store, "during", 20);
    // The batch cannot be committed: its activities are not applied, however long we wait.
    assert!(
        !ix.wait_for(last, Duration::from_millis(1500)),
        "{point}: activity {last} counted as applied while no commit could succeed (state {})",
        ix.state()
    );
    assert!(!ix.state().covers(last));
    assert!(ix.fault().is_some(), "{point}: the fault is not reported");

    fail::remove(point);
    // No new write: the indexer retries on its own.
    assert!(
        ix.wait_for(last, Duration::from_secs(20)),
        "{point}: the indexer did not recover by itself: state {}",
        ix.state()
    );
    assert_clean(&ix);
    assert_eq!(ix.fault(), None);
    // And it keeps working afterwards.
    let after = write_articles(&store, "after", 5);
    assert!(ix.wait_for(after, Duration::from_secs(10)));
    assert_clean(&ix);
    ix.shutdown(Some(bg)).unwrap();
    drop(ix);
    // A restart finds the same, complete index.
    let (ix, _) = repo.open(&store);
    assert_clean(&ix);
}

/// An I/O error in one of Tantivy's indexing threads (serializing a segment, as a full
/// disk makes it) while the indexer commits a batch. Before the fix the writer was left
/// with fewer (or no) indexing threads: the retried batch's deletes were committed, its
/// added documents never were, and the completion state said nothing was missing.
#[test]
fn a_failed_segment_write_is_not_counted_and_heals_by_itself() {
    let scenario = fail::FailScenario::setup();
    fault_then_heal("FieldSerializer::close_term");
    scenario.teardown();
}

/// The indexer's own commit step fails (`indexer::commit`).
#[test]
fn a_failed_commit_is_not_counted_and_heals_by_itself() {
    let scenario = fail::FailScenario::setup();
    fault_then_heal("indexer::commit");
    scenario.teardown();
}

/// Tantivy cannot write `meta.json` (its `save_metas` point): the segments are written,
/// the commit that would name them is not.
#[test]
fn a_failed_meta_write_is_not_counted_and_heals_by_itself() {
    let scenario = fail::FailScenario::setup();
    fault_then_heal("save_metas");
    scenario.teardown();
}

/// A fault that lasts past a stop: the final commit of the shutdown fails too, and the
/// next start catches up what was never committed.
#[test]
fn a_fault_at_shutdown_is_caught_up_at_the_next_start() {
    let scenario = fail::FailScenario::setup();
    let repo = Repo::new(Db::Sqlite);
    let store = repo.store();
    let ix = open_two_threads(&repo, &store);
    let bg = ix.start();
    let first = write_articles(&store, "before", 3);
    assert!(ix.wait_for(first, Duration::from_secs(10)));
    fail::cfg("indexer::commit", "return(enospc)").unwrap();
    let last = write_articles(&store, "during", 10);
    assert!(
        ix.shutdown(Some(bg)).is_err(),
        "the final commit cannot succeed"
    );
    drop(ix);
    fail::remove("indexer::commit");
    let (ix, report) = repo.open(&store);
    assert!(report.state.covers(last), "state {}", report.state);
    assert!(report.catch_up.activities >= 10, "{:?}", report.catch_up);
    assert_clean(&ix);
    scenario.teardown();
}
