//! Backup repositories: where backups are kept, by name, and everything done to them there
//! (make, list, verify, fetch for a restore, delete, prune), the same for a local folder
//! and for `s3://bucket/prefix`.
//!
//! - A local folder keeps plain backups (`NAME/index/`, `NAME/database/`,
//!   `NAME/manifest.json`: usable by hand, incremental by hard links), and packed ones
//!   when they are encrypted.
//! - S3 keeps packed backups ([`packed`]): chunks deduplicated across backups, in packs.
//!
//! Everything that writes (a packed backup, a delete, a prune) holds the repository's
//! [`lease::Lease`]. A backup is visible once its manifest is written, last; a delete
//! removes the manifest first and then what no remaining backup needs, so a kill at any
//! point leaves every listed backup whole and the next prune finishes the job.

pub mod create;
pub mod crypt;
pub mod lease;
pub mod objects;
pub mod packed;
pub mod read;
pub mod s3;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{BackupError, Result};
use crate::manifest::{BackupKind, Manifest, MANIFEST_FILE};
use lease::Lease;
use objects::{LocalObjects, Objects};
use packed::{PackedManifest, PACKS_PREFIX};
use s3::{S3Objects, S3Settings};

/// A plain backup being deleted is first renamed to this prefix and its name.
const DELETED_PREFIX: &str = ".deleted-";

/// Where a repository is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoUrl {
    /// A local folder.
    Local(PathBuf),
    /// A bucket and a prefix in it (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

impl RepoUrl {
    /// Parses a local path (or `file://PATH`) or `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<RepoUrl> {
        let bad = |why: &str| Err(BackupError::Refused(format!("{text:?}: {why}")));
        if let Some(parsed) = s3::parse_url(text) {
            let (bucket, prefix) = parsed?;
            return Ok(RepoUrl::S3 { bucket, prefix });
        }
        if let Some((scheme, _)) = text.split_once("://") {
            if scheme != "file" {
                return bad("a repository is a folder, file://PATH or s3://BUCKET/PREFIX");
            }
        }
        let path = text.strip_prefix("file://").unwrap_or(text);
        if path.is_empty() {
            return bad("no folder named");
        }
        Ok(RepoUrl::Local(PathBuf::from(path)))
    }

    /// The repository as a URL or path.
    pub fn display(&self) -> String {
        match self {
            RepoUrl::Local(p) => p.display().to_string(),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => format!("s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// One backup of a repository: `REPO/NAME` (the last part of the path names the backup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupAddress {
    /// The repository.
    pub repo: RepoUrl,
    /// The backup's name (a plain name: see [`crate::target_path`]).
    pub name: String,
}

impl BackupAddress {
    /// Parses `REPO/NAME`.
    pub fn parse(text: &str) -> Result<BackupAddress> {
        let trimmed = text.trim_end_matches('/');
        let (repo, name) = match trimmed.rsplit_once('/') {
            Some((repo, name)) if !name.is_empty() => (repo, name),
            // A bare name: a folder in the working directory.
            None if !trimmed.is_empty() && !trimmed.contains("://") => (".", trimmed),
            _ => {
                return Err(BackupError::Refused(format!(
                    "{text:?} names no backup: give REPO/NAME (a folder's or s3://bucket/prefix's \
                     backup NAME)"
                )))
            }
        };
        let repo = if repo.is_empty() { "/" } else { repo };
        let repo = if repo == "s3:/" {
            return Err(BackupError::Refused(format!(
                "{text:?}: an S3 backup is s3://BUCKET/[PREFIX/]NAME"
            )));
        } else {
            RepoUrl::parse(repo)?
        };
        crate::name::check_name(name)?;
        Ok(BackupAddress {
            repo,
            name: name.to_string(),
        })
    }

    /// `REPO/NAME`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.repo.display(), self.name)
    }
}

/// A backup as a repository lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Index alone, or repository.
    pub kind: BackupKind,
    /// When it was finished (RFC 3339).
    pub finished_at: String,
    /// The bytes of its files.
    pub bytes: u64,
    /// Whether it is encrypted (and to whom).
    pub encrypted_to: Option<String>,
    /// Whether it is packed (objects) rather than plain files.
    pub packed: bool,
}

/// A backup found in a repository: plain (a folder) or packed (objects).
#[derive(Clone, Debug)]
pub enum Found {
    /// A plain backup in a local folder.
    Plain(PathBuf, Manifest),
    /// A packed backup.
    Packed(PackedManifest),
}

/// An open repository.
pub struct Repository {
    url: RepoUrl,
    objects: Arc<dyn Objects>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url.display())
    }
}

