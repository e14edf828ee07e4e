//! Running the policies: one scheduler thread per server sleeps until the next policy is
//! due, starts its backup through the server's [`BackupManager`] (one backup at a time:
//! a run that finds another backup running is skipped and counted), and, when the backup
//! ends, records it and applies the policy's retention to the policy's own backups.
//!
//! What each policy did last is kept in `DIR/backups/policies.json`, so that a run the
//! server missed while it was down runs once at the next start (not once per missed slot),
//! and the counters survive restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::Policy;
use crate::error::{BackupError, Result};
use crate::job::{BackupManager, BackupResponse};
use crate::manifest::BackupKind;
use crate::repo::create::Destination;
use crate::repo::s3::S3Settings;
use crate::repo::{Found, Repository};
use crate::run::{BackupInfo, BackupState};

/// The file, in the backup folder, that keeps what the policies did.
const STATE_FILE: &str = "policies.json";

/// A policy's last good backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LastSuccess {
    /// The backup's name in the repository.
    pub name: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

/// A policy's last failure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LastFailure {
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub message: String,
}

/// What a policy has done since it was first run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PolicyStats {
    /// Backups finished.
    pub taken: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Backups its retention deleted.
    pub deleted: u64,
    /// Runs skipped because another backup was running.
    pub skipped: u64,
    /// Runs canceled (a cancel request, the server's stop).
    pub canceled: u64,
}

/// What is kept of a policy between starts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Kept {
    last_run_at: Option<String>,
    last_success: Option<LastSuccess>,
    last_failure: Option<LastFailure>,
    stats: PolicyStats,
}

/// A policy as `GetBackupPolicies` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyView {
    /// Its name.
    pub name: String,
    /// Its schedule, as written.
    pub schedule: String,
    /// Its repository.
    pub repository: String,
    /// Index alone, or repository.
    pub kind: BackupKind,
    /// The recipient its backups are encrypted to.
    pub encrypt_to: Option<String>,
    /// When it runs next (RFC 3339); none while it runs or if its pattern never matches.
    pub next_run_at: Option<String>,
    /// Its last good backup.
    pub last_success: Option<LastSuccess>,
    /// Its last failure.
    pub last_failure: Option<LastFailure>,
    /// Its counters.
    pub stats: PolicyStats,
}

struct Entry {
    policy: Policy,
    next_run: Option<SystemTime>,
    kept: Kept,
}

struct State {
    entries: Vec<Entry>,
    stopping: bool,
}

/// The server's backup policies (see the module documentation).
pub struct Policies {
    manager: Arc<BackupManager>,
    state_path: PathBuf,
    s3: S3Settings,
    state: Mutex<State>,
    wake: Condvar,
    /// The continuous archiving of `[backup.archive]`, while it runs.
    archive: Mutex<Option<Arc<dyn crate::archive::Archiving>>>,
}

fn parse_system_time(t: &str) -> Option<SystemTime> {
    crate::clock::parse(t).map(SystemTime::from)
}

/// The name of a backup `policy` starts at `at`: `POLICY-YYYYMMDD-HHMMSS-mmm`, which sorts
/// by time and tells the policy's backups from others in the same repository.
pub fn backup_name(policy: &str, at: SystemTime) -> String {
    let t = OffsetDateTime::from(at);
    format!(
        "{policy}-{:04}{:02}{:02}-{:02}{:02}{:02}-{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Whether `name` is one of `policy`'s backups.
fn made_by(policy: &str, name: &str) -> bool {
    name.strip_prefix(policy)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.len() == 19 && rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        })
}

