//! PostgreSQL's own physical backup and WAL, driven for continuous archiving and restore to
//! a time: `pg_receivewal` streams the WAL into a folder through a replication slot,
//! `pg_basebackup` takes a base backup as a tar, and a restore recovers a base to a time
//! with PostgreSQL's own archive recovery (`restore_command`, `recovery_target_time`) in a
//! temporary server. Nothing here reads or writes WAL itself: Cairn only moves PostgreSQL's
//! files and says when.
//!
//! The archive's user needs the `REPLICATION` attribute (and to read `pg_control_system()`
//! and `pg_replication_slots`: a superuser, or `pg_monitor`), and `pg_hba.conf` must let it
//! make a replication connection.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tools::{
    collect_stderr, find_tool, run_to_end, set_password, spawn, split_password, tool_failed,
};
use crate::cancel::CancelToken;
use crate::error::{Result, StoreError};

/// The replication slot through which the archive receives the WAL: the server keeps every
/// segment the archive has not received (bounded by the server's `max_slot_wal_keep_size`).
pub const SLOT: &str = "cairn_archive";

/// The session name of the archive's WAL receiver, in `pg_stat_activity`.
pub const RECEIVER_APP: &str = "cairn-archive";

/// A position in the WAL (an LSN), as a number.
pub type Lsn = u64;

/// `X/Y` (PostgreSQL's text form of an LSN) as a number.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// The text form `X/Y` of an LSN.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The name of the WAL segment file holding `lsn` on `timeline`.
pub fn segment_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    let seg = lsn / segment_size.max(1);
    let per_id = 0x1_0000_0000u64 / segment_size.max(1);
    format!("{:08X}{:08X}{:08X}", timeline, seg / per_id, seg % per_id)
}

/// The timeline and number of a WAL segment file's name (24 hex digits).
pub fn parse_segment_name(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_id = 0x1_0000_0000u64 / segment_size.max(1);
    Some((tli, hi * per_id + lo))
}

/// Where the server's WAL is, read in one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalPosition {
    /// The server's clock when it was read (ms since the epoch).
    pub at_ms: i64,
    /// The server's timeline.
    pub timeline: u32,
    /// Every WAL record inserted before `at_ms` ends at or before this position: every
    /// transaction whose commit was answered before then.
    pub insert_lsn: Lsn,
    /// How far the archive's receiver has written and flushed (the slot's position), if the
    /// slot exists.
    pub received_lsn: Option<Lsn>,
    /// The cluster's system identifier (a restore keeps it, a new cluster has another).
    pub system_id: String,
    /// The WAL segment size in bytes.
    pub segment_size: u64,
}

/// A connection that reads [`WalPosition`]s.
pub struct WalWatch {
    url: String,
    client: Option<postgres::Client>,
}

impl WalWatch {
    /// Watches the server of `url` (connects on first use, and again after an error).
    pub fn new(url: &str) -> Self {
        WalWatch {
            url: url.to_string(),
            client: None,
        }
    }

    /// The connection (made on first use, and again after an error).
    fn client(&mut self) -> Result<&mut postgres::Client> {
        let client = match self.client.take() {
            Some(c) => c,
            None => crate::db::postgres::connect(&self.url)?,
        };
        Ok(self.client.insert(client))
    }

