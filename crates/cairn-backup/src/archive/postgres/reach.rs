//! What a PostgreSQL archive holds: its bases, how far their WAL reaches without a gap, and
//! fetching a base and its WAL back.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use cairn_store::pg_physical;

use super::{cluster_prefix, PgBaseInfo, Reach};
use crate::error::{io, BackupError, Result};
use crate::repo::Repository;

/// The finished base backups of cluster `system_id`.
pub fn bases(repo: &Repository, system_id: &str) -> Result<Vec<PgBaseInfo>> {
    let prefix = format!("{}base/", cluster_prefix(system_id));
    let mut out = Vec::new();
    for (key, _) in repo.objects().list(&prefix)? {
        if !key.ends_with("/base.json") {
            continue;
        }
        let bytes = repo.objects().get(&key)?;
        match serde_json::from_slice::<PgBaseInfo>(&bytes) {
            Ok(b) => out.push(b),
            Err(e) => tracing::warn!("{key} is left out: {e}"),
        }
    }
    out.sort_by(|a, b| a.finished_at.cmp(&b.finished_at));
    Ok(out)
}

/// The clusters a repository holds WAL of.
pub fn clusters(repo: &Repository) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    for (key, _) in repo.objects().list("pg/")? {
        if let Some(id) = key.strip_prefix("pg/").and_then(|k| k.split('/').next()) {
            ids.insert(id.to_string());
        }
    }
    Ok(ids.into_iter().collect())
}

/// A base and how far its WAL reaches.
#[derive(Clone, Debug)]
pub struct PgReach {
    /// The base.
    pub base: PgBaseInfo,
    /// The newest reach record its WAL gets to without a gap (`None`: not even its end).
    pub reach: Option<Reach>,
}

/// Every base of every cluster in `repo`, with its reach.
pub fn reaches(repo: &Repository) -> Result<Vec<PgReach>> {
    let mut out = Vec::new();
    for id in clusters(repo)? {
        let prefix = cluster_prefix(&id);
        let wal: Vec<(String, u64)> = repo.objects().list(&format!("{prefix}wal/"))?;
        let mut records: Vec<Reach> = repo
            .objects()
            .list(&format!("{prefix}reach/"))?
            .iter()
            .filter_map(|(k, _)| k.rsplit('/').next().and_then(Reach::parse))
            .collect();
        records.sort();
        for base in bases(repo, &id)? {
            let size = base.segment_size;
            let (Some(start), Some(end)) = (
                pg_physical::parse_lsn(&base.start_lsn),
                pg_physical::parse_lsn(&base.end_lsn),
            ) else {
                continue;
            };
            let have = |seg: u64| -> u64 {
                // Bytes of segment `seg` available: a whole one, or its pieces from 0 on.
                let name = pg_physical::segment_name(base.timeline, seg * size, size);
                let whole = format!("{prefix}wal/{name}");
                if wal.iter().any(|(k, _)| *k == whole) {
                    return size;
                }
                let mut pieces: Vec<(u64, u64)> = wal
                    .iter()
                    .filter_map(|(k, len)| {
                        let off = k.strip_prefix(&format!("{whole}.partial-"))?;
                        Some((u64::from_str_radix(off, 16).ok()?, *len))
                    })
                    .collect();
                pieces.sort();
                let mut got = 0;
                for (off, len) in pieces {
                    // Pieces may overlap (shipped again after a restart): same bytes.
                    if off <= got {
                        got = got.max(off + len);
                    }
                }
                got
            };
            // How far the WAL is there without a gap, from the base's start.
            let mut seg = start / size;
            let upto = loop {
                let got = have(seg);
                if got < size {
                    break seg * size + got;
                }
                seg += 1;
            };
            let reach = records
                .iter()
                .filter(|r| r.timeline == base.timeline && r.lsn <= upto && r.lsn >= end)
                .max_by_key(|r| r.lsn)
                .copied();
            out.push(PgReach { base, reach });
        }
    }
    Ok(out)
}

/// Writes the WAL that recovering `base` to `reach` needs into `dir` (whole segments; the
/// last assembled from its pieces and filled with zeros, as PostgreSQL's own are), and every
/// timeline history file. Returns the bytes written.
pub fn fetch_wal(repo: &Repository, base: &PgBaseInfo, reach: &Reach, dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let prefix = format!("{}wal/", cluster_prefix(&base.system_id));
    let size = base.segment_size;
    let start = pg_physical::parse_lsn(&base.start_lsn)
        .ok_or_else(|| BackupError::Invalid(format!("{}: its start LSN", base.name)))?;
    let listed = repo.objects().list(&prefix)?;
    let mut written = 0u64;
    for (key, _) in listed.iter().filter(|(k, _)| k.ends_with(".history")) {
        let bytes = repo.objects().get(key)?;
        let name = key.rsplit('/').next().unwrap_or_default();
        let path = dir.join(name);
        std::fs::write(&path, &bytes).map_err(io(format!("write {}", path.display())))?;
        written += bytes.len() as u64;
    }
    for seg in start / size..=reach.lsn / size {
        let name = pg_physical::segment_name(base.timeline, seg * size, size);
        let whole = format!("{prefix}{name}");
        let bytes = if listed.iter().any(|(k, _)| *k == whole) {
            repo.objects().get(&whole)?
        } else {
            let mut pieces: Vec<(u64, &String)> = listed
                .iter()
                .filter_map(|(k, _)| {
                    let off = k.strip_prefix(&format!("{whole}.partial-"))?;
                    Some((u64::from_str_radix(off, 16).ok()?, k))
                })
                .collect();
            pieces.sort();
            let mut bytes = Vec::with_capacity(size as usize);
            for (off, key) in pieces {
                if off > bytes.len() as u64 {
                    break;
                }
                let piece = repo.objects().get(key)?;
                if off + piece.len() as u64 > bytes.len() as u64 {
                    bytes.truncate(off as usize);
                    bytes.extend(piece);
                }
            }
            bytes.resize(size as usize, 0);
            bytes
        };
        let path = dir.join(&name);
        std::fs::write(&path, &bytes).map_err(io(format!("write {}", path.display())))?;
        written += bytes.len() as u64;
    }
    Ok(written)
}

/// A reader of a base's tar, part after part.
pub fn base_reader<'a>(repo: &'a Repository, base: &PgBaseInfo) -> impl Read + 'a {
    let prefix = format!("{}base/{}/", cluster_prefix(&base.system_id), base.name);
    PartReader {
        repo,
        prefix,
        next: 0,
        parts: base.parts,
        current: std::io::Cursor::new(Vec::new()),
    }
}

struct PartReader<'a> {
    repo: &'a Repository,
    prefix: String,
    next: u32,
    parts: u32,
    current: std::io::Cursor<Vec<u8>>,
}

impl Read for PartReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || self.next >= self.parts {
                return Ok(n);
            }
            let key = format!("{}base.tar.{:04}", self.prefix, self.next);
            let bytes = self
                .repo
                .objects()
                .get(&key)
                .map_err(|e| std::io::Error::other(format!("{key}: {e}")))?;
            self.next += 1;
            self.current = std::io::Cursor::new(bytes);
        }
    }
}
