//! Online backup of an SQLite store while writes continue, verification of the copy, and
//! what SQLite's backup API does under concurrent commits without a pinned snapshot.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::{
    verify_database_file, ActivityId, BackupOptions, CancelToken, DatabaseKind, DatabaseUrl,
    ImportItem, NewContent, NodeId, NodeRef, Store, StoreError,
};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Map};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn open_store(dir: &Path) -> Result<Store, StoreError> {
    Store::open(&DatabaseUrl::Sqlite(dir.join("live.db")))
}

/// Fills the store with `n` folders (with some text, to make pages) under /Root/Bulk.
fn fill(store: &Store, n: usize) -> TestResult {
    folder(store, "/Root", "Bulk")?;
    let text = "lorem ipsum dolor sit amet ".repeat(12);
    for batch in 0..n.div_ceil(1000) {
        let items: Vec<ImportItem> = (batch * 1000..((batch + 1) * 1000).min(n))
            .map(|i| {
                let mut fields = Map::new();
                fields.insert("Description".into(), json!(format!("{i} {text}")));
                ImportItem {
                    path: format!("/Root/Bulk/item-{i}"),
                    type_name: "Folder".into(),
                    fields,
                    binaries: Vec::new(),
                }
            })
            .collect();
        let out = store.import(&items, store.admin_id())?;
        assert!(out.error.is_none(), "{:?}", out.error);
    }
    Ok(())
}

fn folder(store: &Store, parent: &str, name: &str) -> Result<(NodeId, ActivityId), StoreError> {
    let w = store.create(
        &NodeRef::from(parent),
        &NewContent {
            type_name: "Folder".into(),
            name: name.into(),
            fields: Map::new(),
        },
        store.admin_id(),
    )?;
    Ok((w.value.id, w.activity))
}

fn copy_conn(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn node_ids(conn: &Connection) -> rusqlite::Result<HashSet<i64>> {
    let mut stmt = conn.prepare("SELECT id FROM nodes")?;
    let ids = stmt.query_map([], |r| r.get(0))?;
    ids.collect()
}

fn max_activity(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM indexing_activities",
        [],
        |r| r.get(0),
    )
}

/// The progress callback's record: calls, and how many steps made no progress. A step
/// that restarts the backup copies pages 1..=N again, so `done` does not grow.
#[derive(Default)]
struct Steps {
    calls: u64,
    restarts: u64,
    last_done: u64,
    total: u64,
}

impl Steps {
    fn record(&mut self, done: u64, total: u64) {
        self.calls += 1;
        if self.calls > 1 && done <= self.last_done {
            self.restarts += 1;
        }
        self.last_done = done;
        self.total = total;
    }
}

