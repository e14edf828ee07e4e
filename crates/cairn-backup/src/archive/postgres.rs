//! Continuous archiving and restore to a time on PostgreSQL, with PostgreSQL's own machinery
//! (`cairn_store::pg_physical`): Cairn runs `pg_receivewal` (through a replication slot) and
//! ships what it writes into the repository, takes base backups with `pg_basebackup`, and
//! restores with PostgreSQL's archive recovery to `recovery_target_time`.
//!
//! In the repository, under `pg/SYSTEM_ID/` (a cluster's system identifier, so that two
//! clusters never mix):
//! - `wal/SEGMENT`: a whole WAL segment; `wal/SEGMENT.partial-OFFSET`: the bytes of the
//!   segment being written from OFFSET on, shipped every half second (no more than what was
//!   written since), and removed once the whole segment is shipped; `wal/N.history`: the
//!   history of timeline N.
//! - `reach/TLI-LSN-MS`: everything committed by MS (the server's clock) ends at or before
//!   LSN on timeline TLI, and the WAL up to LSN is shipped. The newest says how far the
//!   archive reaches; one is kept per segment.
//! - `base/NAME/base.tar.NNNN` (parts of at most 64 MiB) and `base/NAME/base.json` (written
//!   last: a base without it is unfinished).
//!
//! Index snapshots are the `archive-index` policy's index backups, as on SQLite.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_store::pg_physical::{
    self, base_backup, format_lsn, parse_segment_name, Lsn, ReceiverEvent, WalPosition,
    WalReceiver, WalWatch,
};
use cairn_store::CancelToken;
use serde::{Deserialize, Serialize};

use super::shipper::{ArchiveStatus, SHIP_EVERY};
use crate::clock::{format_ms, now_ms};
use crate::error::{io, BackupError, Result};
use crate::repo::Repository;

/// The folder of the received WAL in the data folder.
pub const WAL_DIR: &str = "archive-wal";
/// Where a base backup is written before it is shipped.
const BASE_STAGING: &str = "archive-base-staging";
/// The most bytes in one object of a base backup.
const PART_BYTES: usize = 64 << 20;

/// The repository's prefix of a cluster.
fn cluster_prefix(system_id: &str) -> String {
    format!("pg/{system_id}/")
}

/// What `base.json` says of a base backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PgBaseInfo {
    /// Its name.
    pub name: String,
    /// The cluster's system identifier.
    pub system_id: String,
    /// The repository (Cairn's) it belongs to.
    pub repository_id: String,
    /// When `pg_basebackup` started (RFC 3339).
    pub started_at: String,
    /// When it ended: the earliest time it restores.
    pub finished_at: String,
    /// Its timeline.
    pub timeline: u32,
    /// Where recovery starts.
    pub start_lsn: String,
    /// Where the copy is consistent.
    pub end_lsn: String,
    /// The WAL segment size.
    pub segment_size: u64,
    /// Objects of the tar.
    pub parts: u32,
    /// Bytes of the tar.
    pub bytes: u64,
}

/// A reach record (see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reach {
    /// The timeline.
    pub timeline: u32,
    /// The WAL position shipped.
    pub lsn: Lsn,
    /// The time by which every commit is within it.
    pub at_ms: i64,
}

impl Reach {
    fn key(&self, system_id: &str) -> String {
        format!(
            "{}reach/{:08X}-{:016X}-{}",
            cluster_prefix(system_id),
            self.timeline,
            self.lsn,
            self.at_ms
        )
    }

