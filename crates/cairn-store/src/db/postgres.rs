//! PostgreSQL: a pool of synchronous clients with cached prepared statements.
//!
//! Write transactions take their transaction id before they draw an activity id from the
//! sequence (`SELECT pg_current_xact_id()` first). A read of activities then takes a
//! transaction id of its own after its snapshot: that id is above the id of every writer that
//! can hold an activity id not yet visible, so once the oldest transaction in flight is past
//! it, a gap still missing is a rollback (see [`Horizon`]). (The snapshot's `xmax` is not such
//! a bound: a writer whose id is above every finished one is not listed as in flight.)

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, IsolationLevel, NoTls, Statement, Transaction};

use super::{Backend, Conn, Dialect, Param, Row, TxBody, Value};
use crate::activity::Horizon;
use crate::error::{Result, StoreError};

/// The `application_name` of Cairn's sessions (a name in the URL follows it): what lets a
/// restore see that a web node is still connected ([`cairn_sessions`]).
pub(crate) const APPLICATION_NAME: &str = "cairn";

/// Connects to `url` as [`APPLICATION_NAME`], or as `cairn NAME` when the URL names one.
pub(crate) fn connect(url: &str) -> Result<Client> {
    let mut config: postgres::Config = url.parse()?;
    let name = match config.get_application_name() {
        Some(given) if !given.starts_with(APPLICATION_NAME) => {
            format!("{APPLICATION_NAME} {given}")
        }
        Some(given) => given.to_string(),
        None => APPLICATION_NAME.to_string(),
    };
    config.application_name(&name);
    Ok(config.connect(NoTls)?)
}

/// The other sessions of Cairn processes on `url`'s database: `application_name (client
/// address, since when)` for each.
pub fn cairn_sessions(url: &str) -> Result<Vec<String>> {
    let mut client = connect(url)?;
    sessions(
        &mut client,
        "datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE $1",
        &format!("{APPLICATION_NAME}%"),
    )
}

/// The sessions of `pg_stat_activity` that `condition` (with `$1` = `param`) picks, each as
/// `application (client, pid N, since T)`: how Cairn names another session in a message.
pub(crate) fn sessions(
    client: &mut Client,
    condition: &str,
    param: &(dyn postgres::types::ToSql + Sync),
) -> Result<Vec<String>> {
    let rows = client.query(
        &format!(
            "SELECT coalesce(nullif(application_name, ''), 'a session'), \
                    coalesce(host(client_addr), 'local'), pid, \
                    to_char(backend_start, 'YYYY-MM-DD HH24:MI:SS') \
             FROM pg_stat_activity WHERE {condition}"
        ),
        &[param],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "{} ({}, pid {}, since {})",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i32>(2),
                r.get::<_, String>(3)
            )
        })
        .collect())
}

/// How often a transaction is retried after a deadlock or a serialization failure.
const RETRIES: usize = 5;

struct PooledClient {
    client: Client,
    statements: HashMap<String, Statement>,
}

pub(crate) struct PostgresBackend {
    url: String,
    pool: Mutex<Vec<PooledClient>>,
}

impl PostgresBackend {
    pub fn open(url: &str) -> Result<Self> {
        let backend = PostgresBackend {
            url: url.to_string(),
            pool: Mutex::new(Vec::new()),
        };
        let first = backend.take()?;
        backend.give_back(first);
        Ok(backend)
    }

    fn take(&self) -> Result<PooledClient> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) if !c.client.is_closed() => Ok(c),
            dead => {
                discard(dead.into_iter().collect());
                Ok(PooledClient {
                    client: connect(&self.url)?,
                    statements: HashMap::new(),
                })
            }
        }
    }

    fn give_back(&self, c: PooledClient) {
        if c.client.is_closed() {
            discard(vec![c]);
        } else {
            self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
    }

    /// Closes every pooled session.
    fn drain(&self) {
        let all = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|p| p.into_inner()));
        discard(all);
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.drain();
    }
}

