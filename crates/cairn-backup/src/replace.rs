//! Replacing a serving index without downtime: `RebuildIndex` (from the database) and
//! `RestoreIndex` (from a backup in a repository), one at a time, cancellable, with
//! progress and an outcome (`QueryIndexRestore`). The swap itself is
//! `cairn_index::Indexer::replace_with`: the new index is made beside the live one, which
//! serves until the new one, caught up, takes its place in one step.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use cairn_index::{Indexer, SwapStep};
use cairn_store::CancelToken;
use serde::{Deserialize, Serialize};

use crate::error::{io, BackupError, Result};
use crate::files::lower_thread_priority;
use crate::manifest::{Manifest, INDEX_DIR};
use crate::repo::crypt::Identities;
use crate::repo::packed::materialize;
use crate::repo::s3::S3Settings;
use crate::repo::{BackupAddress, Found, Repository};
use crate::restore::copy_listed;
use crate::run::{now, BackupState};

/// Where a packed backup is written out before its index is taken, in the data folder.
const DOWNLOAD: &str = ".index-restore-download";

/// What an index replacement makes its new index from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplaceKind {
    /// `RebuildIndex`: from the database.
    Rebuild,
    /// `RestoreIndex`: from a backup, then caught up.
    Restore,
}

/// One replacement, as `QueryIndexRestore` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplaceInfo {
    /// Rebuild or Restore.
    pub kind: ReplaceKind,
    /// The backup restored from (`REPO/NAME`), for a restore.
    pub backup: Option<String>,
    /// Executing, CancelRequested, Finished, Faulted or Canceled.
    pub state: BackupState,
    /// What it is doing: `download`, `build`, `catch up`, `waiting for a backup`, `swap`.
    pub step: Option<String>,
    /// Items indexed (building) or bytes downloaded (download) so far...
    pub done: u64,
    /// ... of this many.
    pub total: u64,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it faulted, or how the new index was made.
    pub message: Option<String>,
    /// Documents of the new index, once it serves.
    pub documents: Option<u64>,
    /// Its completion state, once it serves.
    pub completion_state: Option<String>,
}

/// `QueryIndexRestore`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplaceAnswer {
    /// The running or last replacement (none since the server started: `Initial`).
    pub current: Option<ReplaceInfo>,
    /// Its state.
    pub state: BackupState,
}

#[derive(Default)]
struct Inner {
    current: Option<ReplaceInfo>,
    cancel: Option<CancelToken>,
    thread: Option<JoinHandle<()>>,
}

/// The index replacements of a server: one at a time.
pub struct IndexReplacer {
    indexer: Arc<Indexer>,
    data_dir: PathBuf,
    inner: Mutex<Inner>,
}

