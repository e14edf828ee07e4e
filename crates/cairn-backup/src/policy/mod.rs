//! Backup policies: scheduled backups into a repository, with retention, as
//! `DIR/cairn.toml` describes them ([`config`]); [`runner`] runs them in a server.

pub mod config;
pub mod runner;
pub mod schedule;

pub use config::{
    parse_policies, read_archive, read_policies, ArchiveSettings, Policy, ARCHIVE_BASE,
    ARCHIVE_INDEX, CONFIG_FILE,
};
pub use runner::{metrics_text, Policies, PolicyView};
pub use schedule::Schedule;
