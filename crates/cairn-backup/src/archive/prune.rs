//! Pruning a continuous archive: what no kept base needs goes.
//!
//! `cairn backup prune` applies its retention to the repository's backups (SQLite bases
//! among them) first; then [`prune`] applies the same retention to PostgreSQL bases, and
//! deletes the archived history no kept base can use: SQLite changes at or before the
//! oldest kept SQLite base's position, and per PostgreSQL cluster and timeline the WAL (whole
//! segments, pieces, reach records) before the oldest kept base's first segment. An engine
//! or a timeline without a kept base is left alone: its first base may be being taken.

use std::collections::BTreeMap;

use serde::Serialize;

use super::pick::readable_manifests;
use super::postgres::{bases, clusters};
use super::segment::{SegmentRange, CHANGES_PREFIX};
use crate::error::Result;
use crate::manifest::BackupKind;
use crate::repo::{Repository, Retention};

/// What a prune of an archive did (or would do).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchivePrune {
    /// PostgreSQL bases deleted.
    pub bases_deleted: Vec<String>,
    /// Objects of archived history (changes, WAL) deleted.
    pub objects_deleted: usize,
    /// Bytes freed.
    pub freed: u64,
}

/// Prunes the archive in `repo` (see the module); with `dry_run`, says what it would delete.
pub fn prune(repo: &Repository, keep: &Retention, dry_run: bool) -> Result<ArchivePrune> {
    let mut out = ArchivePrune::default();
    let objects = repo.objects().clone();
    let delete = |key: &str, size: u64, out: &mut ArchivePrune| -> Result<()> {
        if !dry_run {
            objects.delete(key)?;
        }
        out.objects_deleted += 1;
        out.freed += size;
        Ok(())
    };

    // SQLite: changes the oldest kept base already holds.
    let (manifests, _) = readable_manifests(repo, None)?;
    let oldest_seq = manifests
        .iter()
        .filter_map(|(_, m)| {
            let db = m.database.as_ref()?;
            (m.kind == BackupKind::Repository
                && db.kind == cairn_store::DatabaseKind::Sqlite
                && db.archive_seq > 0)
                .then_some(db.archive_seq)
        })
        .min();
    if let Some(seq) = oldest_seq {
        for (key, size) in repo.objects().list(CHANGES_PREFIX)? {
            if SegmentRange::parse(&key).is_some_and(|r| r.last <= seq) {
                delete(&key, size, &mut out)?;
            }
        }
    }

    // PostgreSQL, per cluster: the retention on its bases, then the WAL before them.
    for id in clusters(repo)? {
        let prefix = format!("pg/{id}/");
        let all = bases(repo, &id)?;
        let named: Vec<(String, String)> = all
            .iter()
            .map(|b| (b.name.clone(), b.finished_at.clone()))
            .collect();
        let doomed = keep.doomed(&named, &crate::clock::now());
        for name in &doomed {
            let base = format!("{prefix}base/{name}/");
            // base.json first: a base half deleted is an unfinished one, never listed.
            let mut keys = repo.objects().list(&base)?;
            keys.sort_by_key(|(k, _)| !k.ends_with("/base.json"));
            for (key, size) in keys {
                delete(&key, size, &mut out)?;
            }
            out.bases_deleted.push(name.clone());
        }
        // The first segment each timeline's kept bases need.
        let mut first: BTreeMap<u32, u64> = BTreeMap::new();
        let mut segment_size = 0;
        for b in all.iter().filter(|b| !doomed.contains(&b.name)) {
            let Some(start) = cairn_store::pg_physical::parse_lsn(&b.start_lsn) else {
                continue;
            };
            segment_size = b.segment_size;
            let seg = start / b.segment_size.max(1);
            first
                .entry(b.timeline)
                .and_modify(|s| *s = (*s).min(seg))
                .or_insert(seg);
        }
        if segment_size == 0 {
            continue;
        }
        for (key, size) in repo.objects().list(&format!("{prefix}wal/"))? {
            let name = key.rsplit('/').next().unwrap_or_default();
            let segment = name.split(".partial-").next().unwrap_or_default();
            let Some((tli, seg)) =
                cairn_store::pg_physical::parse_segment_name(segment, segment_size)
            else {
                continue; // history files stay
            };
            if first.get(&tli).is_some_and(|&f| seg < f) {
                delete(&key, size, &mut out)?;
            }
        }
        for (key, size) in repo.objects().list(&format!("{prefix}reach/"))? {
            let Some(r) = key
                .rsplit('/')
                .next()
                .and_then(super::postgres::Reach::parse)
            else {
                continue;
            };
            if first
                .get(&r.timeline)
                .is_some_and(|&f| r.lsn / segment_size < f)
            {
                delete(&key, size, &mut out)?;
            }
        }
    }
    Ok(out)
}
