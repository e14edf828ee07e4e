//! Actions and functions on items: the batch operations sensenet's client calls on /Root
//! (`DeleteBatch`, `MoveBatch`, `CopyBatch`) and the index operations for administrators.

use axum::body::Bytes;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_store::{ActivityId, NodeId, NodeRef};
use serde_json::{json, Value};

use super::options::Options;
use crate::auth::Caller;
use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RouteLabel;
use crate::state::AppState;

/// The actions and functions this API knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete many items.
    DeleteBatch,
    /// Move many items under a target.
    MoveBatch,
    /// Copy many items under a target.
    CopyBatch,
    /// Completion state, database position, document count.
    GetIndexProperties,
    /// Database vs index differences.
    CheckIndexIntegrity,
    /// Start an online backup of the index.
    BackupIndex,
    /// Start an online backup of the index, then the database, then the manifest.
    BackupRepository,
    /// The running or last backup and the history.
    QueryIndexBackup,
    /// Stop the running backup.
    CancelIndexBackup,
    /// The backup policies and what they did.
    GetBackupPolicies,
    /// Run a backup policy now.
    ExecuteBackupPolicy,
    /// Build a new index from the database beside the live one, then swap it in.
    RebuildIndex,
    /// Take a backup's index beside the live one, catch it up, then swap it in.
    RestoreIndex,
    /// The running or last index rebuild or restore.
    QueryIndexRestore,
    /// Stop the running index rebuild or restore.
    CancelIndexRestore,
}

impl Action {
    /// The action named `name` (case-insensitive), if any.
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name.to_ascii_lowercase().as_str() {
            "deletebatch" => Action::DeleteBatch,
            "movebatch" => Action::MoveBatch,
            "copybatch" => Action::CopyBatch,
            "getindexproperties" => Action::GetIndexProperties,
            "checkindexintegrity" => Action::CheckIndexIntegrity,
            "backupindex" => Action::BackupIndex,
            "backuprepository" => Action::BackupRepository,
            "queryindexbackup" => Action::QueryIndexBackup,
            "cancelindexbackup" => Action::CancelIndexBackup,
            "getbackuppolicies" => Action::GetBackupPolicies,
            "executebackuppolicy" => Action::ExecuteBackupPolicy,
            "rebuildindex" => Action::RebuildIndex,
            "restoreindex" => Action::RestoreIndex,
            "queryindexrestore" => Action::QueryIndexRestore,
            "cancelindexrestore" => Action::CancelIndexRestore,
            _ => return None,
        })
    }
    fn label(self) -> &'static str {
        match self {
            Action::DeleteBatch => "action:DeleteBatch",
            Action::MoveBatch => "action:MoveBatch",
            Action::CopyBatch => "action:CopyBatch",
            Action::GetIndexProperties => "function:GetIndexProperties",
            Action::CheckIndexIntegrity => "function:CheckIndexIntegrity",
            Action::BackupIndex => "action:BackupIndex",
            Action::BackupRepository => "action:BackupRepository",
            Action::QueryIndexBackup => "function:QueryIndexBackup",
            Action::CancelIndexBackup => "action:CancelIndexBackup",
            Action::GetBackupPolicies => "function:GetBackupPolicies",
            Action::ExecuteBackupPolicy => "action:ExecuteBackupPolicy",
            Action::RebuildIndex => "action:RebuildIndex",
            Action::RestoreIndex => "action:RestoreIndex",
            Action::QueryIndexRestore => "function:QueryIndexRestore",
            Action::CancelIndexRestore => "action:CancelIndexRestore",
        }
    }
}

/// The string parameters `names` (lower case; a body's names in any case) of a JSON body,
/// each absent or null as `None`; another name is refused with `unknown(name)` (a mistake
/// to report, not to drop), and a value that is not a string too.
fn string_params<const N: usize>(
    body: &[u8],
    names: [&str; N],
    unknown: impl Fn(&str) -> String,
) -> ApiResult<[Option<String>; N]> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in super::body::object(body)? {
        let slot = names
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n))
            .ok_or_else(|| ApiError::bad_request(unknown(&name)))?;
        out[slot] = match value {
            Value::Null => None,
            Value::String(t) => Some(t),
            _ => return Err(ApiError::bad_request(format!("{name} must be a string"))),
        };
    }
    Ok(out)
}

fn target_ref(v: &Value) -> Option<NodeRef> {
    match v {
        Value::String(s) => Some(match s.parse::<i64>() {
            Ok(id) => NodeRef::Id(NodeId(id)),
            Err(_) => NodeRef::Path(s.clone()),
        }),
        Value::Number(n) => n.as_i64().map(|i| NodeRef::Id(NodeId(i))),
        _ => None,
    }
}

