//! The command line's commands.

pub mod backup;
pub mod files;
pub mod import;
pub mod index;
pub mod repository;
pub mod serve;

use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_index::{Indexer, IndexerOptions, OpenReport, StartupAction};
use cairn_store::{CancelToken, Store};

use crate::data::DataDir;
use crate::progress::Progress;

/// A cancel token that SIGINT (Ctrl-C) or SIGTERM cancels, for a long offline command
/// (`what` names it in the message). The work stops at its next check and cleans up; once
/// it has committed (its swap begun) it finishes, and the message says so; a second signal
/// ends the process at once (exit 130).
pub fn cancel_on_signal(what: &'static str) -> CancelToken {
    let token = CancelToken::new();
    let cancel = token.clone();
    let watcher = std::thread::Builder::new()
        .name("cairn-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                for n in 0.. {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                    if n > 0 {
                        std::process::exit(130);
                    }
                    if cancel.cancel() {
                        eprintln!("cairn: stopping the {what} (again to end it at once)");
                    } else {
                        eprintln!(
                            "cairn: the {what} is past the point where it can stop and is \
                             finishing (again to end it at once)"
                        );
                    }
                }
            });
        });
    if let Err(e) = watcher {
        tracing::warn!("cannot watch for Ctrl-C: {e}");
    }
    token
}

/// Whether `e`, or an error it wraps, is a full disk (ENOSPC, EDQUOT, SQLITE_FULL).
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let full = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(cairn_store::fault::is_disk_full)
            || e.downcast_ref::<cairn_store::StoreError>()
                .is_some_and(cairn_store::StoreError::is_disk_full)
            // Some wrap the I/O error in their own text only (tantivy's directory errors).
            || e.to_string().contains("No space left on device");
        if full {
            return true;
        }
        next = e.source();
    }
    false
}

/// Opens the database and the index of `data`: migrations, then rebuild, repair or catch-up
/// of the index, with a progress bar while rebuilding.
pub fn open_repository(data: &DataDir) -> Result<(Arc<Store>, Arc<Indexer>, OpenReport)> {
    open_repository_with(data, IndexerOptions::default())
}

/// [`open_repository`] with explicit indexer settings.
pub fn open_repository_with(
    data: &DataDir,
    options: IndexerOptions,
) -> Result<(Arc<Store>, Arc<Indexer>, OpenReport)> {
    // An interrupted restore leaves these for a person to look at and delete.
    for left in [".restore-old", ".restore-staging"] {
        let p = data.root.join(left);
        if p.exists() {
            tracing::warn!(
                "{} is left from an interrupted restore; delete it once the repository is as \
                 it should be (a restore refuses to run while .restore-old holds data)",
                p.display()
            );
        }
    }
    // Every caller holds the data folder's lock: no swap of another process is under way.
    let recovered = cairn_index::recover_interrupted_swap(&data.index_dir())
        .context("finish an interrupted index swap")?;
    if let Some(did) = recovered {
        tracing::warn!("interrupted index swap: {did}");
    }
    let store = Arc::new(data.open_store()?);
    let progress = Progress::new("rebuilding the index", "items");
    let opened = Indexer::open(&data.index_dir(), store.clone(), options, &|p| {
        progress.set(p.done, p.total)
    });
    let (indexer, report) = opened.map_err(|e| {
        let advice = if is_disk_full(&e) {
            "the disk is full: free space on it, then start again".to_string()
        } else {
            format!(
                "if it is damaged, `cairn index rebuild --data {}` builds it again from the \
                 database",
                data.root.display()
            )
        };
        anyhow::Error::from(e).context(format!(
            "open the index {} ({advice})",
            data.index_dir().display()
        ))
    })?;
    progress.finish();
    match &report.action {
        StartupAction::CaughtUp => {}
        StartupAction::Rebuilt(why) => {
            eprintln!("index rebuilt ({why}) in {:.1} s", progress.elapsed())
        }
        StartupAction::Repaired { reason, refreshed } => eprintln!(
            "warning: the index was ahead of or diverged from the database ({reason}); \
             {refreshed} documents were re-derived from the database"
        ),
    }
    Ok((store, indexer, report))
}

/// A client of a server's administrative API (backups, index state), with the
/// administrator's key: the API crate's one client, its errors said for a person.
pub(crate) struct Remote {
    client: cairn_api::client::Client,
}

impl Remote {
    /// The server at `base` (`http://HOST:PORT`), called with the administrator's `key`.
    pub(crate) fn new(base: &str, key: &str) -> Remote {
        Remote {
            client: cairn_api::client::Client::with_read_limit(base, key, None),
        }
    }

    /// `GET` (no `body`) or `POST` (`body`) of `path`: the JSON answer.
    pub(crate) fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value> {
        let answer = match method {
            "POST" => self.client.post_json(path, body.unwrap_or(""), None),
            _ => self.client.get_json(path, None),
        };
        answer.map_err(|e| match e.status {
            Some(401) => anyhow::anyhow!(
                "{}: the server refused the administrator's key (401)",
                e.call
            ),
            _ => anyhow::anyhow!("{e}"),
        })
    }

    /// `GET path` as a stream.
    pub(crate) fn open(&self, path: &str) -> Result<Box<dyn std::io::Read + Send>> {
        let (_, reader) = self.client.open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(reader)
    }
}
