//! Online database backup, verification and restore: the database half of a Cairn backup
//! (design invariants 6 and 7). The backup manager copies the index first, then calls
//! [`Store::backup_database`], then writes the manifest from the returned [`DatabaseBackup`].
//!
//! # SQLite
//!
//! The copy is made with SQLite's online backup API from a separate connection to the
//! database file, a few pages per step (progress and cancel between steps), into
//! `cairn.db.partial`, which is synced and renamed to `cairn.db` when complete.
//!
//! The backup API restarts from page 1 whenever another connection commits between two
//! steps, because the source connection starts a new read transaction for every step and
//! sees the changed database. Under continuous writes a stepped backup then never finishes
//! (see the `sqlite_backup_api_restarts_without_a_pinned_snapshot` test). This module
//! therefore opens a read transaction on the source connection *before* the first step and
//! keeps it open until the last one: in WAL mode that pins one snapshot, which every step
//! reads, so there are no restarts while writers keep committing (they append to the WAL;
//! only checkpoints cannot pass the pinned snapshot until the backup ends). The highest
//! activity id and the `meta` values are read in that same transaction, so
//! [`DatabaseBackup::last_activity_id`] describes exactly the copied snapshot.
//!
//! The copy is switched to `journal_mode=DELETE`, so it is one self-contained file.
//!
//! # PostgreSQL
//!
//! A `REPEATABLE READ` transaction exports its snapshot (`pg_export_snapshot()`) and reads
//! the highest activity id and the `meta` values; `pg_dump --format=custom --snapshot=..`
//! then dumps that same snapshot while the transaction stays open. Progress is the size of
//! the partial dump file; cancel kills `pg_dump`.
//!
//! `pg_dump` and `pg_restore` are taken from `$CAIRN_PG_DUMP` / `$CAIRN_PG_RESTORE` when
//! set, else from `PATH`, else from the newest `/usr/lib/postgresql/*/bin`. A password in
//! the URL is passed to them in `PGPASSWORD`, not on their command line.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ids::ActivityId;
use crate::store::DatabaseFacts;
use crate::store::{DatabaseUrl, Store};

/// The file name of an SQLite backup.
pub const SQLITE_BACKUP_FILE: &str = "cairn.db";
/// The file name of a PostgreSQL backup (`pg_dump` custom format).
pub const POSTGRES_BACKUP_FILE: &str = "cairn.pgdump";

/// Environment variable naming the `pg_dump` program to use (overrides the search).
pub const PG_DUMP_ENV: &str = "CAIRN_PG_DUMP";
/// Environment variable naming the `pg_restore` program to use (overrides the search).
pub const PG_RESTORE_ENV: &str = "CAIRN_PG_RESTORE";

/// Which database engine a backup file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// An SQLite database file.
    Sqlite,
    /// A PostgreSQL dump in `pg_dump`'s custom format.
    Postgres,
}

impl DatabaseKind {
    /// The name of the backup file of this kind: `cairn.db` or `cairn.pgdump`.
    pub fn file_name(self) -> &'static str {
        match self {
            DatabaseKind::Sqlite => SQLITE_BACKUP_FILE,
            DatabaseKind::Postgres => POSTGRES_BACKUP_FILE,
        }
    }
}

/// What [`Store::backup_database`] wrote: the database part of a backup manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseBackup {
    /// The engine, which says how to read [`file_name`](Self::file_name).
    pub kind: DatabaseKind,
    /// The file's name inside the destination folder.
    pub file_name: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The highest activity id in the copied snapshot (0 when its log is empty).
    pub last_activity_id: ActivityId,
    /// The repository id stored in the copied database.
    pub repository_id: String,
    /// The schema version of the copied database.
    pub schema_version: i64,
}

/// Tuning of [`Store::backup_database_with`]; [`Default`] is what
/// [`Store::backup_database`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupOptions {
    /// SQLite pages copied per step (at least 1). Progress is reported and cancel checked
    /// after each step.
    pub sqlite_pages_per_step: u32,
    /// How often a running `pg_dump` is polled for progress and cancel.
    pub poll_interval: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            sqlite_pages_per_step: 1024,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// What [`verify_database_file`] found. A field is `Some` only when it was read from the
