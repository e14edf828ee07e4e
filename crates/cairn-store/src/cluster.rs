//! What the processes sharing one PostgreSQL database (web nodes, search replicas) agree
//! on through it, with PostgreSQL's own means rather than a consensus of our own: a lock
//! held for as long as a task runs (a session advisory lock, released by the server when
//! the holder's connection ends, a kill -9 included), and a claim that one process takes
//! for a period (a conditional upsert of one `meta` row).
//!
//! On SQLite one process holds the data folder's lock: both always succeed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::db::{Dialect, Param};
use crate::error::Result;
use crate::store::{DatabaseUrl, Store};

/// A lock named across every process of one database, held until dropped.
pub struct ClusterLock {
    /// The connection that holds it (PostgreSQL); the lock goes with it.
    _held: Option<postgres::Client>,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterLock")
    }
}

impl Store {
    /// Takes the lock `name` if no other process holds it; `None` when one does.
    pub fn try_cluster_lock(&self, name: &str) -> Result<Option<ClusterLock>> {
        let DatabaseUrl::Postgres(url) = self.url() else {
            return Ok(Some(ClusterLock { _held: None }));
        };
        let mut client = crate::db::postgres::connect(url)?;
        let key = format!("cairn:{name}");
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])?
            .try_get(0)?;
        Ok(taken.then_some(ClusterLock {
            _held: Some(client),
        }))
    }

    /// Claims `key` for this process unless another claimed it less than `period` ago;
    /// true when this one did. (A policy's scheduled run: every replica finds the slot
    /// due, the first to claim it runs it.)
    pub fn claim_for(&self, key: &str, period: Duration) -> Result<bool> {
        if self.dialect() != Dialect::Postgres {
            return Ok(true);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let before = now_ms - period.as_millis() as i64;
        let key = format!("claim:{key}");
        let now = now_ms.to_string();
        let mut claimed = false;
        self.write_tx(&mut |conn| {
            claimed = conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value \
                 WHERE CAST(meta.value AS BIGINT) < $3",
                &[Param::Text(&key), Param::Text(&now), Param::I64(before)],
            )? == 1;
            Ok(())
        })?;
        Ok(claimed)
    }
}
