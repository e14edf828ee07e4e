//! The indexer: the only writer of an index. It applies activities in id order, in batches,
//! and commits the new completion state in the payload of the same commit (invariants 2-5).
//!
//! Applying an activity re-derives what it names (a node, or a whole subtree) from the
//! database as it is now: delete every document the activity covers, then add the current
//! rows. That makes applying idempotent and order-independent, so gaps filled late, repeated
//! catch-ups and restored indexes all converge on the database.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_store::{Activity, ActivityId, ActivityKind, Horizon, Node, NodeId, Store};
use tantivy::directory::error::LockError;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::UserOperation;
use tantivy::schema::Term;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyError};

use crate::completion::{CompletionState, Gap, PAYLOAD_FORMAT};
use crate::document::{self, WrittenBy};
use crate::error::{IndexError, Result};
use crate::schema::IndexSchema;

/// Why an index with no completion state is built.
const EMPTY_INDEX: &str = "the index is empty";

/// Up to this many documents, a batch goes to the writer as one message (see `apply`).
const SMALL_BATCH: usize = 4_096;

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
struct Signal {
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

/// The index of one repository and its only writer.
pub struct Indexer {
    store: Arc<Store>,
    dir: PathBuf,
    index: Index,
    schema: IndexSchema,
    reader: IndexReader,
    writer: Mutex<WriterSlot>,
    /// Why the last round of work failed, while the indexer has not yet recovered from it.
    fault: Mutex<Option<String>>,
    published: Mutex<CompletionState>,
    published_cond: Condvar,
    signal: Arc<Signal>,
    stopping: AtomicBool,
    options: IndexerOptions,
    /// When this indexer was opened, and milliseconds after that when it last applied an
    /// activity (see [`Indexer::idle_for`]).
    opened: Instant,
    last_work_ms: AtomicU64,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer").field("dir", &self.dir).finish()
    }
}

