//! Where the index is: in this process (a local index), or in the central search service
//! that several web nodes share. Everything the API asks of an index goes through
//! [`SearchBackend`], and everything it asks of backups through [`BackupBackend`], so a web
//! node does not know which one it has.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use cairn_backup::{BackupKind, BackupManager};
use cairn_index::Indexer;
use cairn_store::ActivityId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::search::{run_list, ListAnswer, ListRequest};

/// The index's position and size.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexProperties {
    /// sensenet's form, `15(13,14)`.
    pub completion_state: String,
    /// `LastActivityId`.
    pub last_activity_id: i64,
    /// Gaps below it.
    pub gaps: Vec<i64>,
    /// Documents.
    pub document_count: u64,
    /// Why indexing fails now (a full disk, say), while it does; the indexer retries on
    /// its own and nothing it could not commit is counted as applied.
    #[serde(default)]
    pub fault: Option<String>,
}

/// A client of the search service (HTTP/JSON, shared secret).
#[derive(Clone)]
pub struct RemoteSearch {
    base: String,
    secret: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSearch")
            .field("base", &self.base)
            .finish()
    }
}

/// How long a web node waits for the search service's answer to a query or a backup call:
/// a service that hangs (stopped, swapping) is then answered 503, as one that is down.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long it waits for an integrity check, which reads the whole index.
const CHECK_LIMIT: Duration = Duration::from_secs(600);

impl RemoteSearch {
    /// A client of the service at `base` (`http://127.0.0.1:8090`).
    pub fn new(base: &str, secret: &str) -> Self {
        // No limit on a whole call here: a backup file's download may rightly take hours.
        // A service that stops answering is caught by the per-read limit, and each call
        // sets its own bound (`CALL_LIMIT`, `wait_for`'s, `CHECK_LIMIT`).
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        RemoteSearch {
            base: base.trim_end_matches('/').to_string(),
            secret: secret.to_string(),
            agent,
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ApiError {
        ApiError::unavailable(format!(
            "the search service at {} is not reachable ({e}); writes are kept and indexed when it is back",
            self.base
        ))
    }

    fn answer(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> ApiResult<Value> {
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let msg = value["error"]["message"]["value"]
            .as_str()
            .unwrap_or("the search service failed")
            .to_string();
        let code = axum::http::StatusCode::from_u16(status.as_u16())
            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
        // The service's own 400s keep their code: a node answers as the service would.
        Err(match code.as_u16() {
            400 => match value["error"]["code"].as_str() {
                Some("InvalidBackupTarget") => ApiError::bad_backup_target(msg),
                Some("InvalidContentQuery") => ApiError::bad_query(msg),
                _ => ApiError::bad_request(msg),
            },
            404 => ApiError::not_found(msg),
            409 => ApiError::conflict(msg),
            401 | 403 => {
                ApiError::unavailable(format!("the search service refused this node: {msg}"))
            }
            _ => ApiError::new(code, "SearchServiceError", "Exception", msg),
        })
    }

    fn get(&self, path: &str) -> ApiResult<Value> {
        self.get_within(path, CALL_LIMIT)
    }

    fn get_within(&self, path: &str, limit: Duration) -> ApiResult<Value> {
        let r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(limit))
            .build()
            .header("Authorization", &format!("Bearer {}", self.secret))
            .call();
        self.answer(r)
    }

    fn post(&self, path: &str, body: &Value) -> ApiResult<Value> {
        self.post_within(path, body, CALL_LIMIT)
    }

    fn post_within(&self, path: &str, body: &Value, limit: Duration) -> ApiResult<Value> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .config()
            .timeout_global(Some(limit))
            .build()
            .header("Authorization", &format!("Bearer {}", self.secret))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes());
        self.answer(r)
    }