/// The main requirement: a thread commits creates in a loop while the backup runs in small
/// steps. The backup finishes, with no restart, and is exactly one snapshot.
#[test]
fn sqlite_backup_is_a_consistent_snapshot_under_continuous_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open_store(dir.path())?);
    fill(&store, 12_000)?;
    folder(&store, "/Root", "Live")?;

    let stop = Arc::new(AtomicBool::new(false));
    let created: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let writer = {
        let (store, stop, created) = (store.clone(), stop.clone(), created.clone());
        std::thread::spawn(move || -> Result<u64, StoreError> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (id, activity) = folder(&store, "/Root/Live", &format!("n-{i}"))?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id.0, activity.0));
                i += 1;
            }
            Ok(i)
        })
    };
    // Let the writer get going, then note what has been committed before the backup.
    while created.lock().unwrap_or_else(|p| p.into_inner()).len() < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before: Vec<(i64, i64)> = created.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let backup_dir = dir.path().join("backup");
    let steps = Mutex::new(Steps::default());
    let options = BackupOptions {
        sqlite_pages_per_step: 16,
        ..BackupOptions::default()
    };
    let started = Instant::now();
    let result = store.backup_database_with(
        &backup_dir,
        &options,
        &|done, total| {
            steps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(done, total);
            // Slow the copy down (as the backup pacer does) so that writes commit meanwhile.
            std::thread::sleep(Duration::from_millis(2));
        },
        &CancelToken::new(),
    );
    let elapsed = started.elapsed();
    let during = created.lock().unwrap_or_else(|p| p.into_inner()).len() - before.len();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().map_err(|_| "writer panicked")??;
    let backup = result?;
    let steps = steps.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "pinned snapshot: {} pages in {} steps of 16, {} restarts, {:?}; {} creates committed \
         during the backup ({} in all); copy {} bytes, last activity {}",
        steps.total,
        steps.calls,
        steps.restarts,
        elapsed,
        during,
        writes,
        backup.bytes,
        backup.last_activity_id
    );

    // (a) it finished without restarting, while writes were committed meanwhile.
    assert!(during >= 10, "only {during} writes during the backup");
    assert_eq!(steps.restarts, 0);
    assert_eq!(steps.last_done, steps.total);
    // Progress is in bytes: steps of 16 pages of 4 KiB (SQLite's default page size).
    assert_eq!(steps.total % 4096, 0);
    assert_eq!(steps.calls, (steps.total / 4096).div_ceil(16));
    assert_eq!(backup.kind, DatabaseKind::Sqlite);
    assert_eq!(backup.file_name, "cairn.db");
    assert_eq!(backup.repository_id, store.repository_id().to_string());
    assert_eq!(backup.schema_version, 3);
    let file = backup_dir.join("cairn.db");
    assert_eq!(std::fs::metadata(&file)?.len(), backup.bytes);
    assert!(!backup_dir.join("cairn.db.partial").exists());

    // (b) the copy passes integrity_check; (c) its last activity is the one returned.
    let verified = verify_database_file(DatabaseKind::Sqlite, &file)?;
    assert_eq!(verified.last_activity_id, Some(backup.last_activity_id));
    assert_eq!(
        verified.repository_id.as_deref(),
        Some(&*backup.repository_id)
    );
    assert_eq!(verified.schema_version, Some(3));
    assert_eq!(verified.bytes, backup.bytes);
    let copy = copy_conn(&file)?;
    assert_eq!(max_activity(&copy)?, backup.last_activity_id.0);
    // A self-contained file: rollback-journal mode, no WAL needed.
    let mode: String = copy.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "delete");

    // (d) every create that returned before the backup began is in the copy, and the copy
    // is one snapshot: exactly the creates whose activity is at most last_activity_id.
    let ids = node_ids(&copy)?;
    for (id, _) in &before {
        assert!(
            ids.contains(id),
            "node {id} created before the backup is missing"
        );
    }
    let all = created.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (id, activity) in &all {
        assert_eq!(
            ids.contains(id),
            *activity <= backup.last_activity_id.0,
            "node {id} (activity {activity}) vs snapshot {}",
            backup.last_activity_id
        );
    }
    let stray: i64 = copy.query_row(
        "SELECT COUNT(*) FROM nodes WHERE timestamp > ?1",
        [backup.last_activity_id.0],
        |r| r.get(0),
    )?;
    assert_eq!(stray, 0);
    drop(copy);

    // The copy opens as a store of the same repository (what a restore does).
    let restored_dir = tempfile::tempdir()?;
    let restored_path = restored_dir.path().join("restored.db");
    std::fs::copy(&file, &restored_path)?;
    let restored = Store::open(&DatabaseUrl::Sqlite(restored_path))?;
    assert_eq!(restored.repository_id(), store.repository_id());
    assert_eq!(restored.last_activity_id()?, backup.last_activity_id);
    assert_eq!(restored.count_nodes()?, ids.len() as u64);
    Ok(())
}

/// Deterministic interleaving: one committed write between every two steps (written from
/// the progress callback). With the pinned snapshot the backup takes exactly
/// ceil(pages / step) steps.
#[test]
fn sqlite_backup_finishes_with_a_commit_between_every_step() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    fill(&store, 3_000)?;
    let before = store.last_activity_id()?;
    let steps = Mutex::new(Steps::default());
    let writes = AtomicU64::new(0);
    let backup = store.backup_database_with(
        &dir.path().join("backup"),
        &BackupOptions {
            sqlite_pages_per_step: 8,
            ..BackupOptions::default()
        },
        &|done, total| {
            steps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(done, total);
            let n = writes.fetch_add(1, Ordering::Relaxed);
            // Errors surface below as a missing write count.
            if folder(&store, "/Root", &format!("between-{n}")).is_err() {
                writes.fetch_sub(1, Ordering::Relaxed);
            }
        },
        &CancelToken::new(),
    )?;
    let steps = steps.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "commit between steps, pinned: {} pages, {} steps of 8, {} restarts, {} commits",
        steps.total,
        steps.calls,
        steps.restarts,
        writes.load(Ordering::Relaxed)
    );
    assert_eq!(steps.restarts, 0);
    assert_eq!(steps.calls, (steps.total / 4096).div_ceil(8));
    assert_eq!(writes.load(Ordering::Relaxed), steps.calls);
    assert_eq!(backup.last_activity_id, before);
    assert!(store.last_activity_id()?.0 >= before.0 + steps.calls as i64);
    let verified = verify_database_file(DatabaseKind::Sqlite, &dir.path().join("backup/cairn.db"))?;
    assert_eq!(verified.last_activity_id, Some(before));
    Ok(())
}

