//! Operating-system plumbing: who we are, where programs live, how to run
//! them (possibly as another user) and how to report their failures.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::TestkitError;

/// Environment variable naming a directory that holds `initdb`, `pg_ctl` and
/// `psql`; searched before `PATH`.
pub(crate) const PG_BIN_ENV: &str = "CAIRN_TESTKIT_PG_BIN";

/// Where distribution packages (Debian, Ubuntu) install PostgreSQL versions.
const PG_LIB_ROOT: &str = "/usr/lib/postgresql";

/// The user PostgreSQL runs as when the tests run as root.
const PG_OS_USER: &str = "postgres";

/// How many trailing lines of output and logs go into error messages.
const TAIL_LINES: usize = 25;

/// Whether `path` is a regular file with an execute bit set.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks `name` up in the directories of `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Parses a PostgreSQL version directory name such as `15` or `9.6`.
fn parse_version(name: &OsStr) -> Option<Vec<u32>> {
    name.to_str()?
        .split('.')
        .map(|part| part.parse().ok())
        .collect()
}

/// Finds `name` in the `bin` directory of the newest version under `root`
/// (laid out like `/usr/lib/postgresql/<version>/bin/<name>`).
pub(crate) fn find_in_newest_version(root: &Path, name: &str) -> Option<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| Some((parse_version(&entry.file_name())?, entry.path())))
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|(_, dir)| dir.join("bin").join(name))
        .find(|candidate| is_executable(candidate))
}

/// Finds a PostgreSQL program: `$CAIRN_TESTKIT_PG_BIN`, then `PATH`, then the
/// newest `/usr/lib/postgresql/*/bin`.
pub(crate) fn find_pg_program(name: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let candidate = Path::new(&dir).join(name);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    find_on_path(name).or_else(|| find_in_newest_version(Path::new(PG_LIB_ROOT), name))
}

/// Finds a PostgreSQL program that belongs to the same installation as
/// `anchor` (its directory, or the directory it links to), else anywhere.
fn find_companion(anchor: &Path, name: &str) -> Option<PathBuf> {
    let beside = |p: &Path| p.parent().map(|dir| dir.join(name));
    beside(anchor)
        .into_iter()
        .chain(fs::canonicalize(anchor).ok().and_then(|p| beside(&p)))
        .find(|candidate| is_executable(candidate))
        .or_else(|| find_pg_program(name))
}

/// The PostgreSQL programs the kit runs.
#[derive(Debug, Clone)]
pub(crate) struct PgPrograms {
    pub(crate) initdb: PathBuf,
    pub(crate) pg_ctl: PathBuf,
    pub(crate) psql: PathBuf,
}

impl PgPrograms {
    fn find() -> Result<PgPrograms, TestkitError> {
        let initdb = find_pg_program("initdb");
        let pg_ctl = match &initdb {
            Some(initdb) => find_companion(initdb, "pg_ctl"),
            None => find_pg_program("pg_ctl"),
        };
        let psql = match &initdb {
            Some(initdb) => find_companion(initdb, "psql"),
            None => find_pg_program("psql"),
        };
        match (initdb, pg_ctl, psql) {
            (Some(initdb), Some(pg_ctl), Some(psql)) => Ok(PgPrograms {
                initdb,
                pg_ctl,
                psql,
            }),
            (initdb, pg_ctl, psql) => Err(TestkitError::MissingBinaries {
                missing: [("initdb", initdb), ("pg_ctl", pg_ctl), ("psql", psql)]
                    .into_iter()
                    .filter(|(_, found)| found.is_none())
                    .map(|(name, _)| name.to_string())
                    .collect(),
            }),
        }
    }
}

/// The effective uid of this process, from `/proc/self/status` or `id -u`.
pub(crate) fn effective_uid() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        let uid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if uid.is_some() {
            return uid;
        }
    }
    let out = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// How server programs (`initdb`, `pg_ctl`) are run.
#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// Directly, as the current (non-root) user.
    CurrentUser,
    /// As `user` through `runuser -u USER -- PROGRAM ARGS...`.
    Runuser {
        runuser: PathBuf,
        user: String,
        uid: u32,
        gid: u32,
    },
    /// As `user` through `su USER -s /bin/sh -c 'PROGRAM ARGS...'`.
    Su {
        su: PathBuf,
        user: String,
        uid: u32,
        gid: u32,
    },
}

fn find_system_tool(name: &str) -> Option<PathBuf> {
    find_on_path(name).or_else(|| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|candidate| is_executable(candidate))
    })
}

