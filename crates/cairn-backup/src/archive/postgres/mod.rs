//! Continuous archiving and restore to a time on PostgreSQL, with PostgreSQL's own machinery
//! (`cairn_store::pg_physical`): Cairn runs `pg_receivewal` (through a replication slot) and
//! ships what it writes into the repository, takes base backups with `pg_basebackup`, and
//! restores with PostgreSQL's archive recovery to `recovery_target_time`.
//!
//! In the repository, under `pg/SYSTEM_ID/` (a cluster's system identifier, so that two
//! clusters never mix):
//! - `wal/SEGMENT`: a whole WAL segment; `wal/SEGMENT.partial-OFFSET`: the bytes of the
//!   segment being written from OFFSET on, shipped every half second (no more than what was
//!   written since), and removed once the whole segment is shipped; `wal/N.history`: the
//!   history of timeline N.
//! - `reach/TLI-LSN-MS`: everything committed by MS (the server's clock) ends at or before
//!   LSN on timeline TLI, and the WAL up to LSN is shipped. The newest says how far the
//!   archive reaches; one is kept per segment.
//! - `base/NAME/base.tar.NNNN` (parts of at most 64 MiB) and `base/NAME/base.json` (written
//!   last: a base without it is unfinished).
//!
//! Index snapshots are the `archive-index` policy's index backups, as on SQLite.

mod archiver;
mod reach;
mod restore;

pub use archiver::PgArchiver;
pub use reach::{base_reader, bases, clusters, fetch_wal, reaches, PgReach};
pub use restore::{restore_at_postgres, PgRestored};

use cairn_store::pg_physical::Lsn;
use serde::{Deserialize, Serialize};

/// The folder of the received WAL in the data folder.
pub const WAL_DIR: &str = "archive-wal";

/// The repository's prefix of a cluster.
pub(crate) fn cluster_prefix(system_id: &str) -> String {
    format!("pg/{system_id}/")
}

/// What `base.json` says of a base backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PgBaseInfo {
    /// Its name.
    pub name: String,
    /// The cluster's system identifier.
    pub system_id: String,
    /// The repository (Cairn's) it belongs to.
    pub repository_id: String,
    /// When `pg_basebackup` started (RFC 3339).
    pub started_at: String,
    /// When it ended: the earliest time it restores.
    pub finished_at: String,
    /// Its timeline.
    pub timeline: u32,
    /// Where recovery starts.
    pub start_lsn: String,
    /// Where the copy is consistent.
    pub end_lsn: String,
    /// The WAL segment size.
    pub segment_size: u64,
    /// Objects of the tar.
    pub parts: u32,
    /// Bytes of the tar.
    pub bytes: u64,
}

/// A reach record (see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reach {
    /// The timeline.
    pub timeline: u32,
    /// The WAL position shipped.
    pub lsn: Lsn,
    /// The time by which every commit is within it.
    pub at_ms: i64,
}

impl Reach {
    pub(crate) fn key(&self, system_id: &str) -> String {
        format!(
            "{}reach/{:08X}-{:016X}-{}",
            cluster_prefix(system_id),
            self.timeline,
            self.lsn,
            self.at_ms
        )
    }

    pub(crate) fn parse(name: &str) -> Option<Reach> {
        let mut parts = name.split('-');
        let r = Reach {
            timeline: u32::from_str_radix(parts.next()?, 16).ok()?,
            lsn: u64::from_str_radix(parts.next()?, 16).ok()?,
            at_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_records_read_back() {
        let r = Reach {
            timeline: 2,
            lsn: 0x1_0300_0028,
            at_ms: 1_765_100_000_123,
        };
        let key = r.key("7400000000000000001");
        assert_eq!(
            key,
            "pg/7400000000000000001/reach/00000002-0000000103000028-1765100000123"
        );
        assert_eq!(Reach::parse(key.rsplit('/').next().unwrap()), Some(r));
        assert_eq!(Reach::parse("2-1"), None);
        assert_eq!(Reach::parse("x-1-2"), None);
    }
}