    /// Reads the position now.
    pub fn position(&mut self) -> Result<WalPosition> {
        let row = self.client()?.query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8, \
                    (SELECT timeline_id FROM pg_control_checkpoint())::int8, \
                    pg_current_wal_insert_lsn()::text, \
                    (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1), \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size')",
            &[&SLOT],
        );
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                self.client = None;
                return Err(e.into());
            }
        };
        let lsn = |text: Option<String>| text.as_deref().and_then(parse_lsn);
        let insert: Option<String> = row.try_get(2)?;
        Ok(WalPosition {
            at_ms: row.try_get(0)?,
            timeline: u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or(1),
            insert_lsn: lsn(insert).ok_or_else(|| {
                StoreError::Corrupt("the server's WAL position is unreadable".into())
            })?,
            received_lsn: lsn(row.try_get(3)?),
            system_id: row.try_get(4)?,
            segment_size: u64::try_from(row.try_get::<_, i64>(5)?).unwrap_or(16 << 20),
        })
    }

    /// Creates the archive's replication slot unless it exists, reserving the WAL from now.
    /// A slot the server gave up (it held back more than `max_slot_wal_keep_size`: its
    /// `wal_status` is `lost`) is dropped and made again; true then: the WAL between is
    /// gone from the archive.
    pub fn ensure_slot(&mut self) -> Result<bool> {
        let made = self.make_slot();
        if made.is_err() {
            // A connection the server dropped (a restart): a new one next time.
            self.client = None;
        }
        made
    }

    fn make_slot(&mut self) -> Result<bool> {
        let client = self.client()?;
        let lost = client
            .query_opt(
                "SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )?
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        if lost {
            client.execute("SELECT pg_drop_replication_slot($1)", &[&SLOT])?;
        }
        client.execute(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&SLOT],
        )?;
        Ok(lost)
    }
}

/// What the receiver tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// It runs (again).
    Running,
    /// It ended, and is started again: why.
    Failed(String),
    /// The server dropped WAL the archive had not received: the chain is broken there.
    Lost(String),
}