/// file itself; the caller compares it with its manifest. For a PostgreSQL dump the
/// repository id, schema version and last activity id cannot be read without restoring
/// it, so they are `None`: only the dump's structure was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDatabase {
    /// The engine of the file.
    pub kind: DatabaseKind,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The repository id stored in the file (SQLite only).
    pub repository_id: Option<String>,
    /// The schema version stored in the file (SQLite only).
    pub schema_version: Option<i64>,
    /// The highest activity id in the file (SQLite only).
    pub last_activity_id: Option<ActivityId>,
}

impl Store {
    /// Copies the live database into `dest_dir/<file_name>` while writes continue, and
    /// returns what was copied. Same as [`backup_database_with`](Self::backup_database_with)
    /// with the default [`BackupOptions`].
    ///
    /// `progress(done, total)` is called between steps, in bytes: copied and in all for
    /// SQLite, written so far for PostgreSQL (`total` 0: unknown). `cancel` is checked between
    /// steps; when it is set the copy stops, the partial file is removed and the result is
    /// [`StoreError::Cancelled`].
    pub fn backup_database(
        &self,
        dest_dir: &Path,
        progress: &dyn Fn(u64, u64),
        cancel: &AtomicBool,
    ) -> Result<DatabaseBackup> {
        self.backup_database_with(dest_dir, &BackupOptions::default(), progress, cancel)
    }

    /// [`backup_database`](Self::backup_database) with explicit [`BackupOptions`].
    pub fn backup_database_with(
        &self,
        dest_dir: &Path,
        options: &BackupOptions,
        progress: &dyn Fn(u64, u64),
        cancel: &AtomicBool,
    ) -> Result<DatabaseBackup> {
        std::fs::create_dir_all(dest_dir).map_err(|e| StoreError::io(dest_dir, e))?;
        match self.url() {
            DatabaseUrl::Sqlite(path) => backup_sqlite(path, dest_dir, options, progress, cancel),
            DatabaseUrl::Postgres(url) => backup_postgres(url, dest_dir, options, progress, cancel),
        }
    }
}

/// Checks a backed-up database file.
///
/// SQLite: opens it read-only, `PRAGMA integrity_check` must answer `ok`, and reads the
/// repository id, the schema version and the highest activity id. PostgreSQL: the dump's
/// table of contents (`pg_restore --list`) must list the tables `nodes` and
/// `indexing_activities` with their data, and every data block must read back
/// (`pg_restore` to `/dev/null`), which catches a truncated dump.
///
/// A damaged file gives [`StoreError::Corrupt`] saying which file and what failed.
pub fn verify_database_file(kind: DatabaseKind, path: &Path) -> Result<VerifiedDatabase> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| StoreError::io(path, e))?
        .len();
    match kind {
        DatabaseKind::Sqlite => verify_sqlite(path, bytes),
        DatabaseKind::Postgres => verify_postgres(path, bytes),
    }
}

/// Restores a PostgreSQL dump made by [`Store::backup_database`] into the database at
/// `url`, atomically: `pg_restore --clean --if-exists --no-owner --single-transaction`. On
/// failure nothing changes. Objects of the database that are not in the dump are left
/// alone. No server may be using the database meanwhile (its locks would block the
/// restore): a lock another session holds is waited for at most `lock_timeout` (see
/// [`RESTORE_LOCK_TIMEOUT`]), then the restore fails, changing nothing, with a message that
/// names the sessions holding it, where it would otherwise hang without a word.
pub fn restore_postgres(dump: &Path, url: &str, lock_timeout: Duration) -> Result<()> {
    if !dump.is_file() {
        return Err(StoreError::io(
            dump,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such dump file"),
        ));
    }
    let tool = find_tool("pg_restore", PG_RESTORE_ENV)?;
    let url_with_password = url;
    let (url, password) = split_password(url);
    let mut cmd = Command::new(&tool);
    cmd.args([
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        "--dbname",
    ])
    .arg(&url)
    .arg(dump);
    set_password(&mut cmd, password);
    // Known by this name in pg_stat_activity (not `cairn...`: that names a live server).
    let app = format!("pg_restore for cairn {}", std::process::id());
    cmd.env("PGAPPNAME", &app);
    // A dump sets `lock_timeout = 0` as it starts, so a session setting cannot bound the
    // wait: a watcher ends the restore's statement once it has waited that long for a lock.
    let done = AtomicBool::new(false);
    let (out, blocked) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_locks(url_with_password, &app, lock_timeout, &done));
        let out = run_to_end(cmd, "pg_restore", &tool);
        done.store(true, Ordering::Relaxed);
        (out, watcher.join().ok().flatten())
    });
    let out = out?;
    if !out.status.success() {
        if let Some(blockers) = blocked {
            return Err(StoreError::Tool {
                tool: "pg_restore".into(),
                message: format!(
                    "waited {} s for a lock held by another session of the database \
                     ({blockers}) and gave up: nothing was changed; end that session \
                     (pg_stat_activity shows it) and restore again",
                    lock_timeout.as_secs_f64()
                ),
            });
        }
        return Err(tool_failed("pg_restore", &out.status, &out.stderr));
    }
    Ok(())
}