impl Policies {
    /// The `policies` of a server whose backups `manager` runs (its folder keeps what they
    /// did). Nothing runs until [`Policies::start`].
    pub fn new(manager: Arc<BackupManager>, policies: Vec<Policy>) -> Arc<Policies> {
        let state_path = manager.root().join(STATE_FILE);
        let mut kept: BTreeMap<String, Kept> = std::fs::read_to_string(&state_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let now = SystemTime::now();
        let entries = policies
            .into_iter()
            .map(|policy| {
                let kept = kept.remove(&policy.name).unwrap_or_default();
                let last = kept.last_run_at.as_deref().and_then(parse_system_time);
                let next_run = match last.and_then(|l| policy.schedule.next_after(l)) {
                    // Missed while the server was down: once, now.
                    Some(due) if due <= now => Some(now),
                    Some(due) => Some(due),
                    None => policy.schedule.next_after(now),
                };
                Entry {
                    policy,
                    next_run,
                    kept,
                }
            })
            .collect();
        Arc::new(Policies {
            manager,
            state_path,
            s3: S3Settings::default(),
            state: Mutex::new(State {
                entries,
                stopping: false,
            }),
            wake: Condvar::new(),
            archive: Mutex::new(None),
        })
    }

    /// Reports `archiver`'s status with the policies'.
    pub fn attach_archiver(&self, archiver: Arc<dyn crate::archive::Archiving>) {
        *self.archive.lock().unwrap_or_else(|p| p.into_inner()) = Some(archiver);
    }

    /// The archive's base backups, taken by the policy `archive-base` (see
    /// [`crate::archive::shipper::BaseTaker`]).
    pub fn archive_bases(self: &Arc<Self>) -> Box<dyn crate::archive::shipper::BaseTaker> {
        Box::new(ArchiveBases(Arc::downgrade(self)))
    }

    /// The archiver's status, while one runs.
    pub fn archive_status(&self) -> Option<crate::archive::ArchiveStatus> {
        self.archive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.status())
    }

