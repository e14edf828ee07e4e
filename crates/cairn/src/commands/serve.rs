//! `cairn serve`: the repository over HTTP. Takes the data folder's lock, opens (rebuilds,
//! repairs or catches up) the index, serves until SIGTERM or Ctrl-C, then finishes in-flight
//! requests, makes a final index commit and releases the lock.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::Arc;

use cairn_api::backend::{BackupBackend, IndexJobs, SearchBackend};
use cairn_api::replicas::Replicas;
use cairn_api::{router, ApiConfig, AppState, ConnectionLimits};
use cairn_store::Store;

use crate::commands::open_repository;
use crate::data::DataDir;
use cairn_backup::policy::Policies;

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
    /// Longest `query` / `$filter` in bytes.
    pub max_query_bytes: usize,
    /// Largest file uploaded whole, in bytes.
    pub max_upload_bytes: u64,
    /// How long a chunked upload waits for its next chunk.
    pub upload_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Activities younger than this are never deleted.
    pub activity_retention: Duration,
    /// Bytes per second an online backup copies at most while the repository is being
    /// written to; 0: always full speed.
    pub backup_busy_rate: u64,
    /// A web node of a shared PostgreSQL database: the search service's URL.
    pub search_service: Option<String>,
    /// The secret shared with the search service.
    pub search_secret: Option<String>,
    /// `/metrics` asks for the administrator's key too.
    pub metrics_need_key: bool,
    /// How long a client may take or stall on one connection.
    pub connections: ConnectionLimits,
    /// The admin console's sessions.
    pub admin: AdminSettings,
}

/// The admin console's settings.
#[derive(Clone, Copy, Debug)]
pub struct AdminSettings {
    /// How long a session lasts without a request.
    pub session_idle: Duration,
    /// Whether its cookie is `Secure` (the server is behind TLS).
    pub behind_tls: bool,
}

/// The shortest administrator's key or search secret accepted: a key is all that stands
/// between the network and the repository.
const MIN_KEY_CHARS: usize = 16;

fn check_key(key: String, whence: &str) -> Result<String> {
    if key.chars().count() < MIN_KEY_CHARS {
        anyhow::bail!(
            "the key or secret of {whence} has {} characters; give one of at least \
             {MIN_KEY_CHARS} (a generated one has 64)",
            key.chars().count()
        );
    }
    Ok(key)
}

/// A credential of this server: `given` (by a flag or the environment, named `flag`),
/// or kept in `DIR/file`, or generated there (64 hex characters, mode 0600, its path
/// printed). `what` names it in messages. At least 16 characters, however it came.
fn credential(
    data: &DataDir,
    given: Option<String>,
    flag: &str,
    file: &str,
    what: &str,
) -> Result<String> {
    if let Some(k) = given_credential(&given, flag)? {
        return Ok(k);
    }
    let path = data.root.join(file);
    if path.exists() {
        let k =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        return check_key(k.trim().to_string(), &path.display().to_string());
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &key)?;
    println!("generated {what} in {}", path.display());
    Ok(key)
}

/// A credential given by a flag or the environment (named `flag`), checked: run before the
/// data folder's lock, so that a refused start leaves no folder behind.
fn given_credential(given: &Option<String>, flag: &str) -> Result<Option<String>> {
    match given.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => check_key(k.to_string(), flag).map(Some),
        None => Ok(None),
    }
}

const ADMIN_KEY_FLAG: &str = "--admin-key or CAIRN_ADMIN_KEY";
const SECRET_FLAG: &str = "--search-secret or CAIRN_SEARCH_SECRET";

/// The administrator's key: given, or kept in `DIR/admin.key`, or generated there.
fn admin_key(data: &DataDir, given: Option<String>) -> Result<String> {
    credential(
        data,
        given,
        ADMIN_KEY_FLAG,
        "admin.key",
        "the administrator's API key",
    )
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

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives right after the banner, before the
/// server polls it, must be a graceful stop too, not the default action's kill.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down: finishing in-flight requests");
    })
}

