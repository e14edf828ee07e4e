//! The error type of the test kit.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a test-kit operation failed.
///
/// The [`Display`](fmt::Display) output is meant to be read in a failing test's
/// output: it names the command that failed, its exit status, the tail of its
/// output and, for server start-up problems, the tail of the server log.
///
/// The type is [`Clone`] so that one start-up failure of the
/// [shared cluster](crate::shared_cluster) can be reported to every test that
/// asks for it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TestkitError {
    /// PostgreSQL programs (`initdb`, `pg_ctl`, `psql`) could not be found.
    MissingBinaries {
        /// The programs that were not found.
        missing: Vec<String>,
    },
    /// The environment cannot run a PostgreSQL server, e.g. the tests run as
    /// root and there is no `postgres` user to run the server as.
    Setup {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An operating-system call failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: Arc<io::Error>,
    },
    /// A command ran but exited unsuccessfully.
    CommandFailed {
        /// The command line, shell-quoted.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its standard output.
        stdout_tail: String,
        /// The last lines of its standard error.
        stderr_tail: String,
        /// The last lines of the server log, when relevant.
        log_tail: Option<String>,
    },
    /// Something did not happen before its deadline.
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        deadline: Duration,
        /// The last lines of the server log, when relevant.
        log_tail: Option<String>,
    },
    /// A name (e.g. of a database) was rejected before being used.
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl TestkitError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// Attaches a server-log tail to errors that can carry one and lack it.
    pub(crate) fn with_log_tail(mut self, tail: Option<String>) -> Self {
        match &mut self {
            TestkitError::CommandFailed { log_tail, .. }
            | TestkitError::Timeout { log_tail, .. }
                if log_tail.is_none() =>
            {
                *log_tail = tail;
            }
            _ => {}
        }
        self
    }
}

fn write_block(f: &mut fmt::Formatter<'_>, title: &str, text: &str) -> fmt::Result {
    let text = text.trim_end();
    if text.is_empty() {
        return Ok(());
    }
    write!(f, "\n--- {title} ---")?;
    for line in text.lines() {
        write!(f, "\n    {line}")?;
    }
    Ok(())
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestkitError::MissingBinaries { missing } => write!(
                f,
                "PostgreSQL server binaries are missing: {} not found on PATH, in \
                 $CAIRN_TESTKIT_PG_BIN or in /usr/lib/postgresql/*/bin; install them \
                 (Debian/Ubuntu: `apt-get install postgresql`) or point \
                 CAIRN_TESTKIT_PG_BIN at the directory holding initdb, pg_ctl and psql",
                missing.join(", ")
            ),
            TestkitError::Setup { message } => f.write_str(message),
            TestkitError::Io { context, source } => write!(f, "{context}: {source}"),
            TestkitError::CommandFailed {
                command,
                status,
                stdout_tail,
                stderr_tail,
                log_tail,
            } => {
                write!(f, "command failed ({status}): {command}")?;
                write_block(f, "stderr (tail)", stderr_tail)?;
                write_block(f, "stdout (tail)", stdout_tail)?;
                if let Some(log) = log_tail {
                    write_block(f, "server log (tail)", log)?;
                }
                Ok(())
            }
            TestkitError::Timeout {
                what,
                deadline,
                log_tail,
            } => {
                write!(f, "timed out after {deadline:?} waiting for {what}")?;
                if let Some(log) = log_tail {
                    write_block(f, "server log (tail)", log)?;
                }
                Ok(())
            }
            TestkitError::InvalidName { name, reason } => {
                write!(f, "invalid name {name:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for TestkitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestkitError::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}
