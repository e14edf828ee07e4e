//! The indexer: the only writer of an index. It applies activities in id order, in batches,
//! and commits the new completion state in the payload of the same commit (invariants 2-5).
//!
//! Applying an activity re-derives what it names (a node, or a whole subtree) from the
//! database as it is now: delete every document the activity covers, then add the current
//! rows. That makes applying idempotent and order-independent, so gaps filled late, repeated
//! catch-ups and restored indexes all converge on the database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_store::{ActivityId, CancelToken, Store};
use tantivy::directory::error::LockError;
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyError};

use crate::completion::{divergence, CompletionState};
use crate::error::{IndexError, Result};
use crate::schema::IndexSchema;

/// Why an index with no completion state is built.
const EMPTY_INDEX: &str = "the index is empty";

/// Settings of the indexer; every one has a sane default.
#[derive(Clone, Debug)]
pub struct IndexerOptions {
    /// Memory of the Tantivy writer, in bytes, shared by its threads.
    pub writer_memory: usize,
    /// Indexing threads of the Tantivy writer.
    pub writer_threads: usize,
    /// Activities read from the database at a time.
    pub batch_size: usize,
    /// While catching up, commit at least after this many documents...
    pub commit_docs: usize,
    /// ... or this much time, whichever comes first.
    pub commit_interval: Duration,
    /// The periodic catch-up that heals anything a wake-up missed.
    pub periodic: Duration,
    /// Group commit: when the last round indexed more than one activity (several writers
    /// at once), wait this long before the next round so that it gathers more of them.
    pub group_delay: Duration,
    /// How far below the database's last activity a rebuild looks for in-flight ids.
    pub gap_window: i64,
    /// Stops a rebuild between pages (Ctrl-C on `cairn index rebuild`): the writer rolls
    /// back, and the index is as it was before. Never cancelled by default.
    pub cancel: CancelToken,
    /// Whether [`Indexer::open`] catches up before it returns (else the background loop
    /// does, once started: a search replica seeded from a backup serves `/health` while it
    /// catches up).
    pub catch_up_on_open: bool,
}

impl Default for IndexerOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        IndexerOptions {
            writer_memory: 256 << 20,
            writer_threads: cpus.clamp(1, 4),
            batch_size: 5_000,
            commit_docs: 200_000,
            commit_interval: Duration::from_secs(2),
            periodic: Duration::from_secs(30),
            group_delay: Duration::from_millis(5),
            gap_window: 10_000,
            cancel: CancelToken::new(),
            catch_up_on_open: true,
        }
    }
}

/// What opening the index did before it was ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupAction {
    /// The index was usable; it caught up.
    CaughtUp,
    /// The index was rebuilt from the database, for the reason given.
    Rebuilt(String),
    /// The index was ahead of or diverged from the database and was repaired (invariant 5).
    Repaired {
        /// What was detected.
        reason: String,
        /// Documents re-derived from the database.
        refreshed: u64,
    },
}

/// What a catch-up did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchUpReport {
    /// Activities applied.
    pub activities: u64,
    /// Documents written.
    pub documents: u64,
    /// Gaps whose activity appeared and was applied.
    pub gaps_filled: u64,
    /// Gaps dropped because no transaction in flight could still produce them.
    pub gaps_dropped: u64,
    /// Commits made.
    pub commits: u64,
}

/// Progress of a rebuild.
#[derive(Clone, Copy, Debug)]
pub struct RebuildProgress {
    /// Items indexed so far.
    pub done: u64,
    /// Items in the database when the rebuild began.
    pub total: u64,
}

/// What opening did, and the state it left.
#[derive(Clone, Debug)]
pub struct OpenReport {
    /// Rebuild, repair, or plain catch-up.
    pub action: StartupAction,
    /// The catch-up that followed.
    pub catch_up: CatchUpReport,
    /// The completion state after opening.
    pub state: CompletionState,
}

