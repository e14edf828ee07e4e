//! [`Store`]: the repository's source of truth. Opening it migrates the schema and creates
//! /Root and the built-in content on first use; reads here, writes in `ops.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::activity::{Activity, ActivityBatch};
use crate::content::{path_key, ContentTypes};
use crate::db::postgres::PostgresBackend;
use crate::db::sqlite::{SqliteBackend, SqliteOptions};
use crate::db::{schema, Backend, Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::ids::{ActivityId, NodeId};
use crate::node::{Node, NodeDetail, NodeRef, NodeStamp};
use crate::rows::{
    activity_from_row, node_from_row, ACTIVITY_COLUMNS, NODE_COLUMNS, NODE_COLUMNS_WITHOUT_FIELDS,
};

/// Where the database is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` or `postgres://...` / `postgresql://...`.
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::BadUrl(url.to_string()));
            }
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.to_string()))
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// The URL with any password hidden, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::Postgres(u) => match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => {
                    let creds = &u[s + 3..at];
                    match creds.find(':') {
                        Some(c) => format!("{}{}:***{}", &u[..s + 3], &creds[..c], &u[at..]),
                        None => u.clone(),
                    }
                }
                _ => u.clone(),
            },
        }
    }
}

/// A callback told of every committed write, with the write's activity id.
pub type WriteListener = Arc<dyn Fn(ActivityId) + Send + Sync>;

/// The result of a write: its value and the id of the indexing activity it committed.
#[derive(Clone, Debug)]
pub struct Written<T> {
    /// What the operation returns.
    pub value: T,
    /// The activity committed with the change; wait for it to read your write in the index.
    pub activity: ActivityId,
}

/// Content nodes and the indexing activity log in one database.
///
/// All methods are blocking; call them from a blocking thread in async code. The store is
/// `Send + Sync` and pools its connections.
pub struct Store {
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) types: ContentTypes,
    url: DatabaseUrl,
    repository_id: Uuid,
    admin_id: NodeId,
    listeners: RwLock<Vec<WriteListener>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url.redacted())
            .field("repository_id", &self.repository_id)
            .finish()
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

/// The `WHERE` clause selecting the subtree at `$n` (path key), `$n+1` (key + "/") and
/// `$n+2` (key + "0", the next character after "/").
pub(crate) fn subtree_clause(n: usize) -> String {
    format!(
        "(path_key = ${n} OR (path_key >= ${} AND path_key < ${}))",
        n + 1,
        n + 2
    )
}

/// The three parameters of [`subtree_clause`].
pub(crate) fn subtree_bounds(path: &str) -> [String; 3] {
    let key = path_key(path);
    [key.clone(), format!("{key}/"), format!("{key}0")]
}

