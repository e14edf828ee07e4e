//! The archiver of a serving repository: every committed write transaction is appended to
//! a spool file in the data folder while the writer still holds the database (an append,
//! no fsync: a kill of the process loses nothing the page cache has), and a shipping thread
//! closes the spool file every half second and uploads it as one object of changes.
//!
//! A slow or unreachable repository never slows or fails a write: the spool grows and the
//! lag with it (logged, `cairn_archive_lag_seconds`), and shipping catches up, in order,
//! when the repository answers again. The spool is bounded (`spool_limit`, by default [`SPOOL_LIMIT`]): past it,
//! changes are no longer kept (the chain breaks, and says so); once the spool has drained,
//! a new base backup starts a new chain. A spool left by a crash is shipped at the next
//! start, before anything new.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::collections::HashSet;

use cairn_store::archive::ChangeRecord;
use cairn_store::files::BlobStore;
use cairn_store::Store;
use serde::{Deserialize, Serialize};

use super::segment::{decode, encode, SegmentRange, CHANGES_PREFIX};
use crate::clock::{format_ms, now_ms};
use crate::error::{io, Result};
use crate::repo::Repository;

/// The most the spool may hold before changes are no longer kept, unless `[backup.archive]`
/// says otherwise (`spool_limit`): 1 GiB.
pub const SPOOL_LIMIT: u64 = 1 << 30;
/// How often the spool is closed and shipped.
pub const SHIP_EVERY: Duration = Duration::from_millis(500);
/// The spool's folder in the data folder.
pub const SPOOL_DIR: &str = "archive-spool";

/// What the archiver has done, for `GetBackupPolicies` and `/metrics`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveStatus {
    /// The repository changes go to.
    pub repository: String,
    /// The last change shipped.
    pub shipped_seq: i64,
    /// When that change committed (RFC 3339).
    pub shipped_until: Option<String>,
    /// PostgreSQL: the WAL position archived (`X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_lsn: Option<String>,
    /// Bytes in the spool, not yet shipped.
    pub pending_bytes: u64,
    /// Seconds the oldest change not yet shipped has waited (0 when none waits).
    pub lag_seconds: f64,
    /// Why shipping fails now, while it does.
    pub error: Option<String>,
    /// Why the chain of changes is broken (until a new base backup), when it is.
    pub broken: Option<String>,
}

struct Spool {
    dir: PathBuf,
    /// The file being written, and its path: never shipped until closed.
    file: Option<(File, PathBuf)>,
    /// The commit time (ms) of the first change of the file being written.
    open_first_ms: Option<i64>,
    /// The commit time (ms) of the oldest change in the closed files not yet shipped.
    closed_first_ms: Option<i64>,
}

/// The earlier of two optional times.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Spool {
    /// The commit time of the oldest change not yet shipped.
    fn oldest_ms(&self) -> Option<i64> {
        earliest(self.open_first_ms, self.closed_first_ms)
    }
}

struct Shared {
    repo: Repository,
    spool: Mutex<Spool>,
    spooled: AtomicU64,
    /// Changes are dropped (the spool is full) until the spool has drained.
    dropping: AtomicBool,
    /// The spool's bound in bytes.
    limit: u64,
    status: Mutex<ArchiveStatus>,
    stopping: AtomicBool,
    /// A base backup is needed (a new chain) until one finishes.
    need_base: AtomicBool,
    /// Counts the breaks of the chain: a base counts only for the breaks before it started.
    breaks: AtomicU64,
    /// The last change handed to the spool (-1: none yet): a next one that does not follow
    /// it (a write the capture missed) starts a new chain.
    last_seq: std::sync::atomic::AtomicI64,
    /// The repository's blob store, whose blobs are shipped before the changes that name
    /// them ([`super::blobs`]).
    blobs: Arc<dyn BlobStore>,
    /// The blobs the archive holds (read from it at the first shipment).
    shipped_blobs: Mutex<Option<HashSet<String>>>,
}

