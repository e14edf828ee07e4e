//! Backups and restores under injected I/O faults (named failure points of the `fail`
//! crate, compiled in for tests only), on a real SQLite store and a real index: a step that
//! fails leaves no backup that looks usable, a history that says what happened (also when
//! the history itself cannot be saved), and a repository that works; once the fault clears
//! the next backup or restore succeeds on its own.
//!
//! Failure points are process-wide: every test holds a [`fail::FailScenario`], which runs
//! them one at a time, and this file is a test binary of its own.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cairn_backup::{
    list_backups, restore, verify, BackupKind, BackupManager, BackupState, LiveSource, RestoreMode,
    RestoreTarget,
};
use cairn_index::{Indexer, IndexerOptions};
use cairn_store::{CancelToken, DatabaseUrl, NewContent, NodeRef, Store};
use cairn_testkit::wait_until;
use serde_json::Map;

struct Repo {
    dir: std::path::PathBuf,
    store: Arc<Store>,
    indexer: Arc<Indexer>,
    background: Option<JoinHandle<()>>,
}

impl Repo {
    fn open(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).unwrap();
        let store = Arc::new(Store::open(&DatabaseUrl::Sqlite(dir.join("cairn.db"))).unwrap());
        let options = IndexerOptions {
            writer_memory: 50 << 20,
            writer_threads: 1,
            ..IndexerOptions::default()
        };
        let (indexer, _) =
            Indexer::open(&dir.join("index"), store.clone(), options, &|_| {}).unwrap();
        let background = Some(indexer.start());
        Repo {
            dir: dir.to_path_buf(),
            store,
            indexer,
            background,
        }
    }

    fn create(&self, name: &str) {
        let w = self
            .store
            .create(
                &NodeRef::from("/Root"),
                &NewContent {
                    type_name: "Folder".into(),
                    name: name.into(),
                    fields: Map::new(),
                },
                self.store.admin_id(),
            )
            .unwrap();
        assert!(self.indexer.wait_for(w.activity, Duration::from_secs(10)));
    }

    fn has(&self, name: &str) -> bool {
        self.store
            .node(&NodeRef::from(format!("/Root/{name}").as_str()))
            .unwrap()
            .is_some()
    }

    fn manager(&self) -> Arc<BackupManager> {
        let source = Arc::new(LiveSource::new(self.store.clone(), self.indexer.clone(), 0));
        BackupManager::open(&self.dir.join("backups"), source).unwrap()
    }

    fn stop(mut self) {
        self.indexer.shutdown(self.background.take()).unwrap();
    }
}

/// Starts a backup and waits for its end; the last history entry.
fn run(m: &Arc<BackupManager>, kind: BackupKind, name: &str) -> cairn_backup::BackupInfo {
    let started = m.start(kind, Some(name)).unwrap();
    assert_eq!(started.state, BackupState::Started);
    wait_until("the backup ends", Duration::from_secs(60), || {
        let q = m.query();
        let c = q.current?;
        (c.target_path.ends_with(name)
            && !matches!(
                c.state,
                BackupState::Started | BackupState::Executing | BackupState::CancelRequested
            ))
        .then_some(c)
    })
}

/// Each step of a backup failing on a full disk: the backup is Faulted with the cause in
/// its message, its folder is gone (nothing listed), the history keeps it (in memory and
/// across a restart); with the fault gone the next backup finishes and verifies.
#[test]
fn each_backup_step_that_fails_leaves_a_faulted_entry_and_no_backup() {
    for (point, kind) in [
        ("backup::index_file", BackupKind::Index),
        ("backup::database", BackupKind::Repository),
        ("backup::manifest", BackupKind::Repository),
        ("backup::manifest", BackupKind::Index),
    ] {
        let scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(&dir.path().join("live"));
        repo.create("a");
        let m = repo.manager();
        fail::cfg(point, "return(enospc)").unwrap();
        let failed = run(&m, kind, "b1");
        assert_eq!(failed.state, BackupState::Faulted, "{point}: {failed:?}");
        let message = failed.message.clone().unwrap_or_default();
        assert!(
            message.contains("storage") || message.contains("space"),
            "{point}: {message}"
        );
        assert!(
            !repo.dir.join("backups/b1").exists(),
            "{point}: the partial folder is left"
        );
        assert!(
            list_backups(&repo.dir.join("backups")).is_empty(),
            "{point}"
        );
        fail::remove(point);
        let done = run(&m, kind, "b2");
        assert_eq!(done.state, BackupState::Finished, "{point}: {done:?}");
        verify(&repo.dir.join("backups/b2"), &|_, _| {}).unwrap();
        // A restart reads the same history: b2 finished, b1 faulted with its own message.
        drop(m);
        let again = repo.manager().query();
        let states: Vec<_> = again
            .history
            .iter()
            .map(|h| {
                (
                    h.target_path.rsplit('/').next().unwrap().to_string(),
                    h.state,
                    h.message.clone(),
                )
            })
            .collect();
        assert_eq!(states[0].0, "b2", "{point}: {states:?}");
        assert_eq!(states[0].1, BackupState::Finished);
        assert_eq!(states[1].0, "b1");
        assert_eq!(states[1].1, BackupState::Faulted);
        assert_eq!(states[1].2.as_deref(), Some(message.as_str()), "{point}");
        repo.stop();
        scenario.teardown();
    }
}

