//! The database half of a backup on PostgreSQL, and its restore.
//!
//! A `REPEATABLE READ` transaction exports its snapshot (`pg_export_snapshot()`) and reads
//! the highest activity id and the `meta` values; `pg_dump --format=custom --snapshot=..`
//! then dumps that same snapshot while the transaction stays open. Progress is the size of
//! the partial dump file; cancel kills `pg_dump`.
//!
//! `pg_dump` and `pg_restore` are taken from `$CAIRN_PG_DUMP` / `$CAIRN_PG_RESTORE` when
//! set, else from `PATH`, else from the newest `/usr/lib/postgresql/*/bin`. A password in
//! the URL is passed to them in `PGPASSWORD`, not on their command line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::tools::{
    collect_stderr, find_tool, run_to_end, set_password, spawn, split_password, stderr_text,
    tool_failed,
};
use super::{
    finish, partial_path, remove_if_exists, BackupOptions, DatabaseBackup, DatabaseKind,
    VerifiedDatabase, PG_DUMP_ENV, PG_RESTORE_ENV, POSTGRES_BACKUP_FILE,
};
use crate::cancel::CancelToken;
use crate::error::{Result, StoreError};
use crate::facts::{read_facts_pg, DatabaseFacts};

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

pub(super) fn backup_postgres(
    url: &str,
    dest_dir: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<DatabaseBackup> {
    let tool = find_tool("pg_dump", PG_DUMP_ENV)?;
    let partial = partial_path(dest_dir, POSTGRES_BACKUP_FILE);
    remove_if_exists(&partial)?;
    let dumped = dump_postgres(&tool, url, &partial, options, progress, cancel);
    finish(
        DatabaseKind::Postgres,
        dest_dir,
        &partial,
        dumped,
        remove_if_exists,
    )
}

fn dump_postgres(
    tool: &Path,
    url: &str,
    partial: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
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
        if cancel.is_cancelled() {
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

pub(super) fn verify_postgres(path: &Path, bytes: u64) -> Result<VerifiedDatabase> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