/// One entry of a batch answer's `errors`: the item as asked for, and sensenet's error body.
fn error_entry(path: &Value, e: &ApiError) -> Value {
    json!({
        "content": {"Path": path},
        "error": {"code": e.code, "exceptiontype": e.exception,
                  "message": {"lang": "en-us", "value": e.message}},
    })
}

fn batch(
    state: &AppState,
    caller: &Caller,
    action: Action,
    body: &serde_json::Map<String, Value>,
) -> ApiResult<Value> {
    let paths = match body.get("paths") {
        Some(Value::Array(items)) => items.clone(),
        Some(single @ (Value::String(_) | Value::Number(_))) => vec![single.clone()],
        _ => {
            return Err(ApiError::bad_request(
                "paths must be an array of paths or ids",
            ))
        }
    };
    let target = match action {
        Action::MoveBatch | Action::CopyBatch => Some(
            body.get("targetPath")
                .and_then(target_ref)
                .ok_or_else(|| ApiError::bad_request("targetPath is required"))?,
        ),
        _ => None,
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    let mut last = ActivityId(0);
    for p in &paths {
        let Some(at) = target_ref(p) else {
            errors.push(error_entry(p, &ApiError::bad_request("not a path or id")));
            continue;
        };
        let outcome = (|| -> ApiResult<Value> {
            let node = state
                .store
                .node(&at)?
                .ok_or_else(|| ApiError::not_found(format!("content not found: {at}")))?;
            let summary = |n: &cairn_store::Node| json!({"Id": n.id.0, "Path": n.path, "Name": n.name, "Type": n.type_name});
            Ok(match (action, &target) {
                (Action::DeleteBatch, _) => {
                    let w = state.store.delete(&NodeRef::Id(node.id), caller.user)?;
                    last = last.max(w.activity);
                    summary(&node)
                }
                (Action::MoveBatch, Some(t)) => {
                    let w = state.store.move_to(&NodeRef::Id(node.id), t, caller.user)?;
                    last = last.max(w.activity);
                    let mut v = summary(&w.value);
                    v["OriginalPath"] = json!(node.path);
                    v
                }
                (Action::CopyBatch, Some(t)) => {
                    let w = state
                        .store
                        .copy_to(&NodeRef::Id(node.id), t, None, caller.user)?;
                    last = last.max(w.activity);
                    summary(&w.value)
                }
                _ => return Err(ApiError::bad_request("not a batch action")),
            })
        })();
        match outcome {
            Ok(v) => results.push(v),
            Err(e) => errors.push(error_entry(p, &e)),
        }
    }
    if last.0 > 0 {
        state.search.wait_for(last, state.config.searchable_timeout);
    }
    Ok(json!({"d": {"__count": results.len(), "results": results, "errors": errors}}))
}

/// `GetIndexProperties`' answer (also the admin console's overview).
pub(crate) fn index_properties(state: &AppState) -> ApiResult<Value> {
    let p = state.search.properties()?;
    let db_last = state.store.last_activity_id()?;
    Ok(json!({
        "IndexingActivityStatus": {
            "LastActivityId": p.last_activity_id,
            "Gaps": p.gaps,
        },
        "CompletionState": p.completion_state,
        "DatabaseLastActivityId": db_last.0,
        "Lag": (db_last.0 - p.last_activity_id).max(0),
        "DocumentCount": p.document_count,
        "IndexingFault": p.fault,
        "RepositoryId": state.store.repository_id().to_string(),
        // Continuous archiving's shipped position and lag, when it runs.
        "Archive": state.backups.as_ref().and_then(|b| b.archive_status()),
        // Every search service (replica) of a web node, with its position and lag.
        "Replicas": Some(state.search.replica_views()).filter(|r| !r.is_empty()),
    }))
}

/// The index and backup operations are the whole repository's: they are called on /Root
/// (a call elsewhere would suggest they work on a subtree).
async fn at_root(state: &AppState, action: Action, at: &NodeRef) -> ApiResult<()> {
    let is_root = match at {
        NodeRef::Path(p) => p.eq_ignore_ascii_case("/Root"),
        // `content(1)`: /Root by its id.
        NodeRef::Id(_) => {
            let (state, at) = (state.clone(), at.clone());
            blocking(move || {
                Ok(state
                    .store
                    .node(&at)?
                    .is_some_and(|n| n.parent_id.is_none()))
            })
            .await?
        }
    };
    if is_root {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{action:?} is called on /Root: it covers the whole repository"
        )))
    }
}