/// The finding that shaped the design: the same interleaving without a read transaction
/// held on the source restarts the backup after every commit, so it never completes.
#[test]
fn sqlite_backup_api_restarts_without_a_pinned_snapshot() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    fill(&store, 3_000)?;
    let src = Connection::open(dir.path().join("live.db"))?;
    let mut dst = Connection::open(dir.path().join("unpinned.db"))?;
    let backup = Backup::new(&src, &mut dst)?;
    let mut steps = Steps::default();
    let mut finished = false;
    let mut max_steps = u64::MAX;
    let mut n = 0u64;
    let started = Instant::now();
    while steps.calls < max_steps {
        let r = backup.step(8)?;
        let p = backup.progress();
        let total = p.pagecount as u64;
        steps.record(total - p.remaining as u64, total);
        // Three times what a backup of an unchanging database would need.
        max_steps = max_steps.min(3 * total.div_ceil(8));
        if r == StepResult::Done {
            finished = true;
            break;
        }
        folder(&store, "/Root", &format!("between-{n}"))?;
        n += 1;
    }
    eprintln!(
        "commit between steps, unpinned: {} pages, {} steps of 8, {} restarts, finished: {}, {:?}",
        steps.total,
        steps.calls,
        steps.restarts,
        finished,
        started.elapsed()
    );
    assert!(!finished, "the unpinned backup finished despite commits");
    // Every step after the first started again from page 1.
    assert_eq!(steps.restarts, steps.calls - 1);
    assert_eq!(steps.last_done, 8);
    Ok(())
}

