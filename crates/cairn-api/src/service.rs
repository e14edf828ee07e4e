//! The search service's HTTP/JSON protocol: what `cairn search-service` answers to web
//! nodes. Every route but `/health` needs `Authorization: Bearer <shared secret>`.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /health` (no secret) | | `{"Status":"ok"\|"catching up","LastActivityId","DatabaseLastActivityId","Lag","CompletionState"}`, 503 while catching up |
//! | `POST /search/list` | [`ListRequest`] and `"min_activity":N,"wait_ms":N` | [`cairn_search::ListAnswer`] |
//! | `POST /search/wait` | `{"activity":N,"timeout_ms":N}` | `{"searchable":bool}` |
//! | `GET /search/properties` | | [`crate::backend::IndexProperties`] |
//! | `GET /search/check` | | the integrity report |
//! | `POST /search/find-user` | `{"login":".."}` | `{"id":N or null}` |
//! | `POST /backup/start` | `{"kind":"Index"\|"Repository","target":..}` | `BackupResponse` |
//! | `GET /backup/query`, `POST /backup/cancel` | | `BackupResponse` |
//! | `POST /backup/verify` | `{"name":..}` | `{"Name","Verified","Files","Bytes","Seconds"}` |
//! | `GET /backups`, `/backups/{name}/manifest.json`, `/backups/{name}/files/{path}` | | as on a web node |
//! | `POST /index/rebuild`, `POST /index/restore` `{"backup":..,"identity":..}` | | `ReplaceAnswer` |
//! | `GET /index/replace/query`, `POST /index/replace/cancel` | | `ReplaceAnswer` |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_backup::{BackupKind, BackupManager};
use cairn_index::Indexer;
use cairn_store::ActivityId;
use serde::Deserialize;
use serde_json::json;

use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use cairn_search::{run_list, ListRequest};

/// The service's state.
#[derive(Clone)]
pub struct ServiceState {
    /// The one index.
    pub indexer: Arc<Indexer>,
    /// Its backups.
    pub backups: Arc<BackupManager>,
    /// Its backup policies.
    pub policies: Option<Arc<cairn_backup::policy::Policies>>,
    /// Its index rebuilds and restores.
    pub replacer: Arc<cairn_backup::replace::IndexReplacer>,
    /// The secret web nodes present.
    pub secret: Arc<String>,
    /// False while a replica seeded from a backup catches up: it answers no query then.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

/// The search service's routes.
pub fn service_router(state: ServiceState) -> Router {
    let protected = Router::new()
        .route("/search/list", post(list))
        .route("/search/wait", post(wait))
        .route("/search/properties", get(properties))
        .route("/search/check", get(check))
        .route("/backup/start", post(backup_start))
        .route("/backup/query", get(backup_query))
        .route("/backup/cancel", post(backup_cancel))
        .route("/backup/verify", post(backup_verify))
        .route("/backup/policies", get(policies))
        .route("/backup/policies/execute", post(execute_policy))
        .route("/backups", get(backups_list))
        .route("/backups/{name}/manifest.json", get(backup_manifest))
        .route("/backups/{name}/files/{*path}", get(backup_file))
        .route("/index/rebuild", post(index_rebuild))
        .route("/index/restore", post(index_restore))
        .route("/index/replace/query", get(index_replace_query))
        .route("/index/replace/cancel", post(index_replace_cancel))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|req: Request| async move {
            ApiError::not_found(format!("no such route: {}", req.uri().path()))
        })
        .layer(DefaultBodyLimit::max(SERVICE_MAX_BODY))
        .layer(middleware::from_fn_with_state(
            // The service takes no uploads: one limit for every body.
            (SERVICE_MAX_BODY, SERVICE_MAX_BODY as u64),
            crate::refuse_declared_oversize,
        ))
        .layer(middleware::from_fn(error_bodies))
        .with_state(state)
}

/// The largest request body the service takes: its requests are small JSON documents.
const SERVICE_MAX_BODY: usize = 16 << 20;

/// Every error of the service has the web API's body (a bad body was a plain-text 422).
async fn error_bodies(req: Request, next: Next) -> Response {
    crate::error::with_error_body(next.run(req).await).await
}

async fn authenticate(State(state): State<ServiceState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = state.secret.as_bytes();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return ApiError::wrong_secret().into_response();
    }
    next.run(req).await
}

