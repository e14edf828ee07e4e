//! The state every handler shares: the store, the index, the settings, the metrics.

use std::sync::Arc;

use cairn_backup::BackupManager;
use cairn_index::Indexer;
use cairn_store::Store;

use crate::config::ApiConfig;
use crate::metrics::Metrics;

/// Shared state of the API.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<Store>,
    /// The local index and its indexer.
    pub indexer: Arc<Indexer>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Request and index metrics.
    pub metrics: Arc<Metrics>,
    /// The backup job and folder (absent: backups are not offered).
    pub backups: Option<Arc<BackupManager>>,
}

impl AppState {
    /// State over an opened repository.
    pub fn new(store: Arc<Store>, indexer: Arc<Indexer>, config: ApiConfig) -> Self {
        AppState {
            store,
            indexer,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            backups: None,
        }
    }

    /// The same state, offering backups through `manager`.
    pub fn with_backups(mut self, manager: Arc<BackupManager>) -> Self {
        self.backups = Some(manager);
        self
    }
}
