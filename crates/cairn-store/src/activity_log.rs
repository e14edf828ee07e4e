//! Appending to the indexing activity log: every content change writes exactly one
//! activity in its own transaction (the store's rule). Reading the log is the store's
//! (`Store::read_activities`).

use uuid::Uuid;

use crate::activity::ActivityKind;
use crate::db::{Conn, Param};
use crate::error::Result;
use crate::ids::{ActivityId, NodeId};
use crate::rows::{now, to_micros};

/// Appends an activity of `kind` for `node` at `path` (and `old_path`, for a move) with a
/// random fingerprint, in the caller's transaction; its id.
pub(crate) fn insert_activity(
    conn: &mut dyn Conn,
    kind: ActivityKind,
    node: NodeId,
    path: &str,
    old_path: Option<&str>,
) -> Result<ActivityId> {
    let fingerprint = Uuid::new_v4().as_u64_pair().0 as i64;
    let micros = to_micros(now());
    conn.query_i64(
        "INSERT INTO indexing_activities \
         (activity_type, node_id, path, old_path, creation_date, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            Param::Text(kind.as_str()),
            Param::I64(node.0),
            Param::Text(path),
            old_path.map_or(Param::Null, Param::Text),
            Param::I64(micros),
            Param::I64(fingerprint),
        ],
    )
    .map(ActivityId)
}
