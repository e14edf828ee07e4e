//! Continuous archiving of a SQLite database: every committed write transaction as a
//! changeset of SQLite's session extension, numbered and timed, handed to a sink (the
//! archiver ships it), and applied again, in order, onto a base copy to restore a time.
//!
//! Every SQLite write transaction that changes a row, archived or not, counts itself in
//! `meta.archive_seq` (one row update in the same transaction). A copy of the database (a
//! base backup) so says exactly which changesets it already holds; a changeset applied onto a copy that is
//! not at its predecessor's position conflicts on that row and is refused, so a gap or a
//! reordering in an archive is an error, never a silently different database. Writes made
//! while nothing archives move the count too: the archiver sees the gap at its next start
//! and begins a new chain with a new base.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Result, StoreError};
use crate::store::Store;

use crate::db::session::{apply_changeset, read_seq};
pub use crate::db::session::{ChangeRecord, ChangeSink, ARCHIVE_SEQ_KEY};

impl Store {
    /// Hands every write transaction committed from now on to `sink` (`None` stops it);
    /// returns the database's position (`meta.archive_seq`) at that moment: the first
    /// transaction handed over is the next one. SQLite only: PostgreSQL archives with its
    /// own WAL machinery.
    pub fn capture_changes(&self, sink: Option<ChangeSink>) -> Result<i64> {
        self.backend.capture(sink)
    }

    /// Moves the count of write transactions past `n` when it is not already: a database
    /// put back to an earlier position (a restore) then never numbers a new transaction as
    /// one an archive already holds from the history it left.
    pub fn archive_seq_past(&self, n: i64) -> Result<i64> {
        self.backend.write(&mut |conn| {
            let now = crate::db::schema::get_meta(conn, ARCHIVE_SEQ_KEY)?
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if now < n {
                crate::db::schema::set_meta(conn, ARCHIVE_SEQ_KEY, &n.to_string())?;
            }
            Ok(())
        })?;
        self.archive_seq()
    }

    /// The count of write transactions the database has committed (`meta.archive_seq`).
    pub fn archive_seq(&self) -> Result<i64> {
        let mut seq = 0;
        self.backend.read(&mut |conn| {
            seq = crate::db::schema::get_meta(conn, ARCHIVE_SEQ_KEY)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok(())
        })?;
        Ok(seq)
    }
}

/// The count of write transactions of the SQLite database at `path`, read only.
pub fn archive_seq_of(path: &Path) -> Result<i64> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    read_seq(&conn)
}

/// Applies `records` in order onto the SQLite database at `path` (a stopped copy), each in
/// a savepoint of its own (a thousand to a transaction); stops before the first one `keep`
/// refuses. Each must follow
/// the database's position (`meta.archive_seq`) exactly. Returns how many were applied and
/// the position reached.
pub fn apply_changes(
    path: &Path,
    records: &mut dyn Iterator<Item = Result<ChangeRecord>>,
    keep: &dyn Fn(&ChangeRecord) -> bool,
) -> Result<(u64, i64)> {
    /// Changes applied per transaction: each is a savepoint of its own, so that one that
    /// does not apply is undone alone and the ones before it stay.
    const BATCH: u64 = 1_000;
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // No fsync per commit: the final checkpoint writes everything into the file (and a
    // restore interrupted before it is run again).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let mut at = read_seq(&conn)?;
    let mut applied = 0u64;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<()> {
        for record in records {
            let record = record?;
            if record.seq <= at {
                continue; // already in the base copy
            }
            if !keep(&record) {
                break;
            }
            if record.seq != at + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the archive has no change {} (the database is at {at}, the next change in \
                     the archive is {})",
                    at + 1,
                    record.seq
                )));
            }
            conn.execute_batch("SAVEPOINT change")?;
            let applied_ok = apply_changeset(&conn, &record.changeset);
            let now = read_seq(&conn);
            match (applied_ok, now) {
                (Ok(()), Ok(seq)) if seq == record.seq => conn.execute_batch("RELEASE change")?,
                (r, seq) => {
                    conn.execute_batch("ROLLBACK TO change; RELEASE change")?;
                    return Err(StoreError::Corrupt(format!(
                        "change {} does not apply to the database at {at}: {}",
                        record.seq,
                        match (r, seq) {
                            (Err(e), _) => e.to_string(),
                            (_, Err(e)) => e.to_string(),
                            (_, Ok(s)) => format!("it moved the position to {s}"),
                        }
                    )));
                }
            }
            at = record.seq;
            applied += 1;
            if applied.is_multiple_of(BATCH) {
                conn.execute_batch("COMMIT; BEGIN IMMEDIATE")?;
            }
        }
        Ok(())
    })();
    // What applied is kept, also before a change that did not.
    conn.execute_batch("COMMIT")?;
    result?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok((applied, at))
}