    /// Opens a file of a finished backup on the service: its size and a reader.
    pub fn open_file(&self, name: &str, path: &str) -> ApiResult<(u64, Box<dyn Read + Send>)> {
        let resp = self
            .agent
            .get(&format!(
                "{}{}",
                self.base,
                crate::backups::file_url_path(name, path)
            ))
            .header("Authorization", &format!("Bearer {}", self.secret))
            .call()
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(ApiError::not_found(format!("{name} has no file {path}")));
        }
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok((size, Box::new(reader)))
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("bad answer from the search service: {e}")))
}

/// The index a web node uses.
pub enum SearchBackend {
    /// An index in this process.
    Local(Arc<Indexer>),
    /// The search service.
    Remote(RemoteSearch),
}

impl SearchBackend {
    /// Answers a collection or query request. Blocking.
    pub fn list(&self, req: &ListRequest) -> ApiResult<ListAnswer> {
        match self {
            SearchBackend::Local(ix) => run_list(ix, req),
            SearchBackend::Remote(r) => parse(r.post(
                "/search/list",
                &serde_json::to_value(req).map_err(ApiError::internal)?,
            )?),
        }
    }

    /// Waits until `activity` is searchable (read-your-writes). Blocking. False when it is
    /// not within `timeout` or the service cannot be reached.
    pub fn wait_for(&self, activity: ActivityId, timeout: Duration) -> bool {
        match self {
            SearchBackend::Local(ix) => ix.wait_for(activity, timeout),
            SearchBackend::Remote(r) => r
                .post_within(
                    "/search/wait",
                    // The service waits a little less, so that its answer arrives in time.
                    &json!({
                        "activity": activity.0,
                        "timeout_ms": timeout.saturating_sub(Duration::from_millis(500)).as_millis() as u64,
                    }),
                    timeout,
                )
                .map(|v| v["searchable"].as_bool().unwrap_or(false))
                .unwrap_or(false),
        }
    }

    /// Position and size of the index. Blocking.
    pub fn properties(&self) -> ApiResult<IndexProperties> {
        match self {
            SearchBackend::Local(ix) => Ok(local_properties(ix)),
            SearchBackend::Remote(r) => parse(r.get("/search/properties")?),
        }
    }

    /// The integrity check's report. Blocking.
    pub fn check(&self) -> ApiResult<Value> {
        match self {
            SearchBackend::Local(ix) => {
                let report = ix.check_integrity()?;
                serde_json::to_value(report).map_err(ApiError::internal)
            }
            SearchBackend::Remote(r) => r.get_within("/search/check", CHECK_LIMIT),
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
    /// Backups by this process.
    Local(Arc<BackupManager>),
    /// Backups by the search service, which owns the index.
    Remote(RemoteSearch),
}

impl BackupBackend {
    /// Starts a backup (or answers the running one). Blocking.
    pub fn start(&self, kind: BackupKind, target: Option<&str>) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m) => {
                serde_json::to_value(m.start(kind, target)?).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => {
                r.post("/backup/start", &json!({"kind": kind, "target": target}))
            }
        }
    }
    /// The running or last backup and the history. Blocking.
    pub fn query(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m) => serde_json::to_value(m.query()).map_err(ApiError::internal),
            BackupBackend::Remote(r) => r.get("/backup/query"),
        }
    }
    /// Cancels the running backup. Blocking.
    pub fn cancel(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m) => serde_json::to_value(m.cancel()).map_err(ApiError::internal),
            BackupBackend::Remote(r) => r.post("/backup/cancel", &json!({})),
        }
    }
    /// Finished backups. Blocking.
    pub fn list(&self) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m) => Ok(crate::backups::list_json(m)),
            BackupBackend::Remote(r) => r.get("/backups"),
        }
    }
    /// A finished backup's manifest. Blocking.
    pub fn manifest(&self, name: &str) -> ApiResult<Value> {
        match self {
            BackupBackend::Local(m) => {
                let (_, man) = crate::backups::finished(m, name)?;
                serde_json::to_value(man).map_err(ApiError::internal)
            }
            BackupBackend::Remote(r) => r.get(&crate::backups::manifest_url_path(name)),
        }
    }
}
