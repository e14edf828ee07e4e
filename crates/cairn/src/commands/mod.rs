//! The command line's commands.

pub mod backup;
pub mod import;
pub mod index;
pub mod serve;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cairn_index::{Indexer, IndexerOptions, OpenReport, StartupAction};
use cairn_store::{CancelToken, Store};

use crate::data::DataDir;
use crate::progress::Progress;

/// A cancel token that SIGINT (Ctrl-C) or SIGTERM cancels, for a long offline command
/// (`what` names it in the message). The work stops at its next check and cleans up; a
/// second signal ends the process at once (exit 130).
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
                    eprintln!("cairn: stopping the {what} (again to end it at once)");
                    cancel.cancel();
                }
            });
        });
    if let Err(e) = watcher {
        tracing::warn!("cannot watch for Ctrl-C: {e}");
    }
    token
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
    let store = Arc::new(
        Store::open(&data.database)
            .with_context(|| format!("open the database {}", data.database.redacted()))?,
    );
    let progress = Progress::new("rebuilding the index", "items");
    let (indexer, report) = Indexer::open(&data.index_dir(), store.clone(), options, &|p| {
        progress.set(p.done, p.total)
    })
    .with_context(|| {
        format!(
            "open the index {} (if it is damaged, `cairn index rebuild --data {}` builds it \
             again from the database)",
            data.index_dir().display(),
            data.root.display()
        )
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

/// A tiny client of a server's administrative API (backups, index state).
pub(crate) struct Remote {
    base: String,
    key: String,
}

impl Remote {
    /// The server at `base` (`http://HOST:PORT`), called with the administrator's `key`.
    pub(crate) fn new(base: &str, key: &str) -> Remote {
        Remote {
            base: base.to_string(),
            key: key.to_string(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }
    pub(crate) fn auth(&self) -> String {
        format!("Bearer {}", self.key)
    }
    pub(crate) fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value> {
        let url = self.url(path);
        let resp = match method {
            "POST" => ureq::post(&url)
                .header("Authorization", &self.auth())
                .config()
                .http_status_as_error(false)
                .build()
                .send(body.unwrap_or("")),
            _ => ureq::get(&url)
                .header("Authorization", &self.auth())
                .config()
                .http_status_as_error(false)
                .build()
                .call(),
        };
        let mut resp = resp.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if status == 401 {
            bail!("{method} {url}: the server refused the administrator's key (401)");
        }
        if !status.is_success() {
            let msg = value["error"]["message"]["value"]
                .as_str()
                .unwrap_or(&text)
                .to_string();
            bail!("{method} {url}: {status}: {msg}");
        }
        Ok(value)
    }
}