/// Watches the session named `app` until `done`: once it has waited for a lock for
/// `timeout` without a break, cancels its statement and returns the sessions that held
/// the lock (`application (client, pid N)`). Any error of its own ends the watch: the
/// restore then just waits, as it would without it.
fn watch_locks(url: &str, app: &str, timeout: Duration, done: &AtomicBool) -> Option<String> {
    let mut client = crate::db::postgres::connect(url).ok()?;
    let mut waiting_since: Option<std::time::Instant> = None;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let row = client
            .query_opt(
                "SELECT pid, wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = current_database() LIMIT 1",
                &[&app],
            )
            .ok()?;
        let Some((pid, waiting)) = row.map(|r| (r.get::<_, i32>(0), r.get::<_, bool>(1))) else {
            continue;
        };
        if !waiting {
            waiting_since = None;
            continue;
        }
        let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < timeout {
            continue;
        }
        let blockers =
            crate::db::postgres::sessions(&mut client, "pid = ANY(pg_blocking_pids($1))", &pid)
                .ok()?;
        client
            .execute("SELECT pg_cancel_backend($1)", &[&pid])
            .ok()?;
        return Some(blockers.join(", "));
    }
    None
}

/// How long a restore waits for a lock that another session (a report, a psql left in a
/// transaction) holds on the database's tables before it gives up.
pub const RESTORE_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Files

/// `dir/name.partial`.
fn partial_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.partial"))
}

/// Removes `path` if it exists.
fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Syncs `partial`, renames it to `dir/name`, syncs `dir`; returns the file's size.
fn publish(partial: &Path, dir: &Path, name: &str) -> Result<u64> {
    let file = File::open(partial).map_err(|e| StoreError::io(partial, e))?;
    file.sync_all().map_err(|e| StoreError::io(partial, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| StoreError::io(partial, e))?
        .len();
    drop(file);
    let dest = dir.join(name);
    std::fs::rename(partial, &dest).map_err(|e| StoreError::io(&dest, e))?;
    sync_dir(dir)?;
    Ok(bytes)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

// ---------------------------------------------------------------------------------------
// SQLite

/// What a database (a live one, or the pinned snapshot of a backup) says about itself.
pub(crate) fn read_facts(conn: &Connection) -> Result<DatabaseFacts> {
    let last: i64 = conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM indexing_activities",
        [],
        |r| r.get(0),
    )?;
    let meta = |key: &str| -> Result<String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .ok_or_else(|| StoreError::Corrupt(format!("meta.{key} is missing")))
    };
    facts(last, meta("repository_id")?, &meta("schema_version")?)
}

/// [`read_facts`] on PostgreSQL, in `client`'s transaction (and snapshot).
pub(crate) fn read_facts_pg(client: &mut impl postgres::GenericClient) -> Result<DatabaseFacts> {
    let last: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(id), 0)::BIGINT FROM indexing_activities",
            &[],
        )?
        .try_get(0)?;
    let mut meta = |key: &str| -> Result<String> {
        client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt(format!("meta.{key} is missing")))
    };
    let repository_id = meta("repository_id")?;
    facts(last, repository_id, &meta("schema_version")?)
}