#[derive(Default)]
pub(crate) struct Signal {
    pending: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    fn raise(&self) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
    /// Waits until raised or `timeout`; clears the flag.
    fn wait(&self, timeout: Duration) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !*pending {
            pending = self
                .cond
                .wait_timeout(pending, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *pending = false;
    }
}

/// The Tantivy writer as the indexer holds it.
pub(crate) enum WriterSlot {
    /// Ready for work (boxed: the slot is mostly this variant, and the others are small).
    Open(Box<IndexWriter>),
    /// Dropped after a fault that a rollback could not undo; opened again at its next use.
    Lost,
    /// Released by [`Indexer::shutdown`].
    Closed,
}

/// The Tantivy index being served and its reader: replaced as one by a swap
/// ([`Indexer::replace_with`]).
pub(crate) struct Live {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
}

/// The index of one repository and its only writer.
pub struct Indexer {
    pub(crate) store: Arc<Store>,
    pub(crate) dir: PathBuf,
    pub(crate) live: RwLock<Live>,
    pub(crate) schema: IndexSchema,
    /// Snapshots alive (a backup copying the index's files): a swap waits for none.
    pub(crate) pins: Arc<AtomicU64>,
    pub(crate) writer: Mutex<WriterSlot>,
    /// Why the last round of work failed, while the indexer has not yet recovered from it.
    pub(crate) fault: Mutex<Option<String>>,
    pub(crate) published: Mutex<CompletionState>,
    pub(crate) published_cond: Condvar,
    pub(crate) signal: Arc<Signal>,
    pub(crate) stopping: AtomicBool,
    pub(crate) options: IndexerOptions,
    /// When this indexer was opened, and milliseconds after that when it last applied an
    /// activity (see [`Indexer::idle_for`]).
    pub(crate) opened: Instant,
    pub(crate) last_work_ms: AtomicU64,
    /// How long the rounds that ended in a commit took (see [`Indexer::commit_cycle`]).
    pub(crate) commit_cycles: CommitCycles,
}

/// A moving average of commit cycles: from reading a round's first activities to its
/// commit being searchable, the time a write waits to be answered (read-your-writes).
#[derive(Debug, Default)]
pub(crate) struct CommitCycles {
    /// Microseconds, exponentially weighted (each cycle counts a quarter).
    average_us: AtomicU64,
    /// Cycles recorded since the indexer was opened.
    count: AtomicU64,
}

impl CommitCycles {
    pub(crate) fn record(&self, cycle: Duration) {
        let us = u64::try_from(cycle.as_micros()).unwrap_or(u64::MAX);
        // One writer (the indexer's round) records: load and store need no loop.
        let old = self.average_us.load(Ordering::Relaxed);
        let new = if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            us
        } else {
            (old.saturating_mul(3).saturating_add(us)) / 4
        };
        self.average_us.store(new, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").field("dir", &self.dir).finish()
    }
}

pub(crate) fn lock(e: TantivyError, dir: &Path) -> IndexError {
    match e {
        TantivyError::LockFailure(LockError::LockBusy, _) => {
            IndexError::Locked(dir.display().to_string())
        }
        other => other.into(),
    }
}

pub(crate) fn io(context: String) -> impl FnOnce(std::io::Error) -> IndexError {
    move |cause| IndexError::Io { context, cause }
}

/// True when `dir` holds an index.
pub fn index_exists(dir: &Path) -> bool {
    dir.join("meta.json").exists()
}

/// The completion state and document count of the index in `dir`, read without a writer
/// (beside a running server too): `None` without an index or a readable completion state.
pub fn stored_state(dir: &Path) -> Result<Option<(CompletionState, u64)>> {
    if !index_exists(dir) {
        return Ok(None);
    }
    let metas = Index::open_in_dir(dir)?.load_metas()?;
    let docs = metas.segments.iter().map(|s| s.num_docs() as u64).sum();
    Ok(crate::completion::completion_state(&metas)
        .ok()
        .flatten()
        .map(|state| (state, docs)))
}

/// How long the background loop waits before its `failures`-th retry: 0.25 s, doubling,
/// at most 5 s.
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << failures.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}

/// Removes an index folder's contents (not the folder: it may be a mount point).
fn clear_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io(format!("read {}", dir.display())))? {
        let entry = entry.map_err(io(format!("read {}", dir.display())))?;
        let p = entry.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(io(format!("remove {}", p.display())))?;
    }
    Ok(())
}

