//! The backup library against a real SQLite store and a real Tantivy index: backups of a
//! live repository while writers commit, a cancel in the middle of the database copy, one
//! backup at a time under concurrent starts, a job interrupted by a crash, incremental hard
//! links, and restores of the result.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_backup::{
    clean_activities, list_backups, restore, run_backup, verify, BackupError, BackupInfo,
    BackupKind, BackupManager, BackupSource, BackupState, LiveSource, Manifest, RestoreMode,
    RestoreTarget,
};
use cairn_index::{IndexSnapshot, Indexer, IndexerOptions};
use cairn_store::{
    ActivityId, CancelToken, DatabaseBackup, DatabaseUrl, ImportItem, NewContent, NodeRef, Store,
    UpdateMode,
};
use cairn_testkit::wait_until;
use serde_json::{json, Map, Value};

fn options() -> IndexerOptions {
    IndexerOptions {
        writer_memory: 50 << 20,
        writer_threads: 1,
        ..IndexerOptions::default()
    }
}

/// A running repository in a folder: the store, the index and its background indexer.
struct Repo {
    store: Arc<Store>,
    indexer: Arc<Indexer>,
    background: Option<JoinHandle<()>>,
}

impl Repo {
    /// A new repository in `parent/live`.
    fn new_in(parent: &Path) -> Repo {
        let live = parent.join("live");
        std::fs::create_dir(&live).unwrap();
        Repo::open(&live)
    }

    fn open(dir: &Path) -> Repo {
        let store = Arc::new(Store::open(&DatabaseUrl::Sqlite(dir.join("cairn.db"))).unwrap());
        let (indexer, _) =
            Indexer::open(&dir.join("index"), store.clone(), options(), &|_| {}).unwrap();
        let background = Some(indexer.start());
        Repo {
            store,
            indexer,
            background,
        }
    }

    fn source(&self) -> Arc<LiveSource> {
        Arc::new(LiveSource::new(self.store.clone(), self.indexer.clone(), 0))
    }

    fn import(&self, root: &str, n: usize, body: usize) {
        let text = "lorem ipsum dolor sit amet ".repeat(body / 27 + 1);
        let mut items = vec![item(&format!("/Root/{root}"), "Folder", json!({}))];
        for i in 0..n {
            if i % 100 == 0 {
                items.push(item(
                    &format!("/Root/{root}/F{}", i / 100),
                    "Folder",
                    json!({}),
                ));
            }
            items.push(item(
                &format!("/Root/{root}/F{}/a{i}", i / 100),
                "Article",
                json!({"DisplayName": format!("d{i}"), "Body": format!("w{} {}", i % 29, &text[..body])}),
            ));
        }
        let out = self.store.import(&items, self.store.admin_id()).unwrap();
        assert!(out.error.is_none(), "{:?}", out.error);
        self.settle();
    }

    /// Waits until the index holds everything committed.
    fn settle(&self) {
        let last = self.store.last_activity_id().unwrap();
        assert!(self.indexer.wait_for(last, Duration::from_secs(60)));
    }

    fn create(&self, parent: &str, name: &str) {
        let w = self
            .store
            .create(
                &NodeRef::from(parent),
                &NewContent {
                    type_name: "Folder".into(),
                    name: name.into(),
                    fields: Map::new(),
                },
                self.store.admin_id(),
            )
            .unwrap();
        assert!(self.indexer.wait_for(w.activity, Duration::from_secs(30)));
    }

    fn stop(mut self) {
        let bg = self.background.take();
        self.indexer.shutdown(bg).unwrap();
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if let Some(bg) = self.background.take() {
            let _ = self.indexer.shutdown(Some(bg));
        }
    }
}

fn item(path: &str, type_name: &str, fields: Value) -> ImportItem {
    ImportItem {
        path: path.into(),
        type_name: type_name.into(),
        fields: match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        binaries: Vec::new(),
    }
}

/// Makes the (closed) database `mb` MB bigger with a table the repository does not know.
/// [`restore`] with no progress report and no cancel.
fn restore_quietly(
    from: &Path,
    target: &RestoreTarget,
    mode: RestoreMode,
    force: bool,
) -> cairn_backup::Result<cairn_backup::RestoreReport> {
    restore(from, target, mode, force, &|_, _| {}, &CancelToken::new())
}

fn pad(db: &Path, mb: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS test_pad (b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {mb})
         INSERT INTO test_pad SELECT zeroblob(1048576) FROM n;"
    ))
    .unwrap();
}

fn backup(source: &dyn BackupSource, kind: BackupKind, target: &Path) -> Manifest {
    let info = Mutex::new(BackupInfo::started(kind, target));
    run_backup(source, kind, target, &info, &CancelToken::new()).unwrap()
}