fn facts(last: i64, repository_id: String, schema_version: &str) -> Result<DatabaseFacts> {
    Ok(DatabaseFacts {
        last_activity_id: ActivityId(last),
        repository_id,
        schema_version: schema_version
            .parse::<i64>()
            .map_err(|_| StoreError::Corrupt("meta.schema_version is not a number".into()))?,
    })
}

fn backup_sqlite(
    db: &Path,
    dest_dir: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &AtomicBool,
) -> Result<DatabaseBackup> {
    let target = dest_dir.join(SQLITE_BACKUP_FILE);
    if let (Ok(a), Ok(b)) = (target.canonicalize(), db.canonicalize()) {
        if a == b {
            return Err(StoreError::NotAllowed(format!(
                "the backup would overwrite the live database {}",
                db.display()
            )));
        }
    }
    let partial = partial_path(dest_dir, SQLITE_BACKUP_FILE);
    remove_sqlite_files(&partial)?;
    let result = copy_sqlite(db, &partial, options, progress, cancel);
    match result {
        Ok(facts) => {
            let bytes = publish(&partial, dest_dir, SQLITE_BACKUP_FILE)?;
            Ok(DatabaseBackup {
                kind: DatabaseKind::Sqlite,
                file_name: SQLITE_BACKUP_FILE.to_string(),
                bytes,
                last_activity_id: facts.last_activity_id,
                repository_id: facts.repository_id,
                schema_version: facts.schema_version,
            })
        }
        Err(e) => {
            if let Err(clean) = remove_sqlite_files(&partial) {
                tracing::warn!("cannot remove a partial backup: {clean}");
            }
            Err(e)
        }
    }
}

/// Removes an SQLite file and its journal, WAL and shared-memory companions.
fn remove_sqlite_files(path: &Path) -> Result<()> {
    remove_if_exists(path)?;
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut companion = path.as_os_str().to_os_string();
        companion.push(suffix);
        remove_if_exists(Path::new(&companion))?;
    }
    Ok(())
}

/// Copies the database at `db` into the new file `dest` from one pinned snapshot.
fn copy_sqlite(
    db: &Path,
    dest: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &AtomicBool,
) -> Result<DatabaseFacts> {
    // A connection of its own, never the store's writer. It must not create the file.
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(30))?;
    src.pragma_update(None, "query_only", true)?;
    // Pin the snapshot: a read transaction that stays open until the copy is done. Every
    // backup step then reads this snapshot, and commits of other connections do not
    // restart the backup. The facts are read in the same snapshot.
    src.execute_batch("BEGIN DEFERRED")?;
    let copied = (|| {
        let facts = read_facts(&src)?;
        let page_size: i64 = src.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_size = u64::try_from(page_size).unwrap_or(4096);
        let mut dst = Connection::open(dest)?;
        // Paces the copy's writeback (see `writeback`): SQLite writes the file, this handle
        // only hands what is written to the disk as it grows.
        let dest_file = std::fs::File::open(dest).map_err(|e| StoreError::io(dest, e))?;
        let mut write_behind = crate::writeback::WriteBehind::new();
        {
            let backup = Backup::new(&src, &mut dst)?;
            let pages = i32::try_from(options.sqlite_pages_per_step.max(1)).unwrap_or(i32::MAX);
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(StoreError::Cancelled);
                }
                let step = backup.step(pages)?;
                let p = backup.progress();
                let total = u64::try_from(p.pagecount).unwrap_or(0) * page_size;
                let remaining = u64::try_from(p.remaining).unwrap_or(0) * page_size;
                progress(total.saturating_sub(remaining), total);
                if let Ok(m) = dest_file.metadata() {
                    write_behind.advance(&dest_file, m.len());
                }
                match step {
                    StepResult::Done => break,
                    StepResult::More => {}
                    // Transient: the destination or the source is locked; try again.
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        // One self-contained file: no WAL to carry along.
        let mode: String = dst.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError::Corrupt(format!(
                "the backup copy stayed in journal mode {mode}"
            )));
        }
        dst.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
        Ok(facts)
    })();
    // Ends the read transaction; it changed nothing.
    let _ = src.execute_batch("ROLLBACK");
    copied
}