/// Asks `id` for a numeric id (`-u` or `-g`) of `user`.
fn id_of(user: &str, flag: &str) -> Result<u32, TestkitError> {
    let argv = [OsString::from("id"), flag.into(), user.into()];
    let out = run_checked(&argv, Path::new("/")).map_err(|e| TestkitError::Setup {
        message: format!(
            "the tests run as root and PostgreSQL refuses to run as root, so it is run as \
             the `{user}` user, but that user could not be looked up (install the \
             `postgresql` package, which creates it, or `useradd --system {user}`): {e}"
        ),
    })?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| TestkitError::Setup {
            message: format!("unexpected output of `id {flag} {user}`"),
        })
}

impl RunAs {
    fn detect() -> Result<RunAs, TestkitError> {
        if effective_uid() != Some(0) {
            return Ok(RunAs::CurrentUser);
        }
        let user = PG_OS_USER.to_string();
        let uid = id_of(&user, "-u")?;
        let gid = id_of(&user, "-g")?;
        if let Some(runuser) = find_system_tool("runuser") {
            return Ok(RunAs::Runuser {
                runuser,
                user,
                uid,
                gid,
            });
        }
        if let Some(su) = find_system_tool("su") {
            return Ok(RunAs::Su { su, user, uid, gid });
        }
        Err(TestkitError::Setup {
            message: "the tests run as root and PostgreSQL refuses to run as root, but \
                      neither `runuser` nor `su` was found to run it as the `postgres` user"
                .to_string(),
        })
    }

    /// The uid and gid that must own the server's files, if not ours.
    pub(crate) fn owner(&self) -> Option<(u32, u32)> {
        match self {
            RunAs::CurrentUser => None,
            RunAs::Runuser { uid, gid, .. } | RunAs::Su { uid, gid, .. } => Some((*uid, *gid)),
        }
    }

    /// The argument vector that runs `program args...` as the server user.
    pub(crate) fn argv(&self, program: &Path, args: &[OsString]) -> Vec<OsString> {
        let mut direct = vec![program.as_os_str().to_owned()];
        direct.extend(args.iter().cloned());
        match self {
            RunAs::CurrentUser => direct,
            RunAs::Runuser { runuser, user, .. } => {
                let mut argv = vec![
                    runuser.as_os_str().to_owned(),
                    "-u".into(),
                    user.into(),
                    "--".into(),
                ];
                argv.extend(direct);
                argv
            }
            RunAs::Su { su, user, .. } => vec![
                su.as_os_str().to_owned(),
                user.into(),
                "-s".into(),
                "/bin/sh".into(),
                "-c".into(),
                shell_join(&direct).into(),
            ],
        }
    }
}

/// Everything about the host the kit needs, looked up once per process.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) programs: PgPrograms,
    pub(crate) run_as: RunAs,
}

/// The host description, computed on first use.
pub(crate) fn host() -> Result<&'static Host, TestkitError> {
    static HOST: OnceLock<Result<Host, TestkitError>> = OnceLock::new();
    HOST.get_or_init(|| {
        Ok(Host {
            programs: PgPrograms::find()?,
            run_as: RunAs::detect()?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Quotes `word` for a POSIX shell.
pub(crate) fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins an argument vector into one shell command line.
pub(crate) fn shell_join(argv: &[OsString]) -> String {
    argv.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last [`TAIL_LINES`] lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The tail of a file, or `None` if it cannot be read.
pub(crate) fn file_tail(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|bytes| tail(&String::from_utf8_lossy(&bytes)))
}

/// Builds a command from `argv` with stdin closed, the working directory set
/// and libpq's `PG*` environment variables removed, so that a developer's
/// `PGHOST`, `PGDATABASE`, `PGCLUSTER` etc. cannot redirect the kit.
pub(crate) fn command(argv: &[OsString], cwd: &Path) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(cwd).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `argv` to completion, capturing its output; a non-zero exit status is
/// an error carrying the tails of its output.
pub(crate) fn run_checked(argv: &[OsString], cwd: &Path) -> Result<Output, TestkitError> {
    run_command(command(argv, cwd), argv)
}

/// Runs a prepared command (built from `argv`) like [`run_checked`].
pub(crate) fn run_command(mut cmd: Command, argv: &[OsString]) -> Result<Output, TestkitError> {
    let out = cmd
        .output()
        .map_err(|e| TestkitError::io(format!("cannot run `{}`", shell_join(argv)), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(TestkitError::CommandFailed {
            command: shell_join(argv),
            status: out.status.to_string(),
            stdout_tail: tail(&String::from_utf8_lossy(&out.stdout)),
            stderr_tail: tail(&String::from_utf8_lossy(&out.stderr)),
            log_tail: None,
        })
    }
}