    /// Starts the scheduler thread (none without policies).
    pub fn start(self: &Arc<Self>) -> Result<()> {
        if self.lock().entries.is_empty() {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("cairn-policies".into())
            .spawn(move || me.schedule_loop())
            .map_err(crate::error::io("start the backup policies"))?;
        Ok(())
    }

    /// Stops the scheduler (a running backup is the manager's to stop).
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn schedule_loop(self: Arc<Self>) {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return;
            }
            let now = SystemTime::now();
            let due = state
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.next_run.map(|t| (t, i)))
                .min();
            match due {
                Some((at, i)) if at <= now => {
                    // The next slot after now: slots missed meanwhile run once, not each.
                    let e = &mut state.entries[i];
                    e.next_run = e.policy.schedule.next_after(now);
                    let name = e.policy.name.clone();
                    let period = e.policy.schedule.period(now);
                    drop(state);
                    // Several search replicas of one database run the same policies: the
                    // first to claim a slot runs it, and none runs it again within nine
                    // tenths of a period (replicas started at different times have slots
                    // apart by less than one period; a small clock skew is no second run).
                    match self
                        .manager
                        .store()
                        .claim_for(&format!("policy:{name}"), period * 9 / 10)
                    {
                        Ok(true) => {
                            if let Err(e) = self.run(&name) {
                                tracing::warn!(policy = %name, "backup policy run failed: {e}");
                            }
                        }
                        Ok(false) => {
                            tracing::info!(policy = %name, "this slot was run by another replica")
                        }
                        Err(e) => {
                            self.failed(&name, &format!("cannot claim the slot: {e}"));
                        }
                    }
                    state = self.lock();
                }
                other => {
                    let wait = other
                        .and_then(|(at, _)| at.duration_since(now).ok())
                        .unwrap_or(Duration::from_secs(3600))
                        .min(Duration::from_secs(3600));
                    state = self
                        .wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// The policies as `GetBackupPolicies` shows them.
    pub fn views(&self) -> Vec<PolicyView> {
        self.lock()
            .entries
            .iter()
            .map(|e| PolicyView {
                name: e.policy.name.clone(),
                schedule: e.policy.schedule_text.clone(),
                repository: e.policy.repository.display(),
                kind: e.policy.kind,
                encrypt_to: e.policy.encrypt_to.as_ref().map(|r| r.as_str().to_string()),
                next_run_at: e.next_run.map(crate::clock::format),
                last_success: e.kept.last_success.clone(),
                last_failure: e.kept.last_failure.clone(),
                stats: e.kept.stats.clone(),
            })
            .collect()
    }

    /// Whether a policy `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.lock().entries.iter().any(|e| e.policy.name == name)
    }

    /// Runs policy `name` now (`ExecuteBackupPolicy`, or its schedule): the backup's
    /// answer as `BackupRepository` gives it. Skipped (counted, the running backup
    /// answered with state `Executing`) when another backup runs.
    pub fn run(self: &Arc<Self>, name: &str) -> Result<BackupResponse> {
        let now = SystemTime::now();
        let policy = {
            let mut state = self.lock();
            let e = state
                .entries
                .iter_mut()
                .find(|e| e.policy.name == name)
                .ok_or_else(|| BackupError::NotFound(format!("no backup policy {name:?}")))?;
            e.kept.last_run_at = Some(crate::clock::format(now));
            e.policy.clone()
        };
        self.save();
        if self.manager.is_busy() {
            return Ok(self.skipped(name));
        }
        let dest = Destination {
            repo: match Repository::open(&policy.repository, &self.s3) {
                Ok(r) => r,
                Err(e) => {
                    self.failed(name, &e.to_string());
                    return Err(e);
                }
            },
            name: backup_name(name, now),
            recipient: policy.encrypt_to.clone(),
        };
        let backup = dest.name.clone();
        let me = self.clone();
        let policy_name = name.to_string();
        let response = self.manager.start_into_then(
            policy.kind,
            dest,
            Box::new(move |info| me.ended(&policy_name, &backup, info)),
        );
        match response {
            Ok(r) if r.state == BackupState::Executing => Ok(self.skipped(name)),
            Ok(r) => {
                tracing::info!(policy = %name, "backup policy started a backup");
                Ok(r)
            }
            Err(e) => {
                self.failed(name, &e.to_string());
                Err(e)
            }
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Kept)) {
        {
            let mut state = self.lock();
            if let Some(e) = state.entries.iter_mut().find(|e| e.policy.name == name) {
                f(&mut e.kept);
            }
        }
        self.save();
    }

    fn skipped(&self, name: &str) -> BackupResponse {
        tracing::warn!(policy = %name, "backup policy skipped: another backup is running");
        self.update(name, |k| k.stats.skipped += 1);
        let mut r = self.manager.query();
        r.state = BackupState::Executing;
        r
    }

    fn failed(&self, name: &str, message: &str) {
        tracing::error!(policy = %name, "backup policy run failed: {message}");
        self.update(name, |k| {
            k.stats.failed += 1;
            k.last_failure = Some(LastFailure {
                at: crate::run::now(),
                message: message.to_string(),
            });
        });
    }

    /// A policy's backup ended: recorded, then its retention applied.
    fn ended(&self, name: &str, backup: &str, info: BackupInfo) {
        match info.state {
            BackupState::Finished => {
                self.update(name, |k| {
                    k.stats.taken += 1;
                    k.last_success = Some(LastSuccess {
                        name: backup.to_string(),
                        finished_at: info.finished_at.clone().unwrap_or_else(crate::run::now),
                    });
                });
                self.apply_retention(name);
            }
            BackupState::Canceled => self.update(name, |k| k.stats.canceled += 1),
            _ => self.failed(name, info.message.as_deref().unwrap_or("the backup failed")),
        }
    }

    fn apply_retention(&self, name: &str) {
        let Some(policy) = self
            .lock()
            .entries
            .iter()
            .find(|e| e.policy.name == name)
            .map(|e| e.policy.clone())
        else {
            return;
        };
        if policy.retention.is_empty() {
            return;
        }
        let pruned = Repository::open(&policy.repository, &self.s3)
            .and_then(|repo| repo.prune_matching(&policy.retention, false, &|n| made_by(name, n)));
        match pruned {
            Ok(report) => {
                if !report.deleted.is_empty() {
                    tracing::info!(policy = %name, deleted = ?report.deleted, freed = report.freed, "backup policy retention");
                }
                let n = report.deleted.len() as u64;
                self.update(name, |k| k.stats.deleted += n);
            }
            Err(e) => self.failed(name, &format!("retention: {e}")),
        }
    }

    fn save(&self) {
        let all: BTreeMap<String, Kept> = self
            .lock()
            .entries
            .iter()
            .map(|e| (e.policy.name.clone(), e.kept.clone()))
            .collect();
        let text = serde_json::to_vec_pretty(&all).unwrap_or_default();
        let tmp = self.state_path.with_extension("json.tmp");
        let r = cairn_store::durable::write_synced(&tmp, &text)
            .map_err(|e| e.to_string())
            .and_then(|()| std::fs::rename(&tmp, &self.state_path).map_err(|e| e.to_string()));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("cannot save {}: {e}", self.state_path.display());
        }
    }

