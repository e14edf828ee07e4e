//! `cairn`: the content repository's server and command line.

mod commands;
mod data;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::data::DataDir;

/// Cairn: a content repository with safe online backups of its index and database.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the repository is.
#[derive(Args, Debug, Clone)]
struct DataArgs {
    /// The data folder (database, index, backups).
    #[arg(long, env = "CAIRN_DATA", default_value = "./cairn-data")]
    data: PathBuf,
    /// The database: sqlite://PATH (default DIR/cairn.db) or postgres://...
    #[arg(long, env = "CAIRN_DATABASE")]
    database: Option<String>,
}

impl DataArgs {
    fn dir(&self) -> Result<DataDir> {
        DataDir::new(&self.data, self.database.as_deref())
    }
}

/// A running server to ask instead of opening the data folder.
#[derive(Args, Debug, Clone)]
struct ServerArgs {
    /// Ask this running server (http://HOST:PORT) instead of opening --data.
    #[arg(long)]
    server: Option<String>,
    /// The administrator's key for --server.
    #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
}

impl ServerArgs {
    /// The server to ask, when --server was given.
    fn remote(&self) -> Result<Option<commands::Remote>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let key = self.admin_key.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "--server needs the administrator's key: --admin-key or CAIRN_ADMIN_KEY"
            )
        })?;
        Ok(Some(commands::Remote::new(server, key)))
    }
}

/// How long a client may take or stall on one connection (`serve`, `search-service`).
#[derive(Args, Debug, Clone, Copy)]
struct ConnectionArgs {
    /// Seconds a connection has for a request's line and headers, from when the server is
    /// ready for them (the connection opened, or the previous answer sent): a connection
    /// that sends nothing, part of a request, or sits idle between requests is closed.
    #[arg(long, env = "CAIRN_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds an answer may make no progress because the client does not read it.
    #[arg(long, env = "CAIRN_IDLE_TIMEOUT", default_value_t = 60)]
    idle_timeout: u64,
}

impl ConnectionArgs {
    fn limits(self) -> cairn_api::ConnectionLimits {
        cairn_api::ConnectionLimits {
            header_timeout: std::time::Duration::from_secs(self.header_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout.max(1)),
        }
    }
}

/// The admin console (`GET /admin` on `serve` and `search-service`).
#[derive(Args, Debug, Clone, Copy)]
struct AdminArgs {
    /// Minutes an admin console session lasts without a request (12 hours at most).
    #[arg(long, env = "CAIRN_ADMIN_SESSION_MINUTES", default_value_t = 30)]
    admin_session_minutes: u64,
    /// The server sits behind TLS (a proxy terminates it): the console's cookie is Secure.
    #[arg(long, env = "CAIRN_BEHIND_TLS")]
    behind_tls: bool,
}