/// The replica's position against the database's, and whether it takes queries.
async fn health(State(s): State<ServiceState>) -> Response {
    let ready = s.ready.load(std::sync::atomic::Ordering::SeqCst);
    let ix = s.indexer.clone();
    let answer = blocking(move || {
        let state = ix.state();
        // The index answers without the database; its position is then unknown.
        let db = ix.store().last_activity_id().ok().map(|a| a.0);
        Ok(json!({
            "Status": if ready { "ok" } else { "catching up" },
            "LastActivityId": state.last_activity_id.0,
            "DatabaseLastActivityId": db,
            "Lag": db.map(|d| (d - state.last_activity_id.0).max(0)),
            "CompletionState": state.to_string(),
        }))
    })
    .await;
    match answer {
        Ok(v) if ready => Json(v).into_response(),
        Ok(v) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A query: [`ListRequest`], and the activity its answer must include (every write
/// answered before the query was asked, wherever it was written), waited for at most
/// `wait_ms`.
#[derive(Deserialize)]
struct ListBody {
    #[serde(flatten)]
    req: ListRequest,
    #[serde(default)]
    min_activity: Option<i64>,
    #[serde(default)]
    wait_ms: u64,
}

async fn list(State(s): State<ServiceState>, Json(b): Json<ListBody>) -> ApiResult<Response> {
    if !s.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "this search replica is catching up and answers no query yet",
        ));
    }
    let v = blocking(move || {
        if let Some(min) = b.min_activity {
            let wait = Duration::from_millis(b.wait_ms.min(30_000));
            if !s.indexer.wait_through(ActivityId(min), wait)? {
                return Err(ApiError::unavailable(format!(
                    "this search replica has not applied activity {min} yet (at {})",
                    s.indexer.state()
                )));
            }
        }
        Ok(run_list(&s.indexer, &b.req)?)
    })
    .await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct WaitBody {
    activity: i64,
    #[serde(default)]
    timeout_ms: u64,
}

async fn wait(State(s): State<ServiceState>, Json(b): Json<WaitBody>) -> ApiResult<Response> {
    let timeout = Duration::from_millis(b.timeout_ms.min(30_000));
    let ok = blocking(move || Ok(s.indexer.wait_for(ActivityId(b.activity), timeout))).await?;
    Ok(Json(json!({ "searchable": ok })).into_response())
}

async fn properties(State(s): State<ServiceState>) -> ApiResult<Response> {
    let v = blocking(move || Ok(crate::backend::local_properties(&s.indexer))).await?;
    Ok(Json(v).into_response())
}

async fn check(State(s): State<ServiceState>) -> ApiResult<Response> {
    let v = blocking(move || Ok(s.indexer.check_integrity()?)).await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct StartBody {
    kind: BackupKind,
    #[serde(flatten)]
    request: cairn_backup::BackupRequest,
}

async fn backup_start(
    State(s): State<ServiceState>,
    Json(b): Json<StartBody>,
) -> ApiResult<Response> {
    let v = blocking(move || Ok(s.backups.start_request(b.kind, &b.request)?)).await?;
    Ok(Json(v).into_response())
}

async fn backup_query(State(s): State<ServiceState>) -> ApiResult<Response> {
    Ok(Json(s.backups.query()).into_response())
}

async fn backup_cancel(State(s): State<ServiceState>) -> ApiResult<Response> {
    Ok(Json(s.backups.cancel()).into_response())
}

#[derive(Deserialize)]
struct VerifyBody {
    name: String,
}

async fn backup_verify(
    State(s): State<ServiceState>,
    Json(b): Json<VerifyBody>,
) -> ApiResult<Response> {
    let v = blocking(move || crate::backend::verify_local(&s.backups, &b.name)).await?;
    Ok(Json(v).into_response())
}

async fn policies(State(s): State<ServiceState>) -> ApiResult<Response> {
    Ok(Json(crate::backend::policies_json(s.policies.as_deref())).into_response())
}

#[derive(Deserialize)]
struct ExecuteBody {
    name: String,
}

async fn execute_policy(
    State(s): State<ServiceState>,
    Json(b): Json<ExecuteBody>,
) -> ApiResult<Response> {
    let v = blocking(move || crate::backend::execute_policy(s.policies.as_ref(), &b.name)).await?;
    Ok(Json(v).into_response())
}

async fn backups_list(State(s): State<ServiceState>) -> ApiResult<Response> {
    let v = blocking(move || Ok(s.backups.summaries())).await?;
    Ok(Json(v).into_response())
}

async fn backup_manifest(
    State(s): State<ServiceState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let (_, m) = s.backups.finished(&name)?;
    Ok(Json(m).into_response())
}

async fn backup_file(
    State(s): State<ServiceState>,
    Path((name, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (size, f) = crate::backups::open_listed_file(&s.backups, &name, &path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)),
    )
        .into_response())
}

async fn index_rebuild(State(s): State<ServiceState>) -> ApiResult<Response> {
    let v = blocking(move || Ok(s.replacer.rebuild()?)).await?;
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct RestoreBody {
    backup: String,
    #[serde(default)]
    identity: Option<String>,
}

async fn index_restore(
    State(s): State<ServiceState>,
    Json(b): Json<RestoreBody>,
) -> ApiResult<Response> {
    let v = blocking(move || {
        Ok(s.replacer
            .restore(&b.backup, b.identity.as_deref().map(std::path::Path::new))?)
    })
    .await?;
    Ok(Json(v).into_response())
}

async fn index_replace_query(State(s): State<ServiceState>) -> ApiResult<Response> {
    Ok(Json(s.replacer.query()).into_response())
}

async fn index_replace_cancel(State(s): State<ServiceState>) -> ApiResult<Response> {
    Ok(Json(s.replacer.cancel()).into_response())
}