/// Restores `from` into the new folder `to`, opens it, and checks index against database.
fn restore_and_check(from: &Path, to: &Path, mode: RestoreMode) -> Repo {
    let target = RestoreTarget {
        data_dir: to.to_path_buf(),
        database: DatabaseUrl::Sqlite(to.join("cairn.db")),
    };
    restore_quietly(from, &target, mode, false).unwrap();
    let repo = Repo::open(to);
    let report = repo.indexer.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.database_items, report.index_documents);
    repo
}

/// `(path, display name)` by name, under `prefix`.
fn items(db: &Path, prefix: &str) -> HashMap<String, (String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT name, path, display_name FROM nodes WHERE path LIKE ?1")
        .unwrap();
    stmt.query_map([format!("{prefix}%")], |r| {
        Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

// ---------------------------------------------------------------------------------------

type State = Option<(String, String)>;

/// What one writer did to its items: per item, `(answered at, state after)`.
type History = HashMap<String, Vec<(Instant, State)>>;

/// Creates, renames, moves and deletes its own items under /Root/W, without waiting for
/// the index (the indexer commits and merges as fast as it can meanwhile).
fn writer(store: Arc<Store>, t: usize, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> History {
    let by = store.admin_id();
    let mut history: History = HashMap::new();
    let mut live: Vec<(String, String)> = Vec::new(); // (name, path)
    let mut seq = 0usize;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let (name, state) = match seq % 5 {
            0 | 3 => {
                let name = format!("t{t}n{seq}");
                let w = store
                    .create(
                        &NodeRef::from("/Root/W/A"),
                        &NewContent {
                            type_name: "Folder".into(),
                            name: name.clone(),
                            fields: json!({"DisplayName": format!("c{seq}")})
                                .as_object()
                                .unwrap()
                                .clone(),
                        },
                        by,
                    )
                    .unwrap();
                live.push((name.clone(), w.value.path.clone()));
                (name, Some((w.value.path, w.value.display_name)))
            }
            1 if !live.is_empty() => {
                let (name, path) = live[(seq * 7) % live.len()].clone();
                let fields = json!({"DisplayName": format!("p{seq}")});
                let w = store
                    .update(
                        &NodeRef::Path(path),
                        fields.as_object().unwrap(),
                        UpdateMode::Patch,
                        by,
                    )
                    .unwrap();
                (name, Some((w.value.path, w.value.display_name)))
            }
            2 if !live.is_empty() => {
                let k = (seq * 5) % live.len();
                let (name, path) = live[k].clone();
                let to = if path.starts_with("/Root/W/A/") {
                    "/Root/W/B"
                } else {
                    "/Root/W/A"
                };
                let w = store
                    .move_to(&NodeRef::Path(path), &NodeRef::from(to), by)
                    .unwrap();
                live[k].1 = w.value.path.clone();
                (name, Some((w.value.path, w.value.display_name)))
            }
            4 if live.len() > 3 => {
                let (name, path) = live.swap_remove((seq * 3) % live.len());
                store.delete(&NodeRef::Path(path), by).unwrap();
                (name, None)
            }
            _ => continue,
        };
        history
            .entry(name)
            .or_default()
            .push((Instant::now(), state));
        done.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
    }
    history
}

/// A repository backup of a live repository while writers commit: it verifies, restores
/// with the index agreeing with the database, and holds everything committed before it
/// began with its last value.
#[test]
fn online_backup_under_writes_restores_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Bulk", 2000, 300);
    repo.create("/Root", "W");
    repo.create("/Root/W", "A");
    repo.create("/Root/W", "B");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (store, stop, done) = (repo.store.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || writer(store, t, stop, done))
        })
        .collect();
    wait_until("the writers commit", Duration::from_secs(30), || {
        (done.load(Ordering::SeqCst) >= 100).then_some(())
    });
    let target = dir.path().join("backup");
    let t0 = Instant::now();
    let before = done.load(Ordering::SeqCst);
    let manifest = backup(&*repo.source(), BackupKind::Repository, &target);
    let during = done.load(Ordering::SeqCst) - before;
    wait_until("the writers go on", Duration::from_secs(30), || {
        (done.load(Ordering::SeqCst) >= before + during + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let histories: Vec<History> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(during > 0, "the writers were idle during the backup");
    let db = manifest.database.as_ref().unwrap();
    assert!(
        manifest.index.completion_state.last_activity_id <= db.last_activity_id,
        "the index is copied first"
    );
    let listing = |d: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&target.join("index"));
    verify(&target, &|_, _| {}).unwrap();
    assert_eq!(
        listing(&target.join("index")),
        before,
        "verify leaves the backup as it found it"
    );
    repo.stop();

    let restored_dir = dir.path().join("restored");
    let restored = restore_and_check(&target, &restored_dir, RestoreMode::Both);
    let found = items(&restored_dir.join("cairn.db"), "/Root/W/");
    let mut settled = 0;
    for (name, ops) in histories.iter().flatten() {
        let k = ops.iter().take_while(|(at, _)| *at < t0).count();
        let pre: State = if k == 0 { None } else { ops[k - 1].1.clone() };
        let got = found.get(name).cloned();
        if k == ops.len() {
            settled += 1;
            assert_eq!(got, pre, "{name}: settled before the backup began");
        } else {
            assert!(
                got == pre || ops[k..].iter().any(|(_, s)| *s == got),
                "{name}: restored {got:?}; before the backup {pre:?}; later {:?}",
                &ops[k..]
            );
        }
    }
    assert!(settled > 10, "{settled}");
    assert_eq!(
        items(&restored_dir.join("cairn.db"), "/Root/Bulk/").len(),
        2020
    );
    restored.stop();
}

// ---------------------------------------------------------------------------------------

/// A source that sets the cancel flag once the database copy has made progress.
struct CancelInDatabase(Arc<LiveSource>);

impl BackupSource for CancelInDatabase {
    fn store(&self) -> &Store {
        &self.0.store
    }
    fn repository_id(&self) -> String {
        self.0.repository_id()
    }
    fn snapshot_index(&self) -> cairn_backup::Result<IndexSnapshot> {
        self.0.snapshot_index()
    }
    fn backup_database(
        &self,
        dest: &Path,
        progress: &dyn Fn(u64, u64),
        cancel: &CancelToken,
    ) -> cairn_backup::Result<DatabaseBackup> {
        self.0.backup_database(
            dest,
            &|done, total| {
                progress(done, total);
                if done > 0 && done < total {
                    cancel.cancel();
                }
            },
            cancel,
        )
    }
}

/// A cancel in the middle of the database copy: Canceled, no folder, nothing in the list.
#[test]
fn cancel_during_the_database_copy_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    Repo::open(&live).stop();
    pad(&live.join("cairn.db"), 24);
    let repo = Repo::open(&live);
    repo.import("Bulk", 200, 100);

    // run_backup itself.
    let target = dir.path().join("backups").join("canceled");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let source = CancelInDatabase(repo.source());
    let info = Mutex::new(BackupInfo::started(BackupKind::Repository, &target));
    let cancel = CancelToken::new();
    let r = run_backup(&source, BackupKind::Repository, &target, &info, &cancel);
    assert!(matches!(r, Err(BackupError::Canceled)), "{r:?}");
    assert!(cancel.is_cancelled());
    assert!(
        info.lock().unwrap().copied_files > 0,
        "the index was copied first"
    );
    assert!(!target.exists(), "the partial backup was removed");

    // The same through the job.
    let root = dir.path().join("job");
    let manager = BackupManager::open(&root, Arc::new(CancelInDatabase(repo.source()))).unwrap();
    let started = manager.start(BackupKind::Repository, Some("x")).unwrap();
    assert_eq!(started.state, BackupState::Started);
    wait_until("the job ends", Duration::from_secs(30), || {
        (!manager.is_running()).then_some(())
    });
    let q = manager.query();
    assert_eq!(q.state, BackupState::Canceled, "{q:?}");
    assert!(!root.join("x").exists());
    assert!(list_backups(&root).is_empty());
    // Reopened (a restart), it is still Canceled.
    let again = BackupManager::open(&root, repo.source()).unwrap();
    assert_eq!(again.query().state, BackupState::Canceled);
}

// ---------------------------------------------------------------------------------------

/// A source whose index snapshot (or database copy) waits at a gate, so that a backup stays
/// running; its backups are paced at `rate`, if any.
struct Gated {
    inner: Arc<LiveSource>,
    open: Arc<AtomicBool>,
    reached: Arc<AtomicBool>,
    at_database: bool,
    /// The pace of its backups, if any.
    rate: Option<u64>,
}

impl Gated {
    fn wait(&self) {
        self.reached.store(true, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl BackupSource for Gated {
    fn paced_rate(&self) -> Option<u64> {
        self.rate
    }
    fn store(&self) -> &Store {
        &self.inner.store
    }
    fn repository_id(&self) -> String {
        self.inner.repository_id()
    }
    fn snapshot_index(&self) -> cairn_backup::Result<IndexSnapshot> {
        if !self.at_database {
            self.wait();
        }
        self.inner.snapshot_index()
    }
    fn backup_database(
        &self,
        dest: &Path,
        progress: &dyn Fn(u64, u64),
        cancel: &CancelToken,
    ) -> cairn_backup::Result<DatabaseBackup> {
        if self.at_database {
            self.wait();
        }
        self.inner.backup_database(dest, progress, cancel)
    }
}

/// 20 concurrent starts while none runs: exactly one backup, all answers name it, and the
/// calls that started nothing answer Executing.
#[test]
fn concurrent_starts_run_one_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Bulk", 300, 100);
    let open = Arc::new(AtomicBool::new(false));
    let source = Arc::new(Gated {
        inner: repo.source(),
        open: open.clone(),
        reached: Arc::new(AtomicBool::new(false)),
        at_database: false,
        rate: None,
    });
    let root = dir.path().join("backups");
    let manager = BackupManager::open(&root, source).unwrap();
    // Before any backup, a cancel says there is nothing to cancel and makes nothing up.
    let none = manager.cancel();
    let current = none.current.as_ref().unwrap();
    assert_eq!(current.state, BackupState::Initial);
    assert_eq!(
        (current.started_at.as_str(), current.target_path.as_str()),
        ("", "")
    );
    assert!(current
        .message
        .as_deref()
        .unwrap_or("")
        .contains("no backup is running"));
    let barrier = Arc::new(Barrier::new(20));
    let answers: Vec<_> = (0..20)
        .map(|i| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let kind = if i % 2 == 0 {
                    BackupKind::Index
                } else {
                    BackupKind::Repository
                };
                manager.start(kind, None).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let target = &answers[0].current.as_ref().unwrap().target_path;
    for a in &answers {
        assert_eq!(&a.current.as_ref().unwrap().target_path, target, "{a:?}");
    }
    open.store(true, Ordering::SeqCst);
    wait_until("the backup ends", Duration::from_secs(30), || {
        (!manager.is_running()).then_some(())
    });
    let q = manager.query();
    assert_eq!(q.state, BackupState::Finished, "{q:?}");
    assert_eq!(q.history.len(), 1);
    assert_eq!(list_backups(&root).len(), 1);
    let states: Vec<BackupState> = answers.iter().map(|a| a.state).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s != BackupState::Executing)
            .count(),
        1,
        "the calls that started nothing answer Executing: {states:?}"
    );
}

/// A job that a crash interrupted (the process is gone, its folder half-written) is
/// Faulted at the next open, and its folder removed; earlier finished backups stay.
#[test]
fn a_job_interrupted_by_a_crash_is_faulted_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Bulk", 300, 100);
    let root = dir.path().join("backups");
    let earlier = BackupManager::open(&root, repo.source()).unwrap();
    earlier.start(BackupKind::Repository, Some("good")).unwrap();
    wait_until("the first backup ends", Duration::from_secs(30), || {
        (!earlier.is_running()).then_some(())
    });
    assert_eq!(earlier.query().state, BackupState::Finished);
    drop(earlier);

    // This job stops for good before its database copy: the index is written, no manifest.
    let reached = Arc::new(AtomicBool::new(false));
    let stuck = BackupManager::open(
        &root,
        Arc::new(Gated {
            inner: repo.source(),
            open: Arc::new(AtomicBool::new(false)),
            reached: reached.clone(),
            at_database: true,
            rate: None,
        }),
    )
    .unwrap();
    stuck.start(BackupKind::Repository, Some("victim")).unwrap();
    wait_until(
        "the job reaches the database",
        Duration::from_secs(30),
        || reached.load(Ordering::SeqCst).then_some(()),
    );
    let partial = root.join("victim");
    assert!(partial.join("index/meta.json").exists());
    assert!(verify(&partial, &|_, _| {}).is_err());

    // "Restart": a new manager over the same folder (the stuck one never finishes).
    std::mem::forget(stuck);
    // The history names the job's folder by a path that leads elsewhere, as a path
    // recorded relative to another working directory would: only the folder of that name
    // in the backups folder may be removed.
    let decoy = dir.path().join("elsewhere").join("victim");
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::write(decoy.join("notes.txt"), "precious").unwrap();
    let history_file = root.join("history.json");
    let mut history: Value =
        serde_json::from_str(&std::fs::read_to_string(&history_file).unwrap()).unwrap();
    for entry in history.as_array_mut().unwrap() {
        if entry["TargetPath"].as_str().unwrap().ends_with("victim") {
            entry["TargetPath"] = json!(decoy.to_str().unwrap());
        }
    }
    // A job that wrote its manifest, but was killed before it recorded its end: it is a
    // finished backup, and stays.
    copy_dir(&root.join("good"), &root.join("late"));
    let mut late = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["TargetPath"].as_str().unwrap().ends_with("good"))
        .unwrap()
        .clone();
    late["TargetPath"] = json!(root.join("late").to_str().unwrap());
    late["State"] = json!("Executing");
    history.as_array_mut().unwrap().push(late);
    std::fs::write(&history_file, history.to_string()).unwrap();
    let after = BackupManager::open(&root, repo.source()).unwrap();
    let q = after.query();
    assert_eq!(q.state, BackupState::Faulted, "{q:?}");
    let cur = q.current.as_ref().unwrap();
    assert!(cur.target_path.ends_with("victim"), "{cur:?}");
    assert!(cur.message.as_deref().unwrap_or("").contains("interrupted"));
    assert!(cur.finished_at.is_some());
    assert!(!partial.exists(), "the partial folder was removed");
    assert!(
        decoy.join("notes.txt").exists(),
        "a folder outside was removed"
    );
    assert_eq!(q.history.len(), 3);
    let late = q
        .history
        .iter()
        .find(|i| i.target_path.ends_with("late"))
        .unwrap();
    assert_eq!(late.state, BackupState::Finished, "{late:?}");
    verify(&root.join("late"), &|_, _| {}).unwrap();
    assert!(q
        .history
        .iter()
        .any(|i| i.target_path.ends_with("good") && i.state == BackupState::Finished));
    assert!(root.join("good/manifest.json").exists());
    verify(&root.join("good"), &|_, _| {}).unwrap();
    // A new backup can start.
    after.start(BackupKind::Index, Some("next")).unwrap();
    wait_until("the next backup ends", Duration::from_secs(30), || {
        (!after.is_running()).then_some(())
    });
    assert_eq!(after.query().state, BackupState::Finished);
}