impl AdminArgs {
    fn settings(self) -> commands::serve::AdminSettings {
        commands::serve::AdminSettings {
            session_idle: std::time::Duration::from_secs(self.admin_session_minutes.max(1) * 60),
            behind_tls: self.behind_tls,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the repository over HTTP (OData, sensenet's dialect).
    Serve {
        #[command(flatten)]
        data: DataArgs,
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The administrator's API key (default: DIR/admin.key, generated on first start).
        #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// The most items one answer holds; a larger $top is clamped.
        #[arg(long, env = "CAIRN_MAX_TOP", default_value_t = 10_000)]
        max_top: usize,
        /// The largest request body, in bytes.
        #[arg(long, env = "CAIRN_MAX_BODY", default_value_t = 10 << 20)]
        max_body: usize,
        /// The longest `query` or `$filter`, in bytes.
        #[arg(long, env = "CAIRN_MAX_QUERY", default_value_t = 16 << 10)]
        max_query: usize,
        /// The largest file uploaded in one request (not in chunks), in bytes. A chunk of
        /// a chunked upload is bounded by --max-body.
        #[arg(long, env = "CAIRN_MAX_UPLOAD", default_value_t = 1 << 30)]
        max_upload: u64,
        /// Keep the files' blobs in this S3 bucket (`s3://BUCKET/PREFIX`; S3 settings from
        /// the AWS_* variables) instead of beside the database (SQLite) or in it
        /// (PostgreSQL). Chosen before the first file is stored, and then recorded in the
        /// database: every web node and command finds the blobs there without it.
        #[arg(long, env = "CAIRN_BLOB_STORE")]
        blob_store: Option<String>,
        /// Seconds a chunked upload may wait for its next chunk before it is abandoned
        /// and its bytes removed.
        #[arg(long, env = "CAIRN_UPLOAD_TIMEOUT", default_value_t = 3600)]
        upload_timeout: u64,
        /// Seconds a request may take before it is answered 408.
        #[arg(long, env = "CAIRN_REQUEST_TIMEOUT", default_value_t = 60)]
        request_timeout: u64,
        /// Days an indexing activity is kept at least (also never below the position of
        /// the live index or of any backup in DIR/backups).
        #[arg(long, env = "CAIRN_ACTIVITY_RETENTION_DAYS", default_value_t = 30)]
        activity_retention_days: u64,
        /// MB/s an online backup starts at while the repository is being written to, then
        /// slower or faster to keep the writers' commit cycle within 15% of its value
        /// before the backup (full speed when nobody writes); 0: always full speed.
        #[arg(long, env = "CAIRN_BACKUP_BUSY_RATE", default_value_t = 100)]
        backup_busy_rate: u64,
        /// Run as a web node without a local index: queries go to this search service, or
        /// to these search replicas (URL1,URL2,...: the healthy ones in turn, failing over;
        /// backups to the first healthy one) (use with --database postgres://...).
        #[arg(long, env = "CAIRN_SEARCH_SERVICE")]
        search_service: Option<String>,
        /// The secret shared with the search service.
        #[arg(long, env = "CAIRN_SEARCH_SECRET", hide_env_values = true)]
        search_secret: Option<String>,
        /// Ask for the administrator's key on /metrics too (open by default, as Prometheus
        /// scrapes it).
        #[arg(long, env = "CAIRN_METRICS_NEED_KEY")]
        metrics_need_key: bool,
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The central search service: owns the one index of several web nodes.
    SearchService {
        #[command(flatten)]
        data: DataArgs,
        /// Address to listen on (loopback by default).
        #[arg(long, env = "CAIRN_SEARCH_LISTEN", default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// The secret web nodes present (default: DIR/search.secret, generated on first start).
        #[arg(long, env = "CAIRN_SEARCH_SECRET", hide_env_values = true)]
        search_secret: Option<String>,
        /// Days an indexing activity is kept at least.
        #[arg(long, env = "CAIRN_ACTIVITY_RETENTION_DAYS", default_value_t = 30)]
        activity_retention_days: u64,
        /// MB/s an online backup starts at while the index is being written to, then
        /// paced by the writers' commit cycle as on `serve`; 0: always full speed.
        #[arg(long, env = "CAIRN_BACKUP_BUSY_RATE", default_value_t = 100)]
        backup_busy_rate: u64,
        /// A new replica: restore the index from this backup (a folder or REPO/NAME of this
        /// repository) instead of rebuilding it, then catch up from the activity log,
        /// taking queries once caught up. Ignored when the data folder has an index.
        #[arg(long, env = "CAIRN_SEED_FROM")]
        seed_from: Option<String>,
        /// The age identity of an encrypted --seed-from backup.
        #[arg(long)]
        identity: Option<PathBuf>,
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Index operations: status, integrity check, rebuild.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Files: check that every blob the database names is in the blob store, intact.
    Blob {
        #[command(subcommand)]
        command: BlobCommand,
    },
    /// Backups: create (online through a server, or of a stopped repository), verify, list.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Restore a backup into a data folder (no server may run on it).
    Restore {
        /// The backup: a folder, or REPO/NAME (s3://bucket/prefix/NAME).
        #[arg(long)]
        from: String,
        #[command(flatten)]
        data: DataArgs,
        /// The age identity file of an encrypted backup.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Restore the index only (the next start catches it up).
        #[arg(long, conflicts_with = "database_only")]
        index_only: bool,
        /// Restore the database only (the next start rebuilds the index).
        #[arg(long)]
        database_only: bool,
        /// Restore a backup of another repository.
        #[arg(long)]
        force: bool,
        /// Restore the continuous archive --from REPO to this time (RFC 3339, fractions of
        /// a second kept) or `latest`: the database exactly as committed then, and an index
        /// not ahead of it (the next start catches it up).
        #[arg(long, conflicts_with_all = ["index_only", "database_only", "force"])]
        at: Option<String>,
        /// With --at and a PostgreSQL --database: the new PostgreSQL data folder (absent or
        /// empty; as root, owned by the user PostgreSQL runs as) that PostgreSQL's recovery
        /// makes the cluster as it was at that time. It is left stopped, ready to start.
        #[arg(long, requires = "at")]
        pg_data: Option<PathBuf>,
    },
    /// Bulk import of JSON lines: {"Path":"/Root/...","Type":"Folder",...fields}.
    Import {
        #[command(flatten)]
        data: DataArgs,
        /// Keep the files' blobs in this S3 bucket (`s3://BUCKET/PREFIX`; S3 settings from
        /// the AWS_* variables) instead of beside the database (SQLite) or in it
        /// (PostgreSQL). Chosen before the first file is stored, and then recorded in the
        /// database: every web node and command finds the blobs there without it.
        #[arg(long, env = "CAIRN_BLOB_STORE")]
        blob_store: Option<String>,
        /// Lines committed per transaction (at least 1).
        #[arg(long, default_value_t = 10_000,
              value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
        /// The JSON lines file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Take a backup: the index first, then the database, then the manifest.
    Create {
        /// A running server: it takes the backup online.
        #[arg(long, conflicts_with = "data")]
        server: Option<String>,
        /// The administrator's key for --server.
        #[arg(long, env = "CAIRN_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// With --server: the folder name in the server's backup folder.
        #[arg(long)]
        target: Option<String>,
        /// The new backup: a folder, or REPO/NAME (s3://bucket/prefix/NAME). With --server,
        /// S3 is written by the server; a folder is a download of the server's backup.
        #[arg(long)]
        to: Option<String>,
        /// A stopped repository's data folder.
        #[arg(long)]
        data: Option<PathBuf>,
        /// With --data: its database, if not DIR/cairn.db.
        #[arg(long, env = "CAIRN_DATABASE")]
        database: Option<String>,
        /// The index alone.
        #[arg(long)]
        index_only: bool,
        /// Encrypt the backup to this age recipient (age1...).
        #[arg(long)]
        encrypt_to: Option<String>,
    },
    /// Check a backup: checksums, the index opens, the database checks, positions agree.
    Verify {
        /// The backup: a folder, or REPO/NAME.
        backup: String,
        /// The age identity file of an encrypted backup (without it only what can be
        /// checked without the key is).
        #[arg(long)]
        identity: Option<PathBuf>,
    },
    /// Finished backups in a repository (default: DIR/backups of --data).
    List {
        /// The repository: a folder, or s3://bucket/prefix.
        repo: Option<String>,
        /// The data folder whose backups to list, when no repository is given.
        #[arg(long, env = "CAIRN_DATA", default_value = "./cairn-data")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a continuous archive ([backup.archive]) can restore: its window, its bases, the
    /// last change archived.
    Timeline {
        /// The repository: a folder, or s3://bucket/prefix.
        repo: String,
        /// The age identity file, to read encrypted bases.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an age identity for encrypted backups: writes the secret key into FILE (mode
    /// 0600; keep it away from the machine that backs up) and prints the recipient to give
    /// --encrypt-to.
    Keygen {
        /// The new identity file.
        file: PathBuf,
    },
    /// Delete a backup (never what another backup of the repository still needs).
    Delete {
        /// The backup: REPO/NAME.
        backup: String,
    },
    /// Delete the backups a retention does not keep, then what nothing needs any more.
    Prune {
        /// The repository: a folder, or s3://bucket/prefix.
        repo: String,
        /// Keep at most this many, the newest.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep_last: Option<u32>,
        /// Keep none older than this (7d, 12h).
        #[arg(long)]
        keep_within: Option<String>,
        /// Never keep fewer than this many, expired or not.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        min_count: Option<u32>,
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What `index status` and `index check` look at: a data folder, or a running server.
#[derive(Args, Debug, Clone)]
struct InspectArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BlobCommand {
    /// Read every blob the database names: each must be in the blob store with the bytes
    /// its name (SHA-256) says. Read only; exits 1 when one is missing or damaged.
    Check {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the blobs the database no longer names (an overwritten file's old bytes, an
    /// upload cut short). Offline: no server may run on the repository. With continuous
    /// archiving on SQLite, a blob the archive has not shipped yet is kept.
    Gc {
        #[command(flatten)]
        data: DataArgs,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    /// The completion state against the database's last activity.
    Status(InspectArgs),
    /// Compare the database with the index; exits 1 when they differ.
    Check(InspectArgs),
    /// Build the index again from the database: of a stopped repository (--data), beside
    /// its index and swapped in; or by a running server (--server), while it serves.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replace a running server's index with a backup's, caught up to its database, while
    /// it serves (RestoreIndex). A stopped repository is restored with `cairn restore`.
    Restore {
        #[command(flatten)]
        server: ServerArgs,
        /// The backup: REPO/NAME (a folder's, or s3://BUCKET/PREFIX/NAME), as the server
        /// reads it.
        #[arg(long)]
        from: String,
        /// The identity file of an encrypted backup, a path on the server's machine.
        #[arg(long)]
        identity: Option<String>,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve {
            data,
            listen,
            admin_key,
            max_top,
            max_body,
            max_query,
            max_upload,
            blob_store,
            upload_timeout,
            request_timeout,
            activity_retention_days,
            backup_busy_rate,
            search_service,
            search_secret,
            metrics_need_key,
            connections,
            admin,
        } => commands::serve::run(
            &DataDir {
                blob_store,
                ..data.dir()?
            },
            commands::serve::ServeOptions {
                listen,
                admin_key,
                max_top: max_top.max(1),
                max_body_bytes: max_body,
                max_query_bytes: max_query.max(16),
                max_upload_bytes: max_upload,
                upload_timeout: std::time::Duration::from_secs(upload_timeout.max(1)),
                request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
                activity_retention: std::time::Duration::from_secs(
                    activity_retention_days * 86_400,
                ),
                backup_busy_rate: backup_busy_rate.saturating_mul(1 << 20),
                search_service,
                search_secret,
                metrics_need_key,
                connections: connections.limits(),
                admin: admin.settings(),
            },
        ),
        Command::SearchService {
            data,
            listen,
            search_secret,
            activity_retention_days,
            backup_busy_rate,
            seed_from,
            identity,
            connections,
            admin,
        } => commands::serve::run_search_service(
            &data.dir()?,
            listen,
            search_secret,
            std::time::Duration::from_secs(activity_retention_days * 86_400),
            backup_busy_rate.saturating_mul(1 << 20),
            connections.limits(),
            seed_from.as_deref(),
            identity.as_deref(),
            admin.settings(),
        ),
        Command::Blob { command } => match command {
            BlobCommand::Check { data, json } => commands::files::check(&data.dir()?, json),
            BlobCommand::Gc {
                data,
                dry_run,
                json,
            } => commands::files::gc(&data.dir()?, dry_run, json),
        },
        Command::Index { command } => match command {
            IndexCommand::Status(InspectArgs { data, server, json }) => match server.remote()? {
                Some(remote) => commands::index::status_remote(&remote, json),
                None => commands::index::status(&data.dir()?, json),
            },
            IndexCommand::Check(InspectArgs { data, server, json }) => match server.remote()? {
                Some(remote) => commands::index::check_remote(&remote, json),
                None => commands::index::check(&data.dir()?, json),
            },
            IndexCommand::Rebuild { data, server } => match server.remote()? {
                Some(remote) => commands::index::replace_remote(&remote, None),
                None => commands::index::rebuild(&data.dir()?),
            },
            IndexCommand::Restore {
                server,
                from,
                identity,
            } => match server.remote()? {
                Some(remote) => {
                    commands::index::replace_remote(&remote, Some((&from, identity.as_deref())))
                }
                None => anyhow::bail!(
                    "index restore replaces a running server's index: give --server URL (a \
                     stopped repository is restored with `cairn restore`)"
                ),
            },
        },
        Command::Backup { command } => match command {
            BackupCommand::Create {
                server: Some(server),
                admin_key,
                target,
                to,
                index_only,
                encrypt_to,
                ..
            } => {
                let remote = ServerArgs {
                    server: Some(server),
                    admin_key,
                }
                .remote()?
                .ok_or_else(|| anyhow::anyhow!("--server is missing"))?;
                commands::backup::create_remote(
                    &remote,
                    target.as_deref(),
                    to.as_deref(),
                    index_only,
                    encrypt_to.as_deref(),
                )
            }
            BackupCommand::Create {
                target: Some(_),
                data: Some(_),
                ..
            } => Err(anyhow::anyhow!(
                "--target names a folder in a server's backup folder (with --server); with \
                 --data, --to DIR is where the backup goes"
            )),
            BackupCommand::Create {
                data: Some(data),
                database,
                to: Some(to),
                index_only,
                encrypt_to,
                ..
            } => commands::backup::create_offline(
                &DataDir::new(&data, database.as_deref())?,
                &to,
                index_only,
                encrypt_to.as_deref(),
            ),
            BackupCommand::Create { .. } => Err(anyhow::anyhow!(
                "give --server URL [--to DIR|REPO/NAME] (online) or --data DIR --to DIR|REPO/NAME \
                 (stopped repository)"
            )),
            BackupCommand::Verify { backup, identity } => {
                commands::backup::verify_cmd(&backup, identity.as_deref())
            }
            BackupCommand::List { repo, data, json } => {
                let repo = repo
                    .unwrap_or_else(|| commands::backup::default_dir(&data).display().to_string());
                commands::repository::list(&repo, json)
            }
            BackupCommand::Delete { backup } => commands::repository::delete(&backup),
            BackupCommand::Timeline {
                repo,
                identity,
                json,
            } => commands::repository::timeline(&repo, identity.as_deref(), json),
            BackupCommand::Keygen { file } => {
                let recipient = cairn_backup::repo::crypt::generate_identity(&file)
                    .map_err(commands::repository::reason)?;
                eprintln!(
                    "identity written to {} (keep it safe: it reads the backups)",
                    file.display()
                );
                println!("{recipient}");
                Ok(ExitCode::SUCCESS)
            }
            BackupCommand::Prune {
                repo,
                keep_last,
                keep_within,
                min_count,
                dry_run,
            } => commands::repository::prune(
                &repo,
                keep_last,
                keep_within.as_deref(),
                min_count,
                dry_run,
            ),
        },
        Command::Restore {
            from,
            data,
            identity,
            index_only,
            database_only,
            force,
            at,
            pg_data,
        } => {
            if let Some(at) = at {
                return commands::backup::restore_at_cmd(
                    &from,
                    &at,
                    &data.dir()?,
                    pg_data.as_deref(),
                    identity.as_deref(),
                );
            }
            let mode = match (index_only, database_only) {
                (true, _) => cairn_backup::RestoreMode::IndexOnly,
                (_, true) => cairn_backup::RestoreMode::DatabaseOnly,
                _ => cairn_backup::RestoreMode::Both,
            };
            commands::backup::restore_cmd(&from, &data.dir()?, mode, force, identity.as_deref())
        }
        Command::Import {
            data,
            blob_store,
            batch,
            file,
        } => commands::import::run(
            &DataDir {
                blob_store,
                ..data.dir()?
            },
            &file,
            batch as usize,
        ),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
                // `cairn` also matches `cairn_api` (directives are prefixes): request logs stay at
                // warn unless CAIRN_LOG asks for them. Tantivy's "couldn't find segment in
                // SegmentManager" is not a fault: a background merge finished after a commit
                // had dropped one of its segments (all its documents deleted), and the merge
                // is simply discarded. Any CAIRN_LOG setting shows it again.
                tracing_subscriber::EnvFilter::new(
                    "warn,cairn=info,cairn_index=info,cairn_api=warn,cairn_backup=info,\
                     tantivy::indexer::segment_manager=error",
                )
            }),
        )
        .init();
    // Named failure points from `FAILPOINTS` (process tests); compiled in for tests only.
    let _failpoints = fail::has_failpoints().then(fail::FailScenario::setup);
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
