//! SQLite's session extension, called directly: rusqlite wraps it only behind its
//! `session` feature, which needs bindgen and libclang at build time. The bundled SQLite is
//! compiled with it (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`) and its bindings declare
//! it. What is recorded, and why, is `crate::archive`'s.

use std::sync::Arc;

use rusqlite::{ffi, Connection, OptionalExtension};

use crate::error::{Result, StoreError};

/// The `meta` key of the count of write transactions.
pub const ARCHIVE_SEQ_KEY: &str = "archive_seq";

/// The database's count of write transactions (0 before the first).
pub(crate) fn read_seq(conn: &Connection) -> Result<i64> {
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
pub(crate) fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<()> {
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