impl Repository {
    /// Opens the repository at `url` (S3 reached with `s3`; a local folder is created when
    /// missing only by a write).
    pub fn open(url: &RepoUrl, s3: &S3Settings) -> Result<Repository> {
        let objects: Arc<dyn Objects> = match url {
            RepoUrl::Local(p) => Arc::new(LocalObjects::open_lazy(p)),
            RepoUrl::S3 { bucket, prefix } => Arc::new(S3Objects::open(bucket, prefix, s3)?),
        };
        Ok(Repository {
            url: url.clone(),
            objects,
        })
    }

    /// Where it is.
    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    /// Its objects.
    pub fn objects(&self) -> &Arc<dyn Objects> {
        &self.objects
    }

    /// The local folder of a local repository.
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.url {
            RepoUrl::Local(p) => Some(p),
            RepoUrl::S3 { .. } => None,
        }
    }

    /// Every finished backup, newest first. A local repository's plain backups are its
    /// folders with a readable plain manifest; packed ones, their readable packed
    /// manifests. A manifest that does not parse is left out (and logged).
    pub fn find_all(&self) -> Result<Vec<(String, Found)>> {
        let mut out = Vec::new();
        let manifests: Vec<String> = self
            .objects
            .list("")?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.strip_suffix(&format!("/{MANIFEST_FILE}"))
                    .is_some_and(|name| !name.contains('/') && !name.starts_with('.'))
            })
            .collect();
        for key in manifests {
            let name = key[..key.len() - MANIFEST_FILE.len() - 1].to_string();
            match self.find(&name) {
                Ok(found) => out.push((name, found)),
                Err(e) => tracing::warn!("{}/{name} is left out: {e}", self.url.display()),
            }
        }
        out.sort_by(|a, b| finished(&b.1).cmp(finished(&a.1)));
        Ok(out)
    }

    /// The finished backup `name`.
    pub fn find(&self, name: &str) -> Result<Found> {
        let bytes = self
            .objects
            .get(&packed::manifest_key(name))
            .map_err(|e| match e {
                BackupError::NotFound(_) => BackupError::NotFound(format!(
                    "{} has no finished backup {name}",
                    self.url.display()
                )),
                other => other,
            })?;
        let format = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("format").and_then(|f| f.as_u64()));
        match (format, &self.url) {
            (Some(2), _) => Ok(Found::Packed(PackedManifest::parse(&bytes)?)),
            (_, RepoUrl::Local(dir)) => {
                let folder = dir.join(name);
                Ok(Found::Plain(folder.clone(), Manifest::read(&folder)?))
            }
            _ => Err(BackupError::Invalid(format!(
                "{}/{name}: not a packed backup",
                self.url.display()
            ))),
        }
    }

    /// The packed backups, by name (what a new packed backup deduplicates against, and
    /// what a prune keeps).
    pub fn packed_manifests(&self) -> Result<Vec<(String, PackedManifest)>> {
        Ok(self
            .find_all()?
            .into_iter()
            .filter_map(|(name, f)| match f {
                Found::Packed(m) => Some((name, m)),
                Found::Plain(..) => None,
            })
            .collect())
    }

    /// The backups as `cairn backup list` shows them.
    pub fn list(&self) -> Result<Vec<Listed>> {
        Ok(self
            .find_all()?
            .into_iter()
            .map(|(name, f)| match f {
                Found::Plain(_, m) => Listed {
                    name,
                    kind: m.kind,
                    finished_at: m.finished_at.clone(),
                    bytes: m.files.iter().map(|f| f.size).sum(),
                    encrypted_to: None,
                    packed: false,
                },
                Found::Packed(m) => Listed {
                    name,
                    kind: m.kind,
                    finished_at: m.finished_at.clone(),
                    bytes: m.bytes,
                    encrypted_to: m.encryption.as_ref().map(|e| e.recipient.clone()),
                    packed: true,
                },
            })
            .collect())
    }

    /// Takes the writer's lease for `what`.
    pub fn lease(&self, what: &str) -> Result<Lease> {
        Lease::take(self.objects.clone(), what)
    }

    /// Deletes backup `name`: its manifest first (it is no longer listed), then what no
    /// other backup needs. Returns the bytes freed.
    pub fn delete(&self, name: &str) -> Result<u64> {
        let _lease = self.lease(&format!("delete {name}"))?;
        self.delete_held(name)
    }

    fn delete_held(&self, name: &str) -> Result<u64> {
        let found = self.find(name)?;
        crate::error::failure_point("repo::delete", "delete a backup")?;
        let mut freed = 0;
        match found {
            Found::Plain(folder, m) => {
                // Renamed first (one step: it is no longer listed), then removed; a kill in
                // between leaves a hidden `.deleted-NAME` that the next prune removes.
                let doomed = folder.with_file_name(format!("{DELETED_PREFIX}{name}"));
                if doomed.exists() {
                    std::fs::remove_dir_all(&doomed)
                        .map_err(crate::error::io(format!("remove {}", doomed.display())))?;
                }
                std::fs::rename(&folder, &doomed)
                    .map_err(crate::error::io(format!("remove {}", folder.display())))?;
                if let Some(parent) = folder.parent() {
                    cairn_store::durable::sync_dir(parent)?;
                }
                freed += m.files.iter().map(|f| f.size).sum::<u64>();
                std::fs::remove_dir_all(&doomed)
                    .map_err(crate::error::io(format!("remove {}", doomed.display())))?;
            }
            Found::Packed(_) => {
                self.objects.delete(&packed::manifest_key(name))?;
                freed += self.collect_garbage()?;
            }
        }
        Ok(freed)
    }

    /// The objects of packed backups that no manifest names any more: packs, and chunk
    /// tables (of deleted backups, and of uploads that were interrupted).
    fn garbage(&self) -> Result<Vec<(String, u64)>> {
        let kept = self.packed_manifests()?;
        let mut needed: HashSet<String> = kept
            .iter()
            .flat_map(|(_, m)| m.packs.iter().map(|p| packed::pack_key(&p.id)))
            .collect();
        needed.extend(kept.iter().map(|(name, _)| packed::table_key(name)));
        Ok(self
            .objects
            .list("")?
            .into_iter()
            .filter(|(key, _)| {
                let is_pack = key.starts_with(PACKS_PREFIX);
                let is_table = key
                    .strip_suffix("/chunks")
                    .is_some_and(|name| !name.contains('/') && !name.starts_with('.'));
                (is_pack || is_table) && !needed.contains(key)
            })
            .collect())
    }

    /// Removes every pack that no manifest names (left by deletes, and by uploads that
    /// were interrupted). The caller holds the lease. Returns the bytes freed.
    fn collect_garbage(&self) -> Result<u64> {
        crate::error::failure_point("repo::collect", "collect what no backup needs")?;
        let mut freed = 0;
        // Plain backups whose delete a kill interrupted.
        if let Some(dir) = self.local_dir() {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(DELETED_PREFIX) {
                    std::fs::remove_dir_all(e.path())
                        .map_err(crate::error::io(format!("remove {}", e.path().display())))?;
                }
            }
        }
        for (key, size) in self.garbage()? {
            self.objects.delete(&key)?;
            freed += size;
        }
        Ok(freed)
    }

    /// Deletes what `keep` does not keep (see [`Retention`]), then every unreferenced
    /// pack. With `dry_run`, changes nothing and says what it would delete.
    pub fn prune(&self, keep: &Retention, dry_run: bool) -> Result<PruneReport> {
        self.prune_matching(keep, dry_run, &|_| true)
    }

    /// [`Repository::prune`] of the backups whose names `mine` accepts (a policy's own);
    /// the others are neither counted nor deleted. Unreferenced packs are collected all
    /// the same.
    pub fn prune_matching(
        &self,
        keep: &Retention,
        dry_run: bool,
        mine: &dyn Fn(&str) -> bool,
    ) -> Result<PruneReport> {
        let _lease = if dry_run {
            None
        } else {
            Some(self.lease("prune")?)
        };
        let mut all = self.find_all()?;
        all.retain(|(name, _)| mine(name));
        let finished_at: Vec<(String, String)> = all
            .iter()
            .map(|(n, f)| (n.clone(), finished(f).to_string()))
            .collect();
        let doomed = keep.doomed(&finished_at, &crate::run::now());
        let mut report = PruneReport {
            kept: finished_at
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| !doomed.contains(n))
                .collect(),
            deleted: doomed.clone(),
            freed: 0,
        };
        if dry_run {
            return Ok(report);
        }
        for name in &doomed {
            report.freed += self.delete_held_manifest_only(name)?;
        }
        report.freed += self.collect_garbage()?;
        Ok(report)
    }

    /// A delete within a prune: the manifest (and a plain backup's folder); packs are
    /// collected once at the end.
    fn delete_held_manifest_only(&self, name: &str) -> Result<u64> {
        match self.find(name)? {
            Found::Plain(..) => self.delete_held(name),
            Found::Packed(_) => {
                crate::error::failure_point("repo::delete", "delete a backup")?;
                self.objects.delete(&packed::manifest_key(name))?;
                Ok(0)
            }
        }
    }
}

