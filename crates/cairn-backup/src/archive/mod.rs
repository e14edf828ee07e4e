//! Continuous archiving and restore to a point in time: SQLite's write transactions as
//! changesets, PostgreSQL's WAL with its own tools ([`postgres`]).
//!
//! With `[backup.archive]` in `cairn.toml`, a serving repository keeps, in one backup
//! repository (a folder or S3): base backups (the `archive-base` policy: index and database),
//! index backups (`archive-index`), and every committed write transaction in between, as
//! changesets of SQLite's session extension (`cairn_store::archive`), shipped within a
//! second ([`shipper`]). [`timeline`] says what can be restored; [`restore_at`] restores the
//! database exactly as committed at a time, with an index that is not ahead of it.

pub mod blobs;
pub mod pick;
pub mod postgres;
pub mod prune;
pub mod segment;
pub mod shipper;
pub mod timeline;

pub use pick::RestoreAt;
pub use shipper::{ArchiveStatus, Archiver};
pub use timeline::{restore_at, timeline, RestoredAt, Timeline};

/// A running archiver, of either engine.
pub trait Archiving: Send + Sync {
    /// What it has done, for `GetBackupPolicies` and `/metrics`.
    fn status(&self) -> ArchiveStatus;
    /// Ships what it has and stops.
    fn stop(&self);
}

impl Archiving for Archiver {
    fn status(&self) -> ArchiveStatus {
        Archiver::status(self)
    }
    fn stop(&self) {
        Archiver::stop(self)
    }
}

impl Archiving for postgres::PgArchiver {
    fn status(&self) -> ArchiveStatus {
        postgres::PgArchiver::status(self)
    }
    fn stop(&self) {
        postgres::PgArchiver::stop(self)
    }
}
