//! The state every handler shares: the store, the index (local or remote), the backups,
//! the settings, the metrics.

use std::sync::Arc;

use cairn_store::Store;

use crate::backend::{BackupBackend, IndexJobs, SearchBackend};
use crate::config::ApiConfig;
use crate::files::Uploads;
use crate::metrics::Metrics;

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<Store>,
    /// The index: in this process, or the search service.
    pub search: Arc<SearchBackend>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Request and index metrics.
    pub metrics: Arc<Metrics>,
    /// The backups (absent: backups are not offered).
    pub backups: Option<Arc<BackupBackend>>,
    /// Index rebuilds and restores while serving (absent: not offered).
    pub index_jobs: Option<Arc<IndexJobs>>,
    /// Chunked uploads in progress.
    pub uploads: Arc<Uploads>,
    /// The admin console's sessions and lag samples.
    pub admin: Arc<AdminConsole>,
}

/// What the admin console keeps between requests.
#[derive(Debug)]
pub struct AdminConsole {
    /// Who is logged in.
    pub sessions: crate::admin::sessions::Sessions,
    /// The index's lag over the last hour.
    pub samples: crate::admin::samples::LagSamples,
    /// Whether its cookie is `Secure`.
    pub secure_cookie: bool,
}

impl AppState {
    /// State over an opened repository.
    pub fn new(store: Arc<Store>, search: SearchBackend, config: ApiConfig) -> Self {
        let admin = Arc::new(AdminConsole {
            sessions: crate::admin::sessions::Sessions::new(config.admin_session_idle),
            samples: crate::admin::samples::LagSamples::default(),
            secure_cookie: config.behind_tls,
        });
        AppState {
            admin,
            store,
            search: Arc::new(search),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            backups: None,
            index_jobs: None,
            uploads: Arc::new(Uploads::default()),
        }
    }

    /// The same state, offering backups through `backups`.
    pub fn with_backups(mut self, backups: BackupBackend) -> Self {
        self.backups = Some(Arc::new(backups));
        self
    }

    /// The same state, offering index rebuilds and restores through `jobs`.
    pub fn with_index_jobs(mut self, jobs: IndexJobs) -> Self {
        self.index_jobs = Some(Arc::new(jobs));
        self
    }
}