    fn parse(name: &str) -> Option<Reach> {
        let mut parts = name.split('-');
        let r = Reach {
            timeline: u32::from_str_radix(parts.next()?, 16).ok()?,
            lsn: u64::from_str_radix(parts.next()?, 16).ok()?,
            at_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(r)
    }
}

struct Shared {
    repo: Repository,
    url: String,
    dir: PathBuf,
    repository_id: String,
    base_every: Duration,
    stopping: AtomicBool,
    status: Mutex<ArchiveStatus>,
    receiver_error: Mutex<Option<String>>,
    need_base: AtomicBool,
}

/// Continuous archiving of a PostgreSQL database (see the module).
pub struct PgArchiver {
    shared: Arc<Shared>,
    receiver: Mutex<Option<WalReceiver>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What the shipping thread keeps between rounds.
#[derive(Default)]
struct Shipping {
    system_id: Option<String>,
    /// Probes of the server's position, oldest first, not yet known shipped.
    probes: Vec<WalPosition>,
    /// The last reach written.
    reach: Option<Reach>,
    /// Per segment being written: how many of its bytes are shipped.
    partial: Option<(String, u64)>,
    /// Segments (timeline, number) shipped whole.
    whole: BTreeSet<(u32, u64)>,
    /// The highest shipped segment per timeline was read from the repository.
    known: bool,
}

impl PgArchiver {
    /// Starts archiving the database of `url` into `repo`: the receiver, the shipping thread
    /// and the base thread (a base at once when the repository has none for this cluster's
    /// timeline, then every `base_every`).
    pub fn start(
        data_dir: &Path,
        url: &str,
        repository_id: &str,
        repo: Repository,
        base_every: Duration,
    ) -> Result<Arc<PgArchiver>> {
        let dir = data_dir.join(WAL_DIR);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let shared = Arc::new(Shared {
            status: Mutex::new(ArchiveStatus {
                repository: repo.url().display(),
                ..ArchiveStatus::default()
            }),
            repo,
            url: url.to_string(),
            dir: dir.clone(),
            repository_id: repository_id.to_string(),
            base_every,
            stopping: AtomicBool::new(false),
            receiver_error: Mutex::new(None),
            need_base: AtomicBool::new(false),
        });
        let told = shared.clone();
        let receiver = WalReceiver::start(
            url,
            &dir,
            Box::new(move |e| {
                let error = match e {
                    ReceiverEvent::Running => None,
                    ReceiverEvent::Failed(why) => Some(why),
                    ReceiverEvent::Lost(why) => {
                        tracing::error!("archive: {why}");
                        told.need_base.store(true, Ordering::SeqCst);
                        told.status.lock().unwrap_or_else(|p| p.into_inner()).broken =
                            Some(why.clone());
                        Some(why)
                    }
                };
                *told
                    .receiver_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = error;
            }),
        )?;
        let me = Arc::new(PgArchiver {
            shared: shared.clone(),
            receiver: Mutex::new(Some(receiver)),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let shipping = std::thread::Builder::new()
            .name("cairn-archive".into())
            .spawn(move || {
                let mut state = Shipping::default();
                let mut watch = WalWatch::new(&s.url);
                let mut last = Instant::now() - SHIP_EVERY;
                while !s.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if last.elapsed() >= SHIP_EVERY {
                        last = Instant::now();
                        s.ship_round(&mut watch, &mut state);
                    }
                }
                // What was received before the stop.
                s.ship_round(&mut watch, &mut state);
            })
            .map_err(io("start the archive thread"))?;
        let s = shared;
        let bases = std::thread::Builder::new()
            .name("cairn-archive-base".into())
            .spawn(move || s.base_loop())
            .map_err(io("start the archive's base thread"))?;
        me.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([shipping, bases]);
        Ok(me)
    }

    /// What it has done, for `GetBackupPolicies` and `/metrics`.
    pub fn status(&self) -> ArchiveStatus {
        let mut s = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if s.error.is_none() {
            s.error = self
                .shared
                .receiver_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
        s.pending_bytes = pending_bytes(&self.shared.dir);
        s
    }

    /// Stops receiving, ships what was received, stops the threads.
    pub fn stop(&self) {
        if let Some(mut r) = self
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            r.stop();
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

/// Bytes received and not yet shipped (whole segments and the one being written count as
/// what is in their files).
fn pending_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Shared {
    fn set_error(&self, e: Option<String>) {
        if let Some(e) = &e {
            tracing::warn!("archive: {e}");
        }
        self.status.lock().unwrap_or_else(|p| p.into_inner()).error = e;
    }

    /// One round: read the server's position, ship what the receiver wrote, and record how
    /// far the archive reaches.
    fn ship_round(&self, watch: &mut WalWatch, st: &mut Shipping) {
        let pos = match watch.position() {
            Ok(p) => p,
            Err(e) => {
                self.set_error(Some(format!("cannot read the server's WAL position: {e}")));
                return;
            }
        };
        let system_id = st
            .system_id
            .get_or_insert_with(|| pos.system_id.clone())
            .clone();
        if !st.known {
            match self.read_shipped(&system_id, st) {
                Ok(()) => st.known = true,
                Err(e) => {
                    self.set_error(Some(format!("cannot read the repository: {e}")));
                    return;
                }
            }
        }
        if st
            .probes
            .last()
            .is_none_or(|p| p.insert_lsn < pos.insert_lsn)
        {
            st.probes.push(pos.clone());
        } else if let Some(last) = st.probes.last_mut() {
            // Nothing written since: the same position, at a later time.
            last.at_ms = pos.at_ms;
        }
        let Some(received) = pos.received_lsn else {
            self.set_error(Some("the receiver has not started yet".into()));
            return;
        };
        match self.ship_files(&system_id, pos.segment_size, received, st) {
            Ok(true) => {}
            // A segment was completed while it was shipped: the rest goes next round.
            Ok(false) => return,
            Err(e) => {
                self.set_error(Some(format!("cannot ship the WAL: {e}")));
                self.update_lag(st, &pos);
                return;
            }
        }
        // The newest probe the shipped WAL covers.
        let covered = st.probes.iter().rposition(|p| p.insert_lsn <= received);
        if let Some(i) = covered {
            let p = st.probes[i].clone();
            st.probes.drain(..i);
            let reach = Reach {
                timeline: p.timeline,
                lsn: p.insert_lsn,
                at_ms: p.at_ms,
            };
            let moved = st
                .reach
                .is_none_or(|r| r.lsn < reach.lsn || r.timeline != reach.timeline);
            if moved {
                if let Err(e) = self.write_reach(&system_id, pos.segment_size, reach, st.reach) {
                    self.set_error(Some(format!("cannot record the archive's reach: {e}")));
                    self.update_lag(st, &pos);
                    return;
                }
                st.reach = Some(reach);
            }
        }
        self.set_error(None);
        self.update_lag(st, &pos);
    }

    fn update_lag(&self, st: &Shipping, pos: &WalPosition) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = st.reach {
            s.shipped_until = Some(format_ms(r.at_ms));
            s.shipped_lsn = Some(format_lsn(r.lsn));
        }
        // Written and not shipped: how long the oldest such write has waited.
        let behind = st.reach.is_none_or(|r| r.lsn < pos.insert_lsn);
        s.lag_seconds = if behind {
            let since = st
                .probes
                .iter()
                .find(|p| st.reach.is_none_or(|r| p.insert_lsn > r.lsn))
                .map(|p| p.at_ms)
                .or(st.reach.map(|r| r.at_ms))
                .unwrap_or(pos.at_ms);
            (now_ms() - since).max(0) as f64 / 1000.0
        } else {
            0.0
        };
    }

    /// What the repository already holds of this cluster (after a restart).
    fn read_shipped(&self, system_id: &str, st: &mut Shipping) -> Result<()> {
        let prefix = cluster_prefix(system_id);
        for (key, _) in self.repo.objects().list(&format!("{prefix}reach/"))? {
            if let Some(r) = key.rsplit('/').next().and_then(Reach::parse) {
                st.reach = st.reach.max(Some(r));
            }
        }
        Ok(())
    }

    /// Ships whole segments and history files (then removes them here), and the new bytes of
    /// the segment being written up to `received`: true when all of the WAL up to `received`
    /// is shipped.
    fn ship_files(
        &self,
        system_id: &str,
        segment_size: u64,
        received: Lsn,
        st: &mut Shipping,
    ) -> Result<bool> {
        let prefix = format!("{}wal/", cluster_prefix(system_id));
        let objects = self.repo.objects();
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io(format!("read {}", self.dir.display())))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in &names {
            let path = self.dir.join(name);
            if name.ends_with(".history") {
                let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
                objects.put(&format!("{prefix}{name}"), &bytes)?;
                remove(&path);
                continue;
            }
            let Some((tli, seg)) = parse_segment_name(name, segment_size) else {
                continue;
            };
            let bytes = std::fs::read(&path).map_err(io(format!("read {}", path.display())))?;
            self.check_gap(st, tli, seg);
            objects.put(&format!("{prefix}{name}"), &bytes)?;
            st.whole.insert((tli, seg));
            // Its pieces are no longer needed.
            for (k, _) in objects.list(&format!("{prefix}{name}.partial-"))? {
                objects.delete(&k)?;
            }
            if st.partial.as_ref().is_some_and(|(n, _)| n == name) {
                st.partial = None;
            }
            remove(&path);
        }
        for name in names.iter().filter_map(|n| n.strip_suffix(".partial")) {
            let Some((tli, seg)) = parse_segment_name(name, segment_size) else {
                continue;
            };
            let start = seg * segment_size;
            let upto = received.saturating_sub(start).min(segment_size);
            let mut shipped = match &st.partial {
                Some((n, off)) if n == name => *off,
                _ => self.pieces_end(&prefix, name)?,
            };
            if received >= start + segment_size {
                // Past its end and still not renamed whole: left by a receiver that went on
                // elsewhere (a slot made again); what it lacks is a gap, not shipped as zeros.
                continue;
            }
            if received < start || upto <= shipped {
                st.partial = Some((name.to_string(), shipped));
                continue;
            }
            self.check_gap(st, tli, seg);
            let path = self.dir.join(format!("{name}.partial"));
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Renamed whole meanwhile: shipped next round.
                Err(_) => return Ok(false),
            };
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(shipped))
                .map_err(io(format!("read {}", path.display())))?;
            let mut bytes = vec![0u8; (upto - shipped) as usize];
            file.read_exact(&mut bytes)
                .map_err(io(format!("read {}", path.display())))?;
            objects.put(&format!("{prefix}{name}.partial-{shipped:08X}"), &bytes)?;
            shipped = upto;
            st.partial = Some((name.to_string(), shipped));
        }
        Ok(true)
    }