// ---------------------------------------------------------------------------------------

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

/// The second of two backups in one folder hard-links what the first has; each stands
/// alone; an existing target is refused and left alone.
#[test]
fn incremental_backups_link_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let repo = Repo::open(&live);
    repo.import("Bulk", 500, 100);
    let root = dir.path().join("backups");
    std::fs::create_dir(&root).unwrap();
    let one = backup(&*repo.source(), BackupKind::Repository, &root.join("one"));
    repo.create("/Root", "change");
    let two = backup(&*repo.source(), BackupKind::Repository, &root.join("two"));
    let mut shared = 0;
    for f in &two.files {
        if !f.path.starts_with("index/") || f.path == "index/meta.json" {
            continue;
        }
        if let Some(e) = one.files.iter().find(|e| e.path == f.path) {
            assert_eq!(e, f);
            // Linked because the live file is the one the first backup copied, unchanged:
            // its identity is recorded, and its bytes still have the recorded checksum.
            let live_file = live.join(&f.path);
            assert!(f.source.is_some(), "{}", f.path);
            assert_eq!(
                f.source,
                cairn_backup::identity::identity(&std::fs::metadata(&live_file).unwrap()),
                "{}",
                f.path
            );
            let never = CancelToken::new();
            assert_eq!(
                cairn_backup::files::sha256_file(&live_file, &never)
                    .unwrap()
                    .0,
                f.sha256
            );
            assert_eq!(
                inode(&root.join("one").join(&f.path)),
                inode(&root.join("two").join(&f.path)),
                "{}",
                f.path
            );
            shared += 1;
        }
    }
    assert!(shared > 0);
    assert!(
        two.index.completion_state.last_activity_id > one.index.completion_state.last_activity_id
    );
    // A file the second backup linked is linked again by a third: the link changed its
    // inode (the check reads the change time) before the second manifest was written.
    repo.create("/Root", "change2");
    let three = backup(&*repo.source(), BackupKind::Repository, &root.join("three"));
    let mut again = 0;
    for f in &three.files {
        if !f.path.starts_with("index/") || f.path == "index/meta.json" {
            continue;
        }
        if two.files.iter().any(|e| e.path == f.path) {
            assert_eq!(
                inode(&root.join("two").join(&f.path)),
                inode(&root.join("three").join(&f.path)),
                "{}",
                f.path
            );
            again += 1;
        }
    }
    assert!(again > 0);
    std::fs::remove_dir_all(root.join("three")).unwrap();
    // The database is always copied whole.
    assert_ne!(
        inode(&root.join("one/database/cairn.db")),
        inode(&root.join("two/database/cairn.db"))
    );

    // An existing target is refused and kept as it is.
    let info = Mutex::new(BackupInfo::started(BackupKind::Index, &root.join("one")));
    let r = run_backup(
        &*repo.source(),
        BackupKind::Index,
        &root.join("one"),
        &info,
        &CancelToken::new(),
    );
    assert!(matches!(r, Err(BackupError::TargetExists(_))), "{r:?}");
    verify(&root.join("one"), &|_, _| {}).unwrap();

    std::fs::remove_dir_all(root.join("one")).unwrap();
    verify(&root.join("two"), &|_, _| {}).unwrap();
    repo.stop();
    let restored = restore_and_check(
        &root.join("two"),
        &dir.path().join("restored"),
        RestoreMode::Both,
    );
    assert!(restored
        .store
        .node(&NodeRef::from("/Root/change"))
        .unwrap()
        .is_some());
    restored.stop();
}

