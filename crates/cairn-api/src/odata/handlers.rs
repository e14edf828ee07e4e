//! The OData handler: one entry point that parses the path and dispatches by method and
//! resource to reads (database for items, index for collections) and writes (which answer
//! only once their change is searchable: read-your-writes).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_store::{ActivityId, NewContent, Node, NodeRef, UpdateMode};
use serde_json::{json, Map, Value};

use super::actions;
use super::options::Options;
use super::path::{self, ODataPath, Resource};
use super::shape::Shaper;
use crate::auth::{hash_password_field, Caller};
use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RouteLabel;
use crate::state::AppState;

fn labeled(route: &'static str, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    r.extensions_mut().insert(RouteLabel(route));
    r
}

/// Waits until `activity` is searchable (bounded by the configured timeout).
pub(crate) fn searchable(state: &AppState, activity: ActivityId) {
    if !state
        .search
        .wait_for(activity, state.config.searchable_timeout)
    {
        tracing::warn!(%activity, "a write answered before its change became searchable");
    }
}

/// Shapes one item as `{"d":{...}}`.
fn one(state: &AppState, opts: &Options, node: &Node) -> Value {
    let store = state.store.clone();
    let shaper = Shaper::new(state.store.types(), opts, &[node], |ids| {
        store.nodes_by_ids(ids).unwrap_or_default()
    });
    json!({"d": shaper.item(node)})
}

fn load(state: &AppState, at: &NodeRef) -> ApiResult<Node> {
    state
        .store
        .node(at)?
        .ok_or_else(|| ApiError::not_found(format!("content not found: {at}")))
}

/// Keys a client may send that are not fields: sensenet's envelope.
fn content_fields(mut body: Map<String, Value>) -> ApiResult<(Option<String>, Map<String, Value>)> {
    let type_name = match body.remove("__ContentType") {
        Some(Value::String(t)) => Some(t),
        Some(_) => return Err(ApiError::bad_request("__ContentType must be a string")),
        None => None,
    };
    body.retain(|k, _| !k.starts_with("__"));
    // `$expand=Parent` adds the parent item (or null) to what a client loads; it is not a
    // field, and the parent is changed by a move, not a write.
    if matches!(body.get("Parent"), Some(Value::Object(_) | Value::Null)) {
        body.remove("Parent");
    }
    if body.contains_key("PasswordHash") {
        return Err(ApiError::bad_request(
            "PasswordHash cannot be written; send Password",
        ));
    }
    Ok((type_name, body))
}

/// `GET|POST|PATCH|MERGE|PUT|DELETE /odata.svc/...`.
pub async fn odata(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    match dispatch(state, caller, method, uri, body).await {
        Ok(r) => r,
        Err(e) => labeled("odata-error", e),
    }
}

async fn dispatch(
    state: AppState,
    caller: Caller,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let raw_path = uri.path();
    let below = strip_service(raw_path)
        .ok_or_else(|| ApiError::not_found(format!("no such resource: {raw_path}")))?;
    let decoded = percent_encoding::percent_decode_str(below)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("the path is not UTF-8"))?
        .into_owned();
    let target = path::parse(&decoded).map_err(|e| ApiError::bad_request(e.0))?;
    let opts = Options::parse(uri.query(), state.config.max_query_bytes)?;
    if let Some(member) = target.member.clone() {
        if let Some(action) = actions::Action::parse(&member) {
            let Resource::Item(at) = target.resource.clone() else {
                return Err(ApiError::bad_request("actions are called on an item"));
            };
            return actions::run(state, caller, method, action, at, opts, body).await;
        }
    }
    match method.as_str() {
        "GET" => read(state, target, opts, caller).await,
        "POST" => create(state, caller, target, opts, body).await,
        "PATCH" | "MERGE" => update(state, caller, target, opts, body, UpdateMode::Patch).await,
        "PUT" => update(state, caller, target, opts, body, UpdateMode::Replace).await,
        "DELETE" => delete(state, caller, target).await,
        other => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Exception",
            format!("method {other} is not supported"),
        )),
    }
}

/// The part of the path after the service token `/odata.svc` (case-insensitive).
fn strip_service(path: &str) -> Option<&str> {
    path::strip_prefix_ci(path, "/odata.svc")
}