fn api_config(key: String, opts: &ServeOptions) -> ApiConfig {
    let mut config = ApiConfig::new(key);
    config.max_top = opts.max_top;
    config.max_body_bytes = opts.max_body_bytes;
    config.max_query_bytes = opts.max_query_bytes;
    config.max_upload_bytes = opts.max_upload_bytes;
    config.upload_timeout = opts.upload_timeout;
    config.request_timeout = opts.request_timeout;
    config.metrics_need_key = opts.metrics_need_key;
    config.admin_session_idle = opts.admin.session_idle;
    config.behind_tls = opts.admin.behind_tls;
    config
}

/// Binds `listen` before anything else is done: a taken port fails at once, and a first
/// start creates no repository for a server that cannot serve.
fn bind(listen: SocketAddr) -> Result<std::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `app` on `listener` until SIGTERM or Ctrl-C.
fn serve_until_signal(
    listener: std::net::TcpListener,
    app: cairn_api::App,
    limits: ConnectionLimits,
    banner: impl FnOnce(SocketAddr),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).context("listen")?;
        let shutdown = shutdown_signal()?;
        banner(listener.local_addr()?);
        cairn_api::serve(listener, app, limits, shutdown)
            .await
            .context("serve")
    })
}

/// The backups of a process that owns the index: its backup folder and its policies.
struct Backups {
    manager: Arc<cairn_backup::BackupManager>,
    policies: Arc<Policies>,
    /// `RebuildIndex` and `RestoreIndex` while serving.
    replacer: Arc<cairn_backup::replace::IndexReplacer>,
    /// Continuous archiving (`[backup.archive]`), when configured.
    archive: Option<Arc<dyn cairn_backup::archive::Archiving>>,
}