impl Store {
    /// Opens (and creates, migrates, bootstraps) the database at `url`.
    pub fn open(url: &DatabaseUrl) -> Result<Store> {
        let backend: Box<dyn Backend> = match url {
            DatabaseUrl::Sqlite(path) => {
                Box::new(SqliteBackend::open(path, SqliteOptions::default())?)
            }
            DatabaseUrl::Postgres(u) => Box::new(PostgresBackend::open(u)?),
        };
        let types = ContentTypes::built_in();
        let mut ids = None;
        backend.write(&mut |conn| {
            schema::migrate(conn)?;
            let repository_id = match schema::get_meta(conn, "repository_id")? {
                Some(s) => Uuid::parse_str(&s)
                    .map_err(|_| StoreError::Corrupt("meta.repository_id is not a UUID".into()))?,
                None => {
                    let id = Uuid::new_v4();
                    schema::set_meta(conn, "repository_id", &id.to_string())?;
                    id
                }
            };
            let admin = crate::ops::bootstrap(conn, &types)?;
            ids = Some((repository_id, admin));
            Ok(())
        })?;
        let (repository_id, admin_id) =
            ids.ok_or_else(|| StoreError::Corrupt("bootstrap did not run".into()))?;
        Ok(Store {
            backend,
            types,
            url: url.clone(),
            repository_id,
            admin_id,
            listeners: RwLock::new(Vec::new()),
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// The repository's identity, made when the database was created.
    pub fn repository_id(&self) -> Uuid {
        self.repository_id
    }

    /// The built-in administrator's id.
    pub fn admin_id(&self) -> NodeId {
        self.admin_id
    }

    /// The content types.
    pub fn types(&self) -> &ContentTypes {
        &self.types
    }

    /// Registers a callback run after every committed write (the indexer's wake-up).
    pub fn on_write(&self, listener: WriteListener) {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener);
    }

    pub(crate) fn notify(&self, activity: ActivityId) {
        for l in self
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            l(activity);
        }
    }

    /// Runs `f` in a read snapshot and returns its value.
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.backend.read(&mut |conn| {
            out = Some(f(conn)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Corrupt("read did not run".into()))
    }

    /// The item addressed by `at`, if it exists.
    pub fn node(&self, at: &NodeRef) -> Result<Option<Node>> {
        self.read(|conn| crate::ops::find(conn, &self.types, at, crate::ops::Lock::None))
    }

    /// The items with these ids that exist, in no particular order.
    pub fn nodes_by_ids(&self, ids: &[NodeId]) -> Result<Vec<Node>> {
        self.nodes_by_ids_with(ids, NodeDetail::Whole)
    }

    /// [`Store::nodes_by_ids`], loading as much of each item as `detail` says.
    pub fn nodes_by_ids_with(&self, ids: &[NodeId], detail: NodeDetail) -> Result<Vec<Node>> {
        let columns = match detail {
            NodeDetail::Whole => NODE_COLUMNS,
            NodeDetail::Columns => NODE_COLUMNS_WITHOUT_FIELDS,
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<i64> = ids.iter().map(|i| i.0).collect();
        self.read(|conn| {
            let mut out = Vec::with_capacity(raw.len());
            let mut seen = std::collections::HashSet::new();
            for chunk in in_chunks(&raw) {
                let sql = format!(
                    "SELECT {columns} FROM nodes WHERE id IN ({})",
                    placeholders(1, chunk.len())
                );
                let params: Vec<Param> = chunk.iter().map(|&i| Param::I64(i)).collect();
                for row in conn.query(&sql, &params)? {
                    let node = node_from_row(&self.types, row)?;
                    if seen.insert(node.id) {
                        out.push(node);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Every item in the subtree at `path` (the item itself included), parents first.
    pub fn nodes_in_tree(&self, path: &str) -> Result<Vec<Node>> {
        let b = subtree_bounds(path);
        self.read(|conn| {
            let sql = format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE {} ORDER BY path_key",
                subtree_clause(1)
            );
            conn.query(
                &sql,
                &[
                    b[0].as_str().into(),
                    b[1].as_str().into(),
                    b[2].as_str().into(),
                ],
            )?
            .into_iter()
            .map(|r| node_from_row(&self.types, r))
            .collect()
        })
    }

    /// Up to `limit` items of the subtree at `path` whose path keys sort after `after_key`
    /// (all when `None`), in path-key order: a subtree read in pages.
    pub fn scan_tree(
        &self,
        path: &str,
        after_key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Node>> {
        let b = subtree_bounds(path);
        let after = after_key.unwrap_or("");
        self.read(|conn| {
            let sql = format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE {} AND path_key > $4 ORDER BY path_key LIMIT $5",
                subtree_clause(1)
            );
            conn.query(
                &sql,
                &[
                    b[0].as_str().into(),
                    b[1].as_str().into(),
                    b[2].as_str().into(),
                    Param::Text(after),
                    Param::I64(limit as i64),
                ],
            )?
            .into_iter()
            .map(|r| node_from_row(&self.types, r))
            .collect()
        })
    }

    /// Up to `limit` items with ids above `after`, in id order (for rebuilds and checks).
    pub fn scan_nodes(&self, after: NodeId, limit: usize) -> Result<Vec<Node>> {
        self.read(|conn| {
            let sql =
                format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id > $1 ORDER BY id LIMIT $2");
            conn.query(&sql, &[Param::I64(after.0), Param::I64(limit as i64)])?
                .into_iter()
                .map(|r| node_from_row(&self.types, r))
                .collect()
        })
    }

    /// Up to `limit` (id, path, timestamp) triples with ids above `after`, in id order.
    pub fn scan_stamps(&self, after: NodeId, limit: usize) -> Result<Vec<NodeStamp>> {
        self.read(|conn| {
            conn.query(
                "SELECT id, path, timestamp FROM nodes WHERE id > $1 ORDER BY id LIMIT $2",
                &[Param::I64(after.0), Param::I64(limit as i64)],
            )?
            .iter()
            .map(|r| {
                Ok(NodeStamp {
                    id: NodeId(r.i64(0)?),
                    path: r.text(1)?,
                    timestamp: r.i64(2)?,
                })
            })
            .collect()
        })
    }

    /// The user whose `LoginName` is `login` (case-insensitively), from the database's
    /// unique index of logins.
    pub fn user_by_login(&self, login: &str) -> Result<Option<NodeId>> {
        self.read(|conn| crate::ops::user_by_login(conn, login))
    }

    /// The number of items.
    pub fn count_nodes(&self) -> Result<u64> {
        self.read(|conn| conn.query_i64("SELECT COUNT(*) FROM nodes", &[]))
            .map(|n| n as u64)
    }

    /// The highest activity id visible now (0 when the log is empty).
    pub fn last_activity_id(&self) -> Result<ActivityId> {
        self.read(|conn| {
            conn.query_i64("SELECT COALESCE(MAX(id), 0) FROM indexing_activities", &[])
        })
        .map(ActivityId)
    }

    /// One activity by id.
    pub fn activity(&self, id: ActivityId) -> Result<Option<Activity>> {
        self.read(|conn| {
            let sql = format!("SELECT {ACTIVITY_COLUMNS} FROM indexing_activities WHERE id = $1");
            conn.query_opt(&sql, &[Param::I64(id.0)])?
                .map(|r| activity_from_row(&r))
                .transpose()
        })
    }

    /// Reads, in one snapshot: the activities among `gaps` that are now visible, then up to
    /// `limit` activities after `after`, in id order, with the snapshot's horizon.
    pub fn read_activities(
        &self,
        after: ActivityId,
        gaps: &[ActivityId],
        limit: usize,
    ) -> Result<ActivityBatch> {
        let gap_ids: Vec<i64> = gaps.iter().map(|g| g.0).collect();
        let mut result = None;
        let horizon = self.backend.read(&mut |conn| {
            let mut activities = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for chunk in in_chunks(&gap_ids) {
                let sql = format!(
                    "SELECT {ACTIVITY_COLUMNS} FROM indexing_activities WHERE id IN ({})",
                    placeholders(1, chunk.len())
                );
                let params: Vec<Param> = chunk.iter().map(|&i| Param::I64(i)).collect();
                for row in conn.query(&sql, &params)? {
                    let a = activity_from_row(&row)?;
                    if seen.insert(a.id) {
                        activities.push(a);
                    }
                }
            }
            let sql = format!(
                "SELECT {ACTIVITY_COLUMNS} FROM indexing_activities WHERE id > $1 ORDER BY id LIMIT $2"
            );
            for row in conn.query(&sql, &[Param::I64(after.0), Param::I64(limit as i64)])? {
                activities.push(activity_from_row(&row)?);
            }
            activities.sort_by_key(|a| a.id);
            let last =
                conn.query_i64("SELECT COALESCE(MAX(id), 0) FROM indexing_activities", &[])?;
            result = Some((activities, ActivityId(last)));
            Ok(())
        })?;
        let (activities, last_visible) =
            result.ok_or_else(|| StoreError::Corrupt("read did not run".into()))?;
        Ok(ActivityBatch {
            activities,
            horizon,
            last_visible,
        })
    }

    /// The fingerprints of those of `ids` that exist.
    pub fn activity_fingerprints(&self, ids: &[ActivityId]) -> Result<HashMap<ActivityId, i64>> {
        let raw: Vec<i64> = ids.iter().map(|i| i.0).collect();
        self.read(|conn| {
            let mut out = HashMap::new();
            for chunk in in_chunks(&raw) {
                let sql = format!(
                    "SELECT id, fingerprint FROM indexing_activities WHERE id IN ({})",
                    placeholders(1, chunk.len())
                );
                let params: Vec<Param> = chunk.iter().map(|&i| Param::I64(i)).collect();
                for row in conn.query(&sql, &params)? {
                    out.insert(ActivityId(row.i64(0)?), row.i64(1)?);
                }
            }
            Ok(out)
        })
    }

    /// Deletes activities with ids below `below` written before `older_than`; returns how
    /// many. The caller decides `below` so that no index (live, or in a known backup) that
    /// may still catch up from this database needs them.
    pub fn delete_activities(
        &self,
        below: ActivityId,
        older_than: time::OffsetDateTime,
    ) -> Result<u64> {
        let micros = crate::rows::to_micros(older_than);
        let mut n = 0;
        self.backend.write(&mut |conn| {
            n = conn.execute(
                "DELETE FROM indexing_activities WHERE id < $1 AND creation_date < $2",
                &[Param::I64(below.0), Param::I64(micros)],
            )?;
            Ok(())
        })?;
        Ok(n)
    }

    /// The ids in `(from, to]` that no visible activity has.
    pub fn missing_activity_ids(
        &self,
        from: ActivityId,
        to: ActivityId,
    ) -> Result<Vec<ActivityId>> {
        if to <= from {
            return Ok(Vec::new());
        }
        let present: std::collections::HashSet<i64> = self.read(|conn| {
            conn.query(
                "SELECT id FROM indexing_activities WHERE id > $1 AND id <= $2",
                &[Param::I64(from.0), Param::I64(to.0)],
            )?
            .iter()
            .map(|r| r.i64(0))
            .collect()
        })?;
        Ok((from.0 + 1..=to.0)
            .filter(|i| !present.contains(i))
            .map(ActivityId)
            .collect())
    }
}

/// What a database holds, read without creating or migrating anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseFacts {
    /// The repository's id.
    pub repository_id: String,
    /// Its schema version (older ones are migrated by the next `Store::open`).
    pub schema_version: i64,
    /// The highest activity id (0 when the log is empty).
    pub last_activity_id: ActivityId,
}

/// The repository id a database already holds, without creating or migrating anything:
/// `None` for a missing or empty database.
pub fn existing_repository_id(url: &DatabaseUrl) -> Result<Option<String>> {
    Ok(peek_database(url)?.map(|f| f.repository_id))
}

/// [`DatabaseFacts`] of the database at `url`, read only: `None` for a missing or empty
/// database. For commands that look (`index status`) and must not migrate a database that
/// an older server may still be using.
pub fn peek_database(url: &DatabaseUrl) -> Result<Option<DatabaseFacts>> {
    Ok(peek_database_and_activity(url, None)?.map(|(facts, _)| facts))
}

/// [`peek_database`], and in the same read the fingerprint of activity `id` (`None` when
/// the log has no such activity): what `index status` compares an index with.
pub fn peek_database_and_activity(
    url: &DatabaseUrl,
    id: Option<ActivityId>,
) -> Result<Option<(DatabaseFacts, Option<i64>)>> {
    const SQL: &str = "SELECT fingerprint FROM indexing_activities WHERE id = $1";
    peek(
        url,
        |conn| {
            use rusqlite::OptionalExtension;
            let fingerprint = match id {
                Some(id) => conn
                    .query_row(SQL, [id.0], |r| r.get::<_, i64>(0))
                    .optional()?,
                None => None,
            };
            Ok((crate::backup::read_facts(conn)?, fingerprint))
        },
        |client| {
            let fingerprint = match id {
                Some(id) => client
                    .query_opt(SQL, &[&id.0])?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()?,
                None => None,
            };
            Ok((crate::backup::read_facts_pg(client)?, fingerprint))
        },
    )
}

/// Runs `sqlite` or `pg` on the database at `url` opened read only, without creating or
/// migrating anything: `None` for a missing database or one without Cairn's tables.
fn peek<T>(
    url: &DatabaseUrl,
    sqlite: impl FnOnce(&rusqlite::Connection) -> Result<T>,
    pg: impl FnOnce(&mut postgres::Client) -> Result<T>,
) -> Result<Option<T>> {
    match url {
        DatabaseUrl::Sqlite(path) => {
            if !path.exists() {
                return Ok(None);
            }
            // A read-only open of a WAL database creates its `-wal` and `-shm` side files
            // and cannot remove them on close. Those this call made are removed again (the
            // WAL only when empty), so that looking leaves the folder as it was.
            let side = |suffix: &str| {
                let mut p = path.as_os_str().to_os_string();
                p.push(suffix);
                std::path::PathBuf::from(p)
            };
            let (wal, shm) = (side("-wal"), side("-shm"));
            let (had_wal, had_shm) = (wal.exists(), shm.exists());
            let found = (|| -> Result<Option<T>> {
                let conn = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )?;
                let tables: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                     AND name IN ('meta', 'indexing_activities')",
                    [],
                    |r| r.get(0),
                )?;
                if tables < 2 {
                    return Ok(None);
                }
                sqlite(&conn).map(Some)
            })();
            let wal_gone = if !had_wal && std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
                std::fs::remove_file(&wal).is_ok()
            } else {
                !wal.exists()
            };
            if !had_shm && wal_gone {
                let _ = std::fs::remove_file(&shm);
            }
            found
        }
        DatabaseUrl::Postgres(u) => {
            let mut client = crate::db::postgres::connect(u)?;
            let exists: bool = client
                .query_one(
                    "SELECT to_regclass('meta') IS NOT NULL \
                     AND to_regclass('indexing_activities') IS NOT NULL",
                    &[],
                )?
                .get(0);
            if !exists {
                return Ok(None);
            }
            pg(&mut client).map(Some)
        }
    }
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
