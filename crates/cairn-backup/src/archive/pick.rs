//! What a restore to a time picks, on either engine: the time (`RestoreAt`), and the index
//! backup to put back (the newest that is not ahead of the database reached).

use cairn_store::CancelToken;

use crate::clock::parse_ms;
use crate::error::{BackupError, Result};
use crate::manifest::Manifest;
use crate::repo::crypt::Identities;
use crate::repo::read::restore_backup;
use crate::repo::{BackupAddress, Found, Repository};
use crate::restore::{RestoreMode, RestoreTarget};

/// The plain manifest of a found backup (`None`: encrypted, no identity to read it).
pub(crate) fn manifest_of(found: &Found, identities: Option<&Identities>) -> Option<Manifest> {
    match found {
        Found::Plain(_, m) => Some(m.clone()),
        Found::Packed(p) => p.open_content(identities).ok().map(|c| p.plain(&c)),
    }
}

/// Backups' manifests by name.
pub(crate) type Manifests = Vec<(String, Manifest)>;

/// Every finished backup's manifest that can be read (by name, newest first), and the names
/// of those that cannot (encrypted, without the identity).
pub(crate) fn readable_manifests(
    repo: &Repository,
    identities: Option<&Identities>,
) -> Result<(Manifests, Vec<String>)> {
    let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
    for (name, found) in repo.find_all()? {
        match manifest_of(&found, identities) {
            Some(m) => readable.push((name, m)),
            None => unreadable.push(name),
        }
    }
    Ok((readable, unreadable))
}

/// When to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreAt {
    /// The latest restorable time.
    Latest,
    /// A time, in milliseconds since the epoch.
    Time(i64),
}

impl RestoreAt {
    /// `latest`, or an RFC 3339 time (fractions of a second kept, to the millisecond).
    pub fn parse(text: &str) -> Result<RestoreAt> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("latest") {
            return Ok(RestoreAt::Latest);
        }
        parse_ms(text).map(RestoreAt::Time).ok_or_else(|| {
            BackupError::Refused(format!(
                "--at {text:?}: give an RFC 3339 time (2026-12-07T10:15:03.250Z) or latest"
            ))
        })
    }
}

/// Puts back the newest index backup finished after `after_ms` and by `t_ms` whose index
/// is not ahead of the database now in `target` (its last activity is in the database,
/// with the same fingerprint): less to catch up. `None` when there is none, or it fails
/// (the base's index stays: it is never ahead).
#[allow(clippy::too_many_arguments)]
pub(crate) fn newer_index(
    repo: &Repository,
    manifests: &[(String, Manifest)],
    identities: Option<&Identities>,
    after_ms: i64,
    t_ms: i64,
    target: &RestoreTarget,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Option<String> {
    let facts = cairn_store::peek_database(&target.database).ok()??;
    let mut candidates: Vec<(i64, &String, &Manifest)> = manifests
        .iter()
        .filter_map(|(name, m)| {
            let at = parse_ms(&m.finished_at)?;
            (at > after_ms && at <= t_ms && m.repository_id == facts.repository_id)
                .then_some((at, name, m))
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, name, m) in candidates {
        let state = &m.index.completion_state;
        if state.last_activity_id > facts.last_activity_id {
            continue;
        }
        let same =
            cairn_store::peek_database_and_activity(&target.database, Some(state.last_activity_id))
                .ok()
                .flatten()
                .and_then(|(_, fp)| fp)
                == Some(state.fingerprint);
        if !same && state.last_activity_id.0 > 0 {
            continue;
        }
        let address = BackupAddress {
            repo: repo.url().clone(),
            name: name.clone(),
        };
        match restore_backup(
            &address,
            repo,
            target,
            RestoreMode::IndexOnly,
            false,
            identities,
            progress,
            cancel,
        ) {
            Ok(_) => return Some(name.clone()),
            Err(e) => tracing::warn!("the index of {name} was not taken: {e}"),
        }
    }
    None
}
