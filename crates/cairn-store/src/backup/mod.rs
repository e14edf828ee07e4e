//! Online database backup, verification and restore: the database half of a Cairn backup
//! (design invariants 6 and 7). The backup manager copies the index first, then calls
//! [`Store::backup_database`], then writes the manifest from the returned [`DatabaseBackup`].
//!
//!
//! [`sqlite`] copies an SQLite database through its online backup API from a pinned
//! snapshot; [`postgres`] dumps and restores with PostgreSQL's own `pg_dump` and
//! `pg_restore`, which [`tools`] finds and runs.

pub mod pg_physical;
mod postgres;
mod sqlite;
mod tools;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cancel::CancelToken;
use crate::error::{Result, StoreError};
use crate::ids::ActivityId;
use crate::store::{DatabaseUrl, Store};

pub use postgres::{restore_postgres, RESTORE_LOCK_TIMEOUT};
pub use sqlite::{checkpoint_sqlite, sqlite_page_size};

/// The file name of an SQLite backup.
pub const SQLITE_BACKUP_FILE: &str = "cairn.db";
/// The file name of a PostgreSQL backup (`pg_dump` custom format).
pub const POSTGRES_BACKUP_FILE: &str = "cairn.pgdump";

/// Environment variable naming the `pg_dump` program to use (overrides the search).
pub const PG_DUMP_ENV: &str = "CAIRN_PG_DUMP";
/// Environment variable naming the `pg_restore` program to use (overrides the search).
pub const PG_RESTORE_ENV: &str = "CAIRN_PG_RESTORE";

/// Which database engine a backup file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// An SQLite database file.
    Sqlite,
    /// A PostgreSQL dump in `pg_dump`'s custom format.
    Postgres,
}

impl DatabaseKind {
    /// The name of the backup file of this kind: `cairn.db` or `cairn.pgdump`.
    pub fn file_name(self) -> &'static str {
        match self {
            DatabaseKind::Sqlite => SQLITE_BACKUP_FILE,
            DatabaseKind::Postgres => POSTGRES_BACKUP_FILE,
        }
    }
}

/// What [`Store::backup_database`] wrote: the database part of a backup manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseBackup {
    /// The engine, which says how to read [`file_name`](Self::file_name).
    pub kind: DatabaseKind,
    /// The file's name inside the destination folder.
    pub file_name: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The highest activity id in the copied snapshot (0 when its log is empty).
    pub last_activity_id: ActivityId,
    /// The repository id stored in the copied database.
    pub repository_id: String,
    /// The schema version of the copied database.
    pub schema_version: i64,
    /// How many write transactions the copy holds (SQLite: `meta.archive_seq`, where a
    /// point-in-time restore starts applying archived changes; 0 for PostgreSQL).
    #[serde(default)]
    pub archive_seq: i64,
    /// Where the copied database keeps its files' blobs, when not in its own place (an
    /// `s3://` URL): where a restore puts them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_store: Option<String>,
}

/// Tuning of [`Store::backup_database_with`]; [`Default`] is what
/// [`Store::backup_database`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupOptions {
    /// SQLite pages copied per step (at least 1). Progress is reported and cancel checked
    /// after each step.
    pub sqlite_pages_per_step: u32,
    /// How often a running `pg_dump` is polled for progress and cancel.
    pub poll_interval: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            sqlite_pages_per_step: 1024,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// What [`verify_database_file`] found. A field is `Some` only when it was read from the
/// file itself; the caller compares it with its manifest. For a PostgreSQL dump the
/// repository id, schema version and last activity id cannot be read without restoring
/// it, so they are `None`: only the dump's structure was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDatabase {
    /// The engine of the file.
    pub kind: DatabaseKind,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The repository id stored in the file (SQLite only).
    pub repository_id: Option<String>,
    /// The schema version stored in the file (SQLite only).
    pub schema_version: Option<i64>,
    /// The highest activity id in the file (SQLite only).
    pub last_activity_id: Option<ActivityId>,
}