fn verify_sqlite(path: &Path, bytes: u64) -> Result<VerifiedDatabase> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("backup file {} {what}: {e}", path.display()))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad("cannot be opened as an SQLite database", &e))?;
    let problems: Vec<String> = (|| {
        let mut stmt = conn.prepare("PRAGMA integrity_check(10)")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|e| bad("is not a readable SQLite database", &e))?;
    if problems.len() != 1 || problems[0] != "ok" {
        // One row may hold several lines; name the first few problems.
        let lines: Vec<&str> = problems.iter().flat_map(|p| p.lines()).collect();
        let mut summary = lines.iter().take(5).copied().collect::<Vec<_>>().join("; ");
        if lines.len() > 5 {
            summary.push_str(&format!("; and {} more", lines.len() - 5));
        }
        return Err(bad("failed PRAGMA integrity_check", &summary));
    }
    let facts = read_facts(&conn).map_err(|e| bad("is not a Cairn database", &e))?;
    Ok(VerifiedDatabase {
        kind: DatabaseKind::Sqlite,
        bytes,
        repository_id: Some(facts.repository_id),
        schema_version: Some(facts.schema_version),
        last_activity_id: Some(facts.last_activity_id),
    })
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

fn backup_postgres(
    url: &str,
    dest_dir: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &AtomicBool,
) -> Result<DatabaseBackup> {
    let tool = find_tool("pg_dump", PG_DUMP_ENV)?;
    let partial = partial_path(dest_dir, POSTGRES_BACKUP_FILE);
    remove_if_exists(&partial)?;
    let result = dump_postgres(&tool, url, &partial, options, progress, cancel);
    match result {
        Ok(facts) => {
            let bytes = publish(&partial, dest_dir, POSTGRES_BACKUP_FILE)?;
            Ok(DatabaseBackup {
                kind: DatabaseKind::Postgres,
                file_name: POSTGRES_BACKUP_FILE.to_string(),
                bytes,
                last_activity_id: facts.last_activity_id,
                repository_id: facts.repository_id,
                schema_version: facts.schema_version,
            })
        }
        Err(e) => {
            if let Err(clean) = remove_if_exists(&partial) {
                tracing::warn!("cannot remove a partial backup: {clean}");
            }
            Err(e)
        }
    }
}

fn dump_postgres(
    tool: &Path,
    url: &str,
    partial: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &AtomicBool,
) -> Result<DatabaseFacts> {
    let mut client = crate::db::postgres::connect(url)?;
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    // The first statement of the transaction takes its snapshot; export exactly that one.
    let snapshot: String = tx
        .query_one("SELECT pg_export_snapshot()", &[])?
        .try_get(0)?;
    let facts = read_facts_pg(&mut tx)?;

    let (plain_url, password) = split_password(url);
    let mut cmd = Command::new(tool);
    cmd.arg("--format=custom")
        .arg(format!("--snapshot={snapshot}"))
        .arg("--no-password")
        .arg("--file")
        .arg(partial)
        .arg("--dbname")
        .arg(&plain_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    set_password(&mut cmd, password);
    let mut child = spawn(cmd, "pg_dump", tool)?;
    let stderr = collect_stderr(&mut child);
    let status = loop {
        if cancel.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stderr.join();
            return Err(StoreError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StoreError::Tool {
                    tool: "pg_dump".into(),
                    message: format!("cannot wait for {}: {e}", tool.display()),
                });
            }
        }
        let written = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        progress(written, 0);
        std::thread::sleep(options.poll_interval);
    };
    let err = stderr.join().unwrap_or_default();
    // The snapshot is no longer needed; the transaction changed nothing.
    let ended = tx.rollback();
    if !status.success() {
        return Err(tool_failed("pg_dump", &status, &err));
    }
    ended?;
    let written = std::fs::metadata(partial)
        .map_err(|e| StoreError::io(partial, e))?
        .len();
    progress(written, 0);
    Ok(facts)
}

