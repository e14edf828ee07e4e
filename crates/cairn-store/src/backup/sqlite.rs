//! The database half of a backup on SQLite.
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

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{
    finish, partial_path, remove_if_exists, BackupOptions, DatabaseBackup, DatabaseKind,
    VerifiedDatabase, SQLITE_BACKUP_FILE,
};
use crate::cancel::CancelToken;
use crate::error::{Result, StoreError};
use crate::facts::{read_facts, DatabaseFacts};

pub(super) fn backup_sqlite(
    db: &Path,
    dest_dir: &Path,
    options: &BackupOptions,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
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
    let copied = copy_sqlite(db, &partial, options, progress, cancel);
    finish(
        DatabaseKind::Sqlite,
        dest_dir,
        &partial,
        copied,
        remove_sqlite_files,
    )
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
    cancel: &CancelToken,
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
        let mut write_behind = crate::durable::WriteBehind::new();
        {
            let backup = Backup::new(&src, &mut dst)?;
            let pages = i32::try_from(options.sqlite_pages_per_step.max(1)).unwrap_or(i32::MAX);
            loop {
                if cancel.is_cancelled() {
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

pub(super) fn verify_sqlite(path: &Path, bytes: u64) -> Result<VerifiedDatabase> {
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

/// Empties the WAL of the SQLite database at `path` into its main file
/// (`wal_checkpoint(TRUNCATE)`), so that the file alone holds every committed change: what
/// a restore does before it moves a database aside. Nothing may be writing to it.
pub fn checkpoint_sqlite(path: &Path) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// The page size of the SQLite database file at `path` (its header's bytes 16-17; 1 means
/// 65536); `None` when it cannot be read or is not a page size.
pub fn sqlite_page_size(path: &Path) -> Option<usize> {
    use std::io::Read;
    let mut header = [0u8; 18];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    match u16::from_be_bytes([header[16], header[17]]) {
        1 => Some(65536),
        n if n >= 512 && n.is_power_of_two() => Some(usize::from(n)),
        _ => None,
    }
}