/// Numbers for the unpinned backup API against a thread committing as fast as it can:
/// `cargo test -p cairn-store --test backup_sqlite -- --ignored --nocapture`.
// Ignored because it only prints timings (how long the unpinned API takes to give up), and
// its timing varies with the machine. What it illustrates is checked on every run, with a
// deterministic interleaving, by `sqlite_backup_api_restarts_without_a_pinned_snapshot`
// (unpinned: restarts after every commit) and `sqlite_backup_finishes_with_a_commit_between_every_step`
// and `sqlite_backup_is_a_consistent_snapshot_under_continuous_writes` (pinned: finishes).
#[test]
#[ignore = "a measurement, not a check"]
fn measure_unpinned_backup_under_threaded_writes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(open_store(dir.path())?);
    fill(&store, 12_000)?;
    folder(&store, "/Root", "Live")?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64, StoreError> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                folder(&store, "/Root/Live", &format!("n-{i}"))?;
                i += 1;
            }
            Ok(i)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for (pages, pause_ms) in [(16, 2), (16, 0), (1024, 0), (-1, 0)] {
        let src = Connection::open(dir.path().join("live.db"))?;
        let target = dir.path().join(format!("unpinned-{pages}-{pause_ms}.db"));
        let mut dst = Connection::open(&target)?;
        let backup = Backup::new(&src, &mut dst)?;
        let mut steps = Steps::default();
        let mut finished = false;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let r = backup.step(pages)?;
            let p = backup.progress();
            let total = p.pagecount as u64;
            steps.record(total - p.remaining as u64, total);
            if r == StepResult::Done {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        eprintln!(
            "unpinned, writer thread: step {pages} pages, pause {pause_ms} ms: {} pages, {} steps, \
             {} restarts, finished: {finished}, {:?}",
            steps.total,
            steps.calls,
            steps.restarts,
            started.elapsed()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().map_err(|_| "writer panicked")??;
    eprintln!("{writes} creates committed");
    Ok(())
}

#[test]
fn cancelled_sqlite_backup_leaves_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = open_store(dir.path())?;
    fill(&store, 2_000)?;
    let backup_dir = dir.path().join("backup");
    let cancel = CancelToken::new();
    let calls = AtomicU64::new(0);
    let result = store.backup_database_with(
        &backup_dir,
        &BackupOptions {
            sqlite_pages_per_step: 4,
            ..BackupOptions::default()
        },
        &|done, total| {
            assert!(done < total, "the backup was too small to cancel midway");
            if calls.fetch_add(1, Ordering::Relaxed) == 2 {
                cancel.cancel();
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(StoreError::Cancelled)), "{result:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let left: Vec<_> = std::fs::read_dir(&backup_dir)?.collect::<Result<_, _>>()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    // The store is unharmed, and a second backup works.
    folder(&store, "/Root", "after-cancel")?;
    let backup = store.backup_database(&backup_dir, &|_, _| {}, &CancelToken::new())?;
    assert_eq!(backup.last_activity_id, store.last_activity_id()?);
    Ok(())
}

/// Makes a verified backup in `dir/backup` and returns the file.
fn good_copy(dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let store = open_store(dir)?;
    fill(&store, 1_000)?;
    store.backup_database(&dir.join("backup"), &|_, _| {}, &CancelToken::new())?;
    let file = dir.join("backup/cairn.db");
    verify_database_file(DatabaseKind::Sqlite, &file)?;
    Ok(file)
}

fn expect_corrupt(path: &Path) -> String {
    match verify_database_file(DatabaseKind::Sqlite, path) {
        Err(e @ StoreError::Corrupt(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            msg
        }
        other => panic!(
            "expected a Corrupt error for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn verify_rejects_a_truncated_sqlite_copy() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = good_copy(dir.path())?;
    let len = std::fs::metadata(&file)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)?
        .set_len(len / 2)?;
    let msg = expect_corrupt(&file);
    eprintln!("truncated: {msg}");
    Ok(())
}

#[test]
fn verify_rejects_a_flipped_byte_in_a_btree_page() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = good_copy(dir.path())?;
    let (page_size, root): (u64, u64) = {
        let c = copy_conn(&file)?;
        let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let root: i64 = c.query_row(
            "SELECT rootpage FROM sqlite_master WHERE name = 'nodes'",
            [],
            |r| r.get(0),
        )?;
        (page_size as u64, root as u64)
    };
    // The first byte of a b-tree page is its type (2, 5, 10 or 13).
    let offset = (root - 1) * page_size;
    let mut bytes = std::fs::read(&file)?;
    bytes[offset as usize] ^= 0xFF;
    std::fs::write(&file, &bytes)?;
    let msg = expect_corrupt(&file);
    eprintln!("flipped b-tree byte: {msg}");
    Ok(())
}

#[test]
fn verify_rejects_a_flipped_byte_in_the_header() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = good_copy(dir.path())?;
    let mut bytes = std::fs::read(&file)?;
    bytes[3] ^= 0x01; // "SQLite format 3\0"
    std::fs::write(&file, &bytes)?;
    let msg = expect_corrupt(&file);
    eprintln!("flipped header byte: {msg}");
    Ok(())
}

#[test]
fn verify_rejects_an_sqlite_file_that_is_not_a_cairn_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("other.db");
    Connection::open(&file)?.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")?;
    let msg = expect_corrupt(&file);
    assert!(msg.contains("not a Cairn database"), "{msg}");
    let missing = verify_database_file(DatabaseKind::Sqlite, &dir.path().join("nope.db"));
    assert!(matches!(missing, Err(StoreError::Io { .. })), "{missing:?}");
    Ok(())
}

#[test]
fn sqlite_backup_refuses_to_overwrite_the_live_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let live = dir.path().join("cairn.db");
    let store = Store::open(&DatabaseUrl::Sqlite(live.clone()))?;
    let result = store.backup_database(dir.path(), &|_, _| {}, &CancelToken::new());
    assert!(
        matches!(result, Err(StoreError::NotAllowed(_))),
        "{result:?}"
    );
    assert!(store.count_nodes()? > 0);
    Ok(())
}
