//! The admin console: `GET /admin`, one page of plain HTML, CSS and a little JavaScript of
//! our own, embedded in the binary (no CDN, no build step), and the JSON routes it calls.
//!
//! - **Login** with the administrator's key (`POST /admin/login`): the answer sets a
//!   session cookie (`HttpOnly`, `SameSite=Strict`, `Path=/admin`, `Secure` behind TLS)
//!   that expires after `admin_session_idle` without a request (12 h at most). The key is
//!   sent once and never appears in a URL or in the page. A user's login and password are
//!   taken too, and refused unless the user is the administrator.
//! - Every route under `/admin/api` and `/admin/backups` needs the session (401 without);
//!   every `POST` but the login needs the session's CSRF token in `X-CSRF-Token` (and an
//!   `Origin`, when sent, of this server): a cross-site form cannot send either (403).
//! - The overview's lag chart is drawn from this server's own samples: the lag every 10 s
//!   for the last hour ([`samples`]).
//!
//! Served by `cairn serve` (the admin key) and by `cairn search-service` (its shared
//! secret is the key there).

pub mod samples;
pub mod sessions;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use sessions::{cookie_token, set_cookie, Session, CSRF_HEADER};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// The console's routes, to merge into a server's router.
pub fn routes() -> Router<AppState> {
    let api = Router::new()
        .route("/admin/api/session", get(session))
        .route("/admin/api/overview", get(overview))
        .route("/admin/api/backups", get(backups))
        .route("/admin/api/backups/start", post(backup_start))
        .route("/admin/api/backups/cancel", post(backup_cancel))
        .route("/admin/api/backups/verify", post(backup_verify))
        .route("/admin/api/policies", get(policies))
        .route("/admin/api/policies/run", post(policy_run))
        .route("/admin/api/integrity", post(integrity))
        .route("/admin/logout", post(logout))
        .route("/admin/backups/{name}/manifest.json", get(manifest))
        .route("/admin/api/{*rest}", get(no_route).post(no_route));
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/admin.js", get(script))
        .route("/admin/admin.css", get(style))
        .route("/admin/login", post(login))
        .merge(api)
}

/// The console on its own, for a server that serves nothing else of the API (the search
/// service): its lag samples start now.
pub fn console(state: AppState) -> Router {
    start_sampler(&state);
    routes().with_state(state)
}

/// What the page and its assets are sent with: nothing from elsewhere runs in it, it is
/// never framed, never cached.
fn page_headers(content_type: &'static str) -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

async fn page() -> Response {
    (page_headers("text/html; charset=utf-8"), PAGE).into_response()
}

async fn script() -> Response {
    (page_headers("text/javascript; charset=utf-8"), SCRIPT).into_response()
}

async fn style() -> Response {
    (page_headers("text/css; charset=utf-8"), STYLE).into_response()
}

async fn no_route(_: Admin, req: Request) -> ApiError {
    ApiError::not_found(format!("no such route: {}", req.uri().path()))
}

/// The session the request's cookie names: every route under `/admin/api` takes it. A
/// `POST` must also carry the session's CSRF token and come from this origin.
pub struct Admin(pub Session);

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let session = cookie_token(&parts.headers).and_then(|t| state.admin.sessions.find(&t));
        let Some(session) = session else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "UnauthorizedAccessException",
                "log in to the admin console first (POST /admin/login)",
            ));
        };
        if parts.method == axum::http::Method::POST {
            same_origin(&parts.headers)?;
            let given = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !crate::auth::same(given.as_bytes(), session.csrf.as_bytes()) {
                return Err(ApiError::forbidden(
                    "this request lacks the admin console's CSRF token (X-CSRF-Token)",
                ));
            }
        }
        Ok(Admin(session))
    }
}

/// Refuses a request whose `Origin` (when the browser sends one) is not this server.
fn same_origin(headers: &HeaderMap) -> ApiResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "a request from {origin} to the admin console of {host} is refused"
        )))
    }
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match login_inner(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn login_inner(state: AppState, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    same_origin(&headers)?;
    let b: LoginBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("log in with {\"key\": \"the admin key\"}"))?;
    let caller = match (b.key, b.login, b.password) {
        (Some(key), _, _) => crate::auth::admin_by_key(&state, &key),
        (None, Some(login), Some(password)) => {
            let st = state.clone();
            blocking(move || crate::auth::user_by_password(&st, &login, &password)).await?
        }
        _ => None,
    };
    let caller = caller.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "UnauthorizedAccessException",
            "that is not the admin key (nor a login and password)",
        )
    })?;
    caller.require_admin("the admin console")?;
    let (token, session) = state.admin.sessions.open(caller.user);
    let idle = state.admin.sessions.idle();
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&token, idle, state.admin.secure_cookie),
        )],
        Json(json!({"Csrf": session.csrf, "IdleSeconds": idle.as_secs()})),
    )
        .into_response())
}

