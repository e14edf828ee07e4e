//! Users and groups: logins (one user per login, case-insensitively, kept in a unique
//! column) and the rule that only the administrator creates, changes or takes along users
//! and groups (the checks here are run by the operations, inside their transactions).

use crate::content::FieldValue;
use crate::db::{Conn, Param};
use crate::error::{Result, StoreError};
use crate::ids::NodeId;
use crate::node::Node;
use crate::subtree::Subtree;

/// The column of users' logins, unique (schema version 2).
pub(crate) const LOGIN_COLUMN: &str = "login_key";

/// A user's `LoginName`, if it has one.
pub(crate) fn login_name(node: &Node) -> Option<&str> {
    match node.fields.get("LoginName") {
        Some(FieldValue::Text(s)) if node.type_name == "User" && !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Refuses a login that Basic authentication could not carry (it ends the login at the
/// first ':').
pub(crate) fn check_login(node: &Node) -> Result<()> {
    match login_name(node) {
        Some(login) if login.contains(':') => Err(StoreError::InvalidValue {
            field: "LoginName".into(),
            reason: "a login cannot hold ':' (Basic authentication ends the login there)".into(),
        }),
        _ => Ok(()),
    }
}

/// The user whose `LoginName` is `login` (case folded), by the unique `login_key` column.
pub(crate) fn user_by_login(conn: &mut dyn Conn, login: &str) -> Result<Option<NodeId>> {
    conn.query_opt(
        "SELECT id FROM nodes WHERE login_key = $1",
        &[Param::Text(&login_key(login))],
    )?
    .map(|r| r.i64(0).map(NodeId))
    .transpose()
}

/// What `node` puts in the `login_key` column: its login's key, or NULL.
pub(crate) fn login_column(node: &Node) -> Option<String> {
    login_name(node).map(login_key)
}

/// What the unique `login_key` column holds for a user's `login`: the login with its case
/// folded (Unicode lower case, so `Ärger` and `ärger` are one login). The migration to
/// version 2 fills the column with this same function.
pub(crate) fn login_key(login: &str) -> String {
    login.to_lowercase()
}

/// The content types only the administrator may create, change, delete, move, copy or
/// rename (alone, or anywhere in a subtree that one of those operations takes along).
pub const USER_ADMIN_TYPES: [&str; 2] = ["User", "Group"];

/// True for a type of [`USER_ADMIN_TYPES`].
pub fn is_user_admin_type(type_name: &str) -> bool {
    USER_ADMIN_TYPES
        .iter()
        .any(|t| type_name.eq_ignore_ascii_case(t))
}

/// The type of each row in `rows` (their first column).
pub(crate) fn types_of(rows: &[crate::db::Row]) -> impl Iterator<Item = String> + '_ {
    rows.iter().filter_map(|r| r.text(0).ok())
}

/// Whether the subtree at `path` (the item itself included) holds a user or a group.
pub(crate) fn subtree_holds_user_admin(conn: &mut dyn Conn, path: &str) -> Result<bool> {
    let b = Subtree::at(path);
    let sql = Subtree::sql(
        "SELECT COUNT(*) FROM (SELECT 1 FROM nodes WHERE {subtree} AND type IN ($4, $5) LIMIT 1) t",
    );
    let types = USER_ADMIN_TYPES.map(Param::Text);
    Ok(conn.query_i64(&sql, &b.params_with(&types))? > 0)
}
