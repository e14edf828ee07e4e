//! Online backup of a PostgreSQL store with `pg_dump` while writes continue, verification of
//! the dump, and restore into a fresh database, against a real server (cairn-testkit).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::{
    restore_postgres, verify_database_file, ActivityId, BackupOptions, CancelToken, DatabaseKind,
    DatabaseUrl, ImportItem, NewContent, NodeId, NodeRef, Store, StoreError, RESTORE_LOCK_TIMEOUT,
};
use cairn_testkit::{shared_cluster, unique_name};
use serde_json::{json, Map};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn new_database(prefix: &str) -> Result<String, Box<dyn std::error::Error>> {
    Ok(shared_cluster()?.create_database(&unique_name(prefix))?)
}

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

fn query_i64(url: &str, sql: &str) -> Result<i64, Box<dyn std::error::Error>> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    Ok(client.query_one(sql, &[])?.try_get(0)?)
}

#[test]
fn postgres_backup_under_writes_verifies_and_restores() -> TestResult {
    let url = new_database("pg_backup")?;
    let store = Arc::new(Store::open(&DatabaseUrl::Postgres(url.clone()))?);
    fill(&store, 5_000)?;
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
    while created.lock().unwrap_or_else(|p| p.into_inner()).len() < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = created.lock().unwrap_or_else(|p| p.into_inner()).len();

    let dir = tempfile::tempdir()?;
    let calls: Mutex<Vec<(u64, u64)>> = Mutex::default();
    let started = Instant::now();
    let result = store.backup_database_with(
        dir.path(),
        &BackupOptions {
            poll_interval: Duration::from_millis(10),
            ..BackupOptions::default()
        },
        &|done, total| {
            calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((done, total))
        },
        &CancelToken::new(),
    );
    let elapsed = started.elapsed();
    let during = created.lock().unwrap_or_else(|p| p.into_inner()).len() - before;
    // Keep writing a little after the dump, so that the source moves past the snapshot.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().map_err(|_| "writer panicked")??;
    let backup = result?;
    let calls = calls.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "pg_dump: {} bytes in {elapsed:?}, {} progress calls, {during} creates during the dump \
         ({writes} in all), last activity {}",
        backup.bytes,
        calls.len(),
        backup.last_activity_id
    );

    assert!(during >= 1, "no write was committed during the dump");
    assert_eq!(backup.kind, DatabaseKind::Postgres);
    assert_eq!(backup.file_name, "cairn.pgdump");
    assert_eq!(backup.repository_id, store.repository_id().to_string());
    assert_eq!(backup.schema_version, 3);
    let file = dir.path().join("cairn.pgdump");
    assert_eq!(std::fs::metadata(&file)?.len(), backup.bytes);
    assert!(!dir.path().join("cairn.pgdump.partial").exists());
    assert!(calls.iter().all(|&(_, total)| total == 0));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(calls.last().map(|c| c.0), Some(backup.bytes));
    assert!(store.last_activity_id()? > backup.last_activity_id);

    let verified = verify_database_file(DatabaseKind::Postgres, &file)?;
    assert_eq!(verified.kind, DatabaseKind::Postgres);
    assert_eq!(verified.bytes, backup.bytes);
    assert_eq!(verified.repository_id, None);
    assert_eq!(verified.last_activity_id, None);

    // Restore into a fresh database: exactly the snapshot comes back.
    let target = new_database("pg_restored")?;
    restore_postgres(&file, &target, RESTORE_LOCK_TIMEOUT)?;
    let last = backup.last_activity_id.0;
    assert_eq!(
        query_i64(&target, "SELECT MAX(id) FROM indexing_activities")?,
        last
    );
    let expected = query_i64(
        &url,
        &format!("SELECT COUNT(*) FROM nodes WHERE timestamp <= {last}"),
    )?;
    assert_eq!(query_i64(&target, "SELECT COUNT(*) FROM nodes")?, expected);
    let all = created.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut client = postgres::Client::connect(&target, postgres::NoTls)?;
    let restored: std::collections::HashSet<i64> = client
        .query("SELECT id FROM nodes", &[])?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    for (i, (id, activity)) in all.iter().enumerate() {
        assert_eq!(restored.contains(id), *activity <= last, "node {id}");
        if i < before {
            assert!(
                restored.contains(id),
                "node {id} created before the backup is missing"
            );
        }
    }

    // The restored database is the same repository, and its sequence does not reissue ids.
    let reopened = Store::open(&DatabaseUrl::Postgres(target.clone()))?;
    assert_eq!(reopened.repository_id(), store.repository_id());
    assert_eq!(reopened.last_activity_id()?, backup.last_activity_id);
    let (_, next) = folder(&reopened, "/Root", "after-restore")?;
    assert!(next.0 > last);
    drop(reopened);

    // Restoring over a database that has data replaces it.
    restore_postgres(&file, &target, RESTORE_LOCK_TIMEOUT)?;
    assert_eq!(
        query_i64(&target, "SELECT MAX(id) FROM indexing_activities")?,
        last
    );
    assert_eq!(query_i64(&target, "SELECT COUNT(*) FROM nodes")?, expected);
    Ok(())
}