    /// The lowest index position among the backups of this repository (`repository_id`)
    /// kept in the policies' repositories: the indexing activities from there on are
    /// what an index restored from one of them needs to catch up. An error when a
    /// repository cannot be read (then nothing should be deleted).
    pub fn activity_floor(&self, repository_id: &str) -> Result<Option<i64>> {
        let mut seen: Vec<crate::repo::RepoUrl> = Vec::new();
        let mut floor: Option<i64> = None;
        let repos: Vec<_> = self
            .lock()
            .entries
            .iter()
            .map(|e| e.policy.repository.clone())
            .collect();
        for url in repos {
            if seen.contains(&url) {
                continue;
            }
            seen.push(url.clone());
            let repo = Repository::open(&url, &self.s3)?;
            for (_, found) in repo.find_all()? {
                let (id, position) = match &found {
                    Found::Plain(_, m) => (
                        m.repository_id.as_str(),
                        m.index.completion_state.last_activity_id.0,
                    ),
                    Found::Packed(m) => (m.repository_id.as_str(), m.index_activity),
                };
                if id == repository_id || id.is_empty() {
                    floor = Some(floor.map_or(position, |f| f.min(position)));
                }
            }
        }
        Ok(floor)
    }
}

/// The policies' lines of `/metrics` (Prometheus text format), from their views (this
/// process's, or the search service's).
pub fn metrics_text(views: &[PolicyView]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    out.push_str(
        "# HELP cairn_backup_last_success_timestamp_seconds When a policy's last good backup finished.\n\
         # TYPE cairn_backup_last_success_timestamp_seconds gauge\n",
    );
    for v in views {
        if let Some(t) = v
            .last_success
            .as_ref()
            .and_then(|s| crate::clock::parse(&s.finished_at))
        {
            let _ = writeln!(
                out,
                "cairn_backup_last_success_timestamp_seconds{{policy=\"{}\"}} {}",
                label(&v.name),
                t.unix_timestamp()
            );
        }
    }
    out.push_str(
        "# HELP cairn_backups_total Runs of a backup policy, by outcome.\n\
         # TYPE cairn_backups_total counter\n",
    );
    for v in views {
        let s = &v.stats;
        for (outcome, n) in [
            ("finished", s.taken),
            ("faulted", s.failed),
            ("canceled", s.canceled),
            ("skipped", s.skipped),
        ] {
            let _ = writeln!(
                out,
                "cairn_backups_total{{policy=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(&v.name)
            );
        }
    }
    out.push_str(
        "# HELP cairn_backups_deleted_total Backups a policy's retention deleted.\n\
         # TYPE cairn_backups_deleted_total counter\n",
    );
    for v in views {
        let _ = writeln!(
            out,
            "cairn_backups_deleted_total{{policy=\"{}\"}} {}",
            label(&v.name),
            v.stats.deleted
        );
    }
    out
}

/// The state file's path in a backup folder (for tests and tools).
pub fn state_file(backups: &Path) -> PathBuf {
    backups.join(STATE_FILE)
}

/// Base backups of the archive through the policy `archive-base`.
struct ArchiveBases(std::sync::Weak<Policies>);

impl crate::archive::shipper::BaseTaker for ArchiveBases {
    fn start(&self) -> bool {
        let Some(p) = self.0.upgrade() else {
            return false;
        };
        // A run that would only be skipped is not started (nor counted as skipped).
        !p.manager.is_busy()
            && p.run(super::ARCHIVE_BASE)
                .is_ok_and(|r| r.state == crate::run::BackupState::Started)
    }

    fn finished_since(&self, t: SystemTime) -> bool {
        let Some(p) = self.0.upgrade() else {
            return false;
        };
        p.views()
            .iter()
            .filter(|v| v.name == super::ARCHIVE_BASE)
            .filter_map(|v| v.last_success.as_ref())
            .filter_map(|s| parse_system_time(&s.finished_at))
            .any(|finished| finished >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policys_backups_are_told_by_their_names() {
        let at = SystemTime::from(crate::clock::parse("2026-12-07T02:03:04.5Z").unwrap());
        let n = backup_name("nightly", at);
        assert_eq!(n, "nightly-20261207-020304-500");
        assert!(made_by("nightly", &n));
        assert!(!made_by("night", &n));
        assert!(!made_by("nightly", "nightly-manual"));
        assert!(!made_by("nightly", "b1"));
        crate::name::check_name(&n).unwrap();
    }
}
