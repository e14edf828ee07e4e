//! The backup job of a server: one backup at a time (of either kind), an idempotent start,
//! a real cancel, progress, and a newest-first history that survives restarts
//! (`DIR/backups/history.json`). A job that a crash or kill interrupted is marked Faulted at
//! the next start, and its folder (which has no manifest) is removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::CancelToken;
use serde::{Deserialize, Serialize};

use crate::error::{io, BackupError, Result};
use crate::manifest::{BackupKind, Manifest, MANIFEST_FILE};
use crate::name::target_path;
use crate::name::HISTORY_FILE;
use crate::run::{now, run_backup, BackupInfo, BackupSource, BackupState};

/// How many finished backups the history keeps.
const HISTORY_LIMIT: usize = 100;

/// What a backup call asks for (`BackupIndex` / `BackupRepository`'s parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// A name in the server's backup folder.
    #[serde(default)]
    pub target: Option<String>,
    /// A backup of a repository instead: `REPO/NAME` (`s3://bucket/prefix/NAME`, a folder).
    #[serde(default)]
    pub to: Option<String>,
    /// An age recipient (`age1...`) to encrypt to.
    #[serde(default)]
    pub encrypt_to: Option<String>,
}

/// A finished backup as `GET /backups` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BackupSummary {
    /// Its folder's name.
    pub name: String,
    /// Index alone or repository.
    pub kind: BackupKind,
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it was finished.
    pub finished_at: String,
    /// The repository it belongs to.
    pub repository_id: String,
    /// Its files.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The index's `LastActivityId`.
    pub index_last_activity_id: i64,
    /// The database's last activity (repository backups).
    pub database_last_activity_id: Option<i64>,
}

/// sensenet's `BackupResponse`: the state, the running (or last) backup, the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BackupResponse {
    /// The state of the running backup, else of the newest one, else `Initial`.
    pub state: BackupState,
    /// The running backup, else the newest one.
    pub current: Option<BackupInfo>,
    /// Every known backup, newest first.
    pub history: Vec<BackupInfo>,
}

/// What a running backup writes.
enum Job {
    /// A plain backup in this manager's folder.
    Folder(PathBuf),
    /// A backup into a repository.
    Repository(Box<crate::repo::create::Destination>),
}

impl Job {
    fn target(&self) -> String {
        match self {
            Job::Folder(p) => p.display().to_string(),
            Job::Repository(d) => d.display(),
        }
    }
}

/// Called with a backup as it ended (see [`BackupManager::start_into_then`]).
pub type OnEnd = Box<dyn FnOnce(BackupInfo) + Send>;

struct Running {
    info: Arc<Mutex<BackupInfo>>,
    cancel: CancelToken,
}

struct Inner {
    running: Option<Running>,
    history: Vec<BackupInfo>,
    /// The history in memory is newer than `history.json` (its last save failed, on a
    /// full disk say): saved again at the next call that can.
    unsaved: bool,
}

/// The server's backups, in one folder.
pub struct BackupManager {
    root: PathBuf,
    source: Arc<dyn BackupSource>,
    inner: Mutex<Inner>,
    /// `on_end` callbacks running (a policy's retention after its backup): a stop waits
    /// for them too.
    ending: std::sync::atomic::AtomicUsize,
}