/// When a found backup was finished.
fn finished(f: &Found) -> &str {
    match f {
        Found::Plain(_, m) => &m.finished_at,
        Found::Packed(m) => &m.finished_at,
    }
}

/// Which backups a prune keeps, as Elasticsearch's snapshot lifecycle policies say it:
/// at most `keep_last` (the newest), none older than `keep_within`, and never fewer than
/// `min_count` (the newest, expired or not). A field left out does not limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many (the newest).
    pub keep_last: Option<usize>,
    /// Keep none finished longer ago than this.
    pub keep_within: Option<Duration>,
    /// Never keep fewer than this many (the newest).
    pub min_count: Option<usize>,
}

impl Retention {
    /// Whether it limits anything.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.keep_within.is_none()
    }

    /// The names of `backups` (name, finished at; any order) that go, at time `now`.
    pub fn doomed(&self, backups: &[(String, String)], now: &str) -> Vec<String> {
        let mut newest_first: Vec<&(String, String)> = backups.iter().collect();
        newest_first.sort_by(|a, b| b.1.cmp(&a.1));
        let now = crate::clock::parse(now);
        let mut out = Vec::new();
        for (i, (name, at)) in newest_first.iter().enumerate() {
            let beyond_count = self.keep_last.is_some_and(|n| i >= n);
            let expired = match (self.keep_within, now, crate::clock::parse(at)) {
                (Some(within), Some(now), Some(at)) => now - at > within,
                _ => false,
            };
            let protected = self.min_count.is_some_and(|m| i < m);
            if (beyond_count || expired) && !protected {
                out.push(name.clone());
            }
        }
        out
    }
}