/// A file of an earlier backup that was damaged since is not linked into the next one:
/// a backup is only Finished with every file checked, so the new one must verify.
#[test]
fn a_damaged_earlier_backup_does_not_spread_into_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let repo = Repo::open(&live);
    repo.import("Bulk", 500, 100);
    let root = dir.path().join("backups");
    std::fs::create_dir(&root).unwrap();
    let one = backup(&*repo.source(), BackupKind::Index, &root.join("one"));
    // Bit rot in the first backup: a segment file replaced by a damaged copy.
    let seg = one
        .files
        .iter()
        .filter(|f| f.path != "index/meta.json")
        .max_by_key(|f| f.size)
        .unwrap();
    let p = root.join("one").join(&seg.path);
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, bytes).unwrap();
    assert!(verify(&root.join("one"), &|_, _| {}).is_err());

    repo.create("/Root", "change");
    backup(&*repo.source(), BackupKind::Index, &root.join("two"));
    let r = verify(&root.join("two"), &|_, _| {});
    assert!(
        r.is_ok(),
        "the second backup was reported finished but does not verify: {:?}",
        r.err()
    );
}

/// Activities are kept while an index that may still catch up needs them: a backup's
/// position holds them back even when the live index is far past it, and the retention
/// keeps recent ones whatever the positions.
#[test]
fn activity_cleanup_keeps_what_a_backup_needs() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let repo = Repo::open(&live);
    repo.import("Bulk", 300, 100);
    let root = dir.path().join("backups");
    let manager = BackupManager::open(&root, repo.source()).unwrap();
    manager.start(BackupKind::Index, Some("b")).unwrap();
    wait_until("the backup ends", Duration::from_secs(30), || {
        (!manager.is_running()).then_some(())
    });
    assert_eq!(manager.query().state, BackupState::Finished);
    let at = list_backups(&root)[0]
        .1
        .index
        .completion_state
        .last_activity_id;
    for i in 0..20 {
        repo.create("/Root", &format!("after-{i}"));
    }
    let last = repo.store.last_activity_id().unwrap();
    assert!(last.0 >= at.0 + 20);
    let kept = |below: i64| {
        repo.store
            .missing_activity_ids(ActivityId(below), last)
            .unwrap()
            .is_empty()
    };
    // Within the retention nothing goes.
    let day = Duration::from_secs(86_400);
    assert_eq!(
        clean_activities(&repo.store, &repo.indexer, &manager, None, day).unwrap(),
        0
    );
    assert!(kept(0));
    // With none, what is below the backup's position goes, and everything it needs stays.
    let deleted =
        clean_activities(&repo.store, &repo.indexer, &manager, None, Duration::ZERO).unwrap();
    assert!(deleted > 0);
    assert!(
        kept(at.0 - 1),
        "an activity the backup's index needs was deleted"
    );
    assert!(!kept(0), "nothing below the backup's position was deleted");
    // Without the backup, the live index's position is the floor.
    std::fs::remove_dir_all(root.join("b")).unwrap();
    let manager = BackupManager::open(&root, repo.source()).unwrap();
    let deleted =
        clean_activities(&repo.store, &repo.indexer, &manager, None, Duration::ZERO).unwrap();
    assert!(deleted > 0);
    assert!(kept(repo.indexer.state().last_activity_id.0 - 1));
    repo.stop();
}