fn verify_postgres(path: &Path, bytes: u64) -> Result<VerifiedDatabase> {
    let tool = find_tool("pg_restore", PG_RESTORE_ENV)?;
    let bad = |what: String| StoreError::Corrupt(format!("backup file {} {what}", path.display()));

    // The table of contents.
    let mut cmd = Command::new(&tool);
    cmd.arg("--list").arg(path);
    let out = run_to_end(cmd, "pg_restore", &tool)?;
    if !out.status.success() {
        return Err(bad(format!(
            "is not a readable pg_dump archive: {}",
            stderr_text(&out.stderr)
        )));
    }
    let list = String::from_utf8_lossy(&out.stdout);
    for table in ["nodes", "indexing_activities"] {
        for entry in ["TABLE", "TABLE DATA"] {
            if !lists_table(&list, entry, table) {
                return Err(bad(format!("lists no {entry} entry for table {table}")));
            }
        }
    }

    // Every data block: a truncated or damaged archive fails here even when its table of
    // contents (written at the start) is intact.
    let mut cmd = Command::new(&tool);
    cmd.arg("--file").arg(null_device()).arg(path);
    let out = run_to_end(cmd, "pg_restore", &tool)?;
    if !out.status.success() {
        return Err(bad(format!(
            "has unreadable data: {}",
            stderr_text(&out.stderr)
        )));
    }
    Ok(VerifiedDatabase {
        kind: DatabaseKind::Postgres,
        bytes,
        repository_id: None,
        schema_version: None,
        last_activity_id: None,
    })
}

fn null_device() -> &'static str {
    if cfg!(windows) {
        "NUL"
    } else {
        "/dev/null"
    }
}

/// Whether a `pg_restore --list` output has an `entry` ("TABLE", "TABLE DATA") for
/// `table` in any schema. Entry lines read `ID; OID OID TYPE SCHEMA NAME OWNER`.
fn lists_table(list: &str, entry: &str, table: &str) -> bool {
    list.lines()
        .filter(|l| !l.trim_start().starts_with(';'))
        .any(|line| {
            let Some((_, rest)) = line.split_once(';') else {
                return false;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            // words: OID OID TYPE... SCHEMA NAME OWNER
            let kind: Vec<&str> = entry.split(' ').collect();
            words.len() >= 2 + kind.len() + 2
                && words[2..2 + kind.len()] == kind[..]
                && words[2 + kind.len() + 1] == table
        })
}

// ---------------------------------------------------------------------------------------
// External programs

/// Finds `name`: `$env` when set (it must exist), else on `PATH`, else in the newest
/// `/usr/lib/postgresql/*/bin`.
fn find_tool(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::Tool {
                tool: name.into(),
                message: format!(
                    "{name} is not installed at {} (set by {env}): install the PostgreSQL \
                     client (apt-get install postgresql-client) or correct {env}",
                    path.display()
                ),
            })
        };
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }) {
        return Ok(path);
    }
    if let Some(path) = newest_postgres_bin(Path::new("/usr/lib/postgresql"), name) {
        return Ok(path);
    }
    Err(not_installed(name))
}

fn not_installed(name: &str) -> StoreError {
    StoreError::Tool {
        tool: name.into(),
        message: format!(
            "{name} is not installed: install the PostgreSQL client \
             (apt-get install postgresql-client), or set {} to its path",
            if name == "pg_dump" {
                PG_DUMP_ENV
            } else {
                PG_RESTORE_ENV
            }
        ),
    }
}

/// `root/<newest major version>/bin/name`, if present.
fn newest_postgres_bin(root: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: Vec<u64> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn spawn(mut cmd: Command, name: &str, tool: &Path) -> Result<Child> {
    // The tool dies with the thread that started it (which waits for it to the end), so a
    // server killed with SIGKILL leaves no pg_dump writing on behind it.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only prctl(2) runs, which is async-signal-safe and
        // touches no memory of the parent.
        let parent = std::process::id();
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nobody waits for the tool.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::other("the starting process is gone"));
                }
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_installed(name)
        } else {
            StoreError::Tool {
                tool: name.into(),
                message: format!("cannot start {}: {e}", tool.display()),
            }
        }
    })
}

