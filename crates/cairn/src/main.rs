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
        /// Seconds a request may take before it is answered 408.
        #[arg(long, env = "CAIRN_REQUEST_TIMEOUT", default_value_t = 60)]
        request_timeout: u64,
    },
    /// Index operations: status, integrity check, rebuild.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Bulk import of JSON lines: {"Path":"/Root/...","Type":"Folder",...fields}.
    Import {
        #[command(flatten)]
        data: DataArgs,
        /// Lines committed per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        /// The JSON lines file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum IndexCommand {
    /// The completion state against the database's last activity.
    Status {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare the database with the index; exits 1 when they differ.
    Check {
        #[command(flatten)]
        data: DataArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the index and build it again from the database.
    Rebuild {
        #[command(flatten)]
        data: DataArgs,
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
            request_timeout,
        } => commands::serve::run(
            &data.dir()?,
            commands::serve::ServeOptions {
                listen,
                admin_key,
                max_top: max_top.max(1),
                max_body_bytes: max_body,
                request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
            },
        ),
        Command::Index { command } => match command {
            IndexCommand::Status { data, json } => commands::index::status(&data.dir()?, json),
            IndexCommand::Check { data, json } => commands::index::check(&data.dir()?, json),
            IndexCommand::Rebuild { data } => commands::index::rebuild(&data.dir()?),
        },
        Command::Import { data, batch, file } => {
            commands::import::run(&data.dir()?, &file, batch.max(1))
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,cairn=info,cairn_index=info")
            }),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