impl Indexer {
    /// Opens the index at `dir` for `store`, taking its writer lock, and makes it current:
    /// an empty, foreign or outdated index is rebuilt; one ahead of or diverged from the
    /// database is repaired; then it catches up. Returns the indexer (not yet running in the
    /// background: see [`Indexer::start`]) and what opening did.
    pub fn open(
        dir: &Path,
        store: Arc<Store>,
        options: IndexerOptions,
        progress: &dyn Fn(RebuildProgress),
    ) -> Result<(Arc<Indexer>, OpenReport)> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let schema = IndexSchema::new(store.types());
        let mut rebuild: Option<String> = None;
        let index = if index_exists(dir) {
            let existing = Index::open_in_dir(dir)?;
            if existing.schema() != schema.schema {
                // Check the lock before wiping: a live server's index must not be touched.
                IndexSchema::register_tokenizers(&existing);
                drop(
                    existing
                        .writer_with_num_threads::<tantivy::TantivyDocument>(1, 15 << 20)
                        .map_err(|e| lock(e, dir))?,
                );
                drop(existing);
                clear_dir(dir)?;
                rebuild = Some("the index was made by another version of Cairn".into());
                Index::create(
                    MmapDirectory::open(dir)?,
                    schema.schema.clone(),
                    Default::default(),
                )?
            } else {
                existing
            }
        } else {
            Index::create(
                MmapDirectory::open(dir)?,
                schema.schema.clone(),
                Default::default(),
            )?
        };
        IndexSchema::register_tokenizers(&index);
        let writer: IndexWriter = index
            .writer_with_num_threads(options.writer_threads, options.writer_memory)
            .map_err(|e| lock(e, dir))?;
        let payload = index.load_metas()?.payload;
        let state = match payload.as_deref().map(CompletionState::from_payload) {
            None => {
                rebuild.get_or_insert_with(|| EMPTY_INDEX.into());
                CompletionState::default()
            }
            Some(Err(e)) => {
                rebuild.get_or_insert_with(|| format!("its completion state is unreadable: {e}"));
                CompletionState::default()
            }
            Some(Ok(s)) if s.repository_id != store.repository_id().to_string() => {
                rebuild.get_or_insert_with(|| {
                    format!("it belongs to another repository ({})", s.repository_id)
                });
                s
            }
            Some(Ok(s)) => s,
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let signal = Arc::new(Signal::default());
        let indexer = Arc::new(Indexer {
            store: store.clone(),
            dir: dir.to_path_buf(),
            live: RwLock::new(Live { index, reader }),
            schema,
            pins: Arc::new(AtomicU64::new(0)),
            writer: Mutex::new(WriterSlot::Open(Box::new(writer))),
            fault: Mutex::new(None),
            published: Mutex::new(state.clone()),
            published_cond: Condvar::new(),
            signal: signal.clone(),
            stopping: AtomicBool::new(false),
            opened: Instant::now(),
            last_work_ms: AtomicU64::new(0),
            commit_cycles: CommitCycles::default(),
            options,
        });
        store.on_write(Arc::new(move |_| signal.raise()));

        let action = if let Some(reason) = rebuild {
            // An empty index (a new repository, a deleted index folder) is built as a matter
            // of course; any other reason means something was wrong with the index.
            if reason == EMPTY_INDEX {
                tracing::info!(reason = %reason, "building the index from the database");
            } else {
                tracing::warn!(reason = %reason, "rebuilding the index from the database");
            }
            indexer.rebuild(progress)?;
            StartupAction::Rebuilt(reason)
        } else if let Some(reason) = divergence(&indexer.store, &state)? {
            tracing::warn!(
                state = %state,
                "the index is ahead of or diverged from the database: {reason}; repairing it"
            );
            let refreshed = indexer.repair()?;
            tracing::warn!(refreshed, "index repaired: {reason}");
            StartupAction::Repaired { reason, refreshed }
        } else {
            StartupAction::CaughtUp
        };
        let catch_up = if indexer.options.catch_up_on_open {
            indexer.catch_up()?
        } else {
            // The background loop's first round catches up.
            indexer.signal.raise();
            CatchUpReport::default()
        };
        tracing::info!(
            activities = catch_up.activities,
            documents = catch_up.documents,
            gaps_filled = catch_up.gaps_filled,
            gaps_dropped = catch_up.gaps_dropped,
            state = %indexer.state(),
            "index caught up"
        );
        let state = indexer.state();
        Ok((
            indexer,
            OpenReport {
                action,
                catch_up,
                state,
            },
        ))
    }

    /// The store this index derives from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Tantivy index being served (for snapshots and searches).
    pub fn index(&self) -> Index {
        self.live().index.clone()
    }

    pub(crate) fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema and its field handles.
    pub fn schema(&self) -> &IndexSchema {
        &self.schema
    }

    /// A searcher over the last commit.
    pub fn searcher(&self) -> Searcher {
        self.live().reader.searcher()
    }

