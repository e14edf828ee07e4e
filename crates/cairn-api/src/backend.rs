//! Where the index is: in this process (a local index), or in the central search service
//! that several web nodes share. Everything the API asks of an index goes through
//! [`SearchBackend`], and everything it asks of backups through [`BackupBackend`], so a web
//! node does not know which one it has.

use std::sync::Arc;
use std::time::Duration;

use cairn_backup::policy::Policies;
use cairn_backup::replace::IndexReplacer;
use cairn_backup::{BackupKind, BackupManager};
use cairn_index::Indexer;
use cairn_store::ActivityId;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::manifest_url_path;
use crate::error::{ApiError, ApiResult};
use crate::remote::parse;
pub use crate::remote::{IndexProperties, RemoteSearch, CALL_LIMIT};
use crate::replicas::Replicas;
use cairn_search::{run_list, ListAnswer, ListRequest};

/// How long it waits for an integrity check, which reads the whole index.
const CHECK_LIMIT: Duration = Duration::from_secs(600);

/// The index a web node uses.
pub enum SearchBackend {
    /// An index in this process.
    Local(Arc<Indexer>),
    /// The search service (one or more replicas).
    Remote(Arc<Replicas>),
}

impl SearchBackend {
    /// Answers a collection or query request. Blocking.
    pub fn list(&self, req: &ListRequest) -> ApiResult<ListAnswer> {
        match self {
            SearchBackend::Local(ix) => Ok(run_list(ix, req)?),
            SearchBackend::Remote(r) => parse(r.list(req, CALL_LIMIT)?),
        }
    }

    /// Waits until `activity` is searchable (read-your-writes). Blocking. False when it is
    /// not within `timeout` or the service cannot be reached.
    pub fn wait_for(&self, activity: ActivityId, timeout: Duration) -> bool {
        match self {
            SearchBackend::Local(ix) => ix.wait_for(activity, timeout),
            SearchBackend::Remote(r) => r.wait_for(activity, timeout),
        }
    }

    /// Position and size of the index. Blocking.
    pub fn properties(&self) -> ApiResult<IndexProperties> {
        match self {
            SearchBackend::Local(ix) => Ok(local_properties(ix)),
            SearchBackend::Remote(r) => r.properties(CALL_LIMIT),
        }
    }

    /// Each search service (replica) this node uses, as `GetIndexProperties` shows it;
    /// none with a local index. Blocking: asks each one.
    pub fn replica_views(&self) -> Vec<crate::remote::ReplicaView> {
        match self {
            SearchBackend::Local(_) => Vec::new(),
            SearchBackend::Remote(r) => r.views(CALL_LIMIT),
        }
    }

    /// The integrity check's report. Blocking.
    pub fn check(&self) -> ApiResult<Value> {
        match self {
            SearchBackend::Local(ix) => {
                let report = ix.check_integrity()?;
                serde_json::to_value(report).map_err(ApiError::internal)
            }
            SearchBackend::Remote(r) => r.get_any("/search/check", CHECK_LIMIT),
        }
    }
}

/// Position and size of a local index.
pub fn local_properties(ix: &Indexer) -> IndexProperties {
    let s = ix.state();
    IndexProperties {
        completion_state: s.to_string(),
        last_activity_id: s.last_activity_id.0,
        gaps: s.gap_ids().into_iter().map(|g| g.0).collect(),
        document_count: ix.searcher().num_docs(),
        fault: ix.fault(),
    }
}

/// The backups a web node offers: its own, or the search service's.
pub enum BackupBackend {
    /// Backups by this process, and its backup policies (if any).
    Local(Arc<BackupManager>, Option<Arc<Policies>>),
    /// Backups by the search service (its first healthy replica), which owns the index.
    Remote(Arc<Replicas>),
}