/// Closes `clients` on a thread of its own, and waits for it.
///
/// The synchronous client closes its session by blocking on its own Tokio runtime, which
/// panics on a thread that already runs one ("Cannot start a runtime from within a
/// runtime"): a server's last reference to the store is dropped on an async worker when it
/// shuts down, and that panic made a PostgreSQL web node exit 101 on SIGTERM. A plain
/// thread has no runtime, wherever the clients are dropped from.
fn discard(clients: Vec<PooledClient>) {
    if clients.is_empty() {
        return;
    }
    let closing = std::thread::Builder::new()
        .name("cairn-pg-close".into())
        .spawn(move || drop(clients));
    if let Ok(handle) = closing {
        let _ = handle.join();
    }
}

impl PostgresBackend {
    fn run(
        &self,
        isolation: IsolationLevel,
        read_only: bool,
        body: &mut TxBody<'_>,
        before: Option<&str>,
    ) -> Result<Option<Horizon>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut pooled = self.take()?;
            let mut began = false;
            let result = (|| {
                let PooledClient { client, statements } = &mut pooled;
                let mut tx = client
                    .build_transaction()
                    .isolation_level(isolation)
                    .read_only(read_only)
                    .start()?;
                began = true;
                let mut horizon = None;
                if let Some(sql) = before {
                    let row = tx.query_one(sql, &[])?;
                    let a: String = row.try_get(0)?;
                    let b: String = row.try_get(1)?;
                    let parse = |s: &str| {
                        s.parse::<u64>()
                            .map_err(|_| StoreError::Corrupt(format!("bad snapshot value {s}")))
                    };
                    horizon = Some(Horizon::Snapshot {
                        xmin: parse(&a)?,
                        xmax: parse(&b)?,
                    });
                }
                if !read_only {
                    // Take the transaction id before any activity id (see the module docs).
                    tx.execute("SELECT pg_current_xact_id()", &[])?;
                }
                body(&mut PgConn {
                    tx: &mut tx,
                    statements,
                })?;
                tx.commit()?;
                Ok(horizon)
            })();
            self.give_back(pooled);
            if result.as_ref().is_err_and(StoreError::is_unavailable) {
                // After a database restart every pooled session is dead: drop them all, so
                // that the next transactions connect afresh instead of failing one by one.
                self.drain();
                if !began && attempt < RETRIES {
                    // Not even BEGIN went through: nothing ran, so once more on a new session.
                    tracing::debug!(attempt, "retrying on a new database session");
                    continue;
                }
            }
            match result {
                Err(StoreError::Postgres(e))
                    if attempt < RETRIES
                        && matches!(
                            e.code(),
                            Some(&SqlState::T_R_DEADLOCK_DETECTED)
                                | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                        ) =>
                {
                    tracing::debug!(attempt, "retrying a transaction: {e}");
                    continue;
                }
                other => return other,
            }
        }
    }
}

struct PgConn<'a, 'c> {
    tx: &'a mut Transaction<'c>,
    statements: &'a mut HashMap<String, Statement>,
}

impl PgConn<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        // The statement's parameter types are inferred by PostgreSQL; convert to them.
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::I64(v) => match *ty {
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::FLOAT8 => (v as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Param::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn read_row(row: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::I64),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::I64(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::I64(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::I64(v.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::F64),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)?
                .map(|v| Value::F64(v.into())),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            ref other => {
                return Err(StoreError::Corrupt(format!(
                    "column {} has unsupported type {other}",
                    col.name()
                )))
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl Conn for PgConn<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.tx.execute(&stmt, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.tx.query(&stmt, &refs)?.iter().map(read_row).collect()
    }
}

impl Backend for PostgresBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<()> {
        self.run(IsolationLevel::ReadCommitted, false, body, None)
            .map(|_| ())
    }

    fn read(&self, body: &mut TxBody<'_>) -> Result<Horizon> {
        let horizon = self.run(
            IsolationLevel::RepeatableRead,
            true,
            body,
            // The mark of a gap must exceed the transaction id of every writer that could
            // hold it. The snapshot's xmax does not: a writer whose id is above every
            // finished one is not listed as in flight, yet may hold an activity id below a
            // visible one. An id assigned now, after the snapshot is taken, exceeds them all
            // (ids are handed out in order): this read's own.
            Some(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, \
                 pg_current_xact_id()::text",
            ),
        )?;
        Ok(horizon.unwrap_or(Horizon::AllCommitted))
    }
}