/// The history cannot be saved (a full disk under the backup folder): the backup's entry
/// is kept in memory and answered, and saved once the disk has room again, so a restart
/// finds it as it ended, not as "interrupted".
#[test]
fn a_history_that_cannot_be_saved_is_kept_and_saved_later() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&dir.path().join("live"));
    repo.create("a");
    let m = repo.manager();
    fail::cfg("backup::history", "return(enospc)").unwrap();
    let done = run(&m, BackupKind::Repository, "b1");
    assert_eq!(done.state, BackupState::Finished, "{done:?}");
    let on_disk =
        std::fs::read_to_string(repo.dir.join("backups/history.json")).unwrap_or_default();
    assert!(
        !on_disk.contains("Finished"),
        "the save was supposed to fail: {on_disk}"
    );
    fail::remove("backup::history");
    // The server's housekeeping (every 10 s) and its stop save it without a request.
    assert!(m.save_history());
    let on_disk = std::fs::read_to_string(repo.dir.join("backups/history.json")).unwrap();
    assert!(on_disk.contains("Finished"), "{on_disk}");
    let q = m.query();
    assert_eq!(q.history[0].state, BackupState::Finished);
    let on_disk = std::fs::read_to_string(repo.dir.join("backups/history.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&on_disk).unwrap();
    assert_eq!(saved[0]["State"], "Finished", "{saved}");
    drop(m);
    let again = repo.manager().query();
    assert_eq!(again.history[0].state, BackupState::Finished);
    assert_eq!(again.history[0].message, None);
    repo.stop();
    scenario.teardown();
}

/// A restore whose swap fails before anything was swapped leaves the old repository as it
/// was, and no staging; one interrupted between the database and the index leaves the
/// restored database beside the old index, which the next start repairs. Then a restore
/// without the fault succeeds.
#[test]
fn a_failed_swap_leaves_a_repository_that_opens_consistently() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::open(&dir.path().join("live"));
    repo.create("before");
    let m = repo.manager();
    assert_eq!(
        run(&m, BackupKind::Repository, "b1").state,
        BackupState::Finished
    );
    repo.create("after");
    drop(m);
    let live = repo.dir.clone();
    repo.stop();
    let target = RestoreTarget {
        data_dir: live.clone(),
        database: DatabaseUrl::Sqlite(live.join("cairn.db")),
    };
    let from = live.join("backups/b1");

    fail::cfg("restore::swap", "return(enospc)").unwrap();
    assert!(restore(
        &from,
        &target,
        RestoreMode::Both,
        false,
        &|_, _| {},
        &CancelToken::new()
    )
    .is_err());
    fail::remove("restore::swap");
    assert!(!live.join(".restore-staging").exists() && !live.join(".restore-old").exists());
    let repo = Repo::open(&live);
    assert!(
        repo.has("before") && repo.has("after"),
        "the old data changed"
    );
    assert!(repo.indexer.check_integrity().unwrap().is_clean());
    repo.stop();

    fail::cfg("restore::swap_index", "return(enospc)").unwrap();
    assert!(restore(
        &from,
        &target,
        RestoreMode::Both,
        false,
        &|_, _| {},
        &CancelToken::new()
    )
    .is_err());
    fail::remove("restore::swap_index");
    // The restored database, the old index: the start repairs it.
    let repo = Repo::open(&live);
    assert!(
        repo.has("before") && !repo.has("after"),
        "the database was not swapped in"
    );
    let report = repo.indexer.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    repo.stop();
    for leftover in [".restore-staging", ".restore-old"] {
        let p = live.join(leftover);
        if p.exists() {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    restore(
        &from,
        &target,
        RestoreMode::Both,
        false,
        &|_, _| {},
        &CancelToken::new(),
    )
    .unwrap();
    let repo = Repo::open(&live);
    assert!(repo.has("before") && !repo.has("after"));
    assert!(repo.indexer.check_integrity().unwrap().is_clean());
    repo.stop();
    scenario.teardown();
}
