//! `cairn serve`: the repository over HTTP. Takes the data folder's lock, opens (rebuilds,
//! repairs or catches up) the index, serves until SIGTERM or Ctrl-C, then finishes in-flight
//! requests, makes a final index commit and releases the lock.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_api::{router, ApiConfig, AppState};

use crate::commands::open_repository;
use crate::data::DataDir;

/// Settings of `cairn serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The administrator's key, if given.
    pub admin_key: Option<String>,
    /// Cap of `$top`.
    pub max_top: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Activities younger than this are never deleted.
    pub activity_retention: Duration,
}

/// Deletes indexing activities that nothing can need any more: below the live index's
/// position (and its gaps), below the position of every known backup's index, and older
/// than the retention. A restored index then still finds every activity it must catch up.
fn clean_activities(
    store: &cairn_store::Store,
    indexer: &cairn_index::Indexer,
    backups: &cairn_backup::BackupManager,
    retention: Duration,
) -> Result<u64> {
    let state = indexer.state();
    let mut keep_from = state
        .gaps
        .iter()
        .map(|g| g.id)
        .min()
        .unwrap_or(cairn_store::ActivityId(state.last_activity_id.0 + 1));
    keep_from = keep_from.min(state.last_activity_id);
    for (_, m) in backups.list() {
        keep_from = keep_from.min(m.index.completion_state.last_activity_id);
    }
    if backups.is_running() {
        return Ok(0);
    }
    let older_than = time::OffsetDateTime::now_utc() - retention;
    Ok(store.delete_activities(keep_from, older_than)?)
}

/// The administrator's key: given, or kept in `DIR/admin.key`, or generated there (0600).
fn admin_key(data: &DataDir, given: Option<String>) -> Result<String> {
    if let Some(k) = given.filter(|k| !k.trim().is_empty()) {
        return Ok(k.trim().to_string());
    }
    let path = data.root.join("admin.key");
    if path.exists() {
        let k =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        return Ok(k.trim().to_string());
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &key)?;
    println!(
        "generated the administrator's API key in {}",
        path.display()
    );
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Runs the server until it is told to stop.
pub fn run(data: &DataDir, opts: ServeOptions) -> Result<ExitCode> {
    let _lock = data.lock("serve")?;
    let key = admin_key(data, opts.admin_key.clone())?;
    let (store, indexer, report) = open_repository(data)?;
    let background = indexer.start();
    let mut config = ApiConfig::new(key);
    config.max_top = opts.max_top;
    config.max_body_bytes = opts.max_body_bytes;
    config.request_timeout = opts.request_timeout;
    let source = std::sync::Arc::new(cairn_backup::LiveSource {
        store: store.clone(),
        indexer: indexer.clone(),
    });
    let backups = cairn_backup::BackupManager::open(&data.root.join("backups"), source)
        .context("open the backup folder")?;
    {
        let (store, indexer, backups) = (store.clone(), indexer.clone(), backups.clone());
        let retention = opts.activity_retention;
        std::thread::Builder::new()
            .name("cairn-activity-retention".into())
            .spawn(move || loop {
                match clean_activities(&store, &indexer, &backups, retention) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "deleted old indexing activities"),
                    Err(e) => tracing::warn!("activity clean-up failed: {e}"),
                }
                std::thread::sleep(Duration::from_secs(3600));
            })
            .context("start the activity clean-up")?;
    }
    let state = AppState::new(store, indexer.clone(), config).with_backups(backups);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let served: Result<()> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        println!(
            "cairn: serving {} on http://{addr} (index {})",
            data.root.display(),
            report.state
        );
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serve")
    });
    drop(runtime);
    indexer
        .shutdown(Some(background))
        .context("final index commit")?;
    served?;
    eprintln!("cairn: stopped; index at {}", indexer.state());
    Ok(ExitCode::SUCCESS)
}