/// The backup policies of `data` (`DIR/cairn.toml`), read before anything starts: a
/// malformed file is refused with its line and why.
fn read_policies(data: &DataDir) -> Result<Vec<cairn_backup::policy::Policy>> {
    cairn_backup::policy::read_policies(&data.root).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The backup folder of a process that owns the index, its policies (started), and its
/// housekeeping.
fn open_backups(
    data: &DataDir,
    store: &Arc<Store>,
    indexer: &Arc<cairn_index::Indexer>,
    policies: Vec<cairn_backup::policy::Policy>,
    retention: Duration,
    busy_rate: u64,
) -> Result<Backups> {
    let source = Arc::new(cairn_backup::LiveSource::new(
        store.clone(),
        indexer.clone(),
        busy_rate,
    ));
    let manager = cairn_backup::BackupManager::open(&data.root.join("backups"), source)
        .context("open the backup folder")?;
    // On PostgreSQL the archive's bases are pg_basebackup's, taken by the archiver itself.
    let policies: Vec<_> = policies
        .into_iter()
        .filter(|p| {
            store.dialect() == cairn_store::Dialect::Sqlite
                || p.name != cairn_backup::policy::ARCHIVE_BASE
        })
        .collect();
    let count = policies.len();
    let policies = Policies::new(manager.clone(), policies);
    policies.start().context("start the backup policies")?;
    if count > 0 {
        for p in policies.views() {
            eprintln!(
                "cairn: backup policy {} ({}) into {}, next run {}",
                p.name,
                p.schedule,
                p.repository,
                p.next_run_at.as_deref().unwrap_or("never")
            );
        }
    }
    let replacer = cairn_backup::replace::IndexReplacer::new(indexer.clone(), &data.root);
    let archive = start_archive(data, store, &policies)?;
    let backups = Backups {
        manager,
        policies,
        replacer,
        archive,
    };
    spawn_housekeeping(store.clone(), indexer.clone(), &backups, retention)?;
    Ok(backups)
}

/// Continuous archiving of `[backup.archive]`, if configured: on SQLite, changes shipped from
/// now on and a base backup (policy `archive-base`) taken at once when the chain needs one;
/// on PostgreSQL, its WAL received and shipped, and `pg_basebackup` bases.
fn start_archive(
    data: &DataDir,
    store: &Arc<Store>,
    policies: &Arc<Policies>,
) -> Result<Option<Arc<dyn cairn_backup::archive::Archiving>>> {
    use cairn_backup::policy::ARCHIVE_BASE;
    let Some(settings) = cairn_backup::policy::read_archive(&data.root)? else {
        return Ok(None);
    };
    if let cairn_store::DatabaseUrl::Postgres(url) = store.url() {
        let repo = cairn_backup::repo::Repository::open(
            &settings.repository,
            &cairn_backup::repo::s3::S3Settings::default(),
        )
        .context("open the archive's repository")?;
        let archiver = cairn_backup::archive::postgres::PgArchiver::start(
            &data.root,
            url,
            &store.repository_id().to_string(),
            repo,
            settings.base_every,
        )
        .context("start archiving the WAL")?;
        policies.attach_archiver(archiver.clone());
        eprintln!(
            "cairn: archiving PostgreSQL's WAL into {} (pg_receivewal through the replication \
             slot {}; bases by pg_basebackup every {} s; index backups: the policy {})",
            settings.repository.display(),
            cairn_store::pg_physical::SLOT,
            settings.base_every.as_secs(),
            cairn_backup::policy::ARCHIVE_INDEX
        );
        return Ok(Some(archiver));
    }
    let repo = cairn_backup::repo::Repository::open(
        &settings.repository,
        &cairn_backup::repo::s3::S3Settings::default(),
    )
    .context("open the archive's repository")?;
    let has_base = policies
        .views()
        .iter()
        .any(|v| v.name == ARCHIVE_BASE && v.last_success.is_some());
    let archiver = cairn_backup::archive::Archiver::start(
        &data.root,
        store.clone(),
        repo,
        has_base,
        policies.archive_bases(),
        settings.spool_limit,
    )
    .context("start archiving")?;
    policies.attach_archiver(archiver.clone());
    eprintln!(
        "cairn: archiving every change into {} (base and index backups: the policies {} and \
         {})",
        settings.repository.display(),
        ARCHIVE_BASE,
        cairn_backup::policy::ARCHIVE_INDEX
    );
    Ok(Some(archiver))
}

/// After serving: the final catch-up and commit, then the lock is released by the caller.
fn finish(
    indexer: &cairn_index::Indexer,
    background: std::thread::JoinHandle<()>,
    backups: &Backups,
    served: Result<()>,
) -> Result<ExitCode> {
    // The last changes shipped (what cannot be now is, at the next start).
    if let Some(a) = &backups.archive {
        a.stop();
    }
    backups.policies.stop();
    // An index rebuild or restore is canceled (one past its point of no return finishes).
    backups.replacer.stop();
    let backups = &backups.manager;
    // A backup the stop interrupts is canceled, not left looking in progress until the
    // next start.
    if backups.is_running() {
        eprintln!("cairn: canceling the running backup");
    }
    if !backups.stop(Duration::from_secs(30)) {
        tracing::warn!("the backup did not stop in 30 s; the next start marks it interrupted");
    }
    // A history a full disk kept from being saved: its last chance.
    if !backups.save_history() {
        eprintln!("cairn: warning: the backup history could not be saved (see the log)");
    }
    indexer
        .shutdown(Some(background))
        .context("final index commit")?;
    served?;
    eprintln!("cairn: stopped; index at {}", indexer.state());
    Ok(ExitCode::SUCCESS)
}

fn spawn_housekeeping(
    store: Arc<Store>,
    indexer: Arc<cairn_index::Indexer>,
    backups: &Backups,
    retention: Duration,
) -> Result<()> {
    let (manager, policies) = (backups.manager.clone(), backups.policies.clone());
    std::thread::Builder::new()
        .name("cairn-housekeeping".into())
        .spawn(move || {
            let mut cleaned: Option<std::time::Instant> = None;
            loop {
                if cleaned.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                    // The oldest backup kept in the policies' repositories counts too; while
                    // one cannot be read, nothing is deleted.
                    let floor = policies.activity_floor(&store.repository_id().to_string());
                    let cleaned_now = floor.map_err(|e| e.to_string()).and_then(|floor| {
                        cairn_backup::clean_activities(
                            &store,
                            &indexer,
                            &manager,
                            floor.map(cairn_store::ActivityId),
                            retention,
                        )
                        .map_err(|e| e.to_string())
                    });
                    match cleaned_now {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "deleted old indexing activities"),
                        Err(e) => tracing::warn!("activity clean-up skipped: {e}"),
                    }
                    cleaned = Some(std::time::Instant::now());
                }
                // A backup history that a full disk kept unsaved is written once it can be.
                manager.save_history();
                std::thread::sleep(Duration::from_secs(10));
            }
        })
        .context("start the housekeeping")?;
    Ok(())
}