fn lock(e: TantivyError, dir: &Path) -> IndexError {
    match e {
        TantivyError::LockFailure(LockError::LockBusy, _) => {
            IndexError::Locked(dir.display().to_string())
        }
        other => other.into(),
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> IndexError {
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
    Ok(metas
        .payload
        .as_deref()
        .and_then(|p| CompletionState::from_payload(p).ok())
        .map(|state| (state, docs)))
}

/// Why an index at `state` cannot be trusted against `store`'s database, if it cannot
/// (invariant 5): it is ahead of the database, or the activity it last applied is not the
/// database's. The next start repairs such an index.
pub fn divergence(store: &Store, state: &CompletionState) -> Result<Option<String>> {
    if state.last_activity_id.0 == 0 {
        return Ok(None);
    }
    let found = store
        .activity(state.last_activity_id)?
        .map(|a| a.fingerprint);
    Ok(judge_divergence(state, found, store.last_activity_id()?))
}

/// [`divergence`] from what the database holds: `found`, the fingerprint of the activity
/// the index applied last (`None`: no such activity), and `db_last`, its last activity.
pub fn judge_divergence(
    state: &CompletionState,
    found: Option<i64>,
    db_last: ActivityId,
) -> Option<String> {
    let last = state.last_activity_id;
    match found {
        _ if last.0 == 0 => None,
        Some(f) if f == state.fingerprint => None,
        Some(_) => Some(format!(
            "activity {last} in the database is not the one the index applied \
             (the database was restored or replaced after the index)"
        )),
        None if last > db_last => Some(format!(
            "the index has applied activity {last} but the database's last is {db_last} \
             (the database is older than the index: wrong restore order)"
        )),
        None => Some(format!("activity {last} is no longer in the database")),
    }
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
            index,
            schema,
            reader,
            writer: Mutex::new(WriterSlot::Open(Box::new(writer))),
            fault: Mutex::new(None),
            published: Mutex::new(state.clone()),
            published_cond: Condvar::new(),
            signal: signal.clone(),
            stopping: AtomicBool::new(false),
            opened: Instant::now(),
            last_work_ms: AtomicU64::new(0),
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
        let catch_up = indexer.catch_up()?;
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

    /// The Tantivy index (for snapshots and searches).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The schema and its field handles.
    pub fn schema(&self) -> &IndexSchema {
        &self.schema
    }

    /// A searcher over the last commit.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
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

    /// How long since this indexer last applied an activity (since it was opened, when it
    /// never has): a measure of whether the repository is being written to now.
    pub fn idle_for(&self) -> Duration {
        let now = self.opened.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_work_ms.load(Ordering::Relaxed),
        ))
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

    /// Holds the writer (no commit can run) until the guard is dropped.
    pub(crate) fn writer_lock(&self) -> MutexGuard<'_, WriterSlot> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` with the writer, the only way anything is written to the index.
    ///
    /// An error leaves nothing of `work` behind: the writer is rolled back to its last
    /// commit, so no document queued before the error can slip into a later commit, and no
    /// delete can be committed without the documents that replace it. (A Tantivy indexing
    /// thread that fails, on a full disk say, is not replaced; without the rollback the
    /// writer went on with fewer threads or none, and committed deletes whose additions were
    /// lost.) When even the rollback fails, the writer is dropped and opened again at the
    /// next use. The completion state is published only by a commit that succeeded, so
    /// whatever failed stays pending and is applied again.
    fn with_writer<T>(&self, work: impl FnOnce(&mut IndexWriter) -> Result<T>) -> Result<T> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*guard, WriterSlot::Lost) {
            let writer = self
                .index
                .writer_with_num_threads(self.options.writer_threads, self.options.writer_memory)
                .map_err(|e| self.failed(lock(e, &self.dir)))?;
            tracing::warn!("the index writer was opened again after a fault");
            *guard = WriterSlot::Open(Box::new(writer));
        }
        let WriterSlot::Open(writer) = &mut *guard else {
            return Err(IndexError::ShuttingDown);
        };
        match work(writer) {
            Ok(value) => {
                *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(value)
            }
            Err(IndexError::ShuttingDown) => Err(IndexError::ShuttingDown),
            Err(e) => {
                if let Err(rollback) = writer.rollback() {
                    tracing::error!(
                        "the index writer could not roll back ({rollback}); it is dropped and \
                         opened again"
                    );
                    *guard = WriterSlot::Lost;
                }
                Err(self.failed(e))
            }
        }
    }

    /// Records `e` as the indexer's current fault.
    fn failed(&self, e: IndexError) -> IndexError {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        e
    }

    fn commit(&self, writer: &mut IndexWriter, state: &CompletionState) -> Result<()> {
        fail::fail_point!("indexer::commit", |m| Err(IndexError::Io {
            context: "commit the index".into(),
            cause: cairn_store::fault::injected("indexer::commit", m),
        }));
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&state.to_payload());
        prepared.commit()?;
        self.reader.reload()?;
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        self.published_cond.notify_all();
        Ok(())
    }

    /// Applies the gaps and everything after `LastActivityId`, committing as it goes.
    pub fn catch_up(&self) -> Result<CatchUpReport> {
        self.catch_up_inner(false)
    }

    fn catch_up_inner(&self, final_pass: bool) -> Result<CatchUpReport> {
        self.with_writer(|writer| self.catch_up_with(writer, final_pass))
    }

    fn catch_up_with(&self, writer: &mut IndexWriter, final_pass: bool) -> Result<CatchUpReport> {
        let mut state = self.state();
        let mut report = CatchUpReport::default();
        let mut dirty = false;
        let mut docs_since_commit = 0usize;
        let mut last_commit = Instant::now();
        loop {
            if !final_pass && self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let gap_ids = state.gap_ids();
            let batch = self.store.read_activities(
                state.last_activity_id,
                &gap_ids,
                self.options.batch_size,
            )?;
            let (changed, applied) =
                advance(&mut state, &batch.activities, batch.horizon, &mut report);
            if !changed {
                break;
            }
            dirty = true;
            let docs = self.apply(writer, &applied)?;
            report.activities += applied.len() as u64;
            self.last_work_ms.store(
                u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            report.documents += docs as u64;
            docs_since_commit += docs;
            let more = batch.activities.len() >= self.options.batch_size;
            if !more
                || docs_since_commit >= self.options.commit_docs
                || last_commit.elapsed() >= self.options.commit_interval
            {
                self.commit(writer, &state)?;
                report.commits += 1;
                dirty = false;
                docs_since_commit = 0;
                last_commit = Instant::now();
            }
            if !more {
                break;
            }
        }
        if dirty {
            self.commit(writer, &state)?;
            report.commits += 1;
        }
        Ok(report)
    }

    /// Re-derives what `activities` name from the database. Returns documents written.
    fn apply(&self, writer: &IndexWriter, activities: &[Activity]) -> Result<usize> {
        let by_of = |a: &Activity| WrittenBy {
            activity: a.id.0,
            fingerprint: a.fingerprint,
        };
        let mut trees: Vec<(String, WrittenBy)> = Vec::new();
        let mut nodes: HashMap<NodeId, WrittenBy> = HashMap::new();
        for a in activities {
            match a.kind {
                ActivityKind::Add | ActivityKind::Update => {
                    nodes.insert(a.node_id, by_of(a));
                }
                ActivityKind::Remove | ActivityKind::AddTree => {
                    trees.push((a.path.clone(), by_of(a)))
                }
                ActivityKind::Move => {
                    trees.push((a.path.clone(), by_of(a)));
                    if let Some(old) = &a.old_path {
                        trees.push((old.clone(), by_of(a)));
                    }
                }
            }
        }
        let mut seen_trees = HashSet::new();
        trees.retain(|(p, _)| seen_trees.insert(cairn_store::content::path_key(p)));
        let mut current: HashMap<NodeId, (Node, WrittenBy)> = HashMap::new();
        // Deletes come first and take lower opstamps than the adds, so they never hide
        // the documents that replace what they delete.
        let mut ops: Vec<UserOperation> = Vec::new();
        for (path, by) in &trees {
            ops.push(UserOperation::Delete(Term::from_field_text(
                self.schema.in_tree,
                &cairn_store::content::path_key(path),
            )));
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .scan_tree(path, after.as_deref(), self.options.batch_size)?;
                let full = page.len() >= self.options.batch_size;
                after = page.last().map(|n| cairn_store::content::path_key(&n.path));
                for n in page {
                    let entry = current.entry(n.id).or_insert((n.clone(), *by));
                    if by.activity > entry.1.activity {
                        *entry = (n, *by);
                    }
                }
                if !full {
                    break;
                }
            }
        }
        let wanted: Vec<NodeId> = nodes
            .keys()
            .filter(|id| !current.contains_key(id))
            .copied()
            .collect();
        for n in self.store.nodes_by_ids(&wanted)? {
            let by = nodes[&n.id];
            current.insert(n.id, (n, by));
        }
        for id in nodes.keys().chain(current.keys()) {
            ops.push(UserOperation::Delete(Term::from_field_i64(
                self.schema.id,
                id.0,
            )));
        }
        let types = self.store.types();
        let docs = current.len();
        if docs <= SMALL_BATCH {
            // One message to the writer: a single indexing thread takes it, so a small
            // (live) batch makes one segment per commit instead of one per thread. Each
            // segment costs its files, fsyncs and hash table however few documents it
            // holds; with two threads a 64-create commit took twice as long.
            for (node, by) in current.values() {
                ops.push(UserOperation::Add(document::build(
                    &self.schema,
                    types,
                    node,
                    *by,
                )));
            }
            writer.run(ops)?;
        } else {
            writer.run(ops)?;
            for (node, by) in current.values() {
                writer.add_document(document::build(&self.schema, types, node, *by))?;
            }
        }
        Ok(docs)
    }

    /// Where the database's log stands now: its last visible activity, the ids below it
    /// that may still appear, and that activity's fingerprint.
    fn database_position(&self) -> Result<CompletionState> {
        let probe = self.store.read_activities(ActivityId(i64::MAX), &[], 0)?;
        let last = probe.last_visible;
        let from = ActivityId((last.0 - self.options.gap_window).max(0));
        let mark = probe.horizon.mark();
        let gaps = self
            .store
            .missing_activity_ids(from, last)?
            .into_iter()
            .map(|id| Gap { id, mark })
            .collect();
        let fingerprint = match self.store.activity(last)? {
            Some(a) => a.fingerprint,
            None => 0,
        };
        Ok(CompletionState {
            format: PAYLOAD_FORMAT,
            repository_id: self.store.repository_id().to_string(),
            last_activity_id: last,
            fingerprint,
            gaps,
        })
    }

    /// Drops every document and indexes the whole database again (invariant 3): remember the
    /// database's position first, index every item, commit with that position; the caller
    /// then catches up what was written meanwhile.
    pub fn rebuild(&self, progress: &dyn Fn(RebuildProgress)) -> Result<u64> {
        self.with_writer(|writer| self.rebuild_with(writer, progress))
    }

    fn rebuild_with(
        &self,
        writer: &mut IndexWriter,
        progress: &dyn Fn(RebuildProgress),
    ) -> Result<u64> {
        let state = self.database_position()?;
        let total = self.store.count_nodes()?;
        let by = WrittenBy {
            activity: state.last_activity_id.0,
            fingerprint: state.fingerprint,
        };
        writer.delete_all_documents()?;
        let types = self.store.types();
        let mut after = NodeId(0);
        let mut done = 0u64;
        progress(RebuildProgress { done, total });
        loop {
            let page = self.store.scan_nodes(after, self.options.batch_size)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for node in &page {
                writer.add_document(document::build(&self.schema, types, node, by))?;
            }
            done += page.len() as u64;
            progress(RebuildProgress {
                done,
                total: total.max(done),
            });
        }
        self.commit(writer, &state)?;
        tracing::info!(documents = done, state = %state, "index rebuilt");
        Ok(done)
    }

    /// Re-derives from the database every document written by an activity the database
    /// does not have, and every document that differs from it; then resets the completion
    /// state to the database's position. Returns the documents refreshed.
    pub fn repair(&self) -> Result<u64> {
        self.with_writer(|writer| self.repair_with(writer))
    }

    fn repair_with(&self, writer: &mut IndexWriter) -> Result<u64> {
        let state = self.database_position()?;
        let searcher = self.reader.searcher();
        let entries = crate::integrity::index_entries(&searcher, &self.schema)?;
        let activity_ids: Vec<ActivityId> = entries
            .iter()
            .map(|e| ActivityId(e.activity))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let known = self.store.activity_fingerprints(&activity_ids)?;
        let mut refresh: HashSet<i64> = entries
            .iter()
            .filter(|e| known.get(&ActivityId(e.activity)) != Some(&e.fingerprint))
            .map(|e| e.id)
            .collect();
        for d in crate::integrity::compare(&self.store, &entries)? {
            refresh.insert(d.node_id);
        }
        let ids: Vec<NodeId> = refresh.iter().map(|&i| NodeId(i)).collect();
        for id in &ids {
            writer.delete_term(Term::from_field_i64(self.schema.id, id.0));
        }
        let by = WrittenBy {
            activity: state.last_activity_id.0,
            fingerprint: state.fingerprint,
        };
        let types = self.store.types();
        for node in self.store.nodes_by_ids(&ids)? {
            writer.add_document(document::build(&self.schema, types, &node, by))?;
        }
        self.commit(writer, &state)?;
        Ok(ids.len() as u64)
    }
}

