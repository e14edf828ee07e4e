//! What a database holds about itself (its repository id, schema version and last
//! activity), read from a live database, from a backup's pinned snapshot, or from a
//! database on disk without creating or migrating anything.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::ids::ActivityId;
use crate::store::DatabaseUrl;

/// What a database holds, read without creating or migrating anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseFacts {
    /// The repository's id.
    pub repository_id: String,
    /// Its schema version (older ones are migrated by the next `Store::open`).
    pub schema_version: i64,
    /// The highest activity id (0 when the log is empty).
    pub last_activity_id: ActivityId,
    /// How many write transactions it has committed (`meta.archive_seq`, see
    /// [`crate::archive`]; 0 in a database older than the count).
    pub archive_seq: i64,
    /// Where it keeps its files' blobs when not in its own place (an `s3://` URL, see
    /// [`crate::files::BLOB_STORE_KEY`]).
    pub blob_store: Option<String>,
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
            Ok((read_facts(conn)?, fingerprint))
        },
        |client| {
            let fingerprint = match id {
                Some(id) => client
                    .query_opt(SQL, &[&id.0])?
                    .map(|r| r.try_get::<_, i64>(0))
                    .transpose()?,
                None => None,
            };
            Ok((read_facts_pg(client)?, fingerprint))
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

/// What a database (a live one, or the pinned snapshot of a backup) says about itself.
pub(crate) fn read_facts(conn: &Connection) -> Result<DatabaseFacts> {
    let last: i64 = conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM indexing_activities",
        [],
        |r| r.get(0),
    )?;
    let meta = |key: &str| -> Result<String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .ok_or_else(|| StoreError::Corrupt(format!("meta.{key} is missing")))
    };
    let seq = meta(crate::db::session::ARCHIVE_SEQ_KEY).ok();
    let mut f = facts(last, meta("repository_id")?, &meta("schema_version")?, seq)?;
    f.blob_store = meta(crate::files::BLOB_STORE_KEY).ok();
    Ok(f)
}

/// [`read_facts`] on PostgreSQL, in `client`'s transaction (and snapshot).
pub(crate) fn read_facts_pg(client: &mut impl postgres::GenericClient) -> Result<DatabaseFacts> {
    let last: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(id), 0)::BIGINT FROM indexing_activities",
            &[],
        )?
        .try_get(0)?;
    let mut meta = |key: &str| -> Result<String> {
        client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt(format!("meta.{key} is missing")))
    };
    let repository_id = meta("repository_id")?;
    let mut f = facts(last, repository_id, &meta("schema_version")?, None)?;
    f.blob_store = meta(crate::files::BLOB_STORE_KEY).ok();
    Ok(f)
}

fn facts(
    last: i64,
    repository_id: String,
    schema_version: &str,
    archive_seq: Option<String>,
) -> Result<DatabaseFacts> {
    Ok(DatabaseFacts {
        last_activity_id: ActivityId(last),
        archive_seq: archive_seq.and_then(|s| s.parse().ok()).unwrap_or(0),
        repository_id,
        blob_store: None,
        schema_version: schema_version
            .parse::<i64>()
            .map_err(|_| StoreError::Corrupt("meta.schema_version is not a number".into()))?,
    })
}