/// `pg_receivewal` streaming the server's WAL into a folder through [`SLOT`], restarted when
/// it ends (the server restarted, say) until stopped. The folder holds whole segments and
/// the one being written as `NAME.partial`; its content up to the slot's position
/// ([`WalPosition::received_lsn`]) is on disk (`--synchronous`).
pub struct WalReceiver {
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WalReceiver {
    /// Starts receiving into `dir` (created). `told` hears when it fails, runs again, or
    /// finds WAL lost.
    pub fn start(
        url: &str,
        dir: &Path,
        told: Box<dyn Fn(ReceiverEvent) + Send>,
    ) -> Result<WalReceiver> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let tool = find_tool("pg_receivewal", "CAIRN_PG_RECEIVEWAL")?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (url, dir, stop) = (url.to_string(), dir.to_path_buf(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name("pg-receivewal".into())
            .spawn(move || receive(&tool, &url, &dir, &stop, &*told))
            .map_err(|e| StoreError::io(Path::new("pg_receivewal"), e))?;
        Ok(WalReceiver {
            stopping,
            thread: Some(thread),
        })
    }

    /// Stops the receiver (what it wrote stays in the folder).
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WalReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The receiver's loop (see [`WalReceiver`]): the tool is spawned by this thread, so it dies
/// with it, and with the process.
fn receive(
    tool: &Path,
    url: &str,
    dir: &Path,
    stopping: &AtomicBool,
    told: &dyn Fn(ReceiverEvent),
) {
    let mut watch = WalWatch::new(url);
    while !stopping.load(Ordering::SeqCst) {
        let started = Instant::now();
        let ended = watch.ensure_slot().and_then(|lost| {
            if lost {
                // Said before anything else, so that the archiver knows the chain broke.
                told(ReceiverEvent::Lost(format!(
                    "the server dropped WAL the archive had not received (the slot {SLOT} \
                     exceeded max_slot_wal_keep_size); the slot is made again, and a new base \
                     backup starts a new chain"
                )));
            }
            let (plain, password) = split_password(url);
            let mut cmd = Command::new(tool);
            cmd.arg("--directory")
                .arg(dir)
                .args([
                    "--slot",
                    SLOT,
                    "--synchronous",
                    "--no-loop",
                    "--no-password",
                ])
                .arg("--dbname")
                .arg(&plain)
                .env("PGAPPNAME", RECEIVER_APP)
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            set_password(&mut cmd, password);
            let mut child = spawn(cmd, "pg_receivewal", tool)?;
            let stderr = collect_stderr(&mut child);
            let mut running = false;
            let status = loop {
                if stopping.load(Ordering::SeqCst) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(());
                }
                if let Ok(Some(s)) = child.try_wait() {
                    break s;
                }
                if !running && started.elapsed() > Duration::from_secs(2) {
                    told(ReceiverEvent::Running);
                    running = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let err = stderr.join().unwrap_or_default();
            Err(tool_failed("pg_receivewal", &status, &err))
        });
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let why = match ended {
            Ok(()) => "pg_receivewal ended".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!("archive: {why}; starting it again");
        told(ReceiverEvent::Failed(why));
        // Not in a tight loop against a server that is down.
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_secs(2) && !stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A base backup [`base_backup`] took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgBase {
    /// The tar of the cluster's data folder.
    pub tar: PathBuf,
    /// Its timeline.
    pub timeline: u32,
    /// Recovery starts here...
    pub start_lsn: Lsn,
    /// ...and the copy is consistent once it has replayed the WAL to here.
    pub end_lsn: Lsn,
}

/// Takes a base backup of the server of `url` into `dest_dir` with `pg_basebackup` (tar
/// format, no WAL: the archive has it), returning once it is complete. Cancel kills it.
pub fn base_backup(url: &str, dest_dir: &Path, cancel: &CancelToken) -> Result<PgBase> {
    std::fs::create_dir_all(dest_dir).map_err(|e| StoreError::io(dest_dir, e))?;
    let tool = find_tool("pg_basebackup", "CAIRN_PG_BASEBACKUP")?;
    let (plain, password) = split_password(url);
    let mut cmd = Command::new(&tool);
    cmd.arg("--pgdata")
        .arg(dest_dir)
        .args([
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--no-password",
        ])
        .arg("--dbname")
        .arg(&plain)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    set_password(&mut cmd, password);
    let mut child = spawn(cmd, "pg_basebackup", &tool)?;
    let stderr = collect_stderr(&mut child);
    let status = loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StoreError::Cancelled);
        }
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(StoreError::io(&tool, e)),
        }
    };
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(tool_failed("pg_basebackup", &status, &err));
    }
    let tars: Vec<String> = std::fs::read_dir(dest_dir)
        .map_err(|e| StoreError::io(dest_dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tar") && n != "base.tar")
        .collect();
    if !tars.is_empty() {
        return Err(StoreError::Tool {
            tool: "pg_basebackup".into(),
            message: format!(
                "the cluster has tablespaces ({}); Cairn's archive takes clusters without",
                tars.join(", ")
            ),
        });
    }
    let manifest_path = dest_dir.join("backup_manifest");
    let manifest = std::fs::read(&manifest_path).map_err(|e| StoreError::io(&manifest_path, e))?;
    let (timeline, start_lsn, end_lsn) = wal_range(&manifest).ok_or_else(|| {
        StoreError::Corrupt(format!("{} names no WAL range", manifest_path.display()))
    })?;
    Ok(PgBase {
        tar: dest_dir.join("base.tar"),
        timeline,
        start_lsn,
        end_lsn,
    })
}

/// The timeline and WAL range of a `backup_manifest` (PostgreSQL 13 and later).
fn wal_range(manifest: &[u8]) -> Option<(u32, Lsn, Lsn)> {
    let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    let r = v.get("WAL-Ranges")?.as_array()?.first()?;
    Some((
        u32::try_from(r.get("Timeline")?.as_u64()?).ok()?,
        parse_lsn(r.get("Start-LSN")?.as_str()?)?,
        parse_lsn(r.get("End-LSN")?.as_str()?)?,
    ))
}

/// Who a PostgreSQL server started by this process runs as: `None` (this process's user)
/// unless this process runs as root, which PostgreSQL refuses: then the owner of
/// `data_dir`'s folder (or of its parent, while it does not exist), who must not be root.
pub fn server_user(data_dir: &Path) -> Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let owned = if data_dir.exists() {
        data_dir.to_path_buf()
    } else {
        data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let meta = std::fs::metadata(&owned).map_err(|e| StoreError::io(&owned, e))?;
    if meta.uid() == 0 {
        return Err(StoreError::Tool {
            tool: "postgres".into(),
            message: format!(
                "PostgreSQL does not run as root, and {} is root's: create it owned by the \
                 user PostgreSQL runs as (install -d -o postgres -m 700 {})",
                owned.display(),
                data_dir.display()
            ),
        });
    }
    Ok(Some((meta.uid(), meta.gid())))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Makes `data_dir` (absent or empty) the cluster of a base backup: `tar` extracts what
/// `tar_stream` reads, as `user` (see [`server_user`]).
pub fn extract_base(
    tar_stream: &mut dyn Read,
    data_dir: &Path,
    user: Option<(u32, u32)>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
        if entries.next().is_some() {
            return Err(StoreError::Tool {
                tool: "tar".into(),
                message: format!(
                    "{} is not empty: a restore makes a new PostgreSQL data folder, it does not \
                     write over one",
                    data_dir.display()
                ),
            });
        }
    } else {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::io(data_dir, e))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(data_dir, Some(uid), Some(gid))
                .map_err(|e| StoreError::io(data_dir, e))?;
        }
    }
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StoreError::io(data_dir, e))?;
    let tool = PathBuf::from("tar");
    let mut cmd = Command::new(&tool);
    cmd.arg("--extract")
        .arg("--file=-")
        .arg("--directory")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut cmd, user);
    let mut child = spawn(cmd, "tar", &tool)?;
    let stderr = collect_stderr(&mut child);
    let copied = match child.stdin.take() {
        Some(mut stdin) => std::io::copy(tar_stream, &mut stdin).map(drop),
        None => Ok(()),
    };
    let status = child.wait().map_err(|e| StoreError::io(&tool, e))?;
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(tool_failed("tar", &status, &err));
    }
    copied.map_err(|e| StoreError::io(data_dir, e))
}