/// Moves `state` forward over `activities` (read in one snapshot with `horizon`): fills
/// gaps that appeared, records new gaps, drops gaps that can no longer be filled. Returns
/// whether anything changed and the activities to apply.
fn advance(
    state: &mut CompletionState,
    activities: &[Activity],
    horizon: Horizon,
    report: &mut CatchUpReport,
) -> (bool, Vec<Activity>) {
    let mut changed = false;
    let found: HashSet<ActivityId> = activities.iter().map(|a| a.id).collect();
    let before = state.gaps.len();
    state.gaps.retain(|g| !found.contains(&g.id));
    report.gaps_filled += (before - state.gaps.len()) as u64;
    changed |= before != state.gaps.len();
    let mark = horizon.mark();
    let mut applied = Vec::with_capacity(activities.len());
    let mut expected = state.last_activity_id.0 + 1;
    for a in activities {
        if a.id > state.last_activity_id {
            for missing in expected.max(state.last_activity_id.0 + 1)..a.id.0 {
                state.gaps.push(Gap {
                    id: ActivityId(missing),
                    mark,
                });
            }
            expected = a.id.0 + 1;
        }
        applied.push(a.clone());
    }
    if let Some(last) = activities
        .iter()
        .rev()
        .find(|a| a.id > state.last_activity_id)
    {
        state.last_activity_id = last.id;
        state.fingerprint = last.fingerprint;
        changed = true;
    }
    let before = state.gaps.len();
    // A gap first missed by this very read settles only if nothing was in flight.
    state.gaps.retain(|g| !horizon.settles(g.mark));
    let dropped = before - state.gaps.len();
    if dropped > 0 {
        tracing::info!(
            dropped,
            "dropped gaps that no transaction in flight can fill (rolled back, or activities \
             removed by retention)"
        );
    }
    report.gaps_dropped += dropped as u64;
    changed |= dropped > 0;
    (changed, applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::NodeId;

    fn act(id: i64) -> Activity {
        Activity {
            id: ActivityId(id),
            kind: ActivityKind::Update,
            node_id: NodeId(1),
            path: "/Root".into(),
            old_path: None,
            creation_date: time::OffsetDateTime::UNIX_EPOCH,
            fingerprint: id * 10,
        }
    }

    #[test]
    fn gaps_are_kept_until_the_horizon_passes_them() {
        let mut s = CompletionState::default();
        let mut r = CatchUpReport::default();
        let h1 = Horizon::Snapshot {
            xmin: 100,
            xmax: 105,
        };
        let (changed, applied) = advance(&mut s, &[act(1), act(2), act(5)], h1, &mut r);
        assert!(changed);
        assert_eq!(applied.len(), 3);
        assert_eq!(s.to_string(), "5(3,4)");
        assert_eq!(s.fingerprint, 50);
        // 4 commits late; 3 is still missing but transactions from before are still running.
        let h2 = Horizon::Snapshot {
            xmin: 104,
            xmax: 110,
        };
        advance(&mut s, &[act(4)], h2, &mut r);
        assert_eq!(s.to_string(), "5(3)");
        assert_eq!(r.gaps_filled, 1);
        // Everything in flight at the first read has finished: 3 was rolled back.
        let h3 = Horizon::Snapshot {
            xmin: 105,
            xmax: 111,
        };
        let (changed, _) = advance(&mut s, &[], h3, &mut r);
        assert!(changed);
        assert_eq!(s.to_string(), "5");
        assert_eq!(r.gaps_dropped, 1);
        let (changed, _) = advance(&mut s, &[], h3, &mut r);
        assert!(!changed);
    }

    #[test]
    fn sqlite_never_keeps_gaps() {
        let mut s = CompletionState::default();
        let mut r = CatchUpReport::default();
        advance(&mut s, &[act(1), act(3)], Horizon::AllCommitted, &mut r);
        assert_eq!(s.to_string(), "3");
    }
}