/// Runs a command to its end, capturing its output.
fn run_to_end(mut cmd: Command, name: &str, tool: &Path) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd, name, tool)?;
    child.wait_with_output().map_err(|e| StoreError::Tool {
        tool: name.into(),
        message: format!("cannot read the output of {}: {e}", tool.display()),
    })
}

/// Reads the child's stderr on a thread, so that a full pipe never blocks it.
fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let pipe = child.stderr.take();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn stderr_text(stderr: &[u8]) -> String {
    // One line, as every error of the CLI is: the tool's lines joined.
    let text = String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let text = text.as_str();
    // Keep messages readable: the end holds the error.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 2000 {
        format!(
            "...{}",
            chars[chars.len() - 2000..].iter().collect::<String>()
        )
    } else {
        text.to_string()
    }
}

fn tool_failed(name: &str, status: &std::process::ExitStatus, stderr: &[u8]) -> StoreError {
    StoreError::Tool {
        tool: name.into(),
        message: format!("failed ({status}): {}", stderr_text(stderr)),
    }
}

/// Splits the password out of a `postgres://user:password@host/db` URL: the URL without
/// it, and the password (percent-decoded), to be passed in `PGPASSWORD`.
fn split_password(url: &str) -> (String, Option<String>) {
    let (Some(s), Some(at)) = (url.find("://"), url.rfind('@')) else {
        return (url.to_string(), None);
    };
    if at <= s {
        return (url.to_string(), None);
    }
    let creds = &url[s + 3..at];
    match creds.find(':') {
        Some(c) => {
            let password = percent_decode(&creds[c + 1..]);
            let plain = format!("{}{}{}", &url[..s + 3], &creds[..c], &url[at..]);
            (plain, Some(password))
        }
        None => (url.to_string(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn set_password(cmd: &mut Command, password: Option<String>) {
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "30");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup tool (pg_dump, pg_restore) does not outlive the thread that started it,
    /// which waits for it: a server killed with SIGKILL leaves no tool running on.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_tool_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            spawn(cmd, "sleep", Path::new("sleep")).unwrap()
        })
        .join()
        .unwrap();
        let status = cairn_testkit::wait_until(
            "sleep killed with its thread",
            std::time::Duration::from_secs(10),
            || child.try_wait().unwrap(),
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    #[test]
    fn splits_the_password_out_of_a_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/db?x=1"),
            (
                "postgres://u@h:5432/db?x=1".to_string(),
                Some("p@ss".into())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
        assert_eq!(
            split_password("postgresql://h/db"),
            ("postgresql://h/db".to_string(), None)
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%42c"), "ABc");
    }

    #[test]
    fn reads_table_entries_of_a_pg_restore_list() {
        let list = ";\n; Archive created at 2026-11-01\n;\n\
            215; 1259 16390 TABLE public nodes postgres\n\
            3350; 0 16390 TABLE DATA public nodes postgres\n\
            216; 1259 16400 TABLE public indexing_activities postgres\n";
        assert!(lists_table(list, "TABLE", "nodes"));
        assert!(lists_table(list, "TABLE DATA", "nodes"));
        assert!(lists_table(list, "TABLE", "indexing_activities"));
        assert!(!lists_table(list, "TABLE DATA", "indexing_activities"));
        assert!(!lists_table(list, "TABLE", "meta"));
    }

    #[test]
    fn kinds_serialize_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&DatabaseKind::Postgres)
                .ok()
                .as_deref(),
            Some("\"postgres\"")
        );
        assert_eq!(
            serde_json::from_str::<DatabaseKind>("\"sqlite\"").ok(),
            Some(DatabaseKind::Sqlite)
        );
    }

    #[test]
    fn new_errors_are_not_input_errors() {
        assert!(!StoreError::Cancelled.is_input_error());
        assert!(!StoreError::Tool {
            tool: "pg_dump".into(),
            message: "x".into()
        }
        .is_input_error());
        assert!(!StoreError::io("/x", std::io::Error::other("x")).is_input_error());
    }
}
