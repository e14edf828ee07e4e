//! The archiver of a serving PostgreSQL repository: the WAL receiver, the probe of the
//! server's position, the shipping of what was received, and the base backups.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_store::pg_physical::{
    base_backup, format_lsn, parse_segment_name, Lsn, ReceiverEvent, WalPosition, WalReceiver,
    WalWatch,
};
use cairn_store::CancelToken;

use super::reach::bases;
use super::{cluster_prefix, PgBaseInfo, Reach, WAL_DIR};
use crate::archive::shipper::{ArchiveStatus, SHIP_EVERY};
use crate::clock::{format_ms, now_ms};
use crate::error::{io, BackupError, Result};
use crate::repo::Repository;

/// Where a base backup is written before it is shipped.
const BASE_STAGING: &str = "archive-base-staging";
/// The most bytes in one object of a base backup.
const PART_BYTES: usize = 64 << 20;

struct Shared {
    repo: Repository,
    url: String,
    dir: PathBuf,
    repository_id: String,
    base_every: Duration,
    stopping: CancelToken,
    status: Mutex<ArchiveStatus>,
    receiver_error: Mutex<Option<String>>,
    need_base: AtomicBool,
    /// Counts the breaks of the chain: a base counts only for the breaks before it started.
    breaks: std::sync::atomic::AtomicU64,
    /// Probes of the server's position, oldest first, not yet known shipped (the probe
    /// thread adds them, also while a shipment hangs, so the lag is known then too).
    probes: Mutex<std::collections::VecDeque<Probe>>,
    /// Why the server's position cannot be read, while it cannot.
    probe_error: Mutex<Option<String>>,
    /// The last reach recorded.
    reach: Mutex<Option<Reach>>,
}

