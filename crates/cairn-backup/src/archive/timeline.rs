//! What an archive can restore, and restoring it to a time.
//!
//! A base is any finished repository backup (index and SQLite database) in the repository
//! whose manifest records its database's position in the count of write transactions
//! (`archive_seq`). From a base, the archived changes reach as far as they follow each other
//! without a gap; a time is restorable from the newest base finished at or before it whose
//! changes reach it. Restoring puts the base back (its index is never ahead of its
//! database), applies every change committed at or before the time, and leaves the index to
//! the next start's catch-up; a newer index backup that is not ahead of the database
//! reached is put in its place first, so that less is caught up.

use cairn_store::archive::{apply_changes, ChangeRecord};
use cairn_store::{CancelToken, DatabaseUrl};
use serde::Serialize;

use super::segment::{decode, SegmentRange, CHANGES_PREFIX};
use crate::archive::pick::{newer_index, readable_manifests, RestoreAt};
use crate::clock::{format_ms, now_ms, parse_ms};
use crate::error::{BackupError, Result};
use crate::manifest::{BackupKind, Manifest};
use crate::repo::crypt::Identities;
use crate::repo::read::restore_backup;
use crate::repo::{BackupAddress, Repository};
use crate::restore::{RestoreMode, RestoreTarget};

/// A base and how far its changes reach.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BaseReach {
    /// The backup's name.
    pub name: String,
    /// Its database engine: `sqlite` (a Cairn backup and changesets) or `postgres` (a
    /// `pg_basebackup` and the WAL).
    pub engine: &'static str,
    /// When it finished (RFC 3339): the earliest time it restores.
    pub at: String,
    /// Its database's position.
    pub seq: i64,
    /// The last change that follows it without a gap.
    pub reaches_seq: i64,
    /// When that change committed (RFC 3339): the latest time it restores.
    pub reaches: String,
    #[serde(skip)]
    at_ms: i64,
    #[serde(skip)]
    reaches_ms: i64,
}

/// `cairn backup timeline REPO`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Timeline {
    /// The earliest restorable time (RFC 3339), if any.
    pub from: Option<String>,
    /// The latest restorable time.
    pub to: Option<String>,
    /// Seconds since `to`: on a repository being written to, how far the archive is
    /// behind (on an idle one it grows while nothing is missing).
    pub lag_seconds: Option<f64>,
    /// Every base, oldest first.
    pub bases: Vec<BaseReach>,
    /// Objects of changes.
    pub change_objects: usize,
    /// The last change archived.
    pub last_seq: Option<i64>,
    /// Bases left out: encrypted ones without the identity.
    pub unreadable: Vec<String>,
    #[serde(skip)]
    segments: Vec<SegmentRange>,
    /// Every readable backup's manifest, by name (a restore's newer index is among them).
    #[serde(skip)]
    manifests: Vec<(String, Manifest)>,
}

/// Reads the timeline of `repo`.
pub fn timeline(repo: &Repository, identities: Option<&Identities>) -> Result<Timeline> {
    let mut segments: Vec<SegmentRange> = repo
        .objects()
        .list(CHANGES_PREFIX)?
        .iter()
        .filter_map(|(k, _)| SegmentRange::parse(k))
        .collect();
    segments.sort();
    let mut bases = Vec::new();
    let (manifests, unreadable) = readable_manifests(repo, identities)?;
    for (name, m) in &manifests {
        let name = name.clone();
        let Some(db) = m.database.as_ref().filter(|d| {
            m.kind == BackupKind::Repository
                && d.kind == cairn_store::DatabaseKind::Sqlite
                && d.archive_seq > 0
        }) else {
            continue;
        };
        let Some(at_ms) = parse_ms(&m.finished_at) else {
            continue;
        };
        let (mut seq, mut t) = (db.archive_seq, at_ms);
        for s in &segments {
            if s.last <= seq {
                continue;
            }
            if s.first > seq + 1 {
                break;
            }
            seq = s.last;
            t = t.max(s.last_ms);
        }
        bases.push(BaseReach {
            name,
            engine: "sqlite",
            at: m.finished_at.clone(),
            seq: db.archive_seq,
            reaches_seq: seq,
            reaches: format_ms(t),
            at_ms,
            reaches_ms: t,
        });
    }
    for r in super::postgres::reaches(repo)? {
        let Some(at_ms) = parse_ms(&r.base.finished_at) else {
            continue;
        };
        // A base whose WAL does not reach its own end restores nothing yet.
        let Some(reach) = r.reach.filter(|x| x.at_ms >= at_ms) else {
            continue;
        };
        bases.push(BaseReach {
            name: r.base.name.clone(),
            engine: "postgres",
            at: r.base.finished_at.clone(),
            seq: 0,
            reaches_seq: 0,
            reaches: format_ms(reach.at_ms),
            at_ms,
            reaches_ms: reach.at_ms,
        });
    }
    bases.sort_by_key(|b| b.at_ms);
    let from = bases.iter().map(|b| b.at_ms).min();
    let to = bases.iter().map(|b| b.reaches_ms).max();
    Ok(Timeline {
        from: from.map(format_ms),
        to: to.map(format_ms),
        lag_seconds: to.map(|t| (now_ms() - t).max(0) as f64 / 1000.0),
        change_objects: segments.len(),
        last_seq: segments.iter().map(|s| s.last).max(),
        bases,
        unreadable,
        segments,
        manifests,
    })
}

