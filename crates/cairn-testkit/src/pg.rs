//! Throwaway PostgreSQL clusters.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::sys::{self, Host};
use crate::{poll_until, TestkitError};

/// The database superuser of every cluster.
pub const SUPERUSER: &str = "postgres";

/// The maintenance database that exists in every cluster.
pub const DEFAULT_DATABASE: &str = "postgres";

/// How many ports [`PgCluster::start`] tries before giving up.
const START_ATTEMPTS: usize = 3;

/// `pg_ctl -t`: seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "30";

/// How long to wait for the started server to accept TCP connections.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(10);

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER_LEN: usize = 63;

/// A throwaway PostgreSQL server, listening on 127.0.0.1 only, with `trust`
/// authentication for the superuser [`SUPERUSER`].
///
/// Everything lives in a temporary directory under `/tmp`:
/// `data/` (the cluster), `sock/` (its Unix socket) and `log` (the server log).
/// Durability is switched off (`fsync`, `synchronous_commit` and
/// `full_page_writes` are off) because nothing here needs to survive a
/// machine crash. WAL for archiving is on: `wal_level=replica`, replication
/// connections (`pg_receivewal`, `pg_basebackup`) allowed, and a replication
/// slot may hold back at most 1 GB of WAL (`max_slot_wal_keep_size`).
///
/// When the tests run as root, `initdb` and `pg_ctl` run as the `postgres`
/// user (PostgreSQL refuses to run as root) and the directory is owned by it.
///
/// Dropping the value stops the server (`pg_ctl stop -m immediate`) and removes
/// the directory. A small watchdog process also stops the server and removes
/// the directory once the test process has exited, so clusters do not outlive a
/// test run that was killed (e.g. by Ctrl-C) before `Drop` could run.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), cairn_testkit::TestkitError> {
/// let cluster = cairn_testkit::PgCluster::start()?;
/// let url = cluster.create_database("my_test")?;
/// assert!(url.ends_with("/my_test"));
/// assert_eq!(cluster.psql("my_test", "select 1")?, "1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PgCluster {
    host: &'static Host,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    running: bool,
    watchdog: Option<Child>,
    // Last, so that it is removed after the server has been stopped.
    dir: TempDir,
}

