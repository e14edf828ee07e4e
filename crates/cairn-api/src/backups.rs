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

/// What a path segment of a backup URL keeps as it is: RFC 3986's unreserved characters.
/// Everything else (`#`, `?`, `%`, spaces, non-ASCII) is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// The URL path of backup `name`'s manifest, as every client of these routes builds it
/// (the command line's download, a web node relaying to the search service): any name a
/// backup may have reaches the server whole.
pub fn manifest_url_path(name: &str) -> String {
    format!("/backups/{}/manifest.json", segment(name))
}

/// The URL path of the file `path` (`index/abc.idx`, as the manifest names it) of backup
/// `name`: each segment percent-encoded, the separators kept.
pub fn file_url_path(name: &str, path: &str) -> String {
    let mut url = format!("/backups/{}/files", segment(name));
    for part in path.split('/') {
        url.push('/');
        url.extend(segment(part));
    }
    url
}

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

/// The list of finished backups as JSON.
pub fn list_json(m: &cairn_backup::BackupManager) -> serde_json::Value {
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
    serde_json::Value::Array(items)
}

fn labeled(resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    r.extensions_mut().insert(RouteLabel("backups"));
    r
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let v = crate::odata::handlers::blocking(move || m.list()).await?;
    Ok(labeled(Json(v)))
}

/// A finished backup of `m` by name: its folder and manifest.
pub fn finished(
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

/// A file of the finished backup `name` of `m`, opened for download, and its size: only a
/// file its manifest names, a regular file that lies in the backup's folder (a link out of
/// it, to a file or through a folder, is refused, as `backup verify` refuses it).
pub async fn open_listed_file(
    m: &cairn_backup::BackupManager,
    name: &str,
    path: &str,
) -> ApiResult<(u64, tokio::fs::File)> {
    let (dir, manifest) = finished(m, name)?;
    let entry = manifest
        .files
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| ApiError::not_found(format!("{name} has no file {path}")))?;
    let file = dir.join(&entry.path);
    let inside = match (
        tokio::fs::canonicalize(&file).await,
        tokio::fs::canonicalize(&dir).await,
    ) {
        (Ok(f), Ok(d)) => f.starts_with(d),
        _ => false,
    };
    let regular = tokio::fs::symlink_metadata(&file)
        .await
        .is_ok_and(|m| m.is_file());
    if !inside || !regular {
        return Err(ApiError::not_found(format!(
            "{name}/{path} is not a file of the backup (a link?)"
        )));
    }
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(ApiError::internal)?;
    Ok((entry.size, f))
}

async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let v = crate::odata::handlers::blocking(move || m.manifest(&name)).await?;
    Ok(labeled(Json(v)))
}

async fn file(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, path)): Path<(String, String)>,
) -> ApiResult<Response> {
    let m = manager(&state, &caller)?;
    let (size, body) = match &*m {
        crate::backend::BackupBackend::Local(m) => {
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
                crate::odata::handlers::blocking(move || r.open_file(&name, &path)).await?;
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