/// The parts of a manifest that verify vouches for: every file, the index position and
/// content, and the database part (not `source`, `bytes` or the times, which restore does
/// not trust).
fn vouched(m: &Manifest) -> Value {
    let db = m
        .database
        .as_ref()
        .map(|d| json!([d.kind, d.file_name, d.last_activity_id, d.repository_id]));
    let files: Vec<Value> = m
        .files
        .iter()
        .map(|f| json!([f.path, f.size, f.sha256]))
        .collect();
    json!({"kind": m.kind, "repository": m.repository_id, "index": m.index, "db": db, "files": files})
}

/// A tampered manifest is refused before anything outside the backup is read or written,
/// and random damage to it never makes verify vouch for something other than the truth.
#[test]
fn tampered_manifests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Docs", 40, 200);
    let root = dir.path().join("backups");
    std::fs::create_dir(&root).unwrap();
    let b = root.join("b1");
    let truth = backup(&*repo.source(), BackupKind::Repository, &b);
    let manifest_file = b.join("manifest.json");
    let original = std::fs::read_to_string(&manifest_file).unwrap();
    let no_progress = |_: u64, _: u64| {};
    assert!(verify(&b, &no_progress).is_ok());
    // A valid database of the same repository beside the backup: a manifest pointing at
    // it must get it neither verified nor restored.
    let db_name = truth.database.as_ref().unwrap().file_name.clone();
    let outside = root.join("outside.db");
    std::fs::copy(b.join("database").join(&db_name), &outside).unwrap();
    let outside_bytes = std::fs::read(&outside).unwrap();

    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 14] = [
        ("database file outside", |m| {
            m["database"]["file_name"] = json!("../../outside.db")
        }),
        ("database file outside, listed", |m| {
            m["database"]["file_name"] = json!("../../outside.db");
            let mut f = m["files"][0].clone();
            f["path"] = json!("database/../../outside.db");
            m["files"].as_array_mut().unwrap().push(f);
        }),
        ("database file not listed", |m| {
            m["database"]["file_name"] = json!("other.db")
        }),
        ("parent in a file path", |m| {
            m["files"][0]["path"] = json!("index/../../outside.db")
        }),
        ("absolute file path", |m| {
            m["files"][0]["path"] = json!("/etc/hostname")
        }),
        ("file beside the two folders", |m| {
            m["files"][0]["path"] = json!("manifest.json")
        }),
        ("file listed twice", |m| {
            let f = m["files"][0].clone();
            m["files"].as_array_mut().unwrap().push(f);
        }),
        ("size", |m| {
            let n = m["files"][0]["size"].as_u64().unwrap();
            m["files"][0]["size"] = json!(n + 1);
        }),
        ("checksum", |m| {
            m["files"][0]["sha256"] = json!("0".repeat(64))
        }),
        ("an index file left out", |m| {
            // The file stays in the folder: a restore would copy the listed files only.
            let files = m["files"].as_array_mut().unwrap();
            let at = files
                .iter()
                .position(|f| f["path"].as_str().unwrap().ends_with(".pos"))
                .unwrap();
            files.remove(at);
        }),
        ("database part removed", |m| m["database"] = Value::Null),
        ("kind", |m| m["kind"] = json!("Index")),
        ("documents", |m| {
            let n = m["index"]["documents"].as_u64().unwrap();
            m["index"]["documents"] = json!(n + 1);
        }),
        // Random damage once hit this field: verify did not look at it.
        ("index format", |m| {
            m["index"]["format"] = json!("tantivy-0x27")
        }),
    ];
    let restore_into = root.join("restored");
    let target = RestoreTarget {
        data_dir: restore_into.clone(),
        database: DatabaseUrl::Sqlite(restore_into.join("cairn.db")),
    };
    for (what, edit) in edits {
        let mut m: Value = serde_json::from_str(&original).unwrap();
        edit(&mut m);
        std::fs::write(&manifest_file, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let err = verify(&b, &no_progress).expect_err(what);
        assert!(matches!(err, BackupError::Invalid(_)), "{what}: {err}");
        let err = restore_quietly(&b, &target, RestoreMode::Both, false).expect_err(what);
        assert!(matches!(err, BackupError::Invalid(_)), "{what}: {err}");
        assert!(
            !restore_into.exists(),
            "{what}: the restore target was created"
        );
        assert_eq!(std::fs::read(&outside).unwrap(), outside_bytes, "{what}");
    }

    // Random damage: one byte of the text changed at a time.
    let want = vouched(&truth);
    let replacements = b"0123456789abcdef\"{}[],:./ xzAZ-";
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..150 {
        let mut bytes = original.clone().into_bytes();
        let at = (next() % bytes.len() as u64) as usize;
        bytes[at] = replacements[(next() % replacements.len() as u64) as usize];
        std::fs::write(&manifest_file, &bytes).unwrap();
        match verify(&b, &no_progress) {
            Ok(report) => {
                accepted += 1;
                assert_eq!(
                    vouched(&report.manifest),
                    want,
                    "byte {at} changed: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            Err(e) => {
                refused += 1;
                assert!(matches!(e, BackupError::Invalid(_)), "{e}");
            }
        }
    }
    assert!(
        refused > 0 && accepted > 0,
        "{accepted} accepted, {refused} refused"
    );
    std::fs::write(&manifest_file, &original).unwrap();
    assert!(verify(&b, &no_progress).is_ok());
    repo.stop();
}

/// A paced backup copies no faster than its rate, even when one step copies far more than
/// the rate allows per wait (the database copies ~4 MiB per step). It used to wait at most
/// 250 ms per step.
#[test]
fn a_paced_backup_keeps_to_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Docs", 50, 100);
    pad(&dir.path().join("live/cairn.db"), 8);
    let rate = 4 << 20;
    let source = Gated {
        inner: repo.source(),
        open: Arc::new(AtomicBool::new(true)),
        reached: Arc::new(AtomicBool::new(false)),
        at_database: false,
        rate: Some(rate),
    };
    let started = Instant::now();
    let manifest = backup(&source, BackupKind::Repository, &dir.path().join("b"));
    let took = started.elapsed().as_secs_f64();
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    assert!(bytes > 8 << 20, "{bytes}");
    let least = bytes as f64 / rate as f64;
    assert!(
        took >= least * 0.9,
        "{bytes} bytes in {took:.2} s: faster than {rate} B/s ({least:.2} s)"
    );
    // Canceling a paced backup is not held up by the pace.
    let info = Mutex::new(BackupInfo::started(
        BackupKind::Repository,
        &dir.path().join("c"),
    ));
    let cancel = CancelToken::new();
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let run = s.spawn(|| {
            run_backup(
                &source,
                BackupKind::Repository,
                &dir.path().join("c"),
                &info,
                &cancel,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel();
        run.join().unwrap()
    });
    assert!(result.is_err());
    assert!(
        started.elapsed() < Duration::from_secs_f64(least),
        "{:?}",
        started.elapsed()
    );
    assert!(!dir.path().join("c").exists());
}

/// A backup's database goes only to a target database of the same kind; a mismatch is
/// refused before anything is staged or created.
#[test]
fn a_restore_to_another_kind_of_database_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Docs", 20, 100);
    let b = dir.path().join("b");
    backup(&*repo.source(), BackupKind::Repository, &b);
    let into = dir.path().join("restored");
    let target = RestoreTarget {
        data_dir: into.clone(),
        // Nothing listens there: the refusal must come before any connection.
        database: DatabaseUrl::Postgres("postgres://cairn@127.0.0.1:1/none".into()),
    };
    let err = restore_quietly(&b, &target, RestoreMode::Both, false).unwrap_err();
    assert!(matches!(err, BackupError::Refused(_)), "{err}");
    assert!(err.to_string().contains("same kind"), "{err}");
    assert!(!into.exists());
    // An index alone goes only beside its repository's database: not into a folder with
    // none, where the next start would make a new repository and drop it.
    std::fs::create_dir(&into).unwrap();
    let target = RestoreTarget {
        data_dir: into.clone(),
        database: DatabaseUrl::Sqlite(into.join("cairn.db")),
    };
    let err = restore_quietly(&b, &target, RestoreMode::IndexOnly, false).unwrap_err();
    assert!(err.to_string().contains("there is no repository"), "{err}");
    assert_eq!(std::fs::read_dir(&into).unwrap().count(), 0);
}