#[test]
fn cancelled_postgres_backup_kills_pg_dump_and_leaves_nothing() -> TestResult {
    let url = new_database("pg_cancel")?;
    let store = Store::open(&DatabaseUrl::Postgres(url))?;
    fill(&store, 1_000)?;
    let dir = tempfile::tempdir()?;
    let result = store.backup_database(dir.path(), &|_, _| {}, &cancelled());
    assert!(matches!(result, Err(StoreError::Cancelled)), "{result:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path())?.collect::<Result<_, _>>()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    // The exported snapshot's transaction is gone: the store still writes, a backup works.
    folder(&store, "/Root", "after-cancel")?;
    let backup = store.backup_database(dir.path(), &|_, _| {}, &CancelToken::new())?;
    assert_eq!(backup.last_activity_id, store.last_activity_id()?);
    Ok(())
}

fn dump_of_small_store(
    dir: &Path,
) -> Result<(String, std::path::PathBuf), Box<dyn std::error::Error>> {
    let url = new_database("pg_small")?;
    let store = Store::open(&DatabaseUrl::Postgres(url.clone()))?;
    fill(&store, 2_000)?;
    store.backup_database(dir, &|_, _| {}, &CancelToken::new())?;
    Ok((url, dir.join("cairn.pgdump")))
}

#[test]
fn verify_and_restore_reject_a_truncated_dump_and_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (url, file) = dump_of_small_store(dir.path())?;
    let len = std::fs::metadata(&file)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)?
        .set_len(len * 3 / 4)?;
    match verify_database_file(DatabaseKind::Postgres, &file) {
        Err(e @ StoreError::Corrupt(_)) => eprintln!("truncated dump: {e}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A failed restore leaves the target as it was.
    let target = new_database("pg_untouched")?;
    let store = Store::open(&DatabaseUrl::Postgres(target.clone()))?;
    folder(&store, "/Root", "kept")?;
    drop(store);
    let nodes = query_i64(&target, "SELECT COUNT(*) FROM nodes")?;
    let last = query_i64(&target, "SELECT MAX(id) FROM indexing_activities")?;
    let result = restore_postgres(&file, &target, RESTORE_LOCK_TIMEOUT);
    match &result {
        Err(StoreError::Tool { tool, message }) => {
            assert_eq!(tool, "pg_restore");
            eprintln!("restore of a truncated dump: {message}");
        }
        other => panic!("expected a pg_restore error, got {other:?}"),
    }
    assert_eq!(query_i64(&target, "SELECT COUNT(*) FROM nodes")?, nodes);
    assert_eq!(
        query_i64(&target, "SELECT MAX(id) FROM indexing_activities")?,
        last
    );
    drop(url);
    Ok(())
}

#[test]
fn verify_rejects_a_file_that_is_not_a_dump() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cairn.pgdump");
    std::fs::write(&file, b"PGDMP this is not a dump at all")?;
    let result = verify_database_file(DatabaseKind::Postgres, &file);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    Ok(())
}

/// A session of someone else's (a report, a psql left in a transaction) holding a lock on
/// the tables makes a restore give up after its lock timeout, saying why, and change
/// nothing; it used to hang without a word.
#[test]
fn a_restore_blocked_by_another_sessions_lock_gives_up_and_says_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_, file) = dump_of_small_store(dir.path())?;
    let target = new_database("pg_locked")?;
    let store = Store::open(&DatabaseUrl::Postgres(target.clone()))?;
    folder(&store, "/Root", "kept")?;
    drop(store);
    let nodes = query_i64(&target, "SELECT COUNT(*) FROM nodes")?;
    let mut other = postgres::Client::connect(&target, postgres::NoTls)?;
    let mut tx = other.transaction()?;
    tx.query_one("SELECT COUNT(*) FROM nodes", &[])?;
    let started = Instant::now();
    let result = restore_postgres(&file, &target, Duration::from_millis(500));
    match &result {
        Err(StoreError::Tool { tool, message }) => {
            assert_eq!(tool, "pg_restore");
            assert!(message.contains("held by another session"), "{message}");
            // The blocking session is named by its client address and pid.
            assert!(message.contains("pid "), "{message}");
        }
        other => panic!("expected a pg_restore error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    tx.rollback()?;
    assert_eq!(query_i64(&target, "SELECT COUNT(*) FROM nodes")?, nodes);
    // Once the lock is gone, the same restore runs.
    restore_postgres(&file, &target, Duration::from_millis(500))?;
    assert!(query_i64(&target, "SELECT COUNT(*) FROM nodes")? > nodes);
    Ok(())
}

/// A token cancelled before the work starts.
fn cancelled() -> CancelToken {
    let t = CancelToken::new();
    t.cancel();
    t
}