/// Runs the server until it is told to stop.
pub fn run(data: &DataDir, opts: ServeOptions) -> Result<ExitCode> {
    if let Some(service) = opts.search_service.clone() {
        return run_web_node(data, opts, &service);
    }
    let listener = bind(opts.listen)?;
    given_credential(&opts.admin_key, ADMIN_KEY_FLAG)?;
    let policies = read_policies(data)?;
    let mut lock = data.lock("serve")?;
    let key = admin_key(data, opts.admin_key.clone())?;
    let (store, indexer, report) = open_repository(data)?;
    lock.hold_database_file(data)?;
    let background = indexer.start();
    let backups = open_backups(
        data,
        &store,
        &indexer,
        policies,
        opts.activity_retention,
        opts.backup_busy_rate,
    )?;
    let state = AppState::new(
        store,
        SearchBackend::Local(indexer.clone()),
        api_config(key, &opts),
    )
    .with_backups(BackupBackend::Local(
        backups.manager.clone(),
        Some(backups.policies.clone()),
    ))
    .with_index_jobs(IndexJobs::Local(backups.replacer.clone()));
    let served = serve_until_signal(listener, router(state), opts.connections, |addr| {
        println!(
            "cairn: serving {} on http://{addr} (index {})",
            data.root.display(),
            report.state
        )
    });
    finish(&indexer, background, &backups, served)
}

/// A web node without a local index: queries and backups go to the search service.
fn run_web_node(data: &DataDir, opts: ServeOptions, service: &str) -> Result<ExitCode> {
    let listener = bind(opts.listen)?;
    given_credential(&opts.admin_key, ADMIN_KEY_FLAG)?;
    if !read_policies(data)?.is_empty() {
        anyhow::bail!(
            "{} has backup policies, but this web node has no index: policies run on the \
             search service (put them in its data folder's cairn.toml)",
            data.root.join(cairn_backup::policy::CONFIG_FILE).display()
        );
    }
    let mut lock = data.lock("serve")?;
    let key = admin_key(data, opts.admin_key.clone())?;
    let secret = opts
        .search_secret
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--search-service needs the shared secret: --search-secret or CAIRN_SEARCH_SECRET"
            )
        })?;
    let store = Arc::new(data.open_store()?);
    lock.hold_database_file(data)?;
    let urls = replica_urls(service)?;
    let replicas = Replicas::new(&urls, &secret, store.clone());
    replicas.start_health_checks();
    let state = AppState::new(
        store,
        SearchBackend::Remote(replicas.clone()),
        api_config(key, &opts),
    )
    .with_backups(BackupBackend::Remote(replicas.clone()))
    .with_index_jobs(IndexJobs::Remote(replicas));
    serve_until_signal(listener, router(state), opts.connections, |addr| {
        println!(
            "cairn: web node of {} on http://{addr} (search service {service})",
            data.database.redacted()
        )
    })?;
    eprintln!("cairn: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The search replicas of `--search-service URL1,URL2,...`: each an `http://` URL, once.
fn replica_urls(given: &str) -> Result<Vec<String>> {
    let mut urls: Vec<String> = Vec::new();
    for u in given.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            anyhow::bail!("--search-service takes http:// URLs separated by commas, not {u:?}");
        }
        let u = u.trim_end_matches('/').to_string();
        if urls.contains(&u) {
            anyhow::bail!("--search-service names {u} twice");
        }
        urls.push(u);
    }
    if urls.is_empty() {
        anyhow::bail!("--search-service names no search service");
    }
    Ok(urls)
}

/// The shared secret of the search service: given, or kept in `DIR/search.secret`, or
/// generated there.
fn service_secret(data: &DataDir, given: Option<String>) -> Result<String> {
    credential(
        data,
        given,
        SECRET_FLAG,
        "search.secret",
        "the search service's shared secret",
    )
}

