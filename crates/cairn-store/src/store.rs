//! [`Store`]: the repository's source of truth. Opening it migrates the schema and creates
//! /Root and the built-in content on first use; reads here, writes in `ops.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::activity::{Activity, ActivityBatch};
use crate::content::ContentTypes;
use crate::db::postgres::PostgresBackend;
use crate::db::sqlite::{SqliteBackend, SqliteOptions};
use crate::db::{query_in, schema, Backend, Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::files::BlobStore;
use crate::ids::{ActivityId, NodeId};
use crate::node::{Node, NodeDetail, NodeRef, NodeStamp};
use crate::rows::{
    activity_from_row, node_from_row, ACTIVITY_COLUMNS, NODE_COLUMNS, NODE_COLUMNS_WITHOUT_FIELDS,
};
use crate::subtree::Subtree;

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
    blobs: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url.redacted())
            .field("repository_id", &self.repository_id)
            .finish()
    }
}

impl Store {
    /// Opens (and creates, migrates, bootstraps) the database at `url`, whose blobs are in
    /// its own place (see [`Store::open_with`] for one that may name an S3 bucket).
    pub fn open(url: &DatabaseUrl) -> Result<Store> {
        Store::open_with(url, None)
    }

    /// [`Store::open`], with `remote` to open the blob store the database may name
    /// ([`crate::files::BLOB_STORE_KEY`]); without it such a database is refused.
    pub fn open_with(
        url: &DatabaseUrl,
        remote: Option<crate::files::OpenBlobStore>,
    ) -> Result<Store> {
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
            let admin = crate::items::bootstrap(conn, &types)?;
            let blob_store = schema::get_meta(conn, crate::files::BLOB_STORE_KEY)?;
            ids = Some((repository_id, admin, blob_store));
            Ok(())
        })?;
        let (repository_id, admin_id, blob_store) =
            ids.ok_or_else(|| StoreError::Corrupt("bootstrap did not run".into()))?;
        let blobs = crate::files::blob_store_for(url, blob_store.as_deref(), remote)?;
        Ok(Store {
            backend,
            types,
            url: url.clone(),
            repository_id,
            admin_id,
            listeners: RwLock::new(Vec::new()),
            blobs,
        })
    }

    /// Where this repository keeps the bytes of its files.
    pub fn blobs(&self) -> Arc<dyn BlobStore> {
        self.blobs.clone()
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

    /// Runs `f` in one write transaction.
    pub(crate) fn write_tx(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()> {
        self.backend.write(&mut |conn| f(conn))
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
        self.read(|conn| crate::items::find(conn, &self.types, at, crate::items::Lock::None))
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
            let select = format!("SELECT {columns} FROM nodes WHERE id IN ({{ids}})");
            for row in query_in(conn, &select, &raw)? {
                let node = node_from_row(&self.types, row)?;
                if seen.insert(node.id) {
                    out.push(node);
                }
            }
            Ok(out)
        })
    }

    /// Every item in the subtree at `path` (the item itself included), parents first.
    pub fn nodes_in_tree(&self, path: &str) -> Result<Vec<Node>> {
        let b = Subtree::at(path);
        self.read(|conn| {
            let sql = Subtree::sql(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE {{subtree}} ORDER BY path_key"
            ));
            conn.query(&sql, &b.params())?
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
        let b = Subtree::at(path);
        let after = after_key.unwrap_or("");
        self.read(|conn| {
            let sql = Subtree::sql(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE {{subtree}} AND path_key > $4 ORDER BY path_key LIMIT $5"));
            conn.query(
                &sql,
                &b.params_with(&[
                    Param::Text(after),
                    Param::I64(limit as i64),
                ]),
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
        self.read(|conn| crate::users::user_by_login(conn, login))
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
            let select =
                format!("SELECT {ACTIVITY_COLUMNS} FROM indexing_activities WHERE id IN ({{ids}})");
            for row in query_in(conn, &select, &gap_ids)? {
                let a = activity_from_row(&row)?;
                if seen.insert(a.id) {
                    activities.push(a);
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
            let select = "SELECT id, fingerprint FROM indexing_activities WHERE id IN ({ids})";
            for row in query_in(conn, select, &raw)? {
                out.insert(ActivityId(row.i64(0)?), row.i64(1)?);
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
