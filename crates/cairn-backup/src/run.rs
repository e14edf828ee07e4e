//! One backup, start to end: the index snapshot's files, then the database, then the
//! manifest, written last (design invariants 6 and 7). Used by the server's backup job
//! and by the offline `cairn backup create --data`.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_index::{IndexSnapshot, Indexer};
use cairn_store::{CancelToken, DatabaseBackup, Store};
use serde::{Deserialize, Serialize};

use crate::error::{failure_point, io, BackupError, Result};
use cairn_store::durable::{sync_dir, sync_files, write_synced};

use crate::files::{copy_checksummed, hex};
use crate::identity::{identity, unchanged_since};
use crate::manifest::{
    BackupKind, FileEntry, IndexPart, Manifest, DATABASE_DIR, INDEX_DIR, INDEX_FORMAT,
    MANIFEST_FILE, MANIFEST_FORMAT,
};
use crate::pace::AdaptivePace;

/// The state of a backup, as sensenet names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupState {
    /// There has never been a backup.
    Initial,
    /// Accepted, not yet copying.
    Started,
    /// Copying.
    Executing,
    /// A cancel was asked; the job stops at its next check.
    CancelRequested,
    /// Stopped by a cancel; nothing of it is left.
    Canceled,
    /// Every file copied and checked, manifest written.
    Finished,
    /// Failed; the message says why.
    Faulted,
}

/// The steps of a backup, in their order: the index's files, then the database, then the
/// manifest that binds them (written last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupStep {
    /// Copying (or linking) the files of one committed index state.
    IndexFiles,
    /// The database's own online backup (SQLite's backup API, or `pg_dump`).
    Database,
    /// The blobs the database copy names (files' bytes).
    Blobs,
    /// Writing the manifest, last.
    Manifest,
    /// Uploading into the repository (a packed backup: S3, or encrypted).
    Upload,
}

/// Progress and outcome of one backup (sensenet's `BackupInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BackupInfo {
    /// When it began (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The backup folder.
    pub target_path: String,
    /// Bytes to copy (grows when the database size becomes known).
    pub total_bytes: u64,
    /// Bytes copied (or linked from the previous backup).
    pub copied_bytes: u64,
    /// Files to copy.
    pub count_of_files: u64,
    /// Files copied.
    pub copied_files: u64,
    /// The file being copied now.
    pub currently_copied_file: Option<String>,
    /// Why it failed, or a note.
    pub message: Option<String>,
    /// Its state.
    pub state: BackupState,
    /// Index alone or repository.
    pub kind: BackupKind,
    /// The step running now (`None` before the first and after the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<BackupStep>,
}

/// Now, as RFC 3339.
pub fn now() -> String {
    crate::clock::now()
}

impl BackupInfo {
    /// A new, started backup into `target`.
    pub fn started(kind: BackupKind, target: &Path) -> Self {
        Self::started_at(kind, target.display().to_string())
    }

    /// A new, started backup into `target` (a folder, or `REPO/NAME`).
    pub fn started_at(kind: BackupKind, target: String) -> Self {
        BackupInfo {
            started_at: now(),
            finished_at: None,
            target_path: target,
            total_bytes: 0,
            copied_bytes: 0,
            count_of_files: 0,
            copied_files: 0,
            currently_copied_file: None,
            message: None,
            state: BackupState::Started,
            kind,
            step: None,
        }
    }
}

/// What a backup copies from: the index snapshot and the database.
pub trait BackupSource: Send + Sync {
    /// The repository's database.
    fn store(&self) -> &Store;
    /// The repository's identity.
    fn repository_id(&self) -> String {
        self.store().repository_id().to_string()
    }
    /// A protected snapshot of the last index commit.
    fn snapshot_index(&self) -> Result<IndexSnapshot>;
    /// An online copy of the database into `dest_dir` (the engine's own online backup).
    fn backup_database(
        &self,
        dest_dir: &Path,
        progress: &dyn Fn(u64, u64),
        cancel: &CancelToken,
    ) -> Result<DatabaseBackup> {
        Ok(self.store().backup_database(dest_dir, progress, cancel)?)
    }
    /// The rate, in bytes per second, that the backup keeps to right now: `Some` while
    /// the repository is busy serving writes, so that the backup leaves it the disk and
    /// the cores; `None` for full speed.
    fn paced_rate(&self) -> Option<u64> {
        None
    }
    /// A backup begins: a source that paces by the writers takes their latency now as
    /// what the backup must keep them to.
    fn begin_pacing(&self) {}
}

