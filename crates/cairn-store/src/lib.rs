//! # cairn-store
//!
//! The source of truth of a Cairn repository: content items (`nodes`) and the append-only
//! indexing activity log, in one database, SQLite (embedded, the default) or PostgreSQL.
//!
//! - [`Store`] opens a database (creating, migrating and bootstrapping it) and runs content
//!   operations. Every operation commits its content change and exactly one [`Activity`] in
//!   one transaction, and stamps the rows it changed with that activity's id
//!   ([`Node::timestamp`]).
//! - [`ContentTypes`] holds the built-in content types and their typed fields; every value
//!   written is checked against them ([`StoreError`] says what is wrong).
//! - [`Store::read_activities`] gives the indexer activities in one snapshot together with a
//!   [`Horizon`] that tells when a missing id can no longer appear.
//! - [`Store::backup_database`] copies the live database (SQLite's online backup API from a
//!   pinned snapshot, or `pg_dump`) while writes continue; [`verify_database_file`] checks a
//!   copy and [`restore_postgres`] loads a dump back.
#![warn(missing_docs)]

mod activity;
mod activity_log;
pub mod archive;
mod backup;
pub mod cancel;
mod cluster;
pub mod content;
mod db;
pub mod durable;
mod error;
mod facts;
pub mod fault;
pub mod files;
mod ids;
mod items;
mod node;
mod ops;
mod rows;
mod store;
mod subtree;
mod users;

pub use activity::{Activity, ActivityBatch, ActivityKind, Horizon};
pub use backup::{
    checkpoint_sqlite, pg_physical, restore_postgres, sqlite_page_size, verify_database_file,
    BackupOptions, DatabaseBackup, DatabaseKind, VerifiedDatabase, PG_DUMP_ENV, PG_RESTORE_ENV,
    POSTGRES_BACKUP_FILE, RESTORE_LOCK_TIMEOUT, SQLITE_BACKUP_FILE,
};
pub use cancel::CancelToken;
pub use cluster::ClusterLock;
pub use content::{ContentType, ContentTypes, FieldDef, FieldKind, FieldValue};
pub use db::postgres::cairn_sessions;
pub use db::Dialect;
pub use error::{Result, StoreError};
pub use facts::{existing_repository_id, peek_database, peek_database_and_activity, DatabaseFacts};
pub use ids::{ActivityId, NodeId};
pub use node::{NewContent, Node, NodeDetail, NodeRef, NodeStamp, COLUMN_FIELDS};
pub use ops::{ImportItem, ImportOutcome, SaveBinary, UpdateMode};
pub use store::{DatabaseUrl, Store, WriteListener, Written};
pub use uuid::Uuid;
