//! Indexing activities: the append-only log that tells the indexer what changed.
//!
//! Each content change writes one activity in the same transaction. An activity names what
//! to re-derive from the database, never the document itself, so applying it again, or
//! late, or out of order, leaves the index equal to the database for what it names.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{ActivityId, NodeId};

/// What an activity asks the indexer to refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityKind {
    /// A node was created: refresh that node.
    Add,
    /// A node's fields changed (not its path): refresh that node.
    Update,
    /// A subtree was deleted: refresh everything under `path`.
    Remove,
    /// A subtree moved or was renamed from `old_path` to `path`: refresh both subtrees.
    Move,
    /// A subtree was created by copy at `path`: refresh everything under it.
    AddTree,
}

impl ActivityKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Add => "Add",
            ActivityKind::Update => "Update",
            ActivityKind::Remove => "Remove",
            ActivityKind::Move => "Move",
            ActivityKind::AddTree => "AddTree",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Add" => ActivityKind::Add,
            "Update" => ActivityKind::Update,
            "Remove" => ActivityKind::Remove,
            "Move" => ActivityKind::Move,
            "AddTree" => ActivityKind::AddTree,
            _ => return None,
        })
    }

    /// True when the activity covers a whole subtree rather than one node.
    pub fn is_tree(self) -> bool {
        matches!(
            self,
            ActivityKind::Remove | ActivityKind::Move | ActivityKind::AddTree
        )
    }
}

/// One row of `indexing_activities`.
#[derive(Clone, Debug, PartialEq)]
pub struct Activity {
    /// The id; grows, never reused.
    pub id: ActivityId,
    /// What to refresh.
    pub kind: ActivityKind,
    /// The node the change was made on.
    pub node_id: NodeId,
    /// The node's path after the change (before it, for `Remove`).
    pub path: String,
    /// For `Move`: the path before the move.
    pub old_path: Option<String>,
    /// When the activity was written.
    pub creation_date: OffsetDateTime,
    /// A random value written with the activity: with the id, it identifies this activity
    /// in this database, so an index that saw another database's activity N can tell.
    pub fingerprint: i64,
}

/// Which in-flight transactions a read could not see: what decides when a gap is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Horizon {
    /// Every transaction that took an activity id had finished (SQLite: one writer).
    AllCommitted,
    /// A PostgreSQL snapshot: transactions with ids below `xmin` had finished, and every
    /// transaction that holds an activity id not yet visible has a transaction id below `xmax`
    /// (the id of the reading transaction itself, taken after its snapshot).
    Snapshot {
        /// `pg_snapshot_xmin` of the read's snapshot.
        xmin: u64,
        /// A transaction id assigned after the snapshot: above every writer's.
        xmax: u64,
    },
}

impl Horizon {
    /// The mark to remember with a gap first seen in this read.
    pub fn mark(&self) -> u64 {
        match self {
            Horizon::AllCommitted => 0,
            Horizon::Snapshot { xmax, .. } => *xmax,
        }
    }

    /// True when a gap first seen with `mark` can no longer be filled: every transaction that
    /// could have held its id has finished, so a missing id is a rollback.
    pub fn settles(&self, mark: u64) -> bool {
        match self {
            Horizon::AllCommitted => true,
            Horizon::Snapshot { xmin, .. } => *xmin >= mark,
        }
    }
}

/// Activities read in one snapshot, with that snapshot's horizon.
#[derive(Clone, Debug)]
pub struct ActivityBatch {
    /// Activities found among the asked gaps, then those after the asked id, in id order.
    pub activities: Vec<Activity>,
    /// The snapshot's horizon.
    pub horizon: Horizon,
    /// The highest activity id visible in the snapshot (0 when none).
    pub last_visible: ActivityId,
}