/// The settings a restore adds to `postgresql.auto.conf` for its recovery, between these
/// two lines (removed again once it is done).
const RECOVERY_BEGIN: &str = "# cairn restore: recovery settings (removed after the restore)";
const RECOVERY_END: &str = "# cairn restore: end of recovery settings";

/// A temporary server recovering a restored cluster: see [`recover`].
pub struct Recovered {
    data_dir: PathBuf,
    pg_ctl: PathBuf,
    user: Option<(u32, u32)>,
    /// The URL of the recovered database on the temporary server.
    pub url: String,
    /// Whether the target time was beyond the last commit of the WAL, so all of it was
    /// replayed (the same database: nothing committed after the target was in it).
    pub replayed_all: bool,
    /// The timeline the promoted cluster goes on with.
    pub timeline: u32,
    /// Where the recovery ended (the new timeline's switch point), when its history file
    /// says so.
    pub end_lsn: Option<Lsn>,
    running: bool,
}

impl Recovered {
    /// Stops the temporary server and removes the recovery settings: the data folder is then
    /// an ordinary cluster, started as usual.
    pub fn finish(mut self) -> Result<()> {
        self.stop()?;
        remove_recovery_settings(&self.data_dir)
    }

    fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        pg_ctl(
            &self.pg_ctl,
            &self.data_dir,
            self.user,
            &["-m", "fast", "stop"],
        )
    }
}

impl Drop for Recovered {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("cannot stop the restore's PostgreSQL server: {e}");
        }
    }
}

fn pg_ctl(tool: &Path, data_dir: &Path, user: Option<(u32, u32)>, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(tool);
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-w", "-t", "86400"])
        .args(args);
    as_user(&mut cmd, user);
    let out = run_to_end(cmd, "pg_ctl", tool)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(tool_failed("pg_ctl", &out.status, &out.stderr))
    }
}