impl PgCluster {
    /// Creates a cluster with `initdb` in a new temporary directory and starts
    /// it on a free port, waiting until it accepts TCP connections.
    ///
    /// If the server fails to start (typically because another process took
    /// the port first), it is retried on a new port, up to three times in all.
    ///
    /// # Errors
    ///
    /// [`TestkitError::MissingBinaries`] if `initdb`, `pg_ctl` or `psql` cannot
    /// be found (on `PATH`, in `$CAIRN_TESTKIT_PG_BIN` or in the newest
    /// `/usr/lib/postgresql/*/bin`); [`TestkitError::Setup`] when running as
    /// root without a `postgres` user; otherwise the failing command with its
    /// exit status, output and the tail of the server log.
    pub fn start() -> Result<PgCluster, TestkitError> {
        let mut cluster = PgCluster::prepare()?;
        cluster.initdb()?;

        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            cluster.port = sys_free_port()?;
            match cluster.start_server() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    // pg_ctl may have given up on a server that is still
                    // coming up; make sure it is gone before the next try.
                    let _ = cluster.pg_ctl_stop("immediate");
                    cluster.running = false;
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("START_ATTEMPTS > 0"))
    }

    /// A cluster whose data directory is empty (mode 0700, owned by the
    /// server user) and not started, for a restore to fill: then
    /// [`start_again`](Self::start_again) starts it on [`port`](Self::port).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), for the directories.
    pub fn empty() -> Result<PgCluster, TestkitError> {
        let mut cluster = PgCluster::prepare()?;
        fs::create_dir(&cluster.data_dir).map_err(|e| {
            TestkitError::io(format!("cannot create {}", cluster.data_dir.display()), e)
        })?;
        fs::set_permissions(&cluster.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| TestkitError::io("cannot chmod the data directory", e))?;
        if let Some((uid, gid)) = cluster.host.run_as.owner() {
            std::os::unix::fs::chown(&cluster.data_dir, Some(uid), Some(gid))
                .map_err(|e| TestkitError::io("cannot chown the data directory", e))?;
        }
        cluster.port = sys_free_port()?;
        Ok(cluster)
    }

    /// The directories and the watchdog of a new cluster, nothing in `data/`.
    fn prepare() -> Result<PgCluster, TestkitError> {
        let host = sys::host()?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| TestkitError::io("cannot create a temporary directory in /tmp", e))?;
        let root = dir.path().to_path_buf();
        let socket_dir = root.join("sock");
        fs::create_dir(&socket_dir)
            .map_err(|e| TestkitError::io(format!("cannot create {}", socket_dir.display()), e))?;
        if let Some((uid, gid)) = host.run_as.owner() {
            for path in [&root, &socket_dir] {
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| TestkitError::io(format!("cannot chmod {}", path.display()), e))?;
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| TestkitError::io(format!("cannot chown {}", path.display()), e))?;
            }
        }

        let mut cluster = PgCluster {
            host,
            port: 0,
            data_dir: root.join("data"),
            socket_dir,
            log_path: root.join("log"),
            running: false,
            watchdog: None,
            dir,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        Ok(cluster)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the default `postgres` database:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url(DEFAULT_DATABASE)
    }

    /// The URL of database `name` in this cluster (whether or not it exists):
    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The cluster's data directory (`initdb -D`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole server log so far (empty if it cannot be read); handy in
    /// assertion messages.
    pub fn server_log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Whether the server is running, as far as this value knows (it was
    /// started and not stopped through it).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Creates database `name` and returns its URL, so that each test can have
    /// its own database in one shared cluster (see [`unique_name`]).
    ///
    /// # Errors
    ///
    /// [`TestkitError::InvalidName`] unless `name` is 1 to 63 ASCII letters,
    /// digits, `_` or `-`; [`TestkitError::CommandFailed`] if `psql` fails,
    /// e.g. because the database exists already.
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        validate_database_name(name)?;
        self.psql(DEFAULT_DATABASE, &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.database_url(name))
    }

    /// Runs `sql` with `psql` in `database` and returns its output in
    /// unaligned, tuples-only form (`psql -A -t`), trailing newlines removed:
    /// `select 1` gives `"1"`; a row of several columns gives them separated
    /// by `|`; rows are separated by newlines.
    ///
    /// # Errors
    ///
    /// [`TestkitError::CommandFailed`] with `psql`'s error output if the
    /// statement or the connection fails.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let port = self.port.to_string();
        let argv: Vec<OsString> = [
            self.host.programs.psql.as_os_str(),
            "-X".as_ref(),
            "-w".as_ref(),
            "-q".as_ref(),
            "-A".as_ref(),
            "-t".as_ref(),
            "-v".as_ref(),
            "ON_ERROR_STOP=1".as_ref(),
            "-h".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "-d".as_ref(),
            database.as_ref(),
            "-c".as_ref(),
            sql.as_ref(),
        ]
        .iter()
        .map(|s| s.to_os_string())
        .collect();
        // psql connects over TCP with trust authentication, so it can run as
        // whichever user we are.
        let mut cmd = sys::command(&argv, self.dir.path());
        cmd.env("PGCONNECT_TIMEOUT", "10");
        let out = sys::run_command(cmd, &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), keeping its data
    /// directory and port for [`start_again`](Self::start_again). Does
    /// nothing if it is not running.
    ///
    /// # Errors
    ///
    /// The failing `pg_ctl` command, with the tail of the server log.
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        self.stop_with_mode("fast")
    }

    /// Stops the server abruptly (`pg_ctl stop -m immediate`), as if it had
    /// crashed: the next start runs crash recovery. Does nothing if it is not
    /// running.
    ///
    /// # Errors
    ///
    /// The failing `pg_ctl` command, with the tail of the server log.
    pub fn stop_immediate(&mut self) -> Result<(), TestkitError> {
        self.stop_with_mode("immediate")
    }

    /// Starts the server again after [`stop`](Self::stop), with the same data
    /// directory and port, waiting until it accepts TCP connections. Does
    /// nothing if it is running.
    ///
    /// # Errors
    ///
    /// The failing `pg_ctl` command, with the tail of the server log (e.g. if
    /// another process took the port in the meantime), or a timeout.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        if self.running {
            return Ok(());
        }
        self.start_server()
    }

    fn stop_with_mode(&mut self, mode: &str) -> Result<(), TestkitError> {
        if !self.running {
            return Ok(());
        }
        self.pg_ctl_stop(mode)?;
        self.running = false;
        Ok(())
    }

    fn log_tail(&self) -> Option<String> {
        sys::file_tail(&self.log_path)
    }

    /// Runs a server program as the server user, in the cluster directory.
    fn run_server_program(
        &self,
        program: &Path,
        args: &[OsString],
    ) -> Result<std::process::Output, TestkitError> {
        let argv = self.host.run_as.argv(program, args);
        sys::run_checked(&argv, self.dir.path())
    }

    fn initdb(&self) -> Result<(), TestkitError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-A".into(),
            "trust".into(),
            "-U".into(),
            SUPERUSER.into(),
            "--no-sync".into(),
            "-E".into(),
            "UTF8".into(),
            "--locale=C".into(),
        ];
        self.run_server_program(&self.host.programs.initdb, &args)?;
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), TestkitError> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200 -c wal_level=replica \
             -c max_wal_senders=10 -c max_slot_wal_keep_size=1GB",
            self.port,
            sys::shell_quote(self.socket_dir.as_os_str()),
        );
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            self.log_path.clone().into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_TIMEOUT_SECS.into(),
            "-o".into(),
            options.into(),
            "start".into(),
        ];
        self.run_server_program(&self.host.programs.pg_ctl, &args)
            .map_err(|e| e.with_log_tail(self.log_tail()))?;
        self.running = true;

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        poll_until(ACCEPT_DEADLINE, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
        })
        .map(drop)
        .ok_or_else(|| TestkitError::Timeout {
            what: format!("PostgreSQL to accept connections on {addr}"),
            deadline: ACCEPT_DEADLINE,
            log_tail: self.log_tail(),
        })
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), TestkitError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            mode.into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_TIMEOUT_SECS.into(),
            "stop".into(),
        ];
        self.run_server_program(&self.host.programs.pg_ctl, &args)
            .map_err(|e| e.with_log_tail(self.log_tail()))?;
        Ok(())
    }

    /// Spawns a detached shell that waits for this process to exit, then stops
    /// the server and removes the directory. It has its own process group (so
    /// a terminal's Ctrl-C does not kill it along with the tests) and no
    /// inherited stdio (so it cannot keep `cargo test`'s pipes open).
    fn spawn_watchdog(&self) -> Result<Child, TestkitError> {
        let stop = self.host.run_as.argv(
            &self.host.programs.pg_ctl,
            &[
                "-D".into(),
                self.data_dir.clone().into(),
                "-m".into(),
                "immediate".into(),
                "-w".into(),
                "stop".into(),
            ],
        );
        let script = format!(
            "trap '' HUP INT; \
             while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -f {pidfile} ]; then {stop}; fi; \
             rm -rf {dir}",
            pid = std::process::id(),
            pidfile = sys::shell_quote(self.data_dir.join("postmaster.pid").as_os_str()),
            stop = sys::shell_join(&stop),
            dir = sys::shell_quote(self.dir.path().as_os_str()),
        );
        let argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let mut cmd = sys::command(&argv, Path::new("/"));
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        cmd.spawn().map_err(|e| {
            TestkitError::io(
                format!(
                    "cannot spawn the cluster watchdog `{}`",
                    sys::shell_join(&argv)
                ),
                e,
            )
        })
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if self.running {
            if let Err(e) = self.pg_ctl_stop("immediate") {
                eprintln!("cairn-testkit: could not stop the PostgreSQL cluster: {e}");
            }
            self.running = false;
        }
        // `self.dir` (the TempDir) removes the directory when dropped next.
    }
}