/// A running repository: the live index and its database.
pub struct LiveSource {
    /// The database.
    pub store: Arc<Store>,
    /// The index and its writer.
    pub indexer: Arc<Indexer>,
    /// While the repository is being written to (an activity indexed within the last
    /// second), a backup starts at this many bytes per second, then follows the writers'
    /// commit cycle ([`AdaptivePace`]); 0: always full speed.
    pace: Mutex<AdaptivePace>,
}

impl LiveSource {
    /// The live repository of `store` and `indexer`, whose backups start at `busy_rate`
    /// bytes per second while writes go on (0: never paced).
    pub fn new(store: Arc<Store>, indexer: Arc<Indexer>, busy_rate: u64) -> LiveSource {
        LiveSource {
            store,
            indexer,
            pace: Mutex::new(AdaptivePace::new(busy_rate)),
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, AdaptivePace> {
        self.pace.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BackupSource for LiveSource {
    fn paced_rate(&self) -> Option<u64> {
        let busy = self.indexer.idle_for() < Duration::from_secs(1);
        self.pace()
            .rate(busy, self.indexer.commit_cycle(), Instant::now())
    }
    fn begin_pacing(&self) {
        self.pace().begin(self.indexer.commit_cycle());
    }
    fn store(&self) -> &Store {
        &self.store
    }
    fn snapshot_index(&self) -> Result<IndexSnapshot> {
        Ok(self.indexer.snapshot()?)
    }
}

/// A stopped repository: its index folder and its database.
pub struct StoppedSource {
    /// The database.
    pub store: Arc<Store>,
    /// The index folder.
    pub index_dir: PathBuf,
}

impl BackupSource for StoppedSource {
    fn store(&self) -> &Store {
        &self.store
    }
    fn snapshot_index(&self) -> Result<IndexSnapshot> {
        Ok(IndexSnapshot::of_stopped(&self.index_dir)?)
    }
}

/// The newest finished backup among the siblings of `target` (for incremental copies).
pub fn previous_backup(target: &Path) -> Option<(PathBuf, Manifest)> {
    let parent = target.parent()?;
    let mut best: Option<(PathBuf, Manifest)> = None;
    for entry in std::fs::read_dir(parent).ok()?.flatten() {
        let p = entry.path();
        if p == target || !p.is_dir() {
            continue;
        }
        if let Ok(m) = Manifest::read(&p) {
            if best
                .as_ref()
                .is_none_or(|(_, b)| m.finished_at > b.finished_at)
            {
                best = Some((p, m));
            }
        }
    }
    best
}

/// Keeps a backup to its source's [`BackupSource::paced_rate`]: told of every chunk
/// copied, it sleeps as long as that chunk takes at the rate, while a rate applies.
struct Pacer<'s> {
    source: &'s dyn BackupSource,
    /// A cancel ends a wait early.
    cancel: &'s CancelToken,
    /// When the bytes told so far are due at the rate.
    due: Mutex<Option<Instant>>,
}

impl<'s> Pacer<'s> {
    fn new(source: &'s dyn BackupSource, cancel: &'s CancelToken) -> Self {
        Pacer {
            source,
            cancel,
            due: Mutex::new(None),
        }
    }

    fn copied(&self, bytes: u64) {
        let mut slot = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = self.source.paced_rate().filter(|r| *r > 0) else {
            *slot = None;
            return;
        };
        let now = Instant::now();
        let due = slot.filter(|d| *d > now).unwrap_or(now)
            + Duration::from_secs_f64(bytes as f64 / rate as f64);
        *slot = Some(due);
        drop(slot);
        // Wait until the bytes are due, in steps short enough to notice a cancel soon. (A
        // single bounded sleep per chunk let a 1 MiB chunk through every 250 ms, whatever
        // the rate.)
        loop {
            let now = Instant::now();
            if now >= due || self.cancel.is_cancelled() {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
        }
    }
}

/// One index file done: its manifest entry, and its path when it was copied (not linked).
type Copied = (FileEntry, Option<PathBuf>);

fn update(info: &Mutex<BackupInfo>, f: impl FnOnce(&mut BackupInfo)) {
    f(&mut info.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Runs one backup into `target` (created here; it must not exist). On any error or a
/// cancel the folder is removed, so nothing half-written is left that looks like a backup.
pub fn run_backup(
    source: &dyn BackupSource,
    kind: BackupKind,
    target: &Path,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<Manifest> {
    std::fs::create_dir(target).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::TargetExists(target.display().to_string())
        } else {
            BackupError::Io {
                context: format!("create {}", target.display()),
                cause: e,
            }
        }
    })?;
    let result = run_into(Run {
        source,
        kind,
        target,
        info,
        cancel,
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(target);
    }
    result
}

/// What [`run_backup`] was asked, for the steps that write into its (new) folder.
struct Run<'a> {
    source: &'a dyn BackupSource,
    kind: BackupKind,
    target: &'a Path,
    info: &'a Mutex<BackupInfo>,
    cancel: &'a CancelToken,
}

fn run_into(run: Run<'_>) -> Result<Manifest> {
    let Run {
        source,
        kind,
        target,
        info,
        cancel,
    } = run;
    let started_at = info
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .started_at
        .clone();
    update(info, |i| i.state = BackupState::Executing);
    source.begin_pacing();
    let previous = previous_backup(target);
    let index_dir = target.join(INDEX_DIR);
    std::fs::create_dir(&index_dir).map_err(io(format!("create {}", index_dir.display())))?;

    // 1. The index: one committed state, protected from the writer's garbage collection.
    update(info, |i| i.step = Some(BackupStep::IndexFiles));
    let snapshot = source.snapshot_index()?;
    // Size and identity of every file, from one stat each.
    let mut sizes = Vec::with_capacity(snapshot.files.len());
    for f in &snapshot.files {
        let p = snapshot.dir().join(f);
        let m = std::fs::metadata(&p).map_err(io(format!("stat {}", p.display())))?;
        sizes.push((m.len(), identity(&m)));
    }
    update(info, |i| {
        i.total_bytes = sizes.iter().map(|(size, _)| size).sum();
        i.count_of_files =
            snapshot.files.len() as u64 + 1 + u64::from(kind == BackupKind::Repository);
    });
    let earlier_written = previous.as_ref().and_then(|(dir, _)| {
        std::fs::metadata(dir.join(MANIFEST_FILE))
            .and_then(|m| m.modified())
            .ok()
    });
    let mut files = Vec::with_capacity(snapshot.files.len() + 2);
    let mut copied: Vec<PathBuf> = Vec::new();
    let pacer = Pacer::new(source, cancel);
    // Two files at a time: a copy is bound by its SHA-256 (one core per file), so two
    // workers keep both cores busy on a large index. Entries keep the snapshot's order.
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Copied>>> =
        snapshot.files.iter().map(|_| Mutex::new(None)).collect();
    let failure: Mutex<Option<BackupError>> = Mutex::new(None);
    let stop = CancelToken::new();
    let one = |k: usize| -> Result<Copied> {
        let (f, (size, live)) = (&snapshot.files[k], sizes[k]);
        let name = f.to_string_lossy().to_string();
        let rel = format!("{INDEX_DIR}/{name}");
        update(info, |i| i.currently_copied_file = Some(rel.clone()));
        let dst = index_dir.join(f);
        let live_path = snapshot.dir().join(f);
        // Same name and checksum means the same file. The earlier backup copied this very
        // live file (same device, inode, size and mtime: not replaced or written since), so
        // its checksum is known without reading the file, and a hard link shares it.
        let earlier = previous
            .as_ref()
            .and_then(|(dir, m)| {
                m.files
                    .iter()
                    .find(|e| e.path == rel && e.size == size && live.is_some() && e.source == live)
                    .map(|e| (dir.join(&rel), e.clone()))
            })
            // Only a file untouched since that backup's manifest was written is shared, so a
            // damaged copy put in its place does not spread into this one. The check reads
            // no data (see `unchanged_since`): an incremental backup costs what it copies.
            .filter(|(src, e)| earlier_written.is_some_and(|at| unchanged_since(src, e.size, at)));
        let done = match earlier {
            Some((src, e)) if std::fs::hard_link(&src, &dst).is_ok() => {
                update(info, |i| i.copied_bytes += size);
                (e, None)
            }
            _ => {
                failure_point("backup::index_file", &format!("copy {rel}"))?;
                let (sha256, n) = copy_checksummed(&live_path, &dst, &stop, &mut |n| {
                    update(info, |i| i.copied_bytes += n);
                    pacer.copied(n);
                    // A cancel stops the copy between chunks, not only between files.
                    if cancel.is_cancelled() {
                        stop.cancel();
                    }
                })?;
                (
                    FileEntry {
                        path: rel,
                        size: n,
                        sha256,
                        source: live,
                    },
                    Some(dst),
                )
            }
        };
        update(info, |i| i.copied_files += 1);
        Ok(done)
    };
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                if cancel.is_cancelled() {
                    stop.cancel();
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= slots.len() || stop.is_cancelled() {
                    break;
                }
                match one(k) {
                    Ok(done) => *slots[k].lock().unwrap_or_else(|p| p.into_inner()) = Some(done),
                    Err(e) => {
                        // The first error, not the stop it makes the other worker see.
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        stop.cancel();
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(if cancel.is_cancelled() {
            BackupError::Canceled
        } else {
            e
        });
    }
    if cancel.is_cancelled() {
        return Err(BackupError::Canceled);
    }
    for slot in slots {
        let (entry, dst) = slot
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or_else(|| BackupError::Invalid("a file of the snapshot was not copied".into()))?;
        files.push(entry);
        copied.extend(dst);
    }
    // Every copied file reaches the disk before the index's meta.json, and long before the
    // manifest that makes the backup count.
    sync_files(&copied)?;
    let meta = snapshot.meta_json()?;
    write_synced(&index_dir.join("meta.json"), meta.as_bytes())?;
    files.push(FileEntry {
        path: format!("{INDEX_DIR}/meta.json"),
        size: meta.len() as u64,
        sha256: {
            use sha2::Digest;
            hex(&sha2::Sha256::digest(meta.as_bytes()))
        },
        source: None,
    });
    sync_dir(&index_dir)?;
    update(info, |i| i.copied_files += 1);
    let index_part = IndexPart {
        completion_state: snapshot.state.clone(),
        documents: snapshot.documents,
        format: INDEX_FORMAT.into(),
    };
    drop(snapshot);

    // 2. Then the database, with the engine's own online backup.
    let database = if kind == BackupKind::Repository {
        update(info, |i| i.step = Some(BackupStep::Database));
        if cancel.is_cancelled() {
            return Err(BackupError::Canceled);
        }
        let db_dir = target.join(DATABASE_DIR);
        std::fs::create_dir(&db_dir).map_err(io(format!("create {}", db_dir.display())))?;
        update(info, |i| {
            i.currently_copied_file = Some(format!("{DATABASE_DIR}/"))
        });
        let base = info.lock().unwrap_or_else(|p| p.into_inner()).copied_bytes;
        failure_point("backup::database", "copy the database")?;
        let told = Cell::new(0u64);
        let db = source
            .backup_database(
                &db_dir,
                &|done, total| {
                    update(info, |i| {
                        i.copied_bytes = base + done;
                        i.total_bytes = i.total_bytes.max(base + total.max(done));
                    });
                    // A copy that knows its total (SQLite's, step by step) waits between
                    // steps. pg_dump runs at its own pace, reporting only what it has
                    // written (total 0): waiting would slow nothing but the report.
                    if total > 0 {
                        pacer.copied(done.saturating_sub(told.replace(done)));
                    }
                },
                cancel,
            )
            .map_err(|e| match e {
                BackupError::Store(cairn_store::StoreError::Cancelled) => BackupError::Canceled,
                other => other,
            })?;
        let rel = format!("{DATABASE_DIR}/{}", db.file_name);
        update(info, |i| i.currently_copied_file = Some(rel.clone()));
        let (sha256, size) = crate::files::sha256_file(&target.join(&rel), cancel)?;
        update(info, |i| {
            i.copied_files += 1;
            i.total_bytes = base + size;
            i.copied_bytes = base + size;
        });
        files.push(FileEntry {
            path: rel,
            size,
            sha256,
            source: None,
        });
        sync_dir(&db_dir)?;
        // 2b. The blobs that copy names: the bytes of its files.
        update(info, |i| i.step = Some(BackupStep::Blobs));
        let earlier = previous
            .as_ref()
            .and_then(|(dir, m)| earlier_written.map(|at| (dir.as_path(), m, at)));
        failure_point("backup::blobs", "copy the blobs")?;
        let entries = crate::blobs::back_up(
            &*source.store().blobs(),
            target,
            &db,
            earlier,
            &mut |n| {
                update(info, |i| {
                    i.copied_bytes += n;
                    i.total_bytes = i.total_bytes.max(i.copied_bytes);
                });
                pacer.copied(n);
            },
            &mut || {
                update(info, |i| {
                    i.copied_files += 1;
                    i.count_of_files += 1;
                })
            },
            cancel,
        )?;
        files.extend(entries);
        Some(db)
    } else {
        None
    };

    // 3. The manifest, last.
    update(info, |i| i.step = Some(BackupStep::Manifest));
    if cancel.is_cancelled() {
        return Err(BackupError::Canceled);
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        kind,
        repository_id: source.repository_id(),
        cairn_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at: now(),
        index: index_part,
        database,
        files,
    };
    failure_point("backup::manifest", "write the manifest")?;
    manifest.write(target)?;
    update(info, |i| {
        i.currently_copied_file = None;
        i.step = None;
    });
    Ok(manifest)
}
