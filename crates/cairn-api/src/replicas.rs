//! The search replicas a web node uses (`--search-service URL1,URL2,...`): several
//! `cairn search-service` processes on one PostgreSQL database, each with its own index
//! tracking the activity log. None depends on another; this node decides, per request,
//! which one answers.
//!
//! - **Health**: a thread asks every replica's `/health` twice a second. A replica that
//!   cannot be reached, or fails a call, is left out for [`OPEN_FOR`] (a short circuit
//!   breaker), then tried again; one catching up (seeded from a backup) takes no query.
//! - **Queries** go round-robin over the healthy replicas and fail over within the
//!   request: an attempt that is not answered within [`FAILOVER_AFTER`] while another
//!   replica is left (a replica killed, or stopped), or that fails, goes to the next.
//! - **Read-your-writes** across replicas: with more than one, a query carries the
//!   database's last activity when it was asked; the replica answers only once every
//!   activity committed up to it is applied (`wait_through`), and one that cannot within
//!   its attempt passes the query on. Replicas known to be there already are asked first.
//! - **Backups, index swaps, policies**: to one replica, the first healthy one in the order
//!   given (the same on every node); `QueryIndexBackup` shows the replica whose backup runs
//!   (else that first one's); the finished backups of all are listed. A PostgreSQL
//!   advisory lock keeps it to one backup at a time across replicas whatever a node does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cairn_store::{ActivityId, Store};
use serde_json::{json, Value};

use crate::client::ClientError;
use crate::error::{ApiError, ApiResult};
use crate::remote::{parse, IndexProperties, RemoteSearch, ReplicaView};

/// How long a replica that failed is left out before it is tried again.
pub const OPEN_FOR: Duration = Duration::from_secs(2);
/// How long an attempt may take before the next replica is asked, while one is left.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(2);
/// How often every replica's `/health` is asked.
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// How long a health check may take.
const HEALTH_LIMIT: Duration = Duration::from_secs(1);

/// What this node knows of one replica.
#[derive(Clone, Debug, Default)]
struct Health {
    /// Left out until then (after a failure).
    out_until: Option<Instant>,
    /// Whether its last `/health` said it is catching up.
    catching_up: bool,
    /// Its position, as its last `/health` or answer said.
    last_activity_id: Option<i64>,
    /// Why it was left out last.
    error: Option<String>,
}

struct Member {
    remote: RemoteSearch,
    health: Mutex<Health>,
}

impl Member {
    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn usable(&self, now: Instant) -> bool {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        !h.catching_up && h.out_until.is_none_or(|t| t <= now)
    }

    fn failed(&self, why: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.out_until = Some(Instant::now() + OPEN_FOR);
        h.error = Some(why.to_string());
    }

    fn answered(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.out_until = None;
        h.error = None;
    }
}

/// The replicas of one web node (see the module documentation).
pub struct Replicas {
    members: Vec<Member>,
    turn: AtomicUsize,
    store: Arc<Store>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.members.iter().map(|m| m.remote.base()).collect();
        f.debug_struct("Replicas").field("urls", &urls).finish()
    }
}

/// What a call to one replica gave.
type Attempt<T> = Result<T, ClientError>;

