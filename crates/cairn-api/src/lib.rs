//! # cairn-api
//!
//! Cairn's HTTP API: OData in sensenet's dialect over the store and the index, with
//! authentication, limits, structured logs with request ids, `/health` and `/metrics`.
//! This is the only crate that knows axum; [`router`] builds the whole service.
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod backups;
mod blocking;
pub mod client;
pub mod config;
pub mod error;
pub mod files;
pub mod metrics;
pub mod odata;
pub mod remote;
pub mod replicas;
pub mod server;
pub mod service;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

pub use config::ApiConfig;
pub use error::ApiError;
pub use server::{serve, ConnectionLimits};

/// A whole HTTP service, ready for [`serve`].
pub type App = Router;
pub use state::AppState;

use metrics::RouteLabel;

/// The whole HTTP service over `state`.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    files::upload::start_sweeper(&state);
    admin::start_sampler(&state);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .merge(backups::routes())
        .merge(admin::routes())
        .fallback(odata_entry)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            (config.max_body_bytes, config.max_upload_bytes),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A body whose declared `Content-Length` is over the limit is refused (413) at once,
/// before a byte of it is read: waiting for it would hold the connection until the
/// request timeout. (A body without a declared length is cut at the limit as it is read.)
/// The limit is the body limit, or the whole-file upload limit for a multipart body sent
/// without `Content-Range` (a chunk is bounded as any body).
pub async fn refuse_declared_oversize(
    State((body_limit, upload_limit)): State<(usize, u64)>,
    req: Request,
    next: Next,
) -> Response {
    let whole_upload = req.headers().get(header::CONTENT_RANGE).is_none()
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/")
            });
    let limit = if whole_upload {
        upload_limit.saturating_add(1 << 20) as u128
    } else {
        body_limit as u128
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    match declared {
        Some(n) if n > limit => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "Exception",
            format!("the request body is {n} bytes; the limit is {limit} bytes"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// 200 while this server can serve: its database answers. A load balancer takes a node
/// whose database is gone out of rotation on the 503.
async fn health(State(state): State<AppState>) -> Response {
    let s = state.clone();
    let db = blocking::blocking(move || Ok(s.store.last_activity_id()?)).await;
    let mut r = match db {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(e) => e.into_response(),
    };
    r.extensions_mut().insert(RouteLabel("health"));
    r
}

async fn metrics_text(State(state): State<AppState>, req: Request) -> Response {
    if state.config.metrics_need_key {
        let (mut parts, _) = req.into_parts();
        use axum::extract::FromRequestParts;
        let allowed = auth::Caller::from_request_parts(&mut parts, &state)
            .await
            .and_then(|c| c.require_admin("/metrics"));
        if let Err(e) = allowed {
            let mut r = e.into_response();
            r.extensions_mut().insert(RouteLabel("metrics"));
            return r;
        }
    }
    let s = state.clone();
    let rendered = blocking::blocking(move || {
        let db_last = s.store.last_activity_id()?.0;
        let (last, docs) = match s.search.properties() {
            Ok(p) => (p.last_activity_id, p.document_count),
            Err(_) => (0, 0),
        };
        let mut text = s
            .metrics
            .render((db_last - last).max(0), docs, last, db_last);
        if let Some(b) = &s.backups {
            text.push_str(&b.policy_metrics());
        }
        if let backend::SearchBackend::Remote(r) = &*s.search {
            text.push_str(&r.metrics_text());
        }
        Ok(text)
    })
    .await;
    let mut r = match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => e.into_response(),
    };
    r.extensions_mut().insert(RouteLabel("metrics"));
    r
}

/// Everything that is not `/health` or `/metrics`: the OData service, whose token
/// `/odata.svc` is case-insensitive.
async fn odata_entry(state: State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let file = files::route(
        &parts.method,
        &parts.uri,
        &parts.headers,
        state.0.store.types(),
    );
    if let Some(file) = file {
        use axum::extract::FromRequestParts;
        let caller = match auth::Caller::from_request_parts(&mut parts, &state.0).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let answered = match file {
            Ok(files::FileRoute::Upload(parent)) => {
                files::upload(state.0, caller, parent, parts.headers, body).await
            }
            Ok(files::FileRoute::Download(at, property)) => {
                files::download(state.0, caller, at, property, parts.method, parts.headers).await
            }
            Err(e) => Err(e),
        };
        return answered.unwrap_or_else(|e| {
            let mut r = e.into_response();
            r.extensions_mut().insert(RouteLabel("files-error"));
            r
        });
    }
    let is_odata = parts
        .uri
        .path()
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("/odata.svc"));
    if !is_odata {
        return ApiError::not_found(format!("no such resource: {}", parts.uri.path()))
            .into_response();
    }
    use axum::extract::FromRequestParts;
    let caller = match auth::Caller::from_request_parts(&mut parts, &state.0).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let limit = state.0.config.max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).into_response(),
    };
    odata::handlers::odata(state, caller, parts.method, parts.uri, bytes).await
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Request id, log span, metrics, and sensenet error bodies for bare error statuses.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let span = tracing::info_span!("request", id, %method, %path);
    let mut resp = error::with_error_body(next.run(req).instrument(span.clone()).await).await;
    let status = resp.status();
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or("other", |l| l.0);
    let elapsed = started.elapsed();
    state.metrics.observe(route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            route,
            ms = elapsed.as_secs_f64() * 1e3,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
