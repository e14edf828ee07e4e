//! The completion state: which prefix of the activity log the index holds. It is committed
//! in the payload of the same Tantivy commit as the documents it describes (invariant 2).

use std::fmt;

use cairn_store::ActivityId;
use cairn_store::Store;
use serde::{Deserialize, Serialize};
use tantivy::IndexMeta;

use crate::error::{IndexError, Result};

/// The version of the payload format.
pub const PAYLOAD_FORMAT: u32 = 1;

/// An activity id below `LastActivityId` that the index has not applied yet, with the
/// snapshot mark at which it was first missed (see `cairn_store::Horizon`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The missing activity id.
    pub id: ActivityId,
    /// The horizon mark of the read that first missed it.
    pub mark: u64,
}

/// `LastActivityId`, the gaps below it, and what identifies the last applied activity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionState {
    /// Payload format version.
    pub format: u32,
    /// The repository whose log this is (empty for a new index).
    pub repository_id: String,
    /// The highest activity applied.
    pub last_activity_id: ActivityId,
    /// The fingerprint of that activity, as the database stored it (invariant 5).
    pub fingerprint: i64,
    /// Activity ids below `last_activity_id` not applied yet.
    pub gaps: Vec<Gap>,
}

impl CompletionState {
    /// The gap ids.
    pub fn gap_ids(&self) -> Vec<ActivityId> {
        self.gaps.iter().map(|g| g.id).collect()
    }

    /// True when activity `id` is in the index.
    pub fn covers(&self, id: ActivityId) -> bool {
        id <= self.last_activity_id && !self.gaps.iter().any(|g| g.id == id)
    }

    /// Reads a commit payload.
    pub fn from_payload(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }

    /// The commit payload.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Shown as sensenet shows it: `15(13,14)`.
impl fmt::Display for CompletionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.last_activity_id)?;
        if !self.gaps.is_empty() {
            let ids: Vec<String> = self.gaps.iter().map(|g| g.id.to_string()).collect();
            write!(f, "({})", ids.join(","))?;
        }
        Ok(())
    }
}

/// The completion state in a commit's metadata (the one reader of it): `None` when the
/// commit carries none (an index never committed by an indexer).
pub(crate) fn completion_state(meta: &IndexMeta) -> Result<Option<CompletionState>> {
    meta.payload
        .as_deref()
        .map(CompletionState::from_payload)
        .transpose()
        .map_err(|e| IndexError::BadPayload(e.to_string()))
}

/// Why an index at `state` cannot be trusted against `store`'s database, if it cannot
/// (invariant 5): it is ahead of the database, or the activity it last applied is not the
/// database's. The next start repairs such an index.
pub fn divergence(store: &Store, state: &CompletionState) -> Result<Option<String>> {
    if state.last_activity_id.0 == 0 {
        return Ok(None);
    }
    let found = store
        .activity(state.last_activity_id)?
        .map(|a| a.fingerprint);
    Ok(judge_divergence(state, found, store.last_activity_id()?))
}

/// [`divergence`] from what the database holds: `found`, the fingerprint of the activity
/// the index applied last (`None`: no such activity), and `db_last`, its last activity.
pub fn judge_divergence(
    state: &CompletionState,
    found: Option<i64>,
    db_last: ActivityId,
) -> Option<String> {
    let last = state.last_activity_id;
    match found {
        _ if last.0 == 0 => None,
        Some(f) if f == state.fingerprint => None,
        Some(_) => Some(format!(
            "activity {last} in the database is not the one the index applied \
             (the database was restored or replaced after the index)"
        )),
        None if last > db_last => Some(format!(
            "the index has applied activity {last} but the database's last is {db_last} \
             (the database is older than the index: wrong restore order)"
        )),
        None => Some(format!("activity {last} is no longer in the database")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_like_sensenet_and_round_trips() {
        let s = CompletionState {
            format: PAYLOAD_FORMAT,
            repository_id: "r".into(),
            last_activity_id: ActivityId(15),
            fingerprint: 7,
            gaps: vec![
                Gap {
                    id: ActivityId(13),
                    mark: 0,
                },
                Gap {
                    id: ActivityId(14),
                    mark: 0,
                },
            ],
        };
        assert_eq!(s.to_string(), "15(13,14)");
        assert!(s.covers(ActivityId(12)) && !s.covers(ActivityId(13)) && !s.covers(ActivityId(16)));
        assert_eq!(CompletionState::from_payload(&s.to_payload()).unwrap(), s);
        assert!(CompletionState::from_payload("{").is_err());
    }
}
