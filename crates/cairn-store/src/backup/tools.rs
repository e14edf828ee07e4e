//! Running PostgreSQL's own programs (`pg_dump`, `pg_restore`): finding them, passing a
//! password without putting it on their command line, and never leaving one running
//! after the thread that started it is gone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{PG_DUMP_ENV, PG_RESTORE_ENV};
use crate::error::{Result, StoreError};

/// Finds `name`: `$env` when set (it must exist), else on `PATH`, else in the newest
/// `/usr/lib/postgresql/*/bin`.
pub(super) fn find_tool(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::Tool {
                tool: name.into(),
                message: format!(
                    "{name} is not installed at {} (set by {env}): install the PostgreSQL \
                     client (apt-get install postgresql-client) or correct {env}",
                    path.display()
                ),
            })
        };
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }) {
        return Ok(path);
    }
    if let Some(path) = newest_postgres_bin(Path::new("/usr/lib/postgresql"), name) {
        return Ok(path);
    }
    Err(not_installed(name))
}

pub(super) fn not_installed(name: &str) -> StoreError {
    StoreError::Tool {
        tool: name.into(),
        message: format!(
            "{name} is not installed: install the PostgreSQL client \
             (apt-get install postgresql-client), or set {} to its path",
            if name == "pg_dump" {
                PG_DUMP_ENV
            } else {
                PG_RESTORE_ENV
            }
        ),
    }
}

/// `root/<newest major version>/bin/name`, if present.
pub(super) fn newest_postgres_bin(root: &Path, name: &str) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: Vec<u64> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

pub(super) fn spawn(mut cmd: Command, name: &str, tool: &Path) -> Result<Child> {
    // The tool dies with the thread that started it (which waits for it to the end), so a
    // server killed with SIGKILL leaves no pg_dump writing on behind it.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only prctl(2) runs, which is async-signal-safe and
        // touches no memory of the parent.
        let parent = std::process::id();
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl: then nobody waits for the tool.
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(std::io::Error::other("the starting process is gone"));
                }
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_installed(name)
        } else {
            StoreError::Tool {
                tool: name.into(),
                message: format!("cannot start {}: {e}", tool.display()),
            }
        }
    })
}

/// Runs a command to its end, capturing its output.
pub(super) fn run_to_end(
    mut cmd: Command,
    name: &str,
    tool: &Path,
) -> Result<std::process::Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd, name, tool)?;
    child.wait_with_output().map_err(|e| StoreError::Tool {
        tool: name.into(),
        message: format!("cannot read the output of {}: {e}", tool.display()),
    })
}

/// Reads the child's stderr on a thread, so that a full pipe never blocks it.
pub(super) fn collect_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let pipe = child.stderr.take();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

pub(super) fn stderr_text(stderr: &[u8]) -> String {
    // One line, as every error of the CLI is: the tool's lines joined.
    let text = String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let text = text.as_str();
    // Keep messages readable: the end holds the error.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 2000 {
        format!(
            "...{}",
            chars[chars.len() - 2000..].iter().collect::<String>()
        )
    } else {
        text.to_string()
    }
}

pub(super) fn tool_failed(
    name: &str,
    status: &std::process::ExitStatus,
    stderr: &[u8],
) -> StoreError {
    StoreError::Tool {
        tool: name.into(),
        message: format!("failed ({status}): {}", stderr_text(stderr)),
    }
}

/// Splits the password out of a `postgres://user:password@host/db` URL: the URL without
/// it, and the password (percent-decoded), to be passed in `PGPASSWORD`.
pub(super) fn split_password(url: &str) -> (String, Option<String>) {
    let (Some(s), Some(at)) = (url.find("://"), url.rfind('@')) else {
        return (url.to_string(), None);
    };
    if at <= s {
        return (url.to_string(), None);
    }
    let creds = &url[s + 3..at];
    match creds.find(':') {
        Some(c) => {
            let password = percent_decode(&creds[c + 1..]);
            let plain = format!("{}{}{}", &url[..s + 3], &creds[..c], &url[at..]);
            (plain, Some(password))
        }
        None => (url.to_string(), None),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

pub(super) fn set_password(cmd: &mut Command, password: Option<String>) {
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        cmd.env("PGCONNECT_TIMEOUT", "30");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backup tool (pg_dump, pg_restore) does not outlive the thread that started it,
    /// which waits for it: a server killed with SIGKILL leaves no tool running on.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_tool_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            spawn(cmd, "sleep", Path::new("sleep")).unwrap()
        })
        .join()
        .unwrap();
        let status = cairn_testkit::wait_until(
            "sleep killed with its thread",
            std::time::Duration::from_secs(10),
            || child.try_wait().unwrap(),
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    #[test]
    fn splits_the_password_out_of_a_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/db?x=1"),
            (
                "postgres://u@h:5432/db?x=1".to_string(),
                Some("p@ss".into())
            )
        );
        assert_eq!(
            split_password("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
        assert_eq!(
            split_password("postgresql://h/db"),
            ("postgresql://h/db".to_string(), None)
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%42c"), "ABc");
    }
}