impl Replicas {
    /// The replicas at `urls` (in the order given: the first healthy one takes backups),
    /// presenting `secret`; `store` is the shared database.
    pub fn new(urls: &[String], secret: &str, store: Arc<Store>) -> Arc<Replicas> {
        Arc::new(Replicas {
            members: urls
                .iter()
                .map(|u| Member {
                    remote: RemoteSearch::new(u, secret),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            turn: AtomicUsize::new(0),
            store,
        })
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Starts the health checks, on a thread that ends when the replicas are dropped.
    pub fn start_health_checks(self: &Arc<Self>) {
        let me: Weak<Replicas> = Arc::downgrade(self);
        let started = std::thread::Builder::new()
            .name("search-health".into())
            .spawn(move || loop {
                let Some(me) = me.upgrade() else { return };
                me.check_health();
                drop(me);
                std::thread::sleep(HEALTH_EVERY);
            });
        if let Err(e) = started {
            tracing::warn!("no thread for the search replicas' health checks: {e}");
        }
    }

    /// Asks every replica's `/health` once.
    fn check_health(&self) {
        for m in &self.members {
            let got = m.remote.client().get_json("/health", Some(HEALTH_LIMIT));
            let mut h = m.health.lock().unwrap_or_else(|p| p.into_inner());
            match got {
                Ok(v) => {
                    h.catching_up = false;
                    h.last_activity_id = v["LastActivityId"].as_i64();
                    // Back from a failure: it answers its health, so try it again.
                    h.out_until = None;
                    h.error = None;
                }
                Err(e) if e.status == Some(503) => {
                    // Catching up: reachable, not yet for queries.
                    h.catching_up = true;
                    h.error = Some(e.message);
                }
                Err(e) => {
                    h.catching_up = false;
                    if h.error.is_none() {
                        tracing::warn!(replica = %m.remote.base(), "search replica left out: {e}");
                    }
                    h.out_until = Some(Instant::now() + OPEN_FOR);
                    h.error = Some(e.message);
                }
            }
        }
    }

    /// The replicas to ask, in order: the healthy ones from this request's turn (those
    /// known to have applied `need` first); the others only when none is healthy.
    fn for_queries(&self, need: Option<i64>) -> Vec<&Member> {
        let now = Instant::now();
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut usable: Vec<&Member> = (0..n)
            .map(|i| &self.members[(start + i) % n])
            .filter(|m| m.usable(now))
            .collect();
        if let Some(need) = need {
            // Stable: the turn's order within each group.
            usable.sort_by_key(|m| m.health().last_activity_id.is_none_or(|l| l < need));
        }
        if usable.is_empty() {
            return self.members.iter().collect();
        }
        usable
    }

    /// The replicas for backups and index swaps: the healthy ones in the order given,
    /// then the others.
    fn in_order(&self) -> Vec<&Member> {
        let now = Instant::now();
        let (mut first, rest): (Vec<&Member>, Vec<&Member>) =
            self.members.iter().partition(|m| m.usable(now));
        first.extend(rest);
        first
    }

    /// Asks `members` in turn until one answers; `call` gets the replica and how long it
    /// may take. A replica that cannot be reached, or answers 5xx, passes the request on
    /// (and is left out for a while unless it answered); a 4xx is the answer.
    fn first_answer<T>(
        &self,
        members: Vec<&Member>,
        full: Duration,
        mut call: impl FnMut(&RemoteSearch, Duration) -> Attempt<T>,
    ) -> ApiResult<T> {
        let mut failures: Vec<String> = Vec::new();
        let mut last: Option<(&Member, ClientError)> = None;
        let count = members.len();
        for (i, m) in members.into_iter().enumerate() {
            let limit = if i + 1 < count {
                full.min(FAILOVER_AFTER)
            } else {
                full
            };
            match call(&m.remote, limit) {
                Ok(v) => {
                    m.answered();
                    return Ok(v);
                }
                Err(e) => match e.status {
                    Some(s) if s < 500 => return Err(m.remote.api_error(e)),
                    Some(503) => {
                        // It answered (it is behind, or catching up): not a failure.
                        failures.push(format!("{}: {}", m.remote.base(), e.message));
                        last = Some((m, e));
                    }
                    _ => {
                        m.failed(&e.message);
                        failures.push(format!("{}: {}", m.remote.base(), e.message));
                        last = Some((m, e));
                    }
                },
            }
        }
        match last {
            Some((m, e)) if count == 1 => Err(m.remote.api_error(e)),
            _ => Err(ApiError::unavailable(format!(
                "no search replica could answer ({}); writes are kept and indexed when one is \
                 back",
                failures.join("; ")
            ))),
        }
    }

    /// A query (`/search/list`), with read-your-writes across replicas.
    pub fn list(&self, req: &cairn_search::ListRequest, full: Duration) -> ApiResult<Value> {
        let mut body = serde_json::to_value(req).map_err(ApiError::internal)?;
        // One replica has applied every answered write (a write waits for it).
        let need = if self.members.len() > 1 {
            self.store.last_activity_id().ok().map(|a| a.0)
        } else {
            None
        };
        self.first_answer(self.for_queries(need), full, |r, limit| {
            if let Some(need) = need {
                body["min_activity"] = json!(need);
                // The replica answers within the attempt, passing it on in time.
                body["wait_ms"] =
                    json!(limit.saturating_sub(Duration::from_millis(300)).as_millis() as u64);
            }
            r.client()
                .post_json("/search/list", &body.to_string(), Some(limit))
        })
    }

    /// Waits until `activity` is searchable on a replica (the first to say so), at most
    /// `timeout`.
    pub fn wait_for(&self, activity: ActivityId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let candidates = self.for_queries(Some(activity.0));
        let count = candidates.len();
        for (i, m) in candidates.into_iter().enumerate() {
            let mut left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if i + 1 < count {
                // A replica stopped, or far behind, passes the wait on in time.
                left = left.min(FAILOVER_AFTER);
            }
            let got = m.remote.client().post_json(
                "/search/wait",
                &json!({
                    "activity": activity.0,
                    "timeout_ms": left.saturating_sub(Duration::from_millis(500)).as_millis() as u64,
                })
                .to_string(),
                Some(left),
            );
            match got {
                Ok(v) if v["searchable"].as_bool() == Some(true) => {
                    let mut h = m.health.lock().unwrap_or_else(|p| p.into_inner());
                    h.last_activity_id = Some(h.last_activity_id.unwrap_or(0).max(activity.0));
                    return true;
                }
                Ok(_) => {}
                Err(e) if e.status.is_none() => m.failed(&e.message),
                Err(_) => {}
            }
        }
        false
    }

    /// A `GET` of the first replica in turn that answers.
    pub fn get_any(&self, path: &str, full: Duration) -> ApiResult<Value> {
        self.first_answer(self.for_queries(None), full, |r, limit| {
            r.client().get_json(path, Some(limit))
        })
    }

    /// A `GET` of the first healthy replica in the order given (backups, swaps, policies).
    pub fn get_first(&self, path: &str, full: Duration) -> ApiResult<Value> {
        self.first_answer(self.in_order(), full, |r, limit| {
            r.client().get_json(path, Some(limit))
        })
    }

    /// A `POST` to the first healthy replica in the order given.
    pub fn post_first(&self, path: &str, body: &Value, full: Duration) -> ApiResult<Value> {
        let body = body.to_string();
        self.first_answer(self.in_order(), full, |r, limit| {
            r.client().post_json(path, &body, Some(limit))
        })
    }

    /// The answers of every replica that can be reached now, in the order given.
    pub fn get_each(&self, path: &str, limit: Duration) -> Vec<Value> {
        let now = Instant::now();
        self.members
            .iter()
            .filter(|m| m.usable(now))
            .filter_map(|m| m.remote.client().get_json(path, Some(limit)).ok())
            .collect()
    }

    /// `QueryIndexBackup`: the answer of the replica whose backup runs, else the first
    /// healthy one's.
    pub fn backup_query(&self, limit: Duration) -> ApiResult<Value> {
        let answers = self.get_each("/backup/query", limit);
        let running = answers.iter().find(|a| {
            matches!(
                a["State"].as_str(),
                Some("Started" | "Executing" | "CancelRequested")
            )
        });
        match running.or(answers.first()) {
            Some(a) => Ok(a.clone()),
            None => self.get_first("/backup/query", limit),
        }
    }

    /// `CancelIndexBackup`: to every healthy replica; the answer of the one that was
    /// running a backup, else the first's.
    pub fn backup_cancel(&self, limit: Duration) -> ApiResult<Value> {
        let now = Instant::now();
        let mut first = None;
        for m in self.members.iter().filter(|m| m.usable(now)) {
            if let Ok(a) = m
                .remote
                .client()
                .post_json("/backup/cancel", "{}", Some(limit))
            {
                if a["State"].as_str() == Some("CancelRequested") {
                    return Ok(a);
                }
                first.get_or_insert(a);
            }
        }
        match first {
            Some(a) => Ok(a),
            None => self.post_first("/backup/cancel", &json!({}), limit),
        }
    }

    /// The finished backups of every healthy replica, each name once.
    pub fn backup_list(&self, limit: Duration) -> ApiResult<Value> {
        let answers = self.get_each("/backups", limit);
        if answers.is_empty() {
            return self.get_first("/backups", limit);
        }
        let mut seen = std::collections::HashSet::new();
        let merged: Vec<Value> = answers
            .into_iter()
            .filter_map(|a| a.as_array().cloned())
            .flatten()
            .filter(|b| seen.insert(b["Name"].as_str().unwrap_or_default().to_string()))
            .collect();
        Ok(Value::Array(merged))
    }

    /// Opens a file of a finished backup on whichever replica has it.
    pub fn open_file(
        &self,
        name: &str,
        path: &str,
    ) -> ApiResult<(u64, Box<dyn std::io::Read + Send>)> {
        let mut last = None;
        for m in self.in_order() {
            match m.remote.open_file(name, path) {
                Ok(f) => return Ok(f),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::not_found(format!("{name} has no file {path}"))))
    }

    /// A finished backup's manifest, from whichever replica has it.
    pub fn manifest(&self, url_path: &str, limit: Duration) -> ApiResult<Value> {
        let mut last = None;
        for m in self.in_order() {
            match m.remote.client().get_json(url_path, Some(limit)) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(m.remote.api_error(e)),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::not_found("no such backup")))
    }

    /// The index's properties, of the first replica in turn that answers.
    pub fn properties(&self, limit: Duration) -> ApiResult<IndexProperties> {
        parse(self.get_any("/search/properties", limit)?)
    }

    /// Every replica as `GetIndexProperties` shows it.
    pub fn views(&self, limit: Duration) -> Vec<ReplicaView> {
        let db = self.store.last_activity_id().ok().map(|a| a.0);
        let now = Instant::now();
        self.members
            .iter()
            .map(|m| {
                let h = m.health();
                let got = m
                    .remote
                    .client()
                    .get_json("/search/properties", Some(limit.min(HEALTH_LIMIT * 2)))
                    .ok();
                let last = got
                    .as_ref()
                    .and_then(|v| v["LastActivityId"].as_i64())
                    .or(h.last_activity_id);
                ReplicaView {
                    url: m.remote.base().to_string(),
                    healthy: m.usable(now),
                    status: if got.is_none() {
                        "unreachable".into()
                    } else if h.catching_up {
                        "catching up".into()
                    } else {
                        "ok".into()
                    },
                    completion_state: got
                        .as_ref()
                        .and_then(|v| v["CompletionState"].as_str().map(str::to_string)),
                    last_activity_id: last,
                    lag: db.zip(last).map(|(d, l)| (d - l).max(0)),
                    error: h.error,
                }
            })
            .collect()
    }

    /// `/metrics` lines: whether each replica is used, and its lag.
    pub fn metrics_text(&self) -> String {
        let db = self.store.last_activity_id().ok().map(|a| a.0);
        let now = Instant::now();
        let mut up = String::from(
            "# HELP cairn_search_replica_up Whether this node sends queries to the replica.\n\
             # TYPE cairn_search_replica_up gauge\n",
        );
        let mut lag = String::from(
            "# HELP cairn_search_replica_lag Activities the replica is behind the database, as \
             its last health check said.\n# TYPE cairn_search_replica_lag gauge\n",
        );
        for m in &self.members {
            let url = m.remote.base().replace('\\', "\\\\").replace('"', "\\\"");
            up.push_str(&format!(
                "cairn_search_replica_up{{replica=\"{url}\"}} {}\n",
                u8::from(m.usable(now))
            ));
            if let (Some(d), Some(l)) = (db, m.health().last_activity_id) {
                lag.push_str(&format!(
                    "cairn_search_replica_lag{{replica=\"{url}\"}} {}\n",
                    (d - l).max(0)
                ));
            }
        }
        up + &lag
    }
}