/// A restore replaces a damaged database (with --force: without, it says so), and does not
/// run over what an interrupted restore moved aside.
#[test]
fn a_damaged_database_is_restored_over_and_kept_data_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Docs", 20, 100);
    let b = dir.path().join("b");
    backup(&*repo.source(), BackupKind::Repository, &b);
    let live = dir.path().join("live");
    drop(repo);
    std::fs::write(live.join("cairn.db"), vec![7u8; 100_000]).unwrap();
    let target = RestoreTarget {
        data_dir: live.clone(),
        database: DatabaseUrl::Sqlite(live.join("cairn.db")),
    };
    let err = restore_quietly(&b, &target, RestoreMode::Both, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    let err = restore_quietly(&b, &target, RestoreMode::IndexOnly, true).unwrap_err();
    assert!(
        err.to_string().contains("restore the database too"),
        "{err}"
    );
    let report = restore_quietly(&b, &target, RestoreMode::Both, true).unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("cannot be read")),
        "{report:?}"
    );
    let restored = Repo::open(&live);
    let check = restored.indexer.check_integrity().unwrap();
    assert!(check.is_clean(), "{:?}", check.differences);
    assert!(check.database_items > 20);
    drop(restored);
    // An interrupted restore's `.restore-old` is the data from before it: not run over.
    let old = live.join(".restore-old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("cairn.db"), "the only copy").unwrap();
    let err = restore_quietly(&b, &target, RestoreMode::Both, true).unwrap_err();
    assert!(err.to_string().contains("interrupted restore"), "{err}");
    assert_eq!(
        std::fs::read_to_string(old.join("cairn.db")).unwrap(),
        "the only copy"
    );
}