/// Recovers the cluster in `data_dir` (a base backup's, see [`extract_base`]) with the WAL
/// segments in `wal_dir` to `target` (PostgreSQL's `recovery_target_time`, e.g.
/// `2026-12-07 10:15:03.250+00`; `None`: all of it) on `timeline`, in a server of its own
/// on 127.0.0.1:`port`, and returns once it is promoted, still running, so that the caller
/// can read the database at `url` (the database's URL, whose host and port are replaced).
///
/// A target later than the last commit in the WAL is what PostgreSQL refuses ("recovery
/// ended before configured recovery target was reached"): every commit the WAL holds is
/// then at or before the target, so the whole of it is replayed instead.
pub fn recover(
    data_dir: &Path,
    wal_dir: &Path,
    target: Option<&str>,
    timeline: u32,
    url: &str,
    port: u16,
    cancel: &CancelToken,
) -> Result<Recovered> {
    let user = server_user(data_dir)?;
    let pg_ctl_tool = find_tool("pg_ctl", "CAIRN_PG_CTL")?;
    let log = data_dir.join("cairn-restore.log");
    let write_settings = |target: Option<&str>| -> Result<()> {
        remove_recovery_settings(data_dir)?;
        let quote = |s: &str| s.replace('\'', "''");
        let wal = quote(&wal_dir.display().to_string());
        let mut lines = vec![
            RECOVERY_BEGIN.to_string(),
            format!("restore_command = 'cp \"{wal}/%f\" \"%p\"'"),
            format!("recovery_target_timeline = '{timeline}'"),
            "recovery_target_action = 'promote'".to_string(),
            // The restored cluster is not the archive's: it ships nothing while it recovers.
            "archive_mode = 'off'".to_string(),
        ];
        if let Some(t) = target {
            lines.push(format!("recovery_target_time = '{}'", quote(t)));
            lines.push("recovery_target_inclusive = 'on'".to_string());
        }
        lines.push(RECOVERY_END.to_string());
        let conf = data_dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&lines.join("\n"));
        text.push('\n');
        std::fs::write(&conf, text).map_err(|e| StoreError::io(&conf, e))?;
        let signal = data_dir.join("recovery.signal");
        std::fs::write(&signal, b"").map_err(|e| StoreError::io(&signal, e))?;
        if let Some((uid, gid)) = user {
            for p in [&conf, &signal] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| StoreError::io(p, e))?;
            }
        }
        Ok(())
    };
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c hot_standby=off"
    );
    let start = |target: Option<&str>| -> Result<()> {
        write_settings(target)?;
        let log_arg = log.display().to_string();
        pg_ctl(
            &pg_ctl_tool,
            data_dir,
            user,
            &["-l", &log_arg, "-o", &options, "start"],
        )
    };
    let target_missed = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("recovery ended before configured recovery target was reached")
    };
    let mut replayed_all = target.is_none();
    let mut recovered = Recovered {
        data_dir: data_dir.to_path_buf(),
        pg_ctl: pg_ctl_tool.clone(),
        user,
        url: with_host_port(url, "127.0.0.1", port),
        replayed_all,
        timeline,
        end_lsn: None,
        running: false,
    };
    match start(target) {
        Ok(()) => recovered.running = true,
        Err(_) if target.is_some() && target_missed() => {}
        Err(e) => return Err(with_log(e, &log)),
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        cancel.check()?;
        if !recovered.running || (target.is_some() && target_missed() && !replayed_all) {
            // The server ended at the end of the WAL short of the target: replay it all.
            let _ = recovered.stop();
            replayed_all = true;
            recovered.replayed_all = true;
            start(None).map_err(|e| with_log(e, &log))?;
            recovered.running = true;
        }
        if let Ok(mut c) = crate::db::postgres::connect(&recovered.url) {
            if let Ok(row) = c.query_one(
                "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())::int8",
                &[],
            ) {
                let (in_recovery, tli): (bool, i64) = (row.get(0), row.get(1));
                if !in_recovery {
                    recovered.timeline = u32::try_from(tli).unwrap_or(timeline);
                    recovered.end_lsn = switch_point(data_dir, recovered.timeline);
                    return Ok(recovered);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(with_log(
                StoreError::Tool {
                    tool: "postgres".into(),
                    message: "recovery did not end within an hour".into(),
                },
                &log,
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where timeline `tli` branched off its parent: the last line of its history file in
/// `pg_wal` (`PARENT_TLI<TAB>X/Y<TAB>reason`).
fn switch_point(data_dir: &Path, tli: u32) -> Option<Lsn> {
    let text =
        std::fs::read_to_string(data_dir.join("pg_wal").join(format!("{tli:08X}.history"))).ok()?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))?;
    parse_lsn(line.split_whitespace().nth(1)?)
}

/// An error with the end of the server's log.
fn with_log(e: StoreError, log: &Path) -> StoreError {
    let tail: String = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    match e {
        StoreError::Tool { tool, message } => StoreError::Tool {
            tool,
            message: format!("{message}; server log ({}): {tail}", log.display()),
        },
        other => other,
    }
}

/// Removes the recovery settings a restore added to `postgresql.auto.conf`.
fn remove_recovery_settings(data_dir: &Path) -> Result<()> {
    let conf = data_dir.join("postgresql.auto.conf");
    let Ok(text) = std::fs::read_to_string(&conf) else {
        return Ok(());
    };
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == RECOVERY_BEGIN {
            inside = true;
        } else if line == RECOVERY_END {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out != text {
        std::fs::write(&conf, out).map_err(|e| StoreError::io(&conf, e))?;
    }
    Ok(())
}

/// `url` (`postgres://[user[:password]@]host[:port]/db[?...]`) with another host and port.
pub fn with_host_port(url: &str, host: &str, port: u16) -> String {
    let Some(s) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[s + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let creds = authority
        .rfind('@')
        .map(|at| &authority[..=at])
        .unwrap_or("");
    format!("{}{creds}{host}:{port}{}", &url[..s + 3], &rest[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_segment_names() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(parse_lsn("1A/FF"), Some((0x1A << 32) | 0xFF));
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(format_lsn(0x1_0000_0028), "1/28");
        let size = 16 << 20;
        assert_eq!(segment_name(1, 0x3019670, size), "000000010000000000000003");
        assert_eq!(
            segment_name(2, 0x1_0300_0000, size),
            "000000020000000100000003"
        );
        assert_eq!(
            parse_segment_name("000000020000000100000003", size),
            Some((2, 0x103))
        );
        assert_eq!(parse_segment_name("00000002.history", size), None);
    }

    #[test]
    fn a_urls_host_and_port_are_replaced() {
        assert_eq!(
            with_host_port(
                "postgres://u:p@db.example:5432/cairn?sslmode=disable",
                "127.0.0.1",
                6000
            ),
            "postgres://u:p@127.0.0.1:6000/cairn?sslmode=disable"
        );
        assert_eq!(
            with_host_port("postgresql://db/cairn", "127.0.0.1", 7),
            "postgresql://127.0.0.1:7/cairn"
        );
    }

    #[test]
    fn reads_the_wal_range_of_a_backup_manifest() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        assert_eq!(wal_range(m), Some((1, 0x2000028, 0x2000100)));
        assert_eq!(wal_range(b"{}"), None);
        assert_eq!(wal_range(b"not json"), None);
    }

    #[test]
    fn reads_the_switch_point_of_a_timeline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pg_wal")).unwrap();
        std::fs::write(
            dir.path().join("pg_wal/00000003.history"),
            "1\t0/3019670\tno recovery target specified\n\n2\t0/5000000\tat restore point\n",
        )
        .unwrap();
        assert_eq!(switch_point(dir.path(), 3), Some(0x5000000));
        assert_eq!(switch_point(dir.path(), 4), None);
    }

    #[test]
    fn recovery_settings_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.auto.conf");
        std::fs::write(
            &conf,
            format!("a = 1\n{RECOVERY_BEGIN}\nrestore_command = 'x'\n{RECOVERY_END}\nb = 2\n"),
        )
        .unwrap();
        remove_recovery_settings(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "a = 1\nb = 2\n");
    }
}
