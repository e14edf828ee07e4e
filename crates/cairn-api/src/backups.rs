//! Finished backups over HTTP, for administrators: the list, each manifest, and each file
//! the manifest names (what `cairn backup create --server URL --to DIR` downloads).
//!
//! | route | answer |
//! |---|---|
//! | `GET /backups` | `[{"Name","Kind","FinishedAt","RepositoryId","Files","Bytes",...}]`, newest first |
//! | `GET /backups/{name}/manifest.json` | the manifest |
//! | `GET /backups/{name}/files/{path}` | one file named by the manifest, as bytes |

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RouteLabel;
use crate::state::AppState;

/// The backup routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/backups", get(list))
        .route("/backups/{name}/manifest.json", get(manifest))
        .route("/backups/{name}/files/{*path}", get(file))
}

fn manager(
    state: &AppState,
    caller: &Caller,
) -> ApiResult<std::sync::Arc<cairn_backup::BackupManager>> {
    caller.require_admin("backups")?;
    state
        .backups
        .clone()
        .ok_or_else(|| ApiError::unavailable("backups are not offered by this server"))
}

fn labeled(resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    r.extensions_mut().insert(RouteLabel("backups"));
    r
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let items: Vec<_> = m
        .list()
        .into_iter()
        .map(|(name, man)| {
            json!({
                "Name": name,
                "Kind": man.kind,
                "StartedAt": man.started_at,
                "FinishedAt": man.finished_at,
                "RepositoryId": man.repository_id,
                "Files": man.files.len(),
                "Bytes": man.files.iter().map(|f| f.size).sum::<u64>(),
                "IndexLastActivityId": man.index.completion_state.last_activity_id,
                "DatabaseLastActivityId": man.database.as_ref().map(|d| d.last_activity_id),
            })
        })
        .collect();
    Ok(labeled(Json(items)))
}

fn finished(
    m: &cairn_backup::BackupManager,
    name: &str,
) -> ApiResult<(std::path::PathBuf, cairn_backup::Manifest)> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ApiError::bad_request("not a backup name"));
    }
    let dir = m.root().join(name);
    let manifest = cairn_backup::Manifest::read(&dir)
        .map_err(|_| ApiError::not_found(format!("no finished backup named {name}")))?;
    Ok((dir, manifest))
}

async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let (_, manifest) = finished(&m, &name)?;
    Ok(labeled(Json(manifest)))
}

async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let (dir, manifest) = finished(&m, &name)?;
    // Only files the manifest names are served: nothing else of the folder is reachable.
    let entry = manifest
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::not_found(format!("{name} has no file {path}")))?;
    let f = tokio::fs::File::open(dir.join(&entry.path))
        .await
        .map_err(ApiError::internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    Ok(labeled((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, entry.size.to_string()),
        ],
        body,
    )))
}