fn sys_free_port() -> Result<u16, TestkitError> {
    crate::try_free_port().map_err(|e| TestkitError::io("cannot bind a TCP port on 127.0.0.1", e))
}

fn validate_database_name(name: &str) -> Result<(), TestkitError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_IDENTIFIER_LEN {
        Some(format!("it is longer than {MAX_IDENTIFIER_LEN} bytes"))
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Some("only ASCII letters, digits, `_` and `-` are allowed".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TestkitError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The cluster shared by all tests of this test process, started on first
/// use.
///
/// Tests in one test binary run in parallel threads of one process; they can
/// all use this cluster, each in its own database:
///
/// ```no_run
/// # fn main() -> Result<(), cairn_testkit::TestkitError> {
/// use cairn_testkit::{shared_cluster, unique_name};
///
/// let url = shared_cluster()?.create_database(&unique_name("store_roundtrip"))?;
/// # Ok(())
/// # }
/// ```
///
/// A `static` is never dropped, so the cluster's `Drop` never runs; its
/// watchdog process stops it and removes its directory about a second after
/// the test process exits.
///
/// # Errors
///
/// The error of [`PgCluster::start`]; a failed start is not retried, every
/// later call returns the same error.
pub fn shared_cluster() -> Result<&'static PgCluster, TestkitError> {
    static SHARED: OnceLock<Result<PgCluster, TestkitError>> = OnceLock::new();
    SHARED
        .get_or_init(PgCluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// A name that is unique within this machine for the life of this process,
/// usable as a database name: `PREFIX_PID_N`, where `PREFIX` is `prefix`
/// lower-cased, with characters other than ASCII letters, digits and `_`
/// replaced by `_`, and cut to 32 bytes (so the whole name fits in
/// PostgreSQL's 63-byte identifiers).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if clean.is_empty() {
        clean.push_str("test");
    }
    format!("{clean}_{}_{n}", std::process::id())
}