/// Runs `action` on the item `at`.
pub async fn run(
    state: AppState,
    caller: Caller,
    method: Method,
    action: Action,
    at: NodeRef,
    _opts: Options,
    body: Bytes,
) -> ApiResult<Response> {
    let label = action.label();
    let value = match action {
        Action::DeleteBatch | Action::MoveBatch | Action::CopyBatch => {
            if method != Method::POST {
                return Err(ApiError::bad_request(format!(
                    "{action:?} is called with POST"
                )));
            }
            let body = super::body::object(&body)?;
            blocking(move || {
                state
                    .store
                    .node(&at)?
                    .ok_or_else(|| ApiError::not_found(format!("content not found: {at}")))?;
                batch(&state, &caller, action, &body)
            })
            .await?
        }
        Action::GetIndexProperties => {
            caller.require_admin("GetIndexProperties")?;
            at_root(&state, action, &at).await?;
            blocking(move || index_properties(&state)).await?
        }
        Action::CheckIndexIntegrity => {
            caller.require_admin("CheckIndexIntegrity")?;
            at_root(&state, action, &at).await?;
            blocking(move || state.search.check()).await?
        }
        Action::BackupIndex
        | Action::BackupRepository
        | Action::QueryIndexBackup
        | Action::CancelIndexBackup
        | Action::GetBackupPolicies
        | Action::ExecuteBackupPolicy => {
            caller.require_admin("backups")?;
            at_root(&state, action, &at).await?;
            let manager = state
                .backups
                .clone()
                .ok_or_else(|| ApiError::unavailable("backups are not offered by this server"))?;
            match action {
                Action::BackupIndex | Action::BackupRepository => {
                    if method != Method::POST {
                        return Err(ApiError::bad_request(format!(
                            "{action:?} is called with POST"
                        )));
                    }
                    // Parameters in any case (`Target` too); another name is a mistake to
                    // report, not to drop (the backup would get a made-up name).
                    let [target, to, encrypt_to] =
                        string_params(&body, ["target", "to", "encryptto"], |name| {
                            format!(
                                "{action:?} has no parameter '{name}' (it takes target, or to \
                                 and encryptTo)"
                            )
                        })?;
                    let request = cairn_backup::BackupRequest {
                        target,
                        to,
                        encrypt_to,
                    };
                    let kind = if action == Action::BackupIndex {
                        cairn_backup::BackupKind::Index
                    } else {
                        cairn_backup::BackupKind::Repository
                    };
                    blocking(move || manager.start(kind, &request)).await?
                }
                Action::CancelIndexBackup => blocking(move || manager.cancel()).await?,
                Action::GetBackupPolicies => blocking(move || manager.policies()).await?,
                Action::ExecuteBackupPolicy => {
                    if method != Method::POST {
                        return Err(ApiError::bad_request(
                            "ExecuteBackupPolicy is called with POST",
                        ));
                    }
                    let body = super::body::object(&body)?;
                    let name = body
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("name"))
                        .and_then(|(_, v)| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ApiError::bad_request("ExecuteBackupPolicy takes {\"name\": POLICY}")
                        })?;
                    blocking(move || manager.execute_policy(&name)).await?
                }
                _ => blocking(move || manager.query()).await?,
            }
        }
        Action::RebuildIndex
        | Action::RestoreIndex
        | Action::QueryIndexRestore
        | Action::CancelIndexRestore => {
            caller.require_admin("index rebuilds and restores")?;
            at_root(&state, action, &at).await?;
            let jobs = state.index_jobs.clone().ok_or_else(|| {
                ApiError::unavailable("index rebuilds and restores are not offered by this server")
            })?;
            if action != Action::QueryIndexRestore && method != Method::POST {
                return Err(ApiError::bad_request(format!(
                    "{action:?} is called with POST"
                )));
            }
            match action {
                Action::RebuildIndex => {
                    let [] = string_params(&body, [], |name| {
                        format!("RebuildIndex has no parameter '{name}'")
                    })?;
                    blocking(move || jobs.rebuild()).await?
                }
                Action::RestoreIndex => {
                    let [backup, identity] =
                        string_params(&body, ["backup", "identity"], |name| {
                            format!(
                                "RestoreIndex has no parameter '{name}' (it takes backup: \
                                 REPO/NAME, and identity for an encrypted one)"
                            )
                        })?;
                    let backup = backup.ok_or_else(|| {
                        ApiError::bad_request("RestoreIndex takes {\"backup\": \"REPO/NAME\"}")
                    })?;
                    blocking(move || jobs.restore(&backup, identity.as_deref())).await?
                }
                Action::CancelIndexRestore => blocking(move || jobs.cancel()).await?,
                _ => blocking(move || jobs.query()).await?,
            }
        }
    };
    let mut r = Json(value).into_response();
    r.extensions_mut().insert(RouteLabel(label));
    Ok(r)
}
