//! # cairn-backup
//!
//! Backups of a Cairn repository that run while it serves, and restores that always come
//! back consistent.
//!
//! - [`run_backup`] copies one committed index state (protected from the writer's garbage
//!   collection, see `cairn_index::IndexSnapshot`), then the database through its engine's
//!   online backup, then writes the [`Manifest`] last, by rename. Files unchanged since the
//!   previous backup in the same folder are hard-linked, not copied: every backup stays
//!   complete on its own.
//! - [`BackupManager`] is the server's job: one backup at a time, idempotent start, cancel,
//!   progress, a history that survives restarts.
//! - [`verify()`] checks a backup; [`restore()`] puts one back through a staging folder;
//!   [`download()`] fetches a served backup into a new folder, checked before it counts.
//! - [`replace::IndexReplacer`] swaps a rebuilt or restored index in for a serving one.
#![warn(missing_docs)]

pub mod archive;
pub mod blob_stores;
mod blobs;
pub mod clock;
mod download;
mod error;
pub mod files;
pub mod identity;
mod job;
mod manifest;
mod name;
mod offline;
mod pace;
pub mod policy;
pub mod replace;
pub mod repo;
mod restore;
mod retention;
mod run;
mod verify;

pub use blob_stores::{blob_store_of, open_store};
pub use download::{download, BackupSourceFiles, DownloadReport};
pub use error::{BackupError, Result};
pub use job::{
    default_name, list_backups, BackupManager, BackupRequest, BackupResponse, BackupSummary,
};
pub use manifest::{
    blob_path, BackupKind, FileEntry, IndexPart, Manifest, SourceFile, BLOBS_DIR, DATABASE_DIR,
    INDEX_DIR, MANIFEST_FILE, MANIFEST_FORMAT,
};
pub use name::{check_name, target_path};
pub use offline::{
    backup_stopped, backup_stopped_into, check_folder as check_backup_folder, OfflineBackup,
};
pub use restore::{refuse_overlap, restore, RestoreMode, RestoreReport, RestoreTarget};
pub use retention::clean_activities;
pub use run::{
    now, previous_backup, run_backup, BackupInfo, BackupSource, BackupState, BackupStep,
    LiveSource, StoppedSource,
};
pub use verify::{verify, verify_parts, VerifyReport};
