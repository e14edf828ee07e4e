//! Authentication: `Authorization: Bearer <api key>` (what the sensenet JS client sends)
//! for the administrator, `Basic` for users whose password hash is stored with them. No
//! anonymous access.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use cairn_store::{FieldValue, NodeId, NodeRef};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user's content id (the administrator's for the admin key).
    pub user: NodeId,
    /// Administrators may do everything.
    pub is_admin: bool,
}

impl Caller {
    /// Refuses non-administrators.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} is for administrators only"
            )))
        }
    }
}

/// Compares in time independent of where the strings first differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Hashes a password for storage (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    // 16 random bytes from the OS (uuid's v4 generator) as the salt.
    let salt =
        SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Turns a `Password` in `fields` into the stored hash (Users only): what a create, an
/// update or an import writes, never the password itself.
pub fn hash_password_field(
    type_name: &str,
    fields: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), ApiError> {
    if let Some(p) = fields.remove("Password") {
        if !type_name.eq_ignore_ascii_case("User") {
            return Err(ApiError::bad_request(format!(
                "content type {type_name} has no field \"Password\""
            )));
        }
        let serde_json::Value::String(p) = p else {
            return Err(ApiError::bad_request("Password must be a string"));
        };
        if p.is_empty() {
            return Err(ApiError::bad_request("Password cannot be empty"));
        }
        fields.insert(
            "PasswordHash".into(),
            serde_json::Value::String(hash_password(&p)?),
        );
    }
    Ok(())
}

/// Whether `password` matches the argon2 `hash` (false for anything that is not a hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Finds the user with `login` (the database keeps a login to one user) and checks the
/// password.
fn basic_user(state: &AppState, login: &str, password: &str) -> Result<Option<Caller>, ApiError> {
    // A refusal costs one password check whatever the reason, so that its time does not
    // tell an unknown login from a wrong password.
    let refuse = || {
        static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        if let Some(h) = DUMMY.get_or_init(|| hash_password("not a password").ok()) {
            verify_password(password, h);
        }
        Ok(None)
    };
    let Some(id) = state.store.user_by_login(login)? else {
        return refuse();
    };
    let Some(node) = state.store.node(&NodeRef::Id(id))? else {
        return refuse();
    };
    let enabled = !matches!(node.fields.get("Enabled"), Some(FieldValue::Boolean(false)));
    let ok = match node.fields.get("PasswordHash") {
        Some(FieldValue::Text(h)) => verify_password(password, h) && enabled,
        _ => return refuse(),
    };
    Ok(ok.then(|| Caller {
        is_admin: node.id == state.store.admin_id(),
        user: node.id,
    }))
}

/// The administrator, when `key` is the admin key.
pub(crate) fn admin_by_key(state: &AppState, key: &str) -> Option<Caller> {
    same(key.as_bytes(), state.config.admin_key.as_bytes()).then(|| Caller {
        user: state.store.admin_id(),
        is_admin: true,
    })
}

/// The user whose login and password these are (blocking: a password check).
pub(crate) fn user_by_password(
    state: &AppState,
    login: &str,
    password: &str,
) -> Result<Option<Caller>, ApiError> {
    basic_user(state, login, password)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthorized)?
            .trim()
            .to_string();
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let (scheme, credentials) = header.split_once(' ').unwrap_or((header.as_str(), ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("Bearer") {
            return admin_by_key(state, credentials).ok_or_else(ApiError::rejected_credentials);
        }
        if scheme.eq_ignore_ascii_case("Basic") {
            let encoded = credentials;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(ApiError::rejected_credentials)?;
            let (login, password) = decoded
                .split_once(':')
                .ok_or_else(ApiError::rejected_credentials)?;
            let (state, login, password) = (state.clone(), login.to_string(), password.to_string());
            let caller = tokio::task::spawn_blocking(move || basic_user(&state, &login, &password))
                .await
                .map_err(ApiError::internal)??;
            return caller.ok_or_else(ApiError::rejected_credentials);
        }
        Err(ApiError::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("S3cret", &h));
        assert!(!verify_password("s3cret", "not a hash"));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
