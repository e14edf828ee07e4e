//! One search service as a web node reaches it (`RemoteSearch`: its client, and its errors
//! as this node answers them), and what a node learns of an index: its properties and, with
//! several replicas, each one's view. `replicas.rs` chooses among several.

use std::io::Read;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{file_url_path, Client, ClientError};
use crate::error::{ApiError, ApiResult};

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
#[derive(Clone, Debug)]
pub struct RemoteSearch {
    client: Client,
}

/// How long a web node waits for the search service's answer to a query or a backup call:
/// a service that hangs (stopped, swapping) is then answered 503, as one that is down.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

impl RemoteSearch {
    /// A client of the service at `base` (`http://127.0.0.1:8090`).
    pub fn new(base: &str, secret: &str) -> Self {
        RemoteSearch {
            client: Client::new(base, secret),
        }
    }

    /// Its address.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// The client of this service.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The service's error as this node answers it: unreachable or refusing this node,
    /// 503; its own 400s, 404s and 409s keep their code (a node answers as the service
    /// would).
    pub fn api_error(&self, e: ClientError) -> ApiError {
        let Some(status) = e.status else {
            return ApiError::unavailable(format!(
                "the search service at {} is not reachable ({}); writes are kept and indexed \
                 when it is back",
                self.client.base(),
                e.message
            ));
        };
        let msg = e.message;
        match status {
            400 => match e.code.as_deref() {
                Some("InvalidBackupTarget") => ApiError::bad_backup_target(msg),
                Some("InvalidContentQuery") => ApiError::bad_query(msg),
                _ => ApiError::bad_request(msg),
            },
            404 => ApiError::not_found(msg),
            409 => ApiError::conflict(msg),
            401 | 403 => {
                ApiError::unavailable(format!("the search service refused this node: {msg}"))
            }
            other => ApiError::new(
                axum::http::StatusCode::from_u16(other)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                "SearchServiceError",
                "Exception",
                msg,
            ),
        }
    }

    /// Opens a file of a finished backup on the service: its size and a reader.
    pub fn open_file(&self, name: &str, path: &str) -> ApiResult<(u64, Box<dyn Read + Send>)> {
        self.client
            .open(&file_url_path(name, path))
            .map_err(|e| match e.status {
                Some(_) => ApiError::not_found(format!("{name} has no file {path}")),
                None => self.api_error(e),
            })
    }
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("bad answer from the search service: {e}")))
}

/// One replica as `GetIndexProperties` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReplicaView {
    /// Its address.
    pub url: String,
    /// Whether this node sends it queries now.
    pub healthy: bool,
    /// `ok`, `catching up`, or `unreachable`.
    pub status: String,
    /// Its completion state, when it answered.
    pub completion_state: Option<String>,
    /// Its last applied activity, when it answered.
    pub last_activity_id: Option<i64>,
    /// How far it is behind the database, in activities.
    pub lag: Option<i64>,
    /// Why it is left out, when it is.
    pub error: Option<String>,
}
