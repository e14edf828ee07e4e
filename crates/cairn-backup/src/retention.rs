//! Activity retention: which indexing activities may be deleted without breaking a
//! catch-up. sensenet's 8-hour clean-up deleted activities that an older backup's index
//! still needed, so a restored index could no longer catch up.

use std::time::Duration;

use cairn_index::Indexer;
use cairn_store::{ActivityId, Store};

use crate::error::Result;
use crate::job::BackupManager;

/// Deletes the indexing activities that nothing can need any more: below the live
/// index's position (and its gaps), below the position of every backup in `backups`'
/// folder and `floor` (the oldest kept in the policies' repositories), and older than
/// `retention`. Deletes nothing while a backup runs (its position is not known yet).
/// Returns how many were deleted.
pub fn clean_activities(
    store: &Store,
    indexer: &Indexer,
    backups: &BackupManager,
    floor: Option<ActivityId>,
    retention: Duration,
) -> Result<u64> {
    if backups.is_running() {
        return Ok(0);
    }
    let state = indexer.state();
    let mut keep_from = state
        .gaps
        .iter()
        .map(|g| g.id)
        .min()
        .unwrap_or(ActivityId(state.last_activity_id.0 + 1))
        .min(state.last_activity_id);
    for (_, m) in backups.list() {
        keep_from = keep_from.min(m.index.completion_state.last_activity_id);
    }
    if let Some(floor) = floor {
        keep_from = keep_from.min(floor);
    }
    let older_than = time::OffsetDateTime::now_utc() - retention;
    Ok(store.delete_activities(keep_from, older_than)?)
}