/// Continuous archiving of one SQLite repository (see the module documentation).
pub struct Archiver {
    shared: Arc<Shared>,
    store: Arc<Store>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How the archiver has base backups taken (the server's `archive-base` policy).
pub trait BaseTaker: Send + Sync {
    /// Starts a base backup now; true when one started (false: another backup runs).
    fn start(&self) -> bool;
    /// True when a base backup started at or after `t` has finished.
    fn finished_since(&self, t: std::time::SystemTime) -> bool;
}

/// How long a base that was started and has not finished (it failed, say) is waited for
/// before another is started.
const BASE_RETRY: Duration = Duration::from_secs(60);

impl Shared {
    fn append(&self, r: &ChangeRecord) {
        let before = self.last_seq.swap(r.seq, Ordering::SeqCst);
        if before >= 0 && r.seq != before + 1 {
            tracing::warn!(
                "archive: change {} follows {before}, a write was not recorded; a new base \
                 backup starts a new chain",
                r.seq
            );
            self.want_base();
        }
        if self.dropping.load(Ordering::SeqCst) {
            return;
        }
        let mut bytes = Vec::with_capacity(r.changeset.len() + 20);
        encode(r, &mut bytes);
        let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        let written = self.spooled.load(Ordering::SeqCst);
        if written + bytes.len() as u64 > self.limit {
            self.breaks.fetch_add(1, Ordering::SeqCst);
            self.dropping.store(true, Ordering::SeqCst);
            let why = format!(
                "the spool reached its bound of {} bytes (spool_limit) while the repository did \
                 not take it; changes from {} on are not archived until the spool has drained \
                 and a new base backup is taken",
                self.limit, r.seq
            );
            tracing::error!("archive: {why}");
            self.status.lock().unwrap_or_else(|p| p.into_inner()).broken = Some(why);
            return;
        }
        if spool.file.is_none() {
            let path = spool.dir.join(format!("{:020}.spool", r.seq));
            match File::create(&path) {
                Ok(f) => {
                    spool.file = Some((f, path));
                    spool.open_first_ms = Some(r.time_ms);
                }
                Err(e) => {
                    self.break_chain(format!("cannot create {}: {e}", path.display()));
                    return;
                }
            }
        }
        let result = spool
            .file
            .as_mut()
            .map(|(f, _)| f.write_all(&bytes))
            .unwrap_or(Ok(()));
        if let Err(e) = result {
            // A full disk, say: what was written of this record is cut off by the reader.
            spool.file = None;
            self.break_chain(format!("cannot write the archive spool: {e}"));
            return;
        }
        self.spooled.fetch_add(bytes.len() as u64, Ordering::SeqCst);
    }

    /// Reads where the repository's changes end (after the leftover spool was shipped) and
    /// captures the store's changes from here on.
    fn begin_capture(self: &Arc<Self>, store: &Store) -> Result<()> {
        let archived = last_archived(&self.repo)?;
        if let Some(last) = archived.filter(|&l| store.archive_seq().is_ok_and(|s| s < l)) {
            // A database behind its archive (restored to an earlier point) goes on from past
            // the archive's last change: its new history must not reuse those numbers.
            store.archive_seq_past(last)?;
        }
        let sink = self.clone();
        let at = store.capture_changes(Some(Arc::new(move |r: &ChangeRecord| sink.append(r))))?;
        // Unless a change came in between (it set its own number).
        let _ = self
            .last_seq
            .compare_exchange(-1, at, Ordering::SeqCst, Ordering::SeqCst);
        if archived != Some(at) {
            tracing::info!(
                database = at,
                archived = archived.unwrap_or(0),
                "archive: a new chain of changes starts with a base backup"
            );
            self.want_base();
        }
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.shipped_seq = s.shipped_seq.max(archived.unwrap_or(0));
        s.error = None;
        Ok(())
    }

    /// The chain needs a new base (one started before now does not do).
    fn want_base(&self) {
        self.breaks.fetch_add(1, Ordering::SeqCst);
        self.need_base.store(true, Ordering::SeqCst);
    }

    fn break_chain(&self, why: String) {
        tracing::error!("archive: {why}; the chain of changes is broken until a new base");
        self.breaks.fetch_add(1, Ordering::SeqCst);
        self.dropping.store(true, Ordering::SeqCst);
        self.status.lock().unwrap_or_else(|p| p.into_inner()).broken = Some(why);
    }

    /// Closes the spool file being written, so that it can be shipped.
    fn rotate(&self) {
        let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
        spool.file = None;
        spool.closed_first_ms = earliest(spool.closed_first_ms, spool.open_first_ms.take());
    }

    /// Ships the blobs the archive lacks: every blob in the store now, which includes every
    /// blob named by a change closed before now (a blob is durable before the transaction
    /// that names it commits). False when it failed (no change may be shipped then).
    fn ship_blobs(&self) -> bool {
        let mut shipped = self.shipped_blobs.lock().unwrap_or_else(|p| p.into_inner());
        if shipped.is_none() {
            match super::blobs::archived(&**self.repo.objects()) {
                Ok(held) => *shipped = Some(held),
                Err(e) => {
                    self.failed(e.to_string());
                    return false;
                }
            }
        }
        let Some(held) = shipped.as_mut() else {
            return false;
        };
        match super::blobs::ship_new(&*self.blobs, &**self.repo.objects(), held) {
            Ok(_) => true,
            Err(e) => {
                self.failed(format!("ship the files' blobs: {e}"));
                false
            }
        }
    }

    /// Ships every closed spool file, oldest first, after the blobs they may name; stops at
    /// the first failure.
    fn ship(&self) {
        self.rotate();
        // Writes that land from here on open a new spool file.
        fail::fail_point!("archive::rotated");
        if !self.ship_blobs() {
            return;
        }
        let dir = self
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dir
            .clone();
        // Listed first (read to the end), then the open file asked for: a file created
        // after the listing is not in it, and one created before it is the open one.
        let listed: std::io::Result<Vec<PathBuf>> =
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect());
        // A file opened by a write since the rotation is being written: not shipped now
        // (it was, and removed while written to, before this was so).
        let open = self
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file
            .as_ref()
            .map(|(_, p)| p.clone());
        let mut files: Vec<PathBuf> = match listed {
            Ok(paths) => paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "spool"))
                .filter(|p| Some(p) != open.as_ref())
                .collect(),
            Err(e) => {
                self.failed(format!("read {}: {e}", dir.display()));
                return;
            }
        };
        files.sort();
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    self.failed(format!("read {}: {e}", path.display()));
                    return;
                }
            };
            let (records, used) = decode(&bytes);
            if let Some(range) = SegmentRange::of(&records) {
                if let Err(e) = self.repo.objects().put(&range.key(), &bytes[..used]) {
                    self.failed(e.to_string());
                    return;
                }
                let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                if s.error.take().is_some() {
                    tracing::warn!("archive: shipping works again");
                }
                s.shipped_seq = range.last;
                s.shipped_until = Some(format_ms(range.last_ms));
            }
            if let Err(e) = std::fs::remove_file(&path) {
                self.failed(format!("remove {}: {e}", path.display()));
                return;
            }
            self.spooled.fetch_sub(
                (bytes.len() as u64).min(self.spooled.load(Ordering::SeqCst)),
                Ordering::SeqCst,
            );
        }
        // Everything closed is shipped: the spool holds only what came since the rotation.
        let oldest = {
            let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            spool.closed_first_ms = None;
            spool.oldest_ms()
        };
        if oldest.is_none() && self.dropping.load(Ordering::SeqCst) {
            // Drained: keep changes again, and start a new chain with a new base.
            self.spooled.store(0, Ordering::SeqCst);
            self.dropping.store(false, Ordering::SeqCst);
            self.want_base();
            tracing::warn!("archive: the spool has drained; a new base backup starts a new chain");
        }
    }

    fn failed(&self, why: String) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.error.as_deref() != Some(why.as_str()) {
            tracing::warn!("archive: shipping fails, changes wait in the spool: {why}");
        }
        s.error = Some(why);
    }
}

