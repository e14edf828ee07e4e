//! The admin console's sessions: a random token in an `HttpOnly`, `SameSite=Strict` cookie
//! (the key itself is sent once, to log in, and never again), a CSRF token per session that
//! every state-changing request carries in a header, and an expiry (idle and absolute).
//! Kept in memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_store::NodeId;

/// The cookie's name.
pub const COOKIE: &str = "cairn_admin";
/// The header of the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The longest a session lasts, however active.
const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// One logged-in administrator.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who logged in.
    pub user: NodeId,
    /// What state-changing requests must carry in [`CSRF_HEADER`].
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of one server.
#[derive(Debug)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

/// 244 random bits from the operating system (two version-4 UUIDs) as 64 hex digits:
/// tokens that cannot be guessed.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Sessions that end after `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            by_token: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// How long a session may stay idle.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `user`: its cookie token and the session.
    pub fn open(&self, user: NodeId) -> (String, Session) {
        let now = Instant::now();
        let session = Session {
            user,
            csrf: random_token(),
            started: now,
            last_seen: now,
        };
        let token = random_token();
        let mut map = self.map();
        // Expired ones go whenever one is opened: the map holds live sessions only.
        let idle = self.idle;
        map.retain(|_, s| s.alive(now, idle));
        map.insert(token.clone(), session.clone());
        (token, session)
    }

    /// The live session of `token` (its idle time restarts), or `None`.
    pub fn find(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map();
        match map.get_mut(token) {
            Some(s) if s.alive(now, self.idle) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends the session of `token`.
    pub fn close(&self, token: &str) {
        self.map().remove(token);
    }
}

impl Session {
    fn alive(&self, now: Instant, idle: Duration) -> bool {
        now.duration_since(self.last_seen) < idle && now.duration_since(self.started) < ABSOLUTE
    }
}

/// The session cookie's token in `headers`, if any.
pub fn cookie_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// `Set-Cookie` for `token` (empty: one that removes the cookie).
pub fn set_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_token_until_it_is_idle_too_long() {
        let s = Sessions::new(Duration::from_millis(200));
        let (token, opened) = s.open(NodeId(7));
        assert_eq!(opened.csrf.len(), 64);
        assert_ne!(token, opened.csrf);
        assert_eq!(s.find(&token).map(|x| x.user), Some(NodeId(7)));
        assert!(s.find("not-a-token").is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.find(&token).is_none(), "idle too long");
        let (token, _) = s.open(NodeId(7));
        s.close(&token);
        assert!(s.find(&token).is_none(), "logged out");
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_strictly() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; cairn_admin=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc", Duration::from_secs(60), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("abc", Duration::from_secs(60), false).contains("Secure"));
    }
}