/// A unique name from the UTC time: `2026-11-27T14-05-09Z`.
pub fn default_name(root: &Path) -> String {
    let base = now().replace(':', "-");
    let base = base
        .split('.')
        .next()
        .unwrap_or(&base)
        .trim_end_matches('Z')
        .to_string()
        + "Z";
    let mut name = base.clone();
    let mut n = 1;
    while root.join(&name).exists() {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

impl BackupManager {
    /// The manager of the backups in `root`, reading the history and closing out jobs a
    /// crash interrupted.
    pub fn open(root: &Path, source: Arc<dyn BackupSource>) -> Result<Arc<Self>> {
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        // Targets are recorded under an absolute root, so that they name the same folder
        // whatever the working directory of a later start.
        let root = &std::path::absolute(root).map_err(io(format!("resolve {}", root.display())))?;
        let path = root.join(HISTORY_FILE);
        let mut history: Vec<BackupInfo> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                // Kept for a person to read: the new history is written over `path`.
                let bad = root.join(format!("{HISTORY_FILE}.bad"));
                let kept = std::fs::rename(&path, &bad).is_ok();
                tracing::warn!(
                    "{} is unreadable ({e}); starting a new history{}",
                    path.display(),
                    if kept {
                        format!(" (the old one is kept as {})", bad.display())
                    } else {
                        String::new()
                    }
                );
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        // What a crash left of packed backups' staging (never a backup: hidden).
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(".upload-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let mut changed = false;
        for info in history.iter_mut() {
            if matches!(
                info.state,
                BackupState::Started | BackupState::Executing | BackupState::CancelRequested
            ) {
                // A target is a folder directly in `root` (as `start` makes it). Only its
                // name is taken from the history: a path recorded relative to another
                // working directory must not lead outside the backups folder.
                let target = Path::new(&info.target_path)
                    .file_name()
                    .map(|name| root.join(name));
                info.finished_at.get_or_insert_with(now);
                // The manifest is written last, by an atomic rename: a folder that has one
                // is a finished backup whose end the server did not get to record.
                let complete = target
                    .as_ref()
                    .is_some_and(|t| t.join(MANIFEST_FILE).is_file());
                if complete {
                    info.state = BackupState::Finished;
                    info.message = Some("finished; the server stopped before it recorded the end (run backup verify to check it)".into());
                } else {
                    if let Some(target) = target.filter(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir_all(&target);
                    }
                    info.state = BackupState::Faulted;
                    info.message = Some("interrupted: the server stopped during the backup; its partial folder was removed".into());
                }
                info.currently_copied_file = None;
                changed = true;
            }
        }
        let manager = Arc::new(BackupManager {
            root: root.to_path_buf(),
            source,
            inner: Mutex::new(Inner {
                running: None,
                history,
                unsaved: changed,
            }),
            ending: Default::default(),
        });
        manager.save_if_unsaved(&mut manager.inner.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(manager)
    }

    /// The database of the repository it backs up.
    pub fn store(&self) -> &cairn_store::Store {
        self.source.store()
    }

    /// The backup folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the history (the running backup first) to `history.json`, by rename. When
    /// that fails (a full disk), the history stays in memory, marked unsaved, and is saved
    /// by the next call that can ([`BackupManager::save_if_unsaved`]): a failed backup's
    /// entry is never lost to the fault that failed it.
    fn save(&self, inner: &mut Inner) {
        let running = inner
            .running
            .as_ref()
            .map(|r| r.info.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let mut all: Vec<&BackupInfo> = running.iter().collect();
        all.extend(inner.history.iter());
        let text = serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into());
        let tmp = self.root.join(format!("{HISTORY_FILE}.tmp"));
        let r = crate::error::failure_point("backup::history", "save the backup history")
            .and_then(|()| Ok(cairn_store::durable::write_synced(&tmp, text.as_bytes())?))
            .and_then(|()| {
                std::fs::rename(&tmp, self.root.join(HISTORY_FILE)).map_err(io("rename history"))
            });
        match r {
            Ok(()) => {
                if inner.unsaved {
                    tracing::info!("the backup history is saved again");
                }
                inner.unsaved = false;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                if !inner.unsaved {
                    tracing::error!(
                        "cannot save the backup history ({e}); it is kept in memory and saved \
                         as soon as it can be"
                    );
                }
                inner.unsaved = true;
            }
        }
    }

    /// Saves the history if its last save failed (a full disk since freed); true when
    /// `history.json` holds all of it. The server calls this now and then, and at its stop.
    pub fn save_history(&self) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.save_if_unsaved(&mut inner);
        !inner.unsaved
    }

    /// Saves the history if its last save failed.
    fn save_if_unsaved(&self, inner: &mut Inner) {
        if inner.unsaved {
            self.save(inner);
        }
    }

    fn response(inner: &Inner) -> BackupResponse {
        let running = inner
            .running
            .as_ref()
            .map(|r| r.info.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let current = running.clone().or_else(|| inner.history.first().cloned());
        let mut history = Vec::with_capacity(inner.history.len() + 1);
        history.extend(running);
        history.extend(inner.history.iter().cloned());
        BackupResponse {
            state: current.as_ref().map_or(BackupState::Initial, |c| c.state),
            current,
            history,
        }
    }

    /// Starts a backup into `target` (a plain name under the backup folder; omitted: one
    /// from the UTC time). While one runs, starts nothing and answers the running one.
    pub fn start(
        self: &Arc<Self>,
        kind: BackupKind,
        target: Option<&str>,
    ) -> Result<BackupResponse> {
        self.launch(kind, None, |root| {
            let name = match target.map(str::trim).filter(|t| !t.is_empty()) {
                Some(t) => t.to_string(),
                None => default_name(root),
            };
            let path = target_path(root, &name)?;
            Ok(Job::Folder(path))
        })
    }

    /// Starts the backup `request` asks for: into this manager's folder as a plain backup
    /// (`target`, or a name from the time), or into a repository (`to`: `REPO/NAME`, S3 or
    /// a folder); encrypted to `encrypt_to` when given (then packed, also in this folder).
    /// S3 is reached with the standard `AWS_*` variables of this process.
    pub fn start_request(
        self: &Arc<Self>,
        kind: BackupKind,
        request: &BackupRequest,
    ) -> Result<BackupResponse> {
        let recipient = request
            .encrypt_to
            .as_deref()
            .map(crate::repo::crypt::Recipient::parse)
            .transpose()?;
        let settings = crate::repo::s3::S3Settings::default();
        let target = request
            .target
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match (target, request.to.as_deref(), recipient) {
            (Some(_), Some(_), _) => Err(BackupError::Refused(
                "give target (a name in the server's backup folder) or to (REPO/NAME), not both"
                    .into(),
            )),
            (_, Some(to), recipient) => {
                let address = crate::repo::BackupAddress::parse(to)?;
                // Over HTTP a folder of the server's own is named by `target`: a request
                // does not get to write wherever the server's process may.
                if !matches!(address.repo, crate::repo::RepoUrl::S3 { .. }) {
                    return Err(BackupError::Refused(format!(
                        "to {to:?}: a request names an S3 repository (s3://BUCKET/PREFIX/NAME); \
                         a folder in the server's backup folder is named by target"
                    )));
                }
                let dest = crate::repo::create::Destination::open(&address, &settings, recipient)?;
                self.start_into(kind, dest)
            }
            (target, None, Some(recipient)) => {
                let name = match target {
                    Some(t) => t.to_string(),
                    None => default_name(&self.root),
                };
                target_path(&self.root, &name)?;
                let repo = crate::repo::Repository::open(
                    &crate::repo::RepoUrl::Local(self.root.clone()),
                    &settings,
                )?;
                self.start_into(
                    kind,
                    crate::repo::create::Destination {
                        repo,
                        name,
                        recipient: Some(recipient),
                    },
                )
            }
            (target, None, None) => self.start(kind, target),
        }
    }

    /// Starts a backup into a repository (`dest`: S3, or a local folder, encrypted or
    /// not). While one runs, starts nothing and answers the running one.
    pub fn start_into(
        self: &Arc<Self>,
        kind: BackupKind,
        dest: crate::repo::create::Destination,
    ) -> Result<BackupResponse> {
        self.launch(kind, None, |_| Ok(Job::Repository(Box::new(dest))))
    }

    /// [`BackupManager::start_into`], calling `on_end` with the backup as it ended (after
    /// the history has it) on the backup's thread. When another backup is running nothing
    /// starts, the answer's state is `Executing`, and `on_end` is never called.
    pub fn start_into_then(
        self: &Arc<Self>,
        kind: BackupKind,
        dest: crate::repo::create::Destination,
        on_end: OnEnd,
    ) -> Result<BackupResponse> {
        self.launch(kind, Some(on_end), |_| Ok(Job::Repository(Box::new(dest))))
    }

    /// One backup at a time: starts the `job` that `plan` makes (given the backup folder)
    /// on a thread of its own, or answers the running one.
    fn launch(
        self: &Arc<Self>,
        kind: BackupKind,
        on_end: Option<OnEnd>,
        plan: impl FnOnce(&Path) -> Result<Job>,
    ) -> Result<BackupResponse> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.save_if_unsaved(&mut inner);
        if inner.running.is_some() {
            // One at a time: this call starts nothing and answers the running backup.
            let mut resp = Self::response(&inner);
            resp.state = BackupState::Executing;
            return Ok(resp);
        }
        // One backup at a time across every process of the database too (search replicas
        // on one PostgreSQL): held until this backup ends, or its process does.
        let exclusive = self
            .source
            .store()
            .try_cluster_lock("backup")?
            .ok_or_else(|| {
                BackupError::Busy(
                    "a backup is running on another search replica of this database; one runs at \
                 a time (QueryIndexBackup shows it)"
                        .into(),
                )
            })?;
        let job = plan(&self.root)?;
        let info = Arc::new(Mutex::new(BackupInfo::started_at(kind, job.target())));
        let cancel = CancelToken::new();
        inner.running = Some(Running {
            info: info.clone(),
            cancel: cancel.clone(),
        });
        // Recorded before the copy fills the disk: the entry exists whatever happens next.
        self.save(&mut inner);
        let response = Self::response(&inner);
        drop(inner);
        let me = self.clone();
        let with_callback = on_end.is_some();
        if with_callback {
            self.ending
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        std::thread::Builder::new()
            .name("cairn-backup".into())
            .spawn(move || {
                crate::files::lower_thread_priority();
                let ended = me.run(kind, &job, &info, &cancel);
                drop(exclusive);
                if let Some(on_end) = on_end {
                    on_end(ended);
                    me.ending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
            .map_err(|e| {
                if with_callback {
                    self.ending
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                io("start the backup thread")(e)
            })?;
        Ok(response)
    }

    fn run(
        &self,
        kind: BackupKind,
        job: &Job,
        info: &Mutex<BackupInfo>,
        cancel: &CancelToken,
    ) -> BackupInfo {
        let result = match job {
            Job::Folder(path) => run_backup(&*self.source, kind, path, info, cancel),
            Job::Repository(dest) => {
                let staging = crate::repo::create::staging_in(&self.root, &dest.name);
                crate::repo::create::backup_into(&*self.source, kind, dest, &staging, info, cancel)
                    .map(|made| made.manifest)
            }
        };
        let target = job.target();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut done = info.lock().unwrap_or_else(|p| p.into_inner()).clone();
        done.finished_at = Some(now());
        done.currently_copied_file = None;
        done.step = None;
        match result {
            Ok(m) => {
                done.state = BackupState::Finished;
                tracing::info!(%target, files = m.files.len(), bytes = done.copied_bytes, "backup finished");
            }
            Err(BackupError::Canceled) => {
                done.state = BackupState::Canceled;
                done.message = Some("canceled; the partial backup was removed".into());
                tracing::info!(%target, "backup canceled");
            }
            Err(e) => {
                done.state = BackupState::Faulted;
                done.message = Some(e.to_string());
                tracing::error!(%target, "backup failed: {e}");
            }
        }
        inner.running = None;
        inner.history.insert(0, done.clone());
        inner.history.truncate(HISTORY_LIMIT);
        self.save(&mut inner);
        done
    }

    /// The running backup, else the newest one, and the history.
    pub fn query(&self) -> BackupResponse {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.save_if_unsaved(&mut inner);
        Self::response(&inner)
    }

    /// Asks the running backup to stop. With none running, says so in `Message`.
    pub fn cancel(&self) -> BackupResponse {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &inner.running {
            Some(r) => {
                r.cancel.cancel();
                r.info.lock().unwrap_or_else(|p| p.into_inner()).state =
                    BackupState::CancelRequested;
                Self::response(&inner)
            }
            None => {
                let mut resp = Self::response(&inner);
                // With no backup ever made, nothing started and nothing has a folder.
                let mut note = resp.current.clone().unwrap_or_else(|| BackupInfo {
                    state: BackupState::Initial,
                    started_at: String::new(),
                    target_path: String::new(),
                    ..BackupInfo::started(BackupKind::Index, &self.root)
                });
                note.message = Some("no backup is running; nothing was canceled".into());
                resp.current = Some(note);
                resp
            }
        }
    }

    /// True while a backup runs, or what follows its end (a policy's retention) does.
    pub fn is_busy(&self) -> bool {
        self.is_running() || self.ending.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// True while a backup runs.
    pub fn is_running(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
            .is_some()
    }

    /// For a graceful stop: cancels the running backup, if any, and waits up to `deadline`
    /// for it to end (recorded Canceled, its folder removed). False if it still runs.
    pub fn stop(&self, deadline: Duration) -> bool {
        self.save_if_unsaved(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
        let busy = || self.is_busy();
        if !busy() {
            return true;
        }
        self.cancel();
        let until = Instant::now() + deadline;
        while busy() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Finished backups in the folder, newest first.
    pub fn list(&self) -> Vec<(String, Manifest)> {
        list_backups(&self.root)
    }

    /// Finished backups in the folder, newest first, as `GET /backups` lists them.
    pub fn summaries(&self) -> Vec<BackupSummary> {
        self.list()
            .into_iter()
            .map(|(name, m)| BackupSummary {
                name,
                kind: m.kind,
                files: m.files.len(),
                bytes: m.files.iter().map(|f| f.size).sum(),
                index_last_activity_id: m.index.completion_state.last_activity_id.0,
                database_last_activity_id: m.database.as_ref().map(|d| d.last_activity_id.0),
                started_at: m.started_at,
                finished_at: m.finished_at,
                repository_id: m.repository_id,
            })
            .collect()
    }

    /// The finished backup `name` (a plain name in the folder): its folder and manifest.
    pub fn finished(&self, name: &str) -> Result<(PathBuf, Manifest)> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(BackupError::BadTarget(name.to_string()));
        }
        let dir = self.root.join(name);
        let manifest = Manifest::read(&dir)
            .map_err(|_| BackupError::NotFound(format!("no finished backup named {name}")))?;
        Ok((dir, manifest))
    }

    /// The file `path` of the finished backup `name`, for a download: its size and where it
    /// is. Only a file its manifest names, a regular file inside the backup's folder (a
    /// link out of it, to a file or through a folder, is refused, as `verify` refuses it).
    pub fn listed_file(&self, name: &str, path: &str) -> Result<(u64, PathBuf)> {
        let (dir, manifest) = self.finished(name)?;
        let entry = manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| BackupError::NotFound(format!("{name} has no file {path}")))?;
        let file = dir.join(&entry.path);
        let inside = match (file.canonicalize(), dir.canonicalize()) {
            (Ok(f), Ok(d)) => f.starts_with(d),
            _ => false,
        };
        let regular = std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file());
        if !inside || !regular {
            return Err(BackupError::NotFound(format!(
                "{name}/{path} is not a file of the backup (a link?)"
            )));
        }
        Ok((entry.size, file))
    }
}

/// Finished backups (folders with a readable manifest) in `root`, newest first.
pub fn list_backups(root: &Path) -> Vec<(String, Manifest)> {
    let mut out: Vec<(String, Manifest)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        // Hidden folders are Cairn's own (an upload's staging, a delete under way).
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let m = Manifest::read(&e.path()).ok()?;
            Some((e.file_name().to_string_lossy().to_string(), m))
        })
        .collect();
    out.sort_by(|a, b| b.1.finished_at.cmp(&a.1.finished_at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "", "..", ".", "a/b", "../x", "/abs", "a\\b", ".hidden", "x\u{1}",
        ] {
            assert!(
                matches!(target_path(dir.path(), bad), Err(BackupError::BadTarget(_))),
                "{bad:?}"
            );
        }
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        assert!(matches!(
            target_path(dir.path(), "taken"),
            Err(BackupError::TargetExists(_))
        ));
        std::os::unix::fs::symlink("/tmp", dir.path().join("link")).unwrap();
        assert!(matches!(
            target_path(dir.path(), "link"),
            Err(BackupError::BadTarget(_))
        ));
        assert!(target_path(dir.path(), "nightly-1").is_ok());
        let n = default_name(dir.path());
        assert!(n.ends_with('Z') && !n.contains(':'), "{n}");
    }
}