/// Copies the flat-or-nested folder `from` to the new folder `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A file of a backup replaced by a link to the same bytes elsewhere is refused: a backup
/// holds its own files, and a restore must not follow a link out of it.
#[test]
fn a_link_in_a_backup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    repo.import("Docs", 20, 100);
    let root = dir.path().join("backups");
    std::fs::create_dir(&root).unwrap();
    let b = root.join("b1");
    let m = backup(&*repo.source(), BackupKind::Index, &b);
    let no_progress = |_: u64, _: u64| {};
    verify(&b, &no_progress).unwrap();
    let f = &m.files[0];
    let elsewhere = dir.path().join("elsewhere");
    std::fs::rename(b.join(&f.path), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, b.join(&f.path)).unwrap();
    let err = verify(&b, &no_progress).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // Nor a folder of the backup that is a link to a copy of itself elsewhere.
    std::fs::remove_file(b.join(&f.path)).unwrap();
    std::fs::rename(&elsewhere, b.join(&f.path)).unwrap();
    verify(&b, &no_progress).unwrap();
    let moved = dir.path().join("index-elsewhere");
    std::fs::rename(b.join("index"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, b.join("index")).unwrap();
    let err = verify(&b, &no_progress).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// An unreadable history is set aside, not lost: a new one starts beside it.
#[test]
fn an_unreadable_history_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new_in(dir.path());
    let root = dir.path().join("backups");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("history.json"), "[{not json").unwrap();
    let manager = BackupManager::open(&root, repo.source()).unwrap();
    assert!(manager.query().history.is_empty());
    assert_eq!(
        std::fs::read_to_string(root.join("history.json.bad")).unwrap(),
        "[{not json"
    );
}
