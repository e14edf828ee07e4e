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
) -> ApiResult<std::sync::Arc<crate::backend::BackupBackend>> {
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
    let v = crate::blocking::blocking(move || m.list()).await?;
    Ok(labeled(Json(v)))
}

/// A file of the finished backup `name` of `m`, opened for download, and its size (only
/// a file its manifest names: `BackupManager::listed_file`).
pub async fn open_listed_file(
    m: &std::sync::Arc<cairn_backup::BackupManager>,
    name: &str,
    path: &str,
) -> ApiResult<(u64, tokio::fs::File)> {
    let (m, n, p) = (m.clone(), name.to_string(), path.to_string());
    let (size, file) = crate::blocking::blocking(move || Ok(m.listed_file(&n, &p)?)).await?;
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(ApiError::internal)?;
    Ok((size, f))
}

async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let v = crate::blocking::blocking(move || m.manifest(&name)).await?;
    Ok(labeled(Json(v)))
}

async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let (size, body) = match &*m {
        crate::backend::BackupBackend::Local(m, _) => {
            let (size, f) = open_listed_file(m, &name, &path).await?;
            (
                size,
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20)),
            )
        }
        crate::backend::BackupBackend::Remote(r) => {
            // Relay the service's file: a blocking reader feeds an in-memory pipe.
            let r = r.clone();
            let (size, mut reader) =
                crate::blocking::blocking(move || r.open_file(&name, &path)).await?;
            let (mut tx, rx) = tokio::io::duplex(1 << 20);
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                use tokio::io::AsyncWriteExt;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match std::io::Read::read(&mut reader, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if handle.block_on(tx.write_all(&buf[..n])).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            (
                size,
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(rx, 1 << 20)),
            )
        }
    };
    Ok(labeled((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )))
}