impl Archiver {
    /// Starts archiving `store` (SQLite) into `repo`. A thread ships a leftover spool
    /// first, reads where the repository's changes end, and captures every change from
    /// then on, retrying while the repository cannot be reached (the server serves
    /// meanwhile; what is written before the capture begins is in the base backup that
    /// starts the chain). `bases` takes a base when the chain needs one: the repository's
    /// last change is not the database's position (writes nothing archived, a restore),
    /// or `has_base` is false, or a change was not recorded.
    pub fn start(
        data_dir: &Path,
        store: Arc<Store>,
        repo: Repository,
        has_base: bool,
        bases: Box<dyn BaseTaker>,
        spool_limit: u64,
    ) -> Result<Arc<Archiver>> {
        let dir = data_dir.join(SPOOL_DIR);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let spooled = std::fs::read_dir(&dir)
            .map_err(io(format!("read {}", dir.display())))?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        let shared = Arc::new(Shared {
            status: Mutex::new(ArchiveStatus {
                repository: repo.url().display(),
                ..ArchiveStatus::default()
            }),
            repo,
            spool: Mutex::new(Spool {
                dir,
                file: None,
                open_first_ms: None,
                closed_first_ms: None,
            }),
            spooled: AtomicU64::new(spooled),
            dropping: AtomicBool::new(false),
            limit: spool_limit,
            stopping: AtomicBool::new(false),
            need_base: AtomicBool::new(!has_base),
            breaks: AtomicU64::new(0),
            last_seq: std::sync::atomic::AtomicI64::new(-1),
            blobs: store.blobs(),
            shipped_blobs: Mutex::new(None),
        });
        let me = Arc::new(Archiver {
            shared: shared.clone(),
            store: store.clone(),
            thread: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("cairn-archive".into())
            .spawn(move || {
                let mut capturing = false;
                // A base started and not yet seen finished: when.
                let mut base_started: Option<(std::time::SystemTime, Instant, u64)> = None;
                let mut last = Instant::now() - SHIP_EVERY;
                while !shared.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if last.elapsed() < SHIP_EVERY {
                        continue;
                    }
                    last = Instant::now();
                    shared.ship();
                    if !capturing {
                        match shared.begin_capture(&store) {
                            Ok(()) => capturing = true,
                            Err(e) => {
                                shared.failed(format!("{e} (not archiving yet; retrying)"));
                                continue;
                            }
                        }
                    }
                    // No base while changes are dropped: the chain after it would have holes.
                    if !shared.need_base.load(Ordering::SeqCst)
                        || shared.dropping.load(Ordering::SeqCst)
                    {
                        continue;
                    }
                    match base_started {
                        Some((at, _, breaks)) if bases.finished_since(at) => {
                            base_started = None;
                            // A break since it started needs a base after it: the next round.
                            if shared.breaks.load(Ordering::SeqCst) == breaks {
                                shared.need_base.store(false, Ordering::SeqCst);
                                let mut s = shared.status.lock().unwrap_or_else(|p| p.into_inner());
                                s.broken = None;
                            }
                        }
                        Some((_, when, _)) if when.elapsed() < BASE_RETRY => {}
                        _ => {
                            let breaks = shared.breaks.load(Ordering::SeqCst);
                            let at = std::time::SystemTime::now();
                            if bases.start() {
                                base_started = Some((at, Instant::now(), breaks));
                            }
                        }
                    }
                }
            })
            .map_err(io("start the archive thread"))?;
        *me.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(me)
    }

    /// What it has done; the lag and the spool as they are now (also while a shipment
    /// hangs on an unresponsive repository).
    pub fn status(&self) -> ArchiveStatus {
        let oldest = self
            .shared
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .oldest_ms();
        let mut s = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.lag_seconds = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        s.pending_bytes = self.shared.spooled.load(Ordering::SeqCst);
        s
    }

    /// Stops capturing, ships what the spool holds (what cannot be shipped now is shipped
    /// at the next start), and stops the thread.
    pub fn stop(&self) {
        if let Err(e) = self.store.capture_changes(None) {
            tracing::warn!("archive: {e}");
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.shared.ship();
    }

    /// Its lines of `/metrics`.
    pub fn metrics_text(status: &ArchiveStatus) -> String {
        format!(
            "# HELP cairn_archive_lag_seconds Seconds the oldest change not yet archived has waited.\n\
             # TYPE cairn_archive_lag_seconds gauge\n\
             cairn_archive_lag_seconds {}\n\
             # HELP cairn_archive_shipped_seq The last change archived.\n\
             # TYPE cairn_archive_shipped_seq gauge\n\
             cairn_archive_shipped_seq {}\n\
             # HELP cairn_archive_pending_bytes Changes in the spool, not yet archived.\n\
             # TYPE cairn_archive_pending_bytes gauge\n\
             cairn_archive_pending_bytes {}\n\
             # HELP cairn_archive_broken 1 while the chain of changes is broken (until a new base).\n\
             # TYPE cairn_archive_broken gauge\n\
             cairn_archive_broken {}\n",
            status.lag_seconds,
            status.shipped_seq,
            status.pending_bytes,
            u8::from(status.broken.is_some())
        )
    }
}

/// The last change the repository holds, if any.
pub fn last_archived(repo: &Repository) -> Result<Option<i64>> {
    Ok(repo
        .objects()
        .list(CHANGES_PREFIX)?
        .iter()
        .filter_map(|(k, _)| SegmentRange::parse(k))
        .map(|r| r.last)
        .max())
}