/// `cairn search-service`: owns the one index of several web nodes, tails the activity log
/// of the shared database, answers queries and runs index backups.
#[allow(clippy::too_many_arguments)]
pub fn run_search_service(
    data: &DataDir,
    listen: SocketAddr,
    secret: Option<String>,
    retention: Duration,
    backup_busy_rate: u64,
    connections: ConnectionLimits,
    seed_from: Option<&str>,
    identity: Option<&Path>,
    admin: AdminSettings,
) -> Result<ExitCode> {
    let listener = bind(listen)?;
    given_credential(&secret, SECRET_FLAG)?;
    let policies = read_policies(data)?;
    // A new replica: its index from a backup (checked to be this repository's), then
    // caught up from the activity log while it already answers /health.
    let seeded = match seed_from {
        Some(from) if !cairn_index::index_exists(&data.index_dir()) => {
            eprintln!("cairn: seeding this replica's index from {from}");
            crate::commands::backup::restore_cmd(
                from,
                data,
                cairn_backup::RestoreMode::IndexOnly,
                false,
                identity,
            )
            .with_context(|| format!("seed the index from {from}"))?;
            true
        }
        Some(from) => {
            tracing::info!(
                "{} holds an index: not seeded from {from}",
                data.root.display()
            );
            false
        }
        None => false,
    };
    let mut lock = data.lock("search-service")?;
    let secret = service_secret(data, secret)?;
    // Writes come from other processes: they wake the indexer through /search/wait, and a
    // short periodic catch-up covers the rest.
    let options = cairn_index::IndexerOptions {
        periodic: Duration::from_secs(1),
        catch_up_on_open: !seeded,
        ..cairn_index::IndexerOptions::default()
    };
    let (store, indexer, report) = crate::commands::open_repository_with(data, options)?;
    lock.hold_database_file(data)?;
    let background = indexer.start();
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(!seeded));
    if seeded {
        watch_catch_up(&indexer, &ready)?;
    }
    let backups = open_backups(
        data,
        &store,
        &indexer,
        policies,
        retention,
        backup_busy_rate,
    )?;
    // The admin console, logged into with the shared secret.
    let mut config = ApiConfig::new(secret.clone());
    config.admin_session_idle = admin.session_idle;
    config.behind_tls = admin.behind_tls;
    let console = cairn_api::admin::console(
        AppState::new(store.clone(), SearchBackend::Local(indexer.clone()), config).with_backups(
            BackupBackend::Local(backups.manager.clone(), Some(backups.policies.clone())),
        ),
    );
    let state = cairn_api::service::ServiceState {
        indexer: indexer.clone(),
        backups: backups.manager.clone(),
        policies: Some(backups.policies.clone()),
        replacer: backups.replacer.clone(),
        secret: Arc::new(secret),
        ready,
    };
    let served = serve_until_signal(
        listener,
        cairn_api::service::service_router(state).merge(console),
        connections,
        |addr| {
            println!(
                "cairn: search service for {} on http://{addr} (index {})",
                data.database.redacted(),
                report.state
            )
        },
    );
    finish(&indexer, background, &backups, served)
}

/// Sets `ready` once `indexer` has applied everything the database had committed when it
/// last looked (a seeded replica takes queries from then on).
fn watch_catch_up(
    indexer: &Arc<cairn_index::Indexer>,
    ready: &Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    let (ix, ready) = (Arc::downgrade(indexer), ready.clone());
    std::thread::Builder::new()
        .name("catch-up-watch".into())
        .spawn(move || loop {
            let Some(ix) = ix.upgrade() else { return };
            let caught_up = ix
                .store()
                .last_activity_id()
                .ok()
                .map(|db| ix.wait_through(db, Duration::from_secs(1)));
            match caught_up {
                Some(Ok(true)) => {
                    ready.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!(state = %ix.state(), "caught up: taking queries");
                    eprintln!("cairn: caught up at {}; taking queries", ix.state());
                    return;
                }
                // Not yet (each round waits a second for it), or the database is away.
                Some(_) => {}
                None => std::thread::sleep(Duration::from_secs(1)),
            }
        })
        .context("start the catch-up watch")?;
    Ok(())
}