/// The server's position, and when it was first seen there.
#[derive(Clone, Debug)]
struct Probe {
    pos: WalPosition,
    first_ms: i64,
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
            stopping: CancelToken::new(),
            receiver_error: Mutex::new(None),
            need_base: AtomicBool::new(false),
            breaks: std::sync::atomic::AtomicU64::new(0),
            probes: Mutex::new(std::collections::VecDeque::new()),
            probe_error: Mutex::new(None),
            reach: Mutex::new(None),
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
                        told.breaks.fetch_add(1, Ordering::SeqCst);
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
                let mut last = Instant::now() - SHIP_EVERY;
                while !s.stopping.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(50));
                    if last.elapsed() >= SHIP_EVERY {
                        last = Instant::now();
                        s.ship_round(&mut state);
                    }
                }
                // What was received before the stop.
                s.probe(&mut WalWatch::new(&s.url));
                s.ship_round(&mut state);
            })
            .map_err(io("start the archive thread"))?;
        let s = shared.clone();
        let probing = std::thread::Builder::new()
            .name("cairn-archive-probe".into())
            .spawn(move || {
                let mut watch = WalWatch::new(&s.url);
                while !s.stopping.is_cancelled() {
                    s.probe(&mut watch);
                    let slept = Instant::now();
                    while slept.elapsed() < SHIP_EVERY / 2 && !s.stopping.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
            .map_err(io("start the archive's probe thread"))?;
        let s = shared;
        let bases = std::thread::Builder::new()
            .name("cairn-archive-base".into())
            .spawn(move || s.base_loop())
            .map_err(io("start the archive's base thread"))?;
        me.threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([shipping, probing, bases]);
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
        let sh = &self.shared;
        for other in [&sh.probe_error, &sh.receiver_error] {
            if s.error.is_none() {
                s.error = other.lock().unwrap_or_else(|p| p.into_inner()).clone();
            }
        }
        // Written and not shipped: how long the oldest such write has waited, as it is now.
        let reach = *sh.reach.lock().unwrap_or_else(|p| p.into_inner());
        let since = sh
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|p| reach.is_none_or(|r| p.pos.insert_lsn > r.lsn))
            .map(|p| p.first_ms);
        s.lag_seconds = since.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
        if let Some(r) = reach {
            s.shipped_until = Some(format_ms(r.at_ms));
            s.shipped_lsn = Some(format_lsn(r.lsn));
        }
        s.pending_bytes = pending_bytes(&sh.dir);
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
        self.shared.stopping.cancel();
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

    /// Reads the server's position into the probes.
    fn probe(&self, watch: &mut WalWatch) {
        let pos = match watch.position() {
            Ok(p) => p,
            Err(e) => {
                let why = format!("cannot read the server's WAL position: {e}");
                tracing::warn!("archive: {why}");
                *self.probe_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                return;
            }
        };
        *self.probe_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut q = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        match q.back_mut() {
            // Nothing written since: the same position, at a later time.
            Some(last) if last.pos.insert_lsn >= pos.insert_lsn => last.pos = pos,
            _ => q.push_back(Probe {
                first_ms: pos.at_ms,
                pos,
            }),
        }
    }

    /// One round: ship what the receiver wrote, and record how far the archive reaches.
    fn ship_round(&self, st: &mut Shipping) {
        let Some(pos) = self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .back()
            .map(|p| p.pos.clone())
        else {
            return;
        };
        let system_id = st
            .system_id
            .get_or_insert_with(|| pos.system_id.clone())
            .clone();
        if !st.known {
            match self.read_shipped(&system_id) {
                Ok(()) => st.known = true,
                Err(e) => {
                    self.set_error(Some(format!("cannot read the repository: {e}")));
                    return;
                }
            }
        }
        let Some(received) = pos.received_lsn else {
            // Said in the status, not logged: the slot is made as the archiver starts.
            self.status.lock().unwrap_or_else(|p| p.into_inner()).error =
                Some("the receiver has not started yet".into());
            return;
        };
        match self.ship_files(&system_id, pos.segment_size, received, st) {
            Ok(true) => {}
            // A segment was completed while it was shipped: the rest goes next round.
            Ok(false) => return,
            Err(e) => {
                self.set_error(Some(format!("cannot ship the WAL: {e}")));
                return;
            }
        }
        // The newest probe the shipped WAL covers (whenever it was taken: every commit by
        // its time ends at or before its position, which is shipped).
        let covered = {
            let mut q = self.probes.lock().unwrap_or_else(|p| p.into_inner());
            let i = q.iter().rposition(|p| p.pos.insert_lsn <= received);
            i.map(|i| {
                q.drain(..i);
                q[0].pos.clone()
            })
        };
        if let Some(p) = covered {
            let reach = Reach {
                timeline: p.timeline,
                lsn: p.insert_lsn,
                at_ms: p.at_ms,
            };
            let before = *self.reach.lock().unwrap_or_else(|p| p.into_inner());
            let moved = before.is_none_or(|r| r.lsn < reach.lsn || r.timeline != reach.timeline);
            if moved {
                if let Err(e) = self.write_reach(&system_id, pos.segment_size, reach, before) {
                    self.set_error(Some(format!("cannot record the archive's reach: {e}")));
                    return;
                }
                *self.reach.lock().unwrap_or_else(|p| p.into_inner()) = Some(reach);
            }
        }
        self.set_error(None);
    }

    /// What the repository already holds of this cluster (after a restart).
    fn read_shipped(&self, system_id: &str) -> Result<()> {
        let prefix = cluster_prefix(system_id);
        let mut reach = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        for (key, _) in self.repo.objects().list(&format!("{prefix}reach/"))? {
            if let Some(r) = key.rsplit('/').next().and_then(Reach::parse) {
                *reach = (*reach).max(Some(r));
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
        let mut pieces: Vec<(u64, u64)> = self
            .repo
            .objects()
            .list(&format!("{prefix}{name}.partial-"))?
            .into_iter()
            .filter_map(|(k, size)| {
                let off = k.rsplit_once(".partial-")?.1;
                Some((u64::from_str_radix(off, 16).ok()?, size))
            })
            .collect();
        pieces.sort();
        let mut end = 0u64;
        for (off, size) in pieces {
            if off <= end {
                end = end.max(off + size);
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
                self.breaks.fetch_add(1, Ordering::SeqCst);
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
        while !self.stopping.is_cancelled() {
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
            let breaks = self.breaks.load(Ordering::SeqCst);
            match self.take_base() {
                Ok(info) => {
                    tracing::info!(name = %info.name, "archive: base backup taken");
                    last_base = Some(Instant::now());
                    last_try = None;
                    // A break while it was taken needs a base after it.
                    if self.breaks.load(Ordering::SeqCst) == breaks {
                        self.need_base.store(false, Ordering::SeqCst);
                        self.status.lock().unwrap_or_else(|p| p.into_inner()).broken = None;
                    }
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
        let started_ms = now_ms();
        // The cluster's identity and segment size, before the copy.
        let pos = WalWatch::new(&self.url).position()?;
        // The archiver's stop cancels it.
        let taken = base_backup(&self.url, &staging, &self.stopping);
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
                if self.stopping.is_cancelled() {
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
