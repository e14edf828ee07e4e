//! SQLite: one writer connection behind a mutex (SQLite has one writer anyway) and a pool
//! of reader connections, in WAL mode so readers see a snapshot while the writer works.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::{Backend, Conn, Dialect, Param, Row, TxBody, Value};
use crate::activity::Horizon;
use crate::error::{Result, StoreError};

/// Settings of the SQLite connections.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Page cache per connection, in KiB.
    pub cache_kib: i64,
    /// How often a background thread checkpoints the WAL into the database file. The
    /// writer connection then never checkpoints itself: a checkpoint fsyncs, and an fsync
    /// inside a write (holding the one writer) makes every other write wait for the disk,
    /// for as long as a backup's writeback keeps it busy. Zero leaves checkpoints to
    /// SQLite's automatic ones, in the writer.
    pub checkpoint_interval: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            cache_kib: 65_536,
            checkpoint_interval: Duration::from_millis(200),
        }
    }
}

pub(crate) struct SqliteBackend {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Where committed write transactions go, while archiving ([`crate::archive`]).
    sink: RwLock<Option<super::session::ChangeSink>>,
    _checkpointer: Option<Checkpointer>,
}

/// The background WAL checkpointer (see [`SqliteOptions::checkpoint_interval`]); stopped
/// and joined on drop.
struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, options: &SqliteOptions) -> Result<Checkpointer> {
        let conn = open_connection(path, options)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let every = options.checkpoint_interval;
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-checkpoint".into())
            .spawn(move || {
                let (lock, cond) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = cond
                        .wait_timeout(stopped, every)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    // PASSIVE: copies what no reader still needs, never waits for readers
                    // or the writer, and writers go on appending meanwhile.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("WAL checkpoint: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::io(path, e))?;
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, cond) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode loses no committed transaction when the process dies; only a power
    // loss may drop the last ones, which the index then never saw either.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -options.cache_kib)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteBackend {
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Corrupt(format!("cannot create folder {}: {e}", dir.display()))
            })?;
        }
        let writer = open_connection(path, &options)?;
        let checkpointer = if options.checkpoint_interval.is_zero() {
            None
        } else {
            writer.pragma_update(None, "wal_autocheckpoint", 0)?;
            Some(Checkpointer::start(path, &options)?)
        };
        Ok(SqliteBackend {
            path: path.to_path_buf(),
            options,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            sink: RwLock::new(None),
            _checkpointer: checkpointer,
        })
    }

    fn take_reader(&self) -> Result<Connection> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => open_connection(&self.path, &self.options),
        }
    }
}

/// SQLite takes `?N` for positional parameters; the shared SQL is written with `$N`.
fn sqlite_sql(sql: &str) -> Cow<'_, str> {
    if sql.contains('$') {
        Cow::Owned(sql.replace('$', "?"))
    } else {
        Cow::Borrowed(sql)
    }
}

struct SqliteConn<'c>(&'c Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value as V};
        Ok(match *self {
            Param::Null => ToSqlOutput::Owned(V::Null),
            Param::I64(v) => ToSqlOutput::Owned(V::Integer(v)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::I64(v),
                    ValueRef::Real(v) => Value::F64(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

fn in_transaction(conn: &Connection, begin: &str, body: &mut TxBody<'_>) -> Result<()> {
    conn.execute_batch(begin)?;
    match body(&mut SqliteConn(conn)) {
        Ok(()) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sink = self.sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Archiving never fails a write: a change it cannot record is a gap in its
        // numbers, which the archiver sees (and starts a new chain for).
        let session = sink.as_ref().and_then(|_| {
            super::session::Session::start(&conn)
                .map_err(|e| tracing::warn!("archive: this write is not recorded: {e}"))
                .ok()
        });
        let mut record = None;
        let before = conn.total_changes();
        in_transaction(&conn, "BEGIN IMMEDIATE", &mut |c| {
            body(c)?;
            if conn.total_changes() == before {
                // Changed no row (a start's schema check): nothing to count or archive.
                return Ok(());
            }
            // Every write transaction that changes a row counts itself (see
            // `crate::archive`).
            let seq: String = conn.query_row(
                "INSERT INTO meta (key, value) VALUES (?1, '1') \
                 ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) \
                 RETURNING value",
                [super::session::ARCHIVE_SEQ_KEY],
                |r| r.get(0),
            )?;
            match session.as_ref().map(|s| s.changeset()) {
                Some(Ok(changeset)) => {
                    record = Some(super::session::ChangeRecord {
                        seq: seq.parse().unwrap_or(0),
                        time_ms: now_ms(),
                        changeset,
                    })
                }
                Some(Err(e)) => tracing::warn!("archive: this write is not recorded: {e}"),
                None => {}
            }
            Ok(())
        })?;
        drop(session);
        // Still holding the writer: the sink sees the transactions in commit order.
        if let (Some(sink), Some(record)) = (sink, record) {
            sink(&record);
        }
        Ok(())
    }

    fn capture(&self, sink: Option<super::session::ChangeSink>) -> Result<i64> {
        // Taken with the writer held, so that no transaction is half seen.
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seq = super::session::read_seq(&writer)?;
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = sink;
        Ok(seq)
    }

    fn read(&self, body: &mut TxBody<'_>) -> Result<Horizon> {
        let conn = self.take_reader()?;
        let result = in_transaction(&conn, "BEGIN", body);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result.map(|()| Horizon::AllCommitted)
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