/// What a prune did (or would do, in a dry run).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    /// Backups kept.
    pub kept: Vec<String>,
    /// Backups deleted.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub freed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_parse_or_say_why_not() {
        assert_eq!(
            RepoUrl::parse("s3://b/cairn/x").unwrap(),
            RepoUrl::S3 {
                bucket: "b".into(),
                prefix: "cairn/x".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("/srv/b").unwrap(),
            RepoUrl::Local("/srv/b".into())
        );
        assert_eq!(
            RepoUrl::parse("file:///srv/b").unwrap(),
            RepoUrl::Local("/srv/b".into())
        );
        for bad in [
            "s3://",
            "s3:///x",
            "gs://b/x",
            "",
            "s3://b/a//c",
            "s3://b/../c",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad}");
        }
        let a = BackupAddress::parse("s3://b/cairn/b1").unwrap();
        assert_eq!(a.name, "b1");
        assert_eq!(a.repo.display(), "s3://b/cairn");
        let a = BackupAddress::parse("s3://b/b1").unwrap();
        assert_eq!(a.repo.display(), "s3://b");
        let a = BackupAddress::parse("b1/").unwrap();
        assert_eq!((a.repo.display().as_str(), a.name.as_str()), (".", "b1"));
        for bad in [
            "s3://b",
            "s3://b/",
            "s3://b/.hidden",
            "/x/..",
            "..",
            "",
            "x://b/c",
        ] {
            assert!(BackupAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_keeps_as_slm_does() {
        let b = |n: &str, t: &str| (n.to_string(), t.to_string());
        let all = [
            b("a", "2026-01-01T00:00:00Z"),
            b("b", "2026-01-02T00:00:00Z"),
            b("c", "2026-01-03T00:00:00Z"),
            b("d", "2026-01-04T00:00:00Z"),
        ];
        let now = "2026-01-04T12:00:00Z";
        let keep_last = |n| Retention {
            keep_last: Some(n),
            ..Default::default()
        };
        assert_eq!(keep_last(2).doomed(&all, now), ["b", "a"]);
        let within = Retention {
            keep_within: Some(Duration::from_secs(36 * 3600)),
            ..Default::default()
        };
        assert_eq!(within.doomed(&all, now), ["b", "a"]);
        let min = Retention {
            keep_within: Some(Duration::from_secs(3600)),
            min_count: Some(2),
            ..Default::default()
        };
        assert_eq!(min.doomed(&all, now), ["b", "a"]);
        let min_all = Retention {
            keep_within: Some(Duration::from_secs(1)),
            min_count: Some(9),
            ..Default::default()
        };
        assert!(min_all.doomed(&all, now).is_empty());
        assert!(Retention::default().doomed(&all, now).is_empty());
    }
}