impl BackupBackend {
    /// Starts a backup (or answers the running one). Blocking.
    pub fn start(
        &self,
        kind: BackupKind,
        request: &cairn_backup::BackupRequest,
    ) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => {
                serde_json::to_value(m.start_request(kind, request)?).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.post_first(
                "/backup/start",
                &json!({"kind": kind, "target": request.target, "to": request.to,
                        "encryptTo": request.encrypt_to}),
                CALL_LIMIT,
            ),
        }
    }
    /// The running or last backup and the history. Blocking.
    pub fn query(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => {
                serde_json::to_value(m.query()).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.backup_query(CALL_LIMIT),
        }
    }
    /// Cancels the running backup. Blocking.
    pub fn cancel(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => {
                serde_json::to_value(m.cancel()).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.backup_cancel(CALL_LIMIT),
        }
    }
    /// Finished backups. Blocking.
    pub fn list(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => {
                serde_json::to_value(m.summaries()).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.backup_list(CALL_LIMIT),
        }
    }
    /// The backup policies (`GetBackupPolicies`). Blocking.
    pub fn policies(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(_, p) => Ok(policies_json(p.as_deref())),
            BackupBackend::Remote(r) => r.get_first("/backup/policies", CALL_LIMIT),
        }
    }
    /// Runs a policy now (`ExecuteBackupPolicy`). Blocking.
    pub fn execute_policy(&self, name: &str) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(_, p) => execute_policy(p.as_ref(), name),
            BackupBackend::Remote(r) => r.post_first(
                "/backup/policies/execute",
                &json!({ "name": name }),
                CALL_LIMIT,
            ),
        }
    }
    /// The continuous archive's status (`Archive` of `GetBackupPolicies`), if one runs;
    /// `None` also when the search service cannot be asked. Blocking.
    pub fn archive_status(&self) -> Option<Value> {
        match self {
            BackupBackend::Local(_, p) => p
                .as_ref()
                .and_then(|p| p.archive_status())
                .and_then(|a| serde_json::to_value(a).ok()),
            BackupBackend::Remote(r) => r
                .get_first("/backup/policies", CALL_LIMIT)
                .ok()
                .map(|v| v["Archive"].clone())
                .filter(|a| !a.is_null()),
        }
    }
    /// The policies' (and the archive's) lines of `/metrics`; empty when they cannot be
    /// read. Blocking.
    pub fn policy_metrics(&self) -> String {
        let (views, archive) = match self {
            BackupBackend::Local(_, Some(p)) => (p.views(), p.archive_status()),
            BackupBackend::Local(_, None) => (Vec::new(), None),
            BackupBackend::Remote(r) => r
                .get_first("/backup/policies", CALL_LIMIT)
                .ok()
                .map(|v| {
                    (
                        serde_json::from_value(v["Policies"].clone()).unwrap_or_default(),
                        serde_json::from_value(v["Archive"].clone()).ok(),
                    )
                })
                .unwrap_or_default(),
        };
        let mut text = String::new();
        if !views.is_empty() {
            text.push_str(&cairn_backup::policy::metrics_text(&views));
        }
        if let Some(a) = archive {
            text.push_str(&cairn_backup::archive::Archiver::metrics_text(&a));
        }
        text
    }
    /// Verifies a finished backup of this server's folder (every file's checksum, the
    /// index opens, the database copy checks): the report, or why it fails. Blocking.
    pub fn verify(&self, name: &str) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => verify_local(m, name),
            BackupBackend::Remote(r) => {
                r.post_first("/backup/verify", &json!({ "name": name }), VERIFY_LIMIT)
            }
        }
    }
    /// A finished backup's manifest. Blocking.
    pub fn manifest(&self, name: &str) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m, _) => {
                let (_, man) = m.finished(name)?;
                serde_json::to_value(man).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.manifest(&manifest_url_path(name), CALL_LIMIT),
        }
    }
}

/// How long a web node waits for the search service to verify a backup (it reads it all).
const VERIFY_LIMIT: Duration = Duration::from_secs(3600);

/// Verifies the finished backup `name` of `m`'s folder: `{"Name","Files","Bytes","Seconds"}`.
pub fn verify_local(m: &BackupManager, name: &str) -> ApiResult<Value> {
    let (dir, _) = m.finished(name)?;
    let report = cairn_backup::verify(&dir, &|_, _| {})?;
    Ok(json!({
        "Name": name,
        "Verified": true,
        "Files": report.files,
        "Bytes": report.bytes,
        "Seconds": report.seconds,
    }))
}

/// `GetBackupPolicies`' answer for this process's policies.
pub fn policies_json(p: Option<&Policies>) -> Value {
    json!({
        "Policies": p.map(Policies::views).unwrap_or_default(),
        "Archive": p.and_then(Policies::archive_status),
    })
}

/// `ExecuteBackupPolicy` on this process's policies.
pub fn execute_policy(p: Option<&Arc<Policies>>, name: &str) -> ApiResult<Value> {
    let p = p.filter(|p| p.has(name)).ok_or_else(|| {
        ApiError::not_found(format!("no backup policy {name:?} (see GetBackupPolicies)"))
    })?;
    serde_json::to_value(p.run(name)?).map_err(ApiError::internal)
}

/// The index replacements a web node offers (`RebuildIndex`, `RestoreIndex`): by this
/// process on its own index, or by the search service on its.
pub enum IndexJobs {
    /// Replacements of this process's index.
    Local(Arc<IndexReplacer>),
    /// Replacements by the search service (its first healthy replica).
    Remote(Arc<Replicas>),
}

impl IndexJobs {
    /// Starts `RebuildIndex` (or answers the running replacement). Blocking.
    pub fn rebuild(&self) -> ApiResult<Value> {
        match self {
            IndexJobs::Local(r) => to_value(r.rebuild()?),
            IndexJobs::Remote(r) => r.post_first("/index/rebuild", &json!({}), CALL_LIMIT),
        }
    }
    /// Starts `RestoreIndex` from `backup` (or answers the running replacement). Blocking.
    pub fn restore(&self, backup: &str, identity: Option<&str>) -> ApiResult<Value> {
        match self {
            IndexJobs::Local(r) => to_value(r.restore(backup, identity.map(std::path::Path::new))?),
            IndexJobs::Remote(r) => r.post_first(
                "/index/restore",
                &json!({"backup": backup, "identity": identity}),
                CALL_LIMIT,
            ),
        }
    }
    /// `QueryIndexRestore`. Blocking.
    pub fn query(&self) -> ApiResult<Value> {
        match self {
            IndexJobs::Local(r) => to_value(r.query()),
            IndexJobs::Remote(r) => r.get_first("/index/replace/query", CALL_LIMIT),
        }
    }
    /// `CancelIndexRestore`. Blocking.
    pub fn cancel(&self) -> ApiResult<Value> {
        match self {
            IndexJobs::Local(r) => to_value(r.cancel()),
            IndexJobs::Remote(r) => r.post_first("/index/replace/cancel", &json!({}), CALL_LIMIT),
        }
    }
}

fn to_value(v: impl Serialize) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(ApiError::internal)
}
