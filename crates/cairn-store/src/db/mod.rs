//! The two databases behind one narrow interface: run SQL with positional parameters inside
//! a write transaction or a read snapshot. Everything above it (operations, activity reads)
//! is written once in the SQL the two dialects share.

pub(crate) mod postgres;
pub(crate) mod schema;
pub(crate) mod session;
pub(crate) mod sqlite;

use crate::error::{Result, StoreError};

/// Which database a connection talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A positional statement parameter (`$1`, `$2`, ...).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Null,
    I64(i64),
    Text(&'a str),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::I64(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<Option<i64>> for Param<'a> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Param::Null, Param::I64)
    }
}

/// A column value read back.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    I64(i64),
    F64(f64),
    Text(String),
}

/// One result row.
#[derive(Clone, Debug)]
pub(crate) struct Row(pub Vec<Value>);

impl Row {
    fn corrupt(&self, i: usize, want: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "column {i}: expected {want}, found {:?}",
            self.0.get(i)
        ))
    }
    pub fn i64(&self, i: usize) -> Result<i64> {
        match self.0.get(i) {
            Some(Value::I64(v)) => Ok(*v),
            _ => Err(self.corrupt(i, "an integer")),
        }
    }
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }
    pub fn text(&self, i: usize) -> Result<String> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            _ => Err(self.corrupt(i, "text")),
        }
    }
    /// The text of column `i`, moved out of the row (which keeps an empty string).
    pub fn take_text(&mut self, i: usize) -> Result<String> {
        match self.0.get_mut(i) {
            Some(Value::Text(v)) => Ok(std::mem::take(v)),
            _ => Err(self.corrupt(i, "text")),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

/// A connection inside a transaction: the only thing operations see of a database.
pub(crate) trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement, returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;
    /// Runs a query, returns its rows.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;
}

impl dyn Conn + '_ {
    pub fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    pub fn query_i64(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64> {
        match self.query_opt(sql, params)? {
            Some(row) => row.i64(0),
            None => Err(StoreError::Corrupt(format!("no row from {sql}"))),
        }
    }
}

/// The body of a transaction; it may run more than once when the database asks for a retry.
pub(crate) type TxBody<'f> = dyn FnMut(&mut dyn Conn) -> Result<()> + 'f;

/// A database: write transactions and read snapshots over pooled connections.
pub(crate) trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Runs `body` in a write transaction; commits when it returns `Ok`, rolls back otherwise.
    fn write(&self, body: &mut TxBody<'_>) -> Result<()>;
    /// Runs `body` in a read-only snapshot, and returns that snapshot's horizon.
    fn read(&self, body: &mut TxBody<'_>) -> Result<crate::activity::Horizon>;
    /// Hands every committed write transaction to `sink` (see [`crate::archive`]).
    fn capture(&self, sink: Option<session::ChangeSink>) -> Result<i64> {
        let _ = sink;
        Err(StoreError::NotAllowed(
            "continuous archiving of changes is for SQLite; PostgreSQL archives its WAL".into(),
        ))
    }
}

impl StoreError {
    /// True when the database rejected a row for a duplicate key.
    /// True when a unique violation is of the index on `nodes.column`.
    pub(crate) fn violates(&self, column: &str) -> bool {
        match self {
            // SQLite names the columns: "UNIQUE constraint failed: nodes.login_key".
            StoreError::Sqlite(e) => e.to_string().contains(&format!("nodes.{column}")),
            // PostgreSQL names the index: `nodes_login` is the one on `login_key`.
            StoreError::Postgres(e) => e
                .as_db_error()
                .and_then(|d| d.constraint())
                .is_some_and(|c| column == "login_key" && c == "nodes_login"),
            _ => false,
        }
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            StoreError::Postgres(e) => {
                e.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// Sizes of `IN (...)` lists: a few fixed shapes keep the statement caches small. 20 and
/// 50 are common page sizes (`$top`); padding a page of 20 to 128 ids cost a third of its
/// read.
const IN_SHAPES: [usize; 6] = [1, 16, 20, 50, 128, 512];

/// `$first, $first+1, ...` for `n` parameters.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(n * 5);
    for i in first..first + n {
        let sep = if i == first { "" } else { ", " };
        let _ = write!(out, "{sep}${i}");
    }
    out
}

/// The rows of `select` (SQL with `{ids}` where the list of an `IN (...)` goes) for every
/// id of `ids`, chunk by chunk ([`in_chunks`]). An id in the padding of a chunk may give its
/// rows twice; callers that must not see them twice drop repeats.
pub(crate) fn query_in(conn: &mut dyn Conn, select: &str, ids: &[i64]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for chunk in in_chunks(ids) {
        let sql = select.replace("{ids}", &placeholders(1, chunk.len()));
        let params: Vec<Param> = chunk.iter().map(|&i| Param::I64(i)).collect();
        rows.extend(conn.query(&sql, &params)?);
    }
    Ok(rows)
}

/// Splits `ids` into chunks padded (with their last id) to one of [`IN_SHAPES`].
pub(crate) fn in_chunks(ids: &[i64]) -> Vec<Vec<i64>> {
    let max = IN_SHAPES[IN_SHAPES.len() - 1];
    ids.chunks(max)
        .map(|chunk| {
            let shape = IN_SHAPES
                .iter()
                .copied()
                .find(|&s| s >= chunk.len())
                .unwrap_or(max);
            let mut padded = chunk.to_vec();
            let last = chunk[chunk.len() - 1];
            padded.resize(shape, last);
            padded
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_lists_take_a_fixed_shape_and_every_id() {
        for n in [1usize, 2, 16, 17, 20, 21, 50, 51, 128, 129, 512, 513, 1500] {
            let ids: Vec<i64> = (100..100 + n as i64).collect();
            let chunks = in_chunks(&ids);
            for c in &chunks {
                assert!(IN_SHAPES.contains(&c.len()), "{n}: a chunk of {}", c.len());
            }
            let mut seen: Vec<i64> = chunks.concat();
            seen.dedup();
            assert_eq!(seen, ids, "{n}");
            // The smallest shape that holds a chunk: a page of 20 ids is one list of 20.
            let first = chunks[0].len();
            assert_eq!(
                first,
                *IN_SHAPES.iter().find(|&&s| s >= n.min(512)).unwrap()
            );
        }
        assert!(in_chunks(&[]).is_empty());
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
    }
}