    /// The committed (and searchable) completion state.
    pub fn state(&self) -> CompletionState {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until activity `id` is searchable, at most `timeout`; returns whether it is.
    pub fn wait_for(&self, id: ActivityId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.published.lock().unwrap_or_else(|p| p.into_inner());
        while !state.covers(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.signal.raise();
            state = self
                .published_cond
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Waits until every activity committed at or below `id` is searchable (not only `id`:
    /// a gap below it whose transaction has committed since must be filled too), at most
    /// `timeout`; returns whether they are. What a replica answers a query with when the
    /// query must see every write answered before it, wherever it was written.
    pub fn wait_through(&self, id: ActivityId, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        if id.0 <= 0 {
            return Ok(true);
        }
        if !self.wait_for(id, left()) {
            return Ok(false);
        }
        loop {
            let below: Vec<ActivityId> = self
                .state()
                .gap_ids()
                .into_iter()
                .filter(|g| *g <= id)
                .collect();
            if below.is_empty() {
                return Ok(true);
            }
            // A gap whose activity is not in the log is a transaction still open (or
            // rolled back): no write answered before now waits on it.
            let committed = self.store.activity_fingerprints(&below)?;
            let Some(first) = committed.keys().min().copied() else {
                return Ok(true);
            };
            if !self.wait_for(first, left()) {
                return Ok(false);
            }
        }
    }

    /// How long since this indexer last applied an activity (since it was opened, when it
    /// never has): a measure of whether the repository is being written to now.
    pub fn idle_for(&self) -> Duration {
        let now = self.opened.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_work_ms.load(Ordering::Relaxed),
        ))
    }

    /// The recent commit cycle (a moving average, each cycle weighing a quarter) and how
    /// many cycles there were since the indexer was opened: a round's time from reading
    /// its first activities to its commit being searchable, which is what a write waits
    /// for before it is answered. A backup paces itself by it (see cairn-backup's
    /// `LiveSource`).
    pub fn commit_cycle(&self) -> (Duration, u64) {
        (
            Duration::from_micros(self.commit_cycles.average_us.load(Ordering::Relaxed)),
            self.commit_cycles.count.load(Ordering::Relaxed),
        )
    }

    /// Starts the background loop: catch up after every write (group commit) and
    /// periodically. Stop it with [`Indexer::shutdown`].
    ///
    /// A round that fails (a full disk, any I/O error) counts nothing as applied (see
    /// [`Indexer::catch_up`]) and is retried on its own, after 0.25 s and then up to every
    /// 5 s, without waiting for another write: the index heals once the fault clears.
    pub fn start(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("cairn-indexer".into())
            .spawn(move || {
                // More than one activity in the last round means several writers are
                // active: wait `group_delay` so that the ones still in their transactions
                // join this commit instead of forming a second, half-empty one. A single
                // writer (one activity per round) never waits.
                let mut busy = false;
                let mut failures = 0u32;
                while !me.stopping.load(Ordering::SeqCst) {
                    if failures == 0 {
                        me.signal.wait(me.options.periodic);
                    } else {
                        // After a failure, writes do not hurry the retry: each would fail
                        // the same way until the fault clears.
                        me.pause(retry_delay(failures));
                    }
                    if me.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if busy && !me.options.group_delay.is_zero() {
                        std::thread::sleep(me.options.group_delay);
                    }
                    let r = me.catch_up();
                    busy = matches!(&r, Ok(r) if r.activities > 1);
                    match r {
                        Ok(r) => {
                            if failures > 0 {
                                tracing::warn!(
                                    failures,
                                    state = %me.state(),
                                    "indexing works again; the index caught up"
                                );
                            }
                            failures = 0;
                            if r.activities > 0 || r.gaps_dropped > 0 {
                                tracing::debug!(
                                    activities = r.activities,
                                    documents = r.documents,
                                    "indexed"
                                )
                            }
                        }
                        Err(IndexError::ShuttingDown) => break,
                        Err(e) => {
                            failures += 1;
                            tracing::error!(
                                failures,
                                state = %me.state(),
                                "indexing failed, nothing of the round was counted; retrying \
                                 in {:.2} s: {e}",
                                retry_delay(failures).as_secs_f64()
                            );
                        }
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the indexer thread: {e}"))
    }

    /// Sleeps `d`, or less when the indexer is stopping.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Why indexing is failing now (the error of the last round), `None` while it works.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the background loop (after its current batch), makes a final catch-up and
    /// commit, and releases the writer lock.
    pub fn shutdown(&self, handle: Option<JoinHandle<()>>) -> Result<()> {
        self.stopping.store(true, Ordering::SeqCst);
        self.signal.raise();
        if let Some(h) = handle {
            let _ = h.join();
        }
        let result = self.catch_up_inner(true);
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let WriterSlot::Open(w) = std::mem::replace(&mut *guard, WriterSlot::Closed) {
            w.wait_merging_threads()?;
        }
        result.map(|_| ())
    }
}
