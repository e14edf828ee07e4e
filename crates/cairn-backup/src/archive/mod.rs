//! Continuous archiving and restore to a point in time (SQLite).
//!
//! With `[backup.archive]` in `cairn.toml`, a serving repository keeps, in one backup
//! repository (a folder or S3): base backups (the `archive-base` policy: index and database),
//! index backups (`archive-index`), and every committed write transaction in between, as
//! changesets of SQLite's session extension (`cairn_store::archive`), shipped within a
//! second ([`shipper`]). [`timeline`] says what can be restored; [`restore_at`] restores the
//! database exactly as committed at a time, with an index that is not ahead of it.

pub mod segment;
pub mod shipper;
pub mod timeline;

pub use shipper::{ArchiveStatus, Archiver};
pub use timeline::{restore_at, timeline, RestoreAt, RestoredAt, Timeline};
