//! Test harness for Cairn's integration tests.
//!
//! Nothing here is a mock: the kit starts real things and cleans them up.
//!
//! * [`PgCluster`] — a throwaway PostgreSQL server in a temporary directory,
//!   on a free port of 127.0.0.1, with `trust` authentication and durability
//!   switched off for speed. It starts in about a second; stopping and
//!   starting it again ([`PgCluster::stop`], [`PgCluster::start_again`])
//!   allows restart tests.
//! * [`shared_cluster`] — one cluster per test process, started lazily, so
//!   that the many tests of one test binary share it; each test creates its
//!   own database with [`PgCluster::create_database`] and [`unique_name`].
//! * [`wait_until`] / [`poll_until`] — poll a condition every 20 ms with a
//!   deadline instead of sleeping blindly.
//! * [`free_port`] — a currently free TCP port on 127.0.0.1.
//! * [`MotoServer`] — a real S3-compatible server (moto) on a free port, for backup
//!   repositories in object storage.
//! * [`Gate`] — holds the first thread at a named failure point until released, to play
//!   a race out in a fixed order.
//! * [`spawn_announcing`] — start a server process and read the `http://` address it
//!   prints.
//!
//! # Requirements
//!
//! The PostgreSQL server programs `initdb` and `pg_ctl`, and `psql`, are
//! looked up in `$CAIRN_TESTKIT_PG_BIN`, then on `PATH`, then in the newest
//! `/usr/lib/postgresql/*/bin` (where Debian and Ubuntu install them:
//! `apt-get install postgresql`). Without them [`PgCluster::start`] returns
//! [`TestkitError::MissingBinaries`], saying so.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as in many
//! containers), `initdb` and `pg_ctl` are run as the `postgres` user with
//! `runuser` (or `su`), and the cluster's directory is owned by that user.
//!
//! # Example
//!
//! ```no_run
//! use cairn_testkit::{shared_cluster, unique_name};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = shared_cluster()?;
//! let url = cluster.create_database(&unique_name("my_test"))?;
//! // connect to `url` (postgres://postgres@127.0.0.1:PORT/my_test_PID_N) ...
//! # let _ = url;
//! # Ok(())
//! # }
//! ```

mod error;
mod gate;
mod moto;
mod net;
mod pg;
mod process;
mod sys;
mod wait;

#[cfg(test)]
mod tests;

pub use error::TestkitError;
pub use gate::Gate;
pub use moto::{MotoServer, MOTO_ENV};
pub use net::{free_port, try_free_port};
pub use pg::{shared_cluster, unique_name, PgCluster, DEFAULT_DATABASE, SUPERUSER};
pub use process::{spawn_announcing, terminate};
pub use wait::{poll_until, wait_until, POLL_INTERVAL};