impl IndexReplacer {
    /// The replacer of the index `indexer`, whose data folder is `data_dir` (a packed
    /// backup is written out there before its index is taken).
    pub fn new(indexer: Arc<Indexer>, data_dir: &Path) -> Arc<Self> {
        Arc::new(IndexReplacer {
            indexer,
            data_dir: data_dir.to_path_buf(),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> bool {
        self.lock()
            .thread
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// The running or last replacement.
    pub fn query(&self) -> ReplaceAnswer {
        let current = self.lock().current.clone();
        ReplaceAnswer {
            state: current.as_ref().map_or(BackupState::Initial, |c| c.state),
            current,
        }
    }

    /// Starts `RebuildIndex`; while one replacement runs, answers it instead.
    pub fn rebuild(self: &Arc<Self>) -> Result<ReplaceAnswer> {
        self.start(ReplaceKind::Rebuild, None, None)
    }

    /// Starts `RestoreIndex` from `backup` (`REPO/NAME`; an encrypted one with the identity
    /// file `identity`, a path on this machine); while one replacement runs, answers it.
    /// A backup that cannot be found or opened, or of another repository, is refused here,
    /// before anything starts.
    pub fn restore(
        self: &Arc<Self>,
        backup: &str,
        identity: Option<&Path>,
    ) -> Result<ReplaceAnswer> {
        self.start(ReplaceKind::Restore, Some(backup), identity)
    }

    fn start(
        self: &Arc<Self>,
        kind: ReplaceKind,
        backup: Option<&str>,
        identity: Option<&Path>,
    ) -> Result<ReplaceAnswer> {
        if self.running() {
            return Ok(self.query());
        }
        // Found and opened (S3, a manifest to decrypt) without holding the state, so that
        // QueryIndexRestore answers meanwhile.
        let source = match backup {
            Some(b) => Some(self.open_source(b, identity)?),
            None => None,
        };
        let mut inner = self.lock();
        if inner.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            drop(inner);
            return Ok(self.query());
        }
        let cancel = CancelToken::new();
        inner.current = Some(ReplaceInfo {
            kind,
            backup: backup.map(str::to_string),
            state: BackupState::Executing,
            step: None,
            done: 0,
            total: 0,
            started_at: now(),
            finished_at: None,
            message: None,
            documents: None,
            completion_state: None,
        });
        inner.cancel = Some(cancel.clone());
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-index-replace".into())
            .spawn(move || {
                lower_thread_priority();
                let r = me.run(source, &cancel);
                me.finish(r, &cancel);
            })
            .map_err(io("start the index replacement"))?;
        inner.thread = Some(thread);
        drop(inner);
        Ok(self.query())
    }

    /// Asks the running replacement to stop (it does until the swap begins); answers the
    /// state.
    pub fn cancel(&self) -> ReplaceAnswer {
        let mut inner = self.lock();
        let running = inner.thread.as_ref().is_some_and(|t| !t.is_finished());
        if running {
            if let Some(c) = &inner.cancel {
                if c.cancel() {
                    if let Some(cur) = inner.current.as_mut() {
                        cur.state = BackupState::CancelRequested;
                    }
                }
            }
        }
        drop(inner);
        self.query()
    }

    /// Cancels a running replacement and waits for it (a server's stop).
    pub fn stop(&self) {
        let thread = {
            let mut inner = self.lock();
            if let Some(c) = &inner.cancel {
                c.cancel();
            }
            inner.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    fn update(&self, f: impl FnOnce(&mut ReplaceInfo)) {
        if let Some(cur) = self.lock().current.as_mut() {
            f(cur);
        }
    }

    fn step(&self, step: SwapStep) {
        self.update(|cur| match step {
            SwapStep::Building { done, total } => {
                cur.step = Some("build".into());
                cur.done = done;
                cur.total = total;
            }
            SwapStep::CatchingUp => cur.step = Some("catch up".into()),
            SwapStep::WaitingForBackup => cur.step = Some("waiting for a backup".into()),
            SwapStep::Swapping => cur.step = Some("swap".into()),
        });
    }

    /// Finds `backup` and checks that its index can be taken: it exists, opens (with the
    /// identity when encrypted), and is of this repository.
    fn open_source(&self, backup: &str, identity: Option<&Path>) -> Result<Source> {
        let address = BackupAddress::parse(backup)?;
        let repo = Repository::open(&address.repo, &S3Settings::default())?;
        let identities = identity.map(Identities::read).transpose()?;
        let found = repo.find(&address.name)?;
        let repository_id = match &found {
            Found::Plain(_, manifest) => manifest.repository_id.clone(),
            Found::Packed(m) => {
                m.open_content(identities.as_ref())?;
                m.repository_id.clone()
            }
        };
        let mine = self.indexer.store().repository_id().to_string();
        if repository_id != mine {
            return Err(BackupError::Refused(format!(
                "{backup} is a backup of repository {repository_id}, not of this one ({mine}); \
                 nothing was changed"
            )));
        }
        Ok(Source {
            address,
            repo,
            found,
            identities,
        })
    }

    fn run(&self, source: Option<Source>, cancel: &CancelToken) -> Result<cairn_index::Replaced> {
        let beside = cairn_index::beside_dir(self.indexer.dir());
        if beside.exists() {
            std::fs::remove_dir_all(&beside)
                .map_err(io(format!("remove the leftover {}", beside.display())))?;
        }
        if let Some(source) = source {
            let download = self.data_dir.join(DOWNLOAD);
            let r = self.take_index(&source, &download, &beside, cancel);
            let _ = std::fs::remove_dir_all(&download);
            if let Err(e) = r {
                let _ = std::fs::remove_dir_all(&beside);
                return Err(e);
            }
        }
        Ok(self.indexer.replace_with(cancel, &|step| self.step(step))?)
    }

    /// Writes the index files of the backup into `beside`, each checked against the
    /// manifest's checksum (a packed backup is written out into `download` first).
    fn take_index(
        &self,
        source: &Source,
        download: &Path,
        beside: &Path,
        cancel: &CancelToken,
    ) -> Result<()> {
        let progress = |done: u64, total: u64| {
            self.update(|cur| {
                cur.step = Some("download".into());
                cur.done = done;
                cur.total = total;
            })
        };
        let folder = match &source.found {
            Found::Plain(folder, _) => folder.clone(),
            Found::Packed(m) => {
                if download.exists() {
                    std::fs::remove_dir_all(download)
                        .map_err(io(format!("remove {}", download.display())))?;
                }
                materialize(
                    source.repo.objects().as_ref(),
                    &source.address.name,
                    m,
                    source.identities.as_ref(),
                    download,
                    &progress,
                    cancel,
                )?;
                download.to_path_buf()
            }
        };
        let manifest = Manifest::read(&folder)?;
        std::fs::create_dir_all(beside).map_err(io(format!("create {}", beside.display())))?;
        let total = manifest.files_in(INDEX_DIR).map(|f| f.size).sum();
        let prefix = format!("{INDEX_DIR}/");
        let files = manifest.files_in(INDEX_DIR);
        copy_listed(&folder, beside, &prefix, files, total, &progress, cancel)?;
        cairn_store::durable::sync_dir(beside)?;
        Ok(())
    }

    fn finish(&self, r: Result<cairn_index::Replaced>, cancel: &CancelToken) {
        let canceled = cancel.is_cancelled();
        self.update(|cur| {
            cur.finished_at = Some(now());
            cur.step = None;
            match r {
                Ok(done) => {
                    cur.state = BackupState::Finished;
                    cur.documents = Some(done.documents);
                    cur.completion_state = Some(done.state.to_string());
                    cur.message = Some(match done.action {
                        cairn_index::StartupAction::CaughtUp => "caught up".into(),
                        cairn_index::StartupAction::Rebuilt(why) => format!("built ({why})"),
                        cairn_index::StartupAction::Repaired { reason, refreshed } => format!(
                            "repaired: {reason}; {refreshed} documents re-derived from the \
                             database"
                        ),
                    });
                }
                Err(_) if canceled => {
                    cur.state = BackupState::Canceled;
                    cur.message = Some("canceled: the live index is as it was".into());
                }
                Err(e) => {
                    tracing::error!("the index replacement failed: {e}");
                    cur.state = BackupState::Faulted;
                    cur.message = Some(e.to_string());
                }
            }
        });
    }
}

/// A backup whose index is to be taken.
struct Source {
    address: BackupAddress,
    repo: Repository,
    found: Found,
    identities: Option<Identities>,
}
