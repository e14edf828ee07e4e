//! Versioned schema migrations, one list per dialect. The version lives in `meta`; a
//! database newer than this build is refused rather than misread.

use super::{Conn, Dialect, Param};
use crate::error::{Result, StoreError};

/// The newest schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = 3;

const SQLITE_V1: &str = "
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id INTEGER REFERENCES nodes(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    path_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    idx INTEGER NOT NULL DEFAULT 0,
    creation_date INTEGER NOT NULL,
    modification_date INTEGER NOT NULL,
    created_by INTEGER,
    modified_by INTEGER,
    timestamp INTEGER NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX nodes_parent ON nodes(parent_id);
CREATE TABLE indexing_activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    activity_type TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    old_path TEXT,
    creation_date INTEGER NOT NULL,
    fingerprint INTEGER NOT NULL
);
";

const POSTGRES_V1: &str = "
CREATE TABLE nodes (
    id BIGSERIAL PRIMARY KEY,
    parent_id BIGINT REFERENCES nodes(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    path_key TEXT COLLATE \"C\" NOT NULL UNIQUE,
    type TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    idx BIGINT NOT NULL DEFAULT 0,
    creation_date BIGINT NOT NULL,
    modification_date BIGINT NOT NULL,
    created_by BIGINT,
    modified_by BIGINT,
    timestamp BIGINT NOT NULL,
    fields TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX nodes_parent ON nodes(parent_id);
CREATE TABLE indexing_activities (
    id BIGSERIAL PRIMARY KEY,
    activity_type TEXT NOT NULL,
    node_id BIGINT NOT NULL,
    path TEXT NOT NULL,
    old_path TEXT,
    creation_date BIGINT NOT NULL,
    fingerprint BIGINT NOT NULL
);
";

/// Version 2: a user's login, case-folded, in its own column with a unique index, so that
/// the database itself keeps a login to one user (two concurrent creates, a copy or an
/// import cannot slip past it). The column is filled by [`fill_login_keys`], in Rust, so
/// that it folds case exactly as every later write does.
const SQLITE_V2: &str = "ALTER TABLE nodes ADD COLUMN login_key TEXT";
const POSTGRES_V2: &str = "ALTER TABLE nodes ADD COLUMN login_key TEXT";

/// Version 3: the blob store of a PostgreSQL database ([`crate::files`]): each blob's
/// length, and its bytes in rows of at most 1 MiB (`IF NOT EXISTS`: a database put back to
/// an older version by hand keeps its blobs). SQLite keeps blobs as files beside the
/// database, and gets no table.
const SQLITE_V3: &str = "";
const POSTGRES_V3: &str = "
CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    hash TEXT NOT NULL REFERENCES blobs(hash) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (hash, seq)
)";

/// Fills `login_key` for every user, oldest first, then makes it unique. A login that
/// several users shared (possible before version 2) stays with the oldest; the others lose
/// it (none of them could log in reliably): their `LoginName` is cleared, with an activity
/// so that the index follows, and each is logged.
fn fill_login_keys(conn: &mut dyn Conn) -> Result<()> {
    let rows = conn.query(
        "SELECT id, path, fields FROM nodes WHERE type = 'User' ORDER BY id",
        &[],
    )?;
    let mut taken = std::collections::HashSet::new();
    for row in rows {
        let (id, path, text) = (row.i64(0)?, row.text(1)?, row.text(2)?);
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let Some(login) = fields.get("LoginName").and_then(|v| v.as_str()) else {
            continue;
        };
        if login.is_empty() {
            continue;
        }
        let key = crate::users::login_key(login);
        if taken.insert(key.clone()) {
            conn.execute(
                "UPDATE nodes SET login_key = $1 WHERE id = $2",
                &[Param::Text(&key), Param::I64(id)],
            )?;
            continue;
        }
        tracing::warn!(
            user = %path,
            login = %login,
            "the login is an older user's: cleared (set a new LoginName to let this user in)"
        );
        fields.remove("LoginName");
        let text = serde_json::Value::Object(fields).to_string();
        let activity = crate::activity_log::insert_activity(
            conn,
            crate::activity::ActivityKind::Update,
            crate::ids::NodeId(id),
            &path,
            None,
        )?;
        conn.execute(
            "UPDATE nodes SET fields = $1, timestamp = $2 WHERE id = $3",
            &[Param::Text(&text), Param::I64(activity.0), Param::I64(id)],
        )?;
    }
    conn.execute("CREATE UNIQUE INDEX nodes_login ON nodes(login_key)", &[])?;
    Ok(())
}

fn migrations(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => &[SQLITE_V1, SQLITE_V2, SQLITE_V3],
        Dialect::Postgres => &[POSTGRES_V1, POSTGRES_V2, POSTGRES_V3],
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], inside the caller's write transaction.
pub(crate) fn migrate(conn: &mut dyn Conn) -> Result<()> {
    let dialect = conn.dialect();
    if dialect == Dialect::Postgres {
        // Several web nodes may start at once against one database.
        conn.execute("SELECT pg_advisory_xact_lock(727274)", &[])?;
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        &[],
    )?;
    let found = match conn.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])? {
        Some(row) => row
            .text(0)?
            .parse::<i64>()
            .map_err(|_| StoreError::Corrupt("meta.schema_version is not a number".into()))?,
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, script) in migrations(dialect).iter().enumerate() {
        let version = i as i64 + 1;
        if version <= found {
            continue;
        }
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.execute(statement, &[])?;
        }
        if version == 2 {
            fill_login_keys(conn)?;
        }
        tracing::info!(version, "applied schema migration");
    }
    if found < SCHEMA_VERSION {
        let v = SCHEMA_VERSION.to_string();
        set_meta(conn, "schema_version", &v)?;
    }
    Ok(())
}

/// Writes a `meta` entry.
pub(crate) fn set_meta(conn: &mut dyn Conn, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[Param::Text(key), Param::Text(value)],
    )?;
    Ok(())
}

/// Reads a `meta` entry.
pub(crate) fn get_meta(conn: &mut dyn Conn, key: &str) -> Result<Option<String>> {
    conn.query_opt("SELECT value FROM meta WHERE key = $1", &[Param::Text(key)])?
        .map(|r| r.text(0))
        .transpose()
}
