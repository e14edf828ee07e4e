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
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