async fn logout(State(state): State<AppState>, _: Admin, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        state.admin.sessions.close(&t);
    }
    (
        [(
            header::SET_COOKIE,
            set_cookie("", std::time::Duration::ZERO, state.admin.secure_cookie),
        )],
        Json(json!({"LoggedOut": true})),
    )
        .into_response()
}

async fn session(State(state): State<AppState>, Admin(s): Admin) -> Json<Value> {
    Json(json!({
        "Csrf": s.csrf,
        "User": s.user.0,
        "IdleSeconds": state.admin.sessions.idle().as_secs(),
        "HasBackups": state.backups.is_some(),
    }))
}

async fn overview(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    let st = state.clone();
    let mut v = blocking(move || crate::odata::actions::index_properties(&st)).await?;
    v["LagSamples"] = json!(state.admin.samples.last_hour());
    Ok(Json(v))
}

fn backend(state: &AppState) -> ApiResult<std::sync::Arc<crate::backend::BackupBackend>> {
    state
        .backups
        .clone()
        .ok_or_else(|| ApiError::unavailable("backups are not offered by this server"))
}

async fn backups(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    let b = backend(&state)?;
    let v = blocking(move || {
        Ok(json!({
            "Query": b.query()?,
            "Finished": b.list()?,
        }))
    })
    .await?;
    Ok(Json(v))
}

#[derive(Deserialize)]
struct StartBody {
    kind: cairn_backup::BackupKind,
}

async fn backup_start(
    State(state): State<AppState>,
    _: Admin,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: StartBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("start a backup with {\"kind\":\"Index\"|\"Repository\"}")
    })?;
    let manager = backend(&state)?;
    let request = cairn_backup::BackupRequest::default();
    Ok(Json(
        blocking(move || manager.start(b.kind, &request)).await?,
    ))
}

async fn backup_cancel(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    let manager = backend(&state)?;
    Ok(Json(blocking(move || manager.cancel()).await?))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn backup_verify(
    State(state): State<AppState>,
    _: Admin,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: NameBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("verify a backup with {\"name\":\"...\"}"))?;
    let manager = backend(&state)?;
    Ok(Json(blocking(move || manager.verify(&b.name)).await?))
}

async fn policies(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    let manager = backend(&state)?;
    Ok(Json(blocking(move || manager.policies()).await?))
}

async fn policy_run(
    State(state): State<AppState>,
    _: Admin,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b: NameBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("run a policy with {\"name\":\"...\"}"))?;
    let manager = backend(&state)?;
    Ok(Json(
        blocking(move || manager.execute_policy(&b.name)).await?,
    ))
}

async fn integrity(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(blocking(move || state.search.check()).await?))
}

async fn manifest(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let manager = backend(&state)?;
    let m = blocking(move || manager.manifest(&name)).await?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"manifest.json\"",
        )],
        Json(m),
    )
        .into_response())
}

/// Samples the lag of `state`'s index now and every [`samples::EVERY`], on a thread that ends when
/// the state is gone. (An index that cannot be asked gives no sample: a gap in the chart.)
pub fn start_sampler(state: &AppState) {
    let admin = std::sync::Arc::downgrade(&state.admin);
    let (store, search) = (
        std::sync::Arc::downgrade(&state.store),
        std::sync::Arc::downgrade(&state.search),
    );
    let started = std::thread::Builder::new()
        .name("admin-lag-samples".into())
        .spawn(move || loop {
            let (Some(admin), Some(store), Some(search)) =
                (admin.upgrade(), store.upgrade(), search.upgrade())
            else {
                return;
            };
            if let (Ok(db), Ok(p)) = (store.last_activity_id(), search.properties()) {
                admin.samples.add((db.0 - p.last_activity_id).max(0));
            }
            drop((admin, store, search));
            std::thread::sleep(samples::EVERY);
        });
    if let Err(e) = started {
        tracing::warn!("no thread for the admin console's lag samples: {e}");
    }
}
