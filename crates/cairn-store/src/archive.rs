//! Continuous archiving of a SQLite database: every committed write transaction as a
//! changeset of SQLite's session extension, numbered and timed, handed to a sink (the
//! archiver ships it), and applied again, in order, onto a base copy to restore a time.
//!
//! Every SQLite write transaction that changes a row, archived or not, counts itself in
//! `meta.archive_seq` (one row update in the same transaction). A copy of the database (a base backup) so
//! says exactly which changesets it already holds; a changeset applied onto a copy that is
//! not at its predecessor's position conflicts on that row and is refused, so a gap or a
//! reordering in an archive is an error, never a silently different database. Writes made
//! while nothing archives move the count too: the archiver sees the gap at its next start
//! and begins a new chain with a new base.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{ffi, Connection, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::store::Store;

/// The `meta` key of the count of write transactions.
pub const ARCHIVE_SEQ_KEY: &str = "archive_seq";

/// One committed write transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Its number: `meta.archive_seq` after it committed.
    pub seq: i64,
    /// When it committed, in milliseconds since the Unix epoch (taken just before its
    /// commit, after all its writes: a write answered before a time `T` has a time before
    /// `T`, and a write begun after `T` one after it).
    pub time_ms: i64,
    /// Its changes (SQLite session extension changeset).
    pub changeset: Vec<u8>,
}

/// Receives every committed write transaction, in commit order, while the writer is still
/// held: it must be quick (an append to a file), and it must not write to the store.
pub type ChangeSink = Arc<dyn Fn(&ChangeRecord) + Send + Sync>;

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

fn read_seq(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [ARCHIVE_SEQ_KEY],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Applies `records` in order onto the SQLite database at `path` (a stopped copy), each in
/// a transaction of its own; stops before the first one `keep` refuses. Each must follow
/// the database's position (`meta.archive_seq`) exactly. Returns how many were applied and
/// the position reached.
pub fn apply_changes(
    path: &Path,
    records: &mut dyn Iterator<Item = Result<ChangeRecord>>,
    keep: &dyn Fn(&ChangeRecord) -> bool,
) -> Result<(u64, i64)> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let mut at = read_seq(&conn)?;
    let mut applied = 0u64;
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
                "the archive has no change {} (the database is at {at}, the next change in the \
                 archive is {})",
                at + 1,
                record.seq
            )));
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied_ok = apply_changeset(&conn, &record.changeset);
        let now = read_seq(&conn);
        match (applied_ok, now) {
            (Ok(()), Ok(seq)) if seq == record.seq => conn.execute_batch("COMMIT")?,
            (r, seq) => {
                let _ = conn.execute_batch("ROLLBACK");
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
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok((applied, at))
}

// SQLite's session extension, called directly: rusqlite wraps it only behind its `session`
// feature, which needs bindgen and libclang at build time. The bundled SQLite is compiled
// with it (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`) and its bindings declare it.

/// A session recording every change made through one connection to its `main` database.
pub(crate) struct Session(*mut ffi::sqlite3_session);

impl Session {
    /// Starts recording the changes of every table of `conn`.
    pub(crate) fn start(conn: &Connection) -> Result<Session> {
        let mut session = std::ptr::null_mut();
        // SAFETY: `conn.handle()` is a live connection for as long as `conn` is borrowed;
        // the session is deleted (Drop) before the connection is used by another thread
        // (it lives inside one write, under the writer's lock).
        let rc =
            unsafe { ffi::sqlite3session_create(conn.handle(), c"main".as_ptr(), &mut session) };
        check(rc, "start a session")?;
        let session = Session(session);
        // SAFETY: a live session; a null table name attaches every table.
        let rc = unsafe { ffi::sqlite3session_attach(session.0, std::ptr::null()) };
        check(rc, "attach the session")?;
        Ok(session)
    }

    /// The changes recorded so far, as a changeset.
    pub(crate) fn changeset(&self) -> Result<Vec<u8>> {
        let mut size: std::os::raw::c_int = 0;
        let mut buffer: *mut std::os::raw::c_void = std::ptr::null_mut();
        // SAFETY: a live session; SQLite allocates `buffer` (size `size`), freed below.
        let rc = unsafe { ffi::sqlite3session_changeset(self.0, &mut size, &mut buffer) };
        check(rc, "read the session's changeset")?;
        let bytes = if buffer.is_null() || size <= 0 {
            Vec::new()
        } else {
            // SAFETY: SQLite returned `size` readable bytes at `buffer`.
            unsafe { std::slice::from_raw_parts(buffer as *const u8, size as usize) }.to_vec()
        };
        // SAFETY: `buffer` was allocated by SQLite (or is null).
        unsafe { ffi::sqlite3_free(buffer) };
        Ok(bytes)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: a session created by `start`, deleted once.
        unsafe { ffi::sqlite3session_delete(self.0) }
    }
}

/// Any conflict aborts the whole changeset (and so the restore): the database is not where
/// the changeset was recorded from.
unsafe extern "C" fn abort_on_conflict(
    _ctx: *mut std::os::raw::c_void,
    _kind: std::os::raw::c_int,
    _iter: *mut ffi::sqlite3_changeset_iter,
) -> std::os::raw::c_int {
    ffi::SQLITE_CHANGESET_ABORT
}

/// Applies `changeset` to `conn`'s `main` database, in the caller's transaction.
fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<()> {
    let size = std::os::raw::c_int::try_from(changeset.len())
        .map_err(|_| StoreError::Corrupt("a changeset larger than 2 GiB".into()))?;
    // SAFETY: a live connection; SQLite only reads `changeset` (`size` bytes) during the
    // call; no filter; the conflict handler takes no context.
    let rc = unsafe {
        ffi::sqlite3changeset_apply(
            conn.handle(),
            size,
            changeset.as_ptr() as *mut std::os::raw::c_void,
            None,
            Some(abort_on_conflict),
            std::ptr::null_mut(),
        )
    };
    check(rc, "apply a changeset")
}

fn check(rc: std::os::raw::c_int, what: &str) -> Result<()> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some(what.to_string()),
        )))
    }
}