impl Store {
    /// Copies the live database into `dest_dir/<file_name>` while writes continue, and
    /// returns what was copied. Same as [`backup_database_with`](Self::backup_database_with)
    /// with the default [`BackupOptions`].
    ///
    /// `progress(done, total)` is called between steps, in bytes: copied and in all for
    /// SQLite, written so far for PostgreSQL (`total` 0: unknown). `cancel` is checked between
    /// steps; when it is set the copy stops, the partial file is removed and the result is
    /// [`StoreError::Cancelled`].
    pub fn backup_database(
        &self,
        dest_dir: &Path,
        progress: &dyn Fn(u64, u64),
        cancel: &CancelToken,
    ) -> Result<DatabaseBackup> {
        self.backup_database_with(dest_dir, &BackupOptions::default(), progress, cancel)
    }

    /// [`backup_database`](Self::backup_database) with explicit [`BackupOptions`].
    pub fn backup_database_with(
        &self,
        dest_dir: &Path,
        options: &BackupOptions,
        progress: &dyn Fn(u64, u64),
        cancel: &CancelToken,
    ) -> Result<DatabaseBackup> {
        std::fs::create_dir_all(dest_dir).map_err(|e| StoreError::io(dest_dir, e))?;
        match self.url() {
            DatabaseUrl::Sqlite(path) => {
                sqlite::backup_sqlite(path, dest_dir, options, progress, cancel)
            }
            DatabaseUrl::Postgres(url) => {
                postgres::backup_postgres(url, dest_dir, options, progress, cancel)
            }
        }
    }
}

/// Checks a backed-up database file.
///
/// SQLite: opens it read-only, `PRAGMA integrity_check` must answer `ok`, and reads the
/// repository id, the schema version and the highest activity id. PostgreSQL: the dump's
/// table of contents (`pg_restore --list`) must list the tables `nodes` and
/// `indexing_activities` with their data, and every data block must read back
/// (`pg_restore` to `/dev/null`), which catches a truncated dump.
///
/// A damaged file gives [`StoreError::Corrupt`] saying which file and what failed.
pub fn verify_database_file(kind: DatabaseKind, path: &Path) -> Result<VerifiedDatabase> {
    let bytes = std::fs::metadata(path)
        .map_err(|e| StoreError::io(path, e))?
        .len();
    match kind {
        DatabaseKind::Sqlite => sqlite::verify_sqlite(path, bytes),
        DatabaseKind::Postgres => postgres::verify_postgres(path, bytes),
    }
}

/// `dir/name.partial`: where a copy is written until it is complete.
fn partial_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.partial"))
}

/// Ends a copy written to `partial`: once `copied`, puts it in place in `dest_dir` under
/// `kind`'s name (synced, by rename) and describes it; after a failure, removes what was
/// written with `remove`.
fn finish(
    kind: DatabaseKind,
    dest_dir: &Path,
    partial: &Path,
    copied: Result<crate::facts::DatabaseFacts>,
    remove: fn(&Path) -> Result<()>,
) -> Result<DatabaseBackup> {
    match copied {
        Ok(facts) => {
            let bytes = crate::durable::publish(partial, dest_dir, kind.file_name())?;
            Ok(DatabaseBackup {
                kind,
                file_name: kind.file_name().to_string(),
                bytes,
                last_activity_id: facts.last_activity_id,
                repository_id: facts.repository_id,
                schema_version: facts.schema_version,
                archive_seq: facts.archive_seq,
                blob_store: facts.blob_store,
            })
        }
        Err(e) => {
            if let Err(clean) = remove(partial) {
                tracing::warn!("cannot remove a partial backup: {clean}");
            }
            Err(e)
        }
    }
}

/// Removes `path` if it exists.
fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialize_in_lowercase() {
        assert_eq!(
            serde_json::to_string(&DatabaseKind::Postgres)
                .ok()
                .as_deref(),
            Some("\"postgres\"")
        );
        assert_eq!(
            serde_json::from_str::<DatabaseKind>("\"sqlite\"").ok(),
            Some(DatabaseKind::Sqlite)
        );
    }

    #[test]
    fn new_errors_are_not_input_errors() {
        assert!(!StoreError::Cancelled.is_input_error());
        assert!(!StoreError::Tool {
            tool: "pg_dump".into(),
            message: "x".into()
        }
        .is_input_error());
        assert!(!StoreError::io("/x", std::io::Error::other("x")).is_input_error());
    }
}