async fn read(
    state: AppState,
    target: ODataPath,
    opts: Options,
    caller: Caller,
) -> ApiResult<Response> {
    match target.resource {
        Resource::Item(at) => {
            let member = target.member.clone();
            let raw = target.raw_value;
            blocking(move || {
                let node = load(&state, &at)?;
                match member {
                    None => Ok(labeled("item", Json(one(&state, &opts, &node)))),
                    Some(field) => {
                        let item =
                            Shaper::new(state.store.types(), &Options::default(), &[&node], |_| {
                                Vec::new()
                            })
                            .item(&node);
                        let value = item.get(&field).cloned().ok_or_else(|| {
                            ApiError::not_found(format!(
                                "{} has no field {field}, and Cairn has no function of that name",
                                node.path
                            ))
                        })?;
                        if raw {
                            let text = match &value {
                                Value::String(s) => s.clone(),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            };
                            Ok(labeled(
                                "field",
                                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text),
                            ))
                        } else {
                            let mut m = Map::new();
                            m.insert(field, value);
                            Ok(labeled("field", Json(json!({"d": m}))))
                        }
                    }
                }
            })
            .await
        }
        Resource::Collection(container) => {
            let count = target.count;
            blocking(move || {
                load(&state, &NodeRef::Path(container.clone()))?;
                let listing = super::listing::list(
                    &state,
                    &container,
                    &opts,
                    Some(caller.user),
                    count || opts.inline_count,
                )?;
                if count {
                    return Ok(labeled(
                        "count",
                        (
                            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                            listing.total.to_string(),
                        ),
                    ));
                }
                let store = state.store.clone();
                let refs: Vec<&Node> = listing.nodes.iter().collect();
                let shaper = Shaper::new(state.store.types(), &opts, &refs, |ids| {
                    store.nodes_by_ids(ids).unwrap_or_default()
                });
                let results: Vec<Value> = listing.nodes.iter().map(|n| shaper.item(n)).collect();
                let n = if opts.inline_count || listing.count_only {
                    listing.total
                } else {
                    results.len()
                };
                let route = if opts.query.is_some() {
                    "query"
                } else {
                    "collection"
                };
                Ok(labeled(
                    route,
                    Json(json!({"d": {"__count": n, "results": results}})),
                ))
            })
            .await
        }
    }
}

async fn create(
    state: AppState,
    caller: Caller,
    target: ODataPath,
    opts: Options,
    body: Bytes,
) -> ApiResult<Response> {
    if target.member.is_some() {
        return Err(ApiError::not_found("no such action"));
    }
    if target.count || target.raw_value {
        return Err(ApiError::bad_request(
            "POST creates content in a folder: address the folder, not its $count or $value",
        ));
    }
    let parent = match target.resource {
        Resource::Item(at) => at,
        Resource::Collection(p) => NodeRef::Path(p),
    };
    let (type_name, mut fields) = content_fields(super::body::object(&body)?)?;
    // `Type`, as a loaded item carries it, names the type too; it must agree.
    let type_name = match (type_name, fields.remove("Type")) {
        (t, None) => t,
        (None, Some(Value::String(t))) => Some(t),
        (Some(t), Some(Value::String(u))) if t == u => Some(t),
        (Some(t), Some(Value::String(u))) => {
            return Err(ApiError::bad_request(format!(
                "Type {u:?} does not agree with __ContentType {t:?}"
            )))
        }
        (_, Some(_)) => return Err(ApiError::bad_request("Type must be a content type name")),
    };
    // Who may create which type is the store's to decide, in the transaction.
    let type_name = type_name.unwrap_or_else(|| "Folder".to_string());
    blocking(move || {
        hash_password_field(&type_name, &mut fields)?;
        let name = match fields.remove("Name") {
            Some(Value::String(n)) => n,
            Some(_) => return Err(ApiError::bad_request("Name must be a string")),
            None => String::new(),
        };
        let content = NewContent {
            type_name,
            name,
            fields,
        };
        let w = state.store.create(&parent, &content, caller.user)?;
        searchable(&state, w.activity);
        let body = one(&state, &opts, &w.value);
        Ok(labeled("create", (StatusCode::CREATED, Json(body))))
    })
    .await
}

async fn update(
    state: AppState,
    caller: Caller,
    target: ODataPath,
    opts: Options,
    body: Bytes,
    mode: UpdateMode,
) -> ApiResult<Response> {
    let Resource::Item(at) = target.resource else {
        return Err(ApiError::bad_request("PATCH and PUT address one item"));
    };
    if target.member.is_some() {
        return Err(ApiError::bad_request(
            "PATCH and PUT address an item, not a field",
        ));
    }
    let (_, mut fields) = content_fields(super::body::object(&body)?)?;
    blocking(move || {
        // Users and groups are the administrator's: the store refuses anyone else inside
        // the transaction, on the rows it changes.
        let node = load(&state, &at)?;
        // A PUT that leaves the password out keeps it (the store keeps hidden fields).
        hash_password_field(&node.type_name, &mut fields)?;
        let w = state
            .store
            .update(&NodeRef::Id(node.id), &fields, mode, caller.user)?;
        searchable(&state, w.activity);
        Ok(labeled("update", Json(one(&state, &opts, &w.value))))
    })
    .await
}

async fn delete(state: AppState, caller: Caller, target: ODataPath) -> ApiResult<Response> {
    let Resource::Item(at) = target.resource else {
        return Err(ApiError::bad_request("DELETE addresses one item"));
    };
    if target.member.is_some() {
        return Err(ApiError::bad_request(
            "DELETE addresses an item, not a field (to clear a field, PATCH it with null)",
        ));
    }
    blocking(move || {
        let node = load(&state, &at)?;
        let w = state.store.delete(&NodeRef::Id(node.id), caller.user)?;
        searchable(&state, w.activity);
        Ok(labeled("delete", StatusCode::NO_CONTENT))
    })
    .await
}