/// What a restore to a time did.
#[derive(Clone, Debug)]
pub struct RestoredAt {
    /// The time restored to (RFC 3339).
    pub at: String,
    /// The base put back.
    pub base: String,
    /// Changes applied onto it.
    pub changes: u64,
    /// The database's position reached.
    pub seq: i64,
    /// The index put back: the base's, or a newer index backup's.
    pub index_from: String,
}

/// Restores `repo` to `at` into `target` (a SQLite data folder; see the module).
pub fn restore_at(
    repo: &Repository,
    at: RestoreAt,
    target: &RestoreTarget,
    identities: Option<&Identities>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<RestoredAt> {
    let DatabaseUrl::Sqlite(db_path) = &target.database else {
        return Err(BackupError::Refused(
            "a restore to a time is for SQLite repositories in this build; PostgreSQL's is \
             its own (recovery_target_time)"
                .into(),
        ));
    };
    let mut line = timeline(repo, identities)?;
    let postgres = line.bases.iter().any(|b| b.engine == "postgres");
    line.bases.retain(|b| b.engine == "sqlite");
    if line.bases.is_empty() && postgres {
        return Err(BackupError::Refused(format!(
            "{} archives a PostgreSQL cluster: restore it with --database postgres://... and \
             --pg-data DIR (a new cluster); nothing was changed",
            repo.url().display()
        )));
    }
    let window = || {
        line.bases
            .iter()
            .map(|b| format!("{} .. {} (from {})", b.at, b.reaches, b.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (base, t_ms) = match at {
        RestoreAt::Latest => {
            let b = line
                .bases
                .iter()
                .max_by_key(|b| (b.reaches_ms, b.at_ms))
                .ok_or_else(|| {
                    BackupError::NotFound(format!(
                        "{} has no base backup to restore from",
                        repo.url().display()
                    ))
                })?;
            (b, b.reaches_ms)
        }
        RestoreAt::Time(t) => {
            let b = line
                .bases
                .iter()
                .filter(|b| b.at_ms <= t && t <= b.reaches_ms)
                .max_by_key(|b| b.at_ms)
                .ok_or_else(|| {
                    BackupError::Refused(format!(
                        "{} is outside the restorable window of {}: {}; nothing was changed",
                        format_ms(t),
                        repo.url().display(),
                        if line.bases.is_empty() {
                            "it has no base backup".to_string()
                        } else {
                            window()
                        }
                    ))
                })?;
            (b, t)
        }
    };
    let address = BackupAddress {
        repo: repo.url().clone(),
        name: base.name.clone(),
    };
    restore_backup(
        &address,
        repo,
        target,
        RestoreMode::Both,
        false,
        identities,
        progress,
        cancel,
    )?;
    // The changes after the base, each object read once, in order.
    let needed: Vec<SegmentRange> = line
        .segments
        .iter()
        .filter(|s| s.last > base.seq && s.first <= base.reaches_seq && s.first_ms <= t_ms)
        .copied()
        .collect();
    let objects = repo.objects().clone();
    let mut records = needed.into_iter().flat_map(move |s| {
        let corrupt = |why: String| {
            vec![Err(cairn_store::StoreError::Corrupt(format!(
                "the archived changes {}: {why}",
                s.key()
            )))]
        };
        let got: Vec<cairn_store::Result<ChangeRecord>> = match objects.get(&s.key()) {
            Ok(bytes) => match decode(&bytes) {
                // Whole, and what its name says: else the restore would stop short of T.
                (records, used) if used == bytes.len() && SegmentRange::of(&records) == Some(s) => {
                    records.into_iter().map(Ok).collect()
                }
                _ => corrupt("cut short, or not what their name says".into()),
            },
            Err(e) => corrupt(format!("cannot be read: {e}")),
        };
        got
    });
    cancel.check()?;
    // Ctrl-C while the changes are applied stops between two of them: the database is
    // then as it was at an earlier time (consistent, its index not ahead), and says so.
    let (changes, seq) = apply_changes(db_path, &mut records, &|r| {
        r.time_ms <= t_ms && !cancel.is_cancelled()
    })?;
    if cancel.is_cancelled() {
        return Err(BackupError::Refused(format!(
            "canceled while applying the changes: the database holds the base {} and {changes} \
             changes after it (up to change {seq}), a consistent earlier point; run the \
             restore again for {}",
            base.name,
            format_ms(t_ms)
        )));
    }
    // The files' blobs the database names now and the base did not hold.
    super::blobs::restore_named(
        &**repo.objects(),
        db_path,
        &*crate::blob_stores::blob_store_of(&target.database)?,
        cancel,
    )?;
    let index_from = newer_index(
        repo,
        &line.manifests,
        identities,
        base.at_ms,
        t_ms,
        target,
        progress,
        cancel,
    )
    .unwrap_or_else(|| base.name.clone());
    Ok(RestoredAt {
        at: format_ms(t_ms),
        base: base.name.clone(),
        changes,
        seq,
        index_from,
    })
}