    /// Where the shipped pieces of segment `name` end (0: none).
    fn pieces_end(&self, prefix: &str, name: &str) -> Result<u64> {
        let mut end = 0u64;
        for (k, size) in self
            .repo
            .objects()
            .list(&format!("{prefix}{name}.partial-"))?
        {
            if let Some(off) = k
                .rsplit_once(".partial-")
                .and_then(|(_, o)| u64::from_str_radix(o, 16).ok())
            {
                if off == end {
                    end = off + size;
                }
            }
        }
        Ok(end)
    }

    /// A segment that does not follow the last one shipped: the chain is broken there, and
    /// a new base backup starts a new one.
    fn check_gap(&self, st: &mut Shipping, tli: u32, seg: u64) {
        let last = st
            .whole
            .iter()
            .filter(|(t, _)| *t == tli)
            .map(|(_, s)| *s)
            .max();
        if let Some(last) = last {
            if seg > last + 1 {
                let why = format!(
                    "WAL segments {}..{} of timeline {tli} were never received (the server \
                     dropped them before the receiver had them); a new base backup starts a \
                     new chain",
                    last + 1,
                    seg - 1
                );
                tracing::error!("archive: {why}");
                self.status.lock().unwrap_or_else(|p| p.into_inner()).broken = Some(why);
                self.need_base.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Records `reach`, and removes the previous record when it is of the same segment.
    fn write_reach(
        &self,
        system_id: &str,
        segment_size: u64,
        reach: Reach,
        previous: Option<Reach>,
    ) -> Result<()> {
        self.repo.objects().put(&reach.key(system_id), b"")?;
        if let Some(p) = previous {
            if p.timeline == reach.timeline && p.lsn / segment_size == reach.lsn / segment_size {
                self.repo.objects().delete(&p.key(system_id))?;
            }
        }
        Ok(())
    }

    /// Takes a base backup when the archive needs one, and every `base_every`.
    fn base_loop(self: Arc<Self>) {
        let mut last_base: Option<Instant> = None;
        let mut last_try: Option<Instant> = None;
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let due = self.need_base.load(Ordering::SeqCst)
                || last_base.is_some_and(|t| t.elapsed() >= self.base_every);
            let known = last_base.is_some() || self.need_base.load(Ordering::SeqCst);
            if !known {
                // Until the shipping thread has read the repository: a base when it has
                // none, else the next one base_every after the newest.
                match self.newest_base_age() {
                    Ok(Some(age)) => {
                        last_base = Some(Instant::now() - age.min(self.base_every));
                    }
                    Ok(None) => {}
                    Err(e) => self.set_error(Some(format!("cannot read the repository: {e}"))),
                }
                continue;
            }
            if !due || last_try.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                continue;
            }
            last_try = Some(Instant::now());
            match self.take_base() {
                Ok(info) => {
                    tracing::info!(name = %info.name, "archive: base backup taken");
                    last_base = Some(Instant::now());
                    last_try = None;
                    self.need_base.store(false, Ordering::SeqCst);
                    self.status.lock().unwrap_or_else(|p| p.into_inner()).broken = None;
                }
                Err(BackupError::Canceled) => return,
                Err(e) => self.set_error(Some(format!("the base backup failed: {e}"))),
            }
        }
    }

    /// How long ago the newest base of this cluster finished (`None`: it has none).
    fn newest_base_age(&self) -> Result<Option<Duration>> {
        let mut watch = WalWatch::new(&self.url);
        let pos = watch.position()?;
        let newest = bases(&self.repo, &pos.system_id)?
            .into_iter()
            .filter(|b| b.timeline == pos.timeline)
            .filter_map(|b| crate::clock::parse_ms(&b.finished_at))
            .max();
        match newest {
            Some(ms) => Ok(Some(Duration::from_millis((now_ms() - ms).max(0) as u64))),
            None => {
                self.need_base.store(true, Ordering::SeqCst);
                Ok(None)
            }
        }
    }

    fn take_base(&self) -> Result<PgBaseInfo> {
        let staging = self.dir.with_file_name(BASE_STAGING);
        let _ = std::fs::remove_dir_all(&staging);
        let cancel = CancelToken::new();
        let stopping = &self.stopping;
        let started_ms = now_ms();
        // The cluster's identity and segment size, before the copy.
        let pos = WalWatch::new(&self.url).position()?;
        let taken = std::thread::scope(|s| {
            let c = cancel.clone();
            let watcher = s.spawn(move || {
                while !c.is_cancelled() {
                    if stopping.load(Ordering::SeqCst) {
                        c.cancel();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let r = base_backup(&self.url, &staging, &cancel);
            cancel.cancel();
            let _ = watcher.join();
            r
        });
        let base = match taken {
            Ok(b) => b,
            Err(cairn_store::StoreError::Cancelled) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(BackupError::Canceled);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e.into());
            }
        };
        let finished_ms = now_ms();
        let name = crate::policy::runner::backup_name(
            crate::policy::ARCHIVE_BASE,
            std::time::UNIX_EPOCH + Duration::from_millis(finished_ms.max(0) as u64),
        );
        let prefix = format!("{}base/{name}/", cluster_prefix(&pos.system_id));
        let shipped = (|| -> Result<PgBaseInfo> {
            let mut file = std::fs::File::open(&base.tar)
                .map_err(io(format!("read {}", base.tar.display())))?;
            let (mut parts, mut bytes) = (0u32, 0u64);
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return Err(BackupError::Canceled);
                }
                let n = read_full(&mut file, &mut buf)
                    .map_err(io(format!("read {}", base.tar.display())))?;
                if n == 0 {
                    break;
                }
                self.repo
                    .objects()
                    .put(&format!("{prefix}base.tar.{parts:04}"), &buf[..n])?;
                parts += 1;
                bytes += n as u64;
            }
            let info = PgBaseInfo {
                name: name.clone(),
                system_id: pos.system_id.clone(),
                repository_id: self.repository_id.clone(),
                started_at: format_ms(started_ms),
                finished_at: format_ms(finished_ms),
                timeline: base.timeline,
                start_lsn: format_lsn(base.start_lsn),
                end_lsn: format_lsn(base.end_lsn),
                segment_size: pos.segment_size,
                parts,
                bytes,
            };
            let json = serde_json::to_vec_pretty(&info)
                .map_err(|e| BackupError::Storage(format!("cannot write base.json: {e}")))?;
            self.repo
                .objects()
                .put(&format!("{prefix}base.json"), &json)?;
            Ok(info)
        })();
        let _ = std::fs::remove_dir_all(&staging);
        shipped
    }
}

/// Reads until `buf` is full or the end.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("archive: cannot remove {}: {e}", path.display());
    }
}

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
                    if off == got {
                        got += len;
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
                if off != bytes.len() as u64 {
                    break;
                }
                bytes.extend(repo.objects().get(key)?);
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

/// What a restore of PostgreSQL to a time did.
#[derive(Clone, Debug)]
pub struct PgRestored {
    /// The time restored to (RFC 3339).
    pub at: String,
    /// The base put back.
    pub base: String,
    /// Bytes of WAL fetched for the recovery.
    pub wal_bytes: u64,
    /// The timeline the restored cluster goes on with.
    pub timeline: u32,
    /// The time was after the last commit the archive holds: all of its WAL was replayed.
    pub replayed_all: bool,
    /// The database's last activity after the recovery.
    pub last_activity_id: i64,
    /// The index put back (`None`: none was not ahead of the database; the next start
    /// rebuilds it).
    pub index_from: Option<String>,
}

/// Restores the PostgreSQL archive of `repo` to `at`: a new cluster in `pg_data` (absent or
/// empty), recovered by PostgreSQL to the time, and into `target`'s data folder the newest
/// index backup of the archive that is not ahead of the recovered database. `target`'s
/// database URL names the database in the cluster (its host and port are those the cluster
/// will be served on; the recovery runs on a port of its own). The cluster is left stopped.
pub fn restore_at_postgres(
    repo: &Repository,
    at: super::RestoreAt,
    target: &crate::restore::RestoreTarget,
    pg_data: &Path,
    identities: Option<&crate::repo::crypt::Identities>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<PgRestored> {
    let cairn_store::DatabaseUrl::Postgres(url) = &target.database else {
        return Err(BackupError::Refused(
            "a PostgreSQL archive restores into a PostgreSQL database: give --database \
             postgres://..."
                .into(),
        ));
    };
    let line = super::timeline(repo, identities)?;
    let reaches: Vec<PgReach> = reaches(repo)?
        .into_iter()
        .filter(|r| {
            r.reach.is_some_and(|x| {
                crate::clock::parse_ms(&r.base.finished_at).is_some_and(|f| x.at_ms >= f)
            })
        })
        .collect();
    let finished = |r: &PgReach| crate::clock::parse_ms(&r.base.finished_at).unwrap_or(i64::MAX);
    let reach_ms = |r: &PgReach| r.reach.map_or(i64::MIN, |x| x.at_ms);
    let window = || {
        if reaches.is_empty() {
            return "it has no PostgreSQL base backup whose WAL reaches its end".to_string();
        }
        reaches
            .iter()
            .map(|r| {
                format!(
                    "{} .. {} (from {})",
                    r.base.finished_at,
                    format_ms(reach_ms(r)),
                    r.base.name
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (chosen, target_time) = match at {
        super::RestoreAt::Latest => {
            let r = reaches
                .iter()
                .max_by_key(|r| (reach_ms(r), finished(r)))
                .ok_or_else(|| {
                    BackupError::NotFound(format!(
                        "{} has no PostgreSQL base backup to restore from",
                        repo.url().display()
                    ))
                })?;
            (r, None)
        }
        super::RestoreAt::Time(t) => {
            let r = reaches
                .iter()
                .filter(|r| finished(r) <= t && t <= reach_ms(r))
                .max_by_key(|r| finished(r))
                .ok_or_else(|| {
                    BackupError::Refused(format!(
                        "{} is outside the restorable window of {}: {}; nothing was changed",
                        format_ms(t),
                        repo.url().display(),
                        window()
                    ))
                })?;
            (r, Some(t))
        }
    };
    let (base, reach) = (
        &chosen.base,
        chosen.reach.unwrap_or(Reach {
            timeline: chosen.base.timeline,
            lsn: 0,
            at_ms: 0,
        }),
    );
    // Before anything is written: PostgreSQL will run as the folder's owner.
    let user = pg_physical::server_user(pg_data)?;
    cancel.check()?;
    progress(0, base.bytes);
    pg_physical::extract_base(&mut base_reader(repo, base), pg_data, user)?;
    progress(base.bytes, base.bytes);
    cancel.check()?;
    let wal_dir = pg_data.join("cairn-restore-wal");
    let wal_bytes = fetch_wal(repo, base, &reach, &wal_dir)?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(io("find a free port for the recovery"))?
        .port();
    // PostgreSQL's own form (it refuses RFC 3339's `T` and `Z` in this setting).
    let target_text = target_time.map(|t| format_ms(t).replacen('T', " ", 1).replace('Z', "+00"));
    let recovered = pg_physical::recover(
        pg_data,
        &wal_dir,
        target_text.as_deref(),
        base.timeline,
        url,
        port,
        cancel,
    )?;
    let during = crate::restore::RestoreTarget {
        data_dir: target.data_dir.clone(),
        database: cairn_store::DatabaseUrl::Postgres(recovered.url.clone()),
    };
    let facts = cairn_store::peek_database(&during.database)?.ok_or_else(|| {
        BackupError::Invalid(format!(
            "the recovered cluster has no Cairn database at {}",
            cairn_store::DatabaseUrl::Postgres(url.clone()).redacted()
        ))
    })?;
    if facts.repository_id != base.repository_id {
        return Err(BackupError::Invalid(format!(
            "the recovered database holds repository {}, its base says {}",
            facts.repository_id, base.repository_id
        )));
    }
    // The index: the newest index backup not ahead of the database; else none (rebuilt).
    let upto = target_time.unwrap_or(i64::MAX);
    let index_from = super::timeline::newer_index(
        repo,
        &line.manifests,
        identities,
        i64::MIN,
        upto,
        &during,
        progress,
        cancel,
    );
    if index_from.is_none() {
        let index = target.data_dir.join(crate::manifest::INDEX_DIR);
        if index.exists() {
            std::fs::remove_dir_all(&index).map_err(io(format!("remove {}", index.display())))?;
        }
    }
    let (timeline, replayed_all) = (recovered.timeline, recovered.replayed_all);
    recovered.finish()?;
    std::fs::remove_dir_all(&wal_dir).map_err(io(format!("remove {}", wal_dir.display())))?;
    Ok(PgRestored {
        at: format_ms(target_time.unwrap_or(reach.at_ms)),
        base: base.name.clone(),
        wal_bytes,
        timeline,
        replayed_all: replayed_all && target_time.is_some(),
        last_activity_id: facts.last_activity_id.0,
        index_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_records_read_back() {
        let r = Reach {
            timeline: 2,
            lsn: 0x1_0300_0028,
            at_ms: 1_765_100_000_123,
        };
        let key = r.key("7400000000000000001");
        assert_eq!(
            key,
            "pg/7400000000000000001/reach/00000002-0000000103000028-1765100000123"
        );
        assert_eq!(Reach::parse(key.rsplit('/').next().unwrap()), Some(r));
        assert_eq!(Reach::parse("2-1"), None);
        assert_eq!(Reach::parse("x-1-2"), None);
    }
}
