//! Content operations. Each one commits the content change and exactly one indexing
//! activity in one transaction, and stamps every row it changes with that activity's id.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::activity::ActivityKind;
use crate::content::{
    path_key, validate_name, validate_path, ContentType, ContentTypes, FieldDef, FieldKind,
    FieldValue, Storage, MAX_PATH_CHARS,
};
use crate::db::{Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::ids::{ActivityId, NodeId};
use crate::node::{NewContent, Node, NodeRef};
use crate::rows::{fields_json, node_from_row, now, to_micros, NODE_COLUMNS};
use crate::store::{subtree_bounds, subtree_clause, Store, Written};

/// How an update treats the fields it is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Keep them (PATCH).
    Patch,
    /// Reset them to their defaults (PUT).
    Replace,
}

/// One item of a bulk import.
#[derive(Clone, Debug)]
pub struct ImportItem {
    /// Where to create it; its parent must exist or come earlier in the import.
    pub path: String,
    /// The content type.
    pub type_name: String,
    /// Writable fields.
    pub fields: Map<String, Json>,
}

/// What a bulk import batch did.
#[derive(Debug)]
pub struct ImportOutcome {
    /// Items created and committed (all of them, or those before `error`).
    pub created: usize,
    /// The last activity id committed, if any.
    pub last_activity: Option<ActivityId>,
    /// The first failing item: its position in the batch and why.
    pub error: Option<(usize, StoreError)>,
}

/// The row lock a lookup takes (PostgreSQL; SQLite has one writer and needs none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lock {
    /// No lock: a plain read.
    None,
    /// `FOR SHARE`: the row must not move or vanish (a parent, a target). Compatible with
    /// the key-share locks that inserting children takes, so creates in one folder run
    /// concurrently.
    Share,
    /// `FOR NO KEY UPDATE`: the row itself changes (an update of its fields).
    Update,
}

pub(crate) fn find(
    conn: &mut dyn Conn,
    types: &ContentTypes,
    at: &NodeRef,
    lock: Lock,
) -> Result<Option<Node>> {
    let suffix = match (conn.dialect(), lock) {
        (Dialect::Sqlite, _) | (_, Lock::None) => "",
        (Dialect::Postgres, Lock::Share) => " FOR SHARE",
        (Dialect::Postgres, Lock::Update) => " FOR NO KEY UPDATE",
    };
    let row = match at {
        NodeRef::Id(id) => conn.query_opt(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1{suffix}"),
            &[Param::I64(id.0)],
        )?,
        NodeRef::Path(p) => {
            let key = path_key(p);
            conn.query_opt(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE path_key = $1{suffix}"),
                &[Param::Text(&key)],
            )?
        }
    };
    row.map(|r| node_from_row(types, r)).transpose()
}

fn must_find(conn: &mut dyn Conn, types: &ContentTypes, at: &NodeRef, lock: Lock) -> Result<Node> {
    find(conn, types, at, lock)?.ok_or_else(|| StoreError::NotFound(at.to_string()))
}

pub(crate) fn insert_activity(
    conn: &mut dyn Conn,
    kind: ActivityKind,
    node: NodeId,
    path: &str,
    old_path: Option<&str>,
) -> Result<ActivityId> {
    let fingerprint = Uuid::new_v4().as_u64_pair().0 as i64;
    let micros = to_micros(now());
    conn.query_i64(
        "INSERT INTO indexing_activities \
         (activity_type, node_id, path, old_path, creation_date, fingerprint) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        &[
            Param::Text(kind.as_str()),
            Param::I64(node.0),
            Param::Text(path),
            old_path.map_or(Param::Null, Param::Text),
            Param::I64(micros),
            Param::I64(fingerprint),
        ],
    )
    .map(ActivityId)
}

/// Whether `sent`, for the read-only field `def`, is what a client that loaded `current`
/// sends back (sensenet's PUT of what a GET gave), and so is left alone:
/// - the fields every write sets anew (`ModificationDate`, `ModifiedBy`, `Timestamp`), with
///   any value: it describes the version the client loaded, perhaps one edit ago;
/// - a reference sent as null: an expanded one whose item was deleted loads as null;
/// - the item's own value otherwise (an expanded reference by its `Id`; a date to the
///   millisecond, as a JavaScript `Date` keeps it).
fn unchanged(def: &FieldDef, current: &Node, sent: &Json) -> bool {
    if matches!(def.name, "ModificationDate" | "ModifiedBy" | "Timestamp") {
        return true;
    }
    if def.kind == FieldKind::Reference && sent.is_null() {
        return true;
    }
    let current = current
        .value(def.name)
        .filter(|v| !matches!(v, FieldValue::Reference(ids) if ids.is_empty()));
    match (FieldValue::from_json(def, sent), current) {
        (Ok(Some(FieldValue::DateTime(a))), Some(FieldValue::DateTime(b))) => {
            (a - b).abs() < time::Duration::MILLISECOND
        }
        (Ok(v), c) => v == c,
        (Err(_), _) => false,
    }
}

/// Applies `fields` to `node` (whose type is `t`), checking every name and value. A
/// read-only field may be sent with the value it has in `current` (the item before the
/// change; `None` for a new one), and is then left alone.
fn apply_fields(
    t: &ContentType,
    node: &mut Node,
    current: Option<&Node>,
    fields: &Map<String, Json>,
) -> Result<()> {
    for (name, value) in fields {
        let def = t.field(name).ok_or_else(|| StoreError::UnknownField {
            type_name: t.name.to_string(),
            field: name.clone(),
        })?;
        if def.is_read_only() {
            if current.is_some_and(|c| unchanged(def, c, value)) {
                continue;
            }
            return Err(StoreError::ReadOnlyField(name.clone()));
        }
        let v = FieldValue::from_json(def, value)?;
        match (def.storage, def.name) {
            (Storage::Column, "Name") => match v {
                Some(FieldValue::Text(s)) => node.name = s,
                _ => {
                    return Err(StoreError::InvalidName {
                        name: String::new(),
                        reason: "the name is empty",
                    })
                }
            },
            (Storage::Column, "DisplayName") => {
                node.display_name = match v {
                    Some(FieldValue::Text(s)) => s,
                    _ => String::new(),
                }
            }
            (Storage::Column, "Description") => {
                node.description = match v {
                    Some(FieldValue::Text(s)) => s,
                    _ => String::new(),
                }
            }
            (Storage::Column, "Index") => {
                node.index = match v {
                    Some(FieldValue::Integer(i)) => i,
                    _ => 0,
                }
            }
            _ => match v {
                Some(v) => {
                    node.fields.insert(def.name.to_string(), v);
                }
                None => {
                    node.fields.remove(def.name);
                }
            },
        }
    }
    Ok(())
}

fn unique_to_exists(e: StoreError, path: &str) -> StoreError {
    if e.is_unique_violation() {
        StoreError::AlreadyExists(path.to_string())
    } else {
        e
    }
}

/// [`unique_to_exists`] for a write of `node`, whose login may be the one taken.
fn unique_to_conflict(e: StoreError, node: &Node) -> StoreError {
    if e.is_unique_violation() && e.violates(LOGIN_COLUMN) {
        StoreError::LoginTaken(login_name(node).unwrap_or_default().to_string())
    } else {
        unique_to_exists(e, &node.path)
    }
}

/// The column of users' logins, unique (schema version 2).
const LOGIN_COLUMN: &str = "login_key";

/// A user's `LoginName`, if it has one.
fn login_name(node: &Node) -> Option<&str> {
    match node.fields.get("LoginName") {
        Some(FieldValue::Text(s)) if node.type_name == "User" && !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Refuses a login that Basic authentication could not carry (it ends the login at the
/// first ':').
fn check_login(node: &Node) -> Result<()> {
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
fn login_column(node: &Node) -> Option<String> {
    login_name(node).map(login_key)
}

/// What the unique `login_key` column holds for a user's `login`: the login with its case
/// folded (Unicode lower case, so `Ärger` and `ärger` are one login). The migration to
/// version 2 fills the column with this same function.
pub(crate) fn login_key(login: &str) -> String {
    login.to_lowercase()
}

/// Inserts `node` (id and timestamp are filled in) with an `Add` activity.
fn insert_node(conn: &mut dyn Conn, types: &ContentTypes, node: &mut Node) -> Result<ActivityId> {
    let key = path_key(&node.path);
    let fields = fields_json(types, &node.type_name, &node.fields)?;
    let login = login_column(node);
    let id = conn
        .query_i64(
            "INSERT INTO nodes (parent_id, name, path, path_key, type, display_name, description, \
             idx, creation_date, modification_date, created_by, modified_by, timestamp, fields, \
             login_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14) RETURNING id",
            &[
                node.parent_id.map(|p| p.0).into(),
                Param::Text(&node.name),
                Param::Text(&node.path),
                Param::Text(&key),
                Param::Text(&node.type_name),
                Param::Text(&node.display_name),
                Param::Text(&node.description),
                Param::I64(node.index),
                Param::I64(to_micros(node.creation_date)),
                Param::I64(to_micros(node.modification_date)),
                node.created_by.map(|p| p.0).into(),
                node.modified_by.map(|p| p.0).into(),
                Param::Text(&fields),
                login.as_deref().map_or(Param::Null, Param::Text),
            ],
        )
        .map_err(|e| unique_to_conflict(e, node))?;
    node.id = NodeId(id);
    let activity = insert_activity(conn, ActivityKind::Add, node.id, &node.path, None)?;
    conn.execute(
        "UPDATE nodes SET timestamp = $1 WHERE id = $2",
        &[Param::I64(activity.0), Param::I64(id)],
    )?;
    node.timestamp = activity.0;
    Ok(activity)
}

/// Builds a new node under `parent` from `content`, checked against its type.
fn new_node(
    types: &ContentTypes,
    parent: &Node,
    content: &NewContent,
    by: Option<NodeId>,
) -> Result<Node> {
    let t = types.get(&content.type_name)?;
    let stamp = now();
    let mut node = Node {
        id: NodeId(0),
        parent_id: Some(parent.id),
        name: content.name.clone(),
        path: String::new(),
        type_name: t.name.to_string(),
        display_name: String::new(),
        description: String::new(),
        index: 0,
        creation_date: stamp,
        modification_date: stamp,
        created_by: by,
        modified_by: by,
        timestamp: 0,
        fields: BTreeMap::new(),
    };
    apply_fields(t, &mut node, None, &content.fields)?;
    if node.name.is_empty() {
        node.name = node.display_name.clone();
    }
    validate_name(&node.name)?;
    if node.display_name.is_empty() {
        node.display_name = node.name.clone();
    }
    node.path = format!("{}/{}", parent.path, node.name);
    validate_path(&node.path)?;
    Ok(node)
}

/// The administrator's login.
const ADMIN_LOGIN: &str = "admin";

/// Creates /Root, /Root/IMS and the administrator when the database is new; returns the
/// administrator's id.
pub(crate) fn bootstrap(conn: &mut dyn Conn, types: &ContentTypes) -> Result<NodeId> {
    let admin_path = "/Root/IMS/Admin";
    if let Some(admin) = find(conn, types, &NodeRef::from(admin_path), Lock::None)? {
        return Ok(admin.id);
    }
    // Moved away (before system items were protected): the user who logs in as admin.
    if let Some(admin) = user_by_login(conn, ADMIN_LOGIN)? {
        return Ok(admin);
    }
    // A new database, or one whose administrator was deleted (before system items were
    // protected): make what is missing, keep what is there.
    let root = match find(conn, types, &NodeRef::from("/Root"), Lock::None)? {
        Some(root) => root,
        None => {
            let stamp = now();
            let mut root = Node {
                id: NodeId(0),
                parent_id: None,
                name: "Root".into(),
                path: "/Root".into(),
                type_name: "Folder".into(),
                display_name: "Root".into(),
                description: String::new(),
                index: 0,
                creation_date: stamp,
                modification_date: stamp,
                created_by: None,
                modified_by: None,
                timestamp: 0,
                fields: BTreeMap::new(),
            };
            insert_node(conn, types, &mut root)?;
            root
        }
    };
    let ims = match find(conn, types, &NodeRef::from("/Root/IMS"), Lock::None)? {
        Some(ims) => ims,
        None => {
            let ims = NewContent {
                type_name: "SystemFolder".into(),
                name: "IMS".into(),
                fields: Map::new(),
            };
            let mut ims = new_node(types, &root, &ims, None)?;
            insert_node(conn, types, &mut ims)?;
            ims
        }
    };
    let mut fields = Map::new();
    fields.insert("LoginName".into(), ADMIN_LOGIN.into());
    fields.insert("FullName".into(), "Administrator".into());
    fields.insert("Enabled".into(), true.into());
    let admin = NewContent {
        type_name: "User".into(),
        name: "Admin".into(),
        fields,
    };
    let mut admin = new_node(types, &ims, &admin, None)?;
    insert_node(conn, types, &mut admin)?;
    Ok(admin.id)
}

/// Refuses a reference that names an item that does not exist (a mistyped id): what a
/// reference points at is in the repository when it is written. Only ids new to the field
/// (not in `before`, the item as it was) are checked: an id whose item was deleted since
/// does not stop the item's other changes.
fn check_references(conn: &mut dyn Conn, node: &Node, before: Option<&Node>) -> Result<()> {
    for (field, value) in &node.fields {
        let FieldValue::Reference(ids) = value else {
            continue;
        };
        let had: &[NodeId] = match before.and_then(|b| b.fields.get(field)) {
            Some(FieldValue::Reference(old)) => old,
            _ => &[],
        };
        let mut wanted: Vec<i64> = ids
            .iter()
            .filter(|i| !had.contains(i))
            .map(|i| i.0)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut found = std::collections::HashSet::new();
        for chunk in crate::store::in_chunks(&wanted) {
            let sql = format!(
                "SELECT id FROM nodes WHERE id IN ({})",
                crate::store::placeholders(1, chunk.len())
            );
            let params: Vec<Param> = chunk.iter().map(|&i| Param::I64(i)).collect();
            for row in conn.query(&sql, &params)? {
                found.insert(row.i64(0)?);
            }
        }
        let missing: Vec<String> = wanted
            .iter()
            .filter(|i| !found.contains(i))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::InvalidValue {
                field: field.clone(),
                reason: format!("no item has the id {}", missing.join(", ")),
            });
        }
    }
    Ok(())
}

/// The items the repository cannot work without: /Root, the users' folder and the
/// administrator (start-up finds the administrator by this path).
const SYSTEM_PATHS: [&str; 3] = ["/root", "/root/ims", "/root/ims/admin"];

/// Refuses to `verb` (delete, move, rename) one of the [`SYSTEM_PATHS`].
fn refuse_system_item(node: &Node, verb: &str) -> Result<()> {
    if SYSTEM_PATHS.contains(&path_key(&node.path).as_str()) {
        return Err(StoreError::NotAllowed(format!(
            "{} is a system item and cannot be {verb}",
            node.path
        )));
    }
    Ok(())
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
fn types_of(rows: &[crate::db::Row]) -> impl Iterator<Item = String> + '_ {
    rows.iter().filter_map(|r| r.text(0).ok())
}

/// Whether the subtree at `path` (the item itself included) holds a user or a group.
fn subtree_holds_user_admin(conn: &mut dyn Conn, path: &str) -> Result<bool> {
    let b = subtree_bounds(path);
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM nodes WHERE {} AND type IN ($4, $5) LIMIT 1) t",
        subtree_clause(1)
    );
    let mut params: Vec<Param> = b.iter().map(|s| s.as_str().into()).collect();
    params.extend(USER_ADMIN_TYPES.iter().map(|t| Param::Text(t)));
    Ok(conn.query_i64(&sql, &params)? > 0)
}

fn is_in_subtree(path: &str, root: &str) -> bool {
    let (p, r) = (path_key(path), path_key(root));
    p == r || p.starts_with(&format!("{r}/"))
}

/// Locks every row of a subtree (PostgreSQL), so that a concurrent create below it waits.
fn lock_subtree(conn: &mut dyn Conn, path: &str) -> Result<()> {
    if conn.dialect() == Dialect::Postgres {
        let b = subtree_bounds(path);
        conn.query(
            &format!(
                "SELECT id FROM nodes WHERE {} FOR UPDATE",
                subtree_clause(1)
            ),
            &[
                b[0].as_str().into(),
                b[1].as_str().into(),
                b[2].as_str().into(),
            ],
        )?;
    }
    Ok(())
}

/// Rewrites the paths of the subtree at `old` to start with `new`, stamping each row.
/// Returns the type of every row it rewrote (what [`Store::refuse_user_admin`] checks: the
/// rows the statement changed, not a read made before it).
fn repath_subtree(
    conn: &mut dyn Conn,
    old: &str,
    new: &str,
    stamp: ActivityId,
) -> Result<Vec<crate::db::Row>> {
    let longest = {
        let b = subtree_bounds(old);
        conn.query_i64(
            &format!(
                "SELECT COALESCE(MAX(LENGTH(path)), 0) FROM nodes WHERE {}",
                subtree_clause(1)
            ),
            &[
                b[0].as_str().into(),
                b[1].as_str().into(),
                b[2].as_str().into(),
            ],
        )?
    };
    let (old_len, new_len) = (old.chars().count() as i64, new.chars().count() as i64);
    if longest - old_len + new_len > MAX_PATH_CHARS as i64 {
        return Err(StoreError::InvalidPath {
            path: new.to_string(),
            reason: "a path in the subtree would be longer than 450 characters",
        });
    }
    let (old_key, new_key) = (path_key(old), path_key(new));
    let b = subtree_bounds(old);
    conn.query(
        &format!(
            "UPDATE nodes SET path = $4 || SUBSTR(path, $5), path_key = $6 || SUBSTR(path_key, $7), \
             timestamp = $8 WHERE {} RETURNING type",
            subtree_clause(1)
        ),
        &[
            b[0].as_str().into(),
            b[1].as_str().into(),
            b[2].as_str().into(),
            Param::Text(new),
            Param::I64(old_len + 1),
            Param::Text(&new_key),
            Param::I64(old_key.chars().count() as i64 + 1),
            Param::I64(stamp.0),
        ],
    )
    .map_err(|e| unique_to_exists(e, new))
}

fn save_node(conn: &mut dyn Conn, types: &ContentTypes, node: &Node) -> Result<()> {
    let fields = fields_json(types, &node.type_name, &node.fields)?;
    let login = login_column(node);
    conn.execute(
        "UPDATE nodes SET name = $2, display_name = $3, description = $4, idx = $5, \
         modification_date = $6, modified_by = $7, timestamp = $8, fields = $9, parent_id = $10, \
         login_key = $11 WHERE id = $1",
        &[
            Param::I64(node.id.0),
            Param::Text(&node.name),
            Param::Text(&node.display_name),
            Param::Text(&node.description),
            Param::I64(node.index),
            Param::I64(to_micros(node.modification_date)),
            node.modified_by.map(|p| p.0).into(),
            Param::I64(node.timestamp),
            Param::Text(&fields),
            node.parent_id.map(|p| p.0).into(),
            login.as_deref().map_or(Param::Null, Param::Text),
        ],
    )
    .map_err(|e| unique_to_conflict(e, node))?;
    Ok(())
}

impl Store {
    /// Runs `f` in a write transaction, then tells the listeners about the activity it wrote.
    fn write<T>(
        &self,
        mut f: impl FnMut(&mut dyn Conn) -> Result<(T, ActivityId)>,
    ) -> Result<Written<T>> {
        let injected = (|| -> Result<()> {
            fail::fail_point!("store::write", |m| Err(StoreError::Io {
                path: self.url().redacted().into(),
                cause: crate::fault::injected("store::write", m),
            }));
            Ok(())
        })();
        injected.map_err(|e| self.named_disk_full(e))?;
        let mut out = None;
        self.backend
            .write(&mut |conn| {
                out = Some(f(conn)?);
                Ok(())
            })
            .map_err(|e| self.named_disk_full(e))?;
        let (value, activity) =
            out.ok_or_else(|| StoreError::Corrupt("write did not run".into()))?;
        self.notify(activity);
        Ok(Written { value, activity })
    }

    /// A full disk, said as such and naming the database whose disk it is; any other
    /// error as it is.
    pub(crate) fn named_disk_full(&self, e: StoreError) -> StoreError {
        if e.is_disk_full() && !matches!(e, StoreError::DiskFull { .. }) {
            StoreError::DiskFull {
                database: self.url().redacted(),
                detail: e.to_string(),
            }
        } else {
            e
        }
    }

    /// Refuses `what` to anyone but the administrator when `types` holds a user or a group.
    /// Called inside the transaction, on the rows the operation itself locked or changed:
    /// a check made before it (in the API, once) let a user delete a folder the moment an
    /// administrator created a user in it.
    fn refuse_user_admin<S: AsRef<str>>(
        &self,
        by: NodeId,
        types: impl IntoIterator<Item = S>,
        what: &str,
    ) -> Result<()> {
        if by != self.admin_id() && types.into_iter().any(|t| is_user_admin_type(t.as_ref())) {
            return Err(StoreError::Forbidden(format!(
                "{what} is for administrators only: it takes users or groups along"
            )));
        }
        Ok(())
    }

    /// [`Store::refuse_user_admin`] for the subtree at `path` as it stands in this
    /// transaction: a refusal before other refusals (a user learns that users are not
    /// theirs before learning that /Root/IMS cannot be deleted anyway). The operation
    /// still checks the rows it changes, which this read cannot stand for alone.
    fn refuse_user_admin_below(
        &self,
        conn: &mut dyn Conn,
        by: NodeId,
        path: &str,
        what: &str,
    ) -> Result<()> {
        if by != self.admin_id() && subtree_holds_user_admin(conn, path)? {
            return self.refuse_user_admin(by, USER_ADMIN_TYPES, what);
        }
        Ok(())
    }

    /// Creates an item under `parent`.
    pub fn create(
        &self,
        parent: &NodeRef,
        content: &NewContent,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            self.refuse_user_admin(by, [&content.type_name], "creating users and groups")?;
            let parent = must_find(conn, &self.types, parent, Lock::Share)?;
            let mut node = new_node(&self.types, &parent, content, Some(by))?;
            check_login(&node)?;
            check_references(conn, &node, None)?;
            let activity = insert_node(conn, &self.types, &mut node)?;
            Ok((node, activity))
        })
    }

    /// Changes the given fields of an item (`Patch`), or all of its writable fields
    /// (`Replace`). A new `Name` renames it, and its subtree moves with it.
    pub fn update(
        &self,
        at: &NodeRef,
        fields: &Map<String, Json>,
        mode: UpdateMode,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            let old = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin(by, [&old.type_name], "changing users and groups")?;
            let t = self.types.get(&old.type_name)?;
            let mut node = old.clone();
            if mode == UpdateMode::Replace {
                node.display_name.clear();
                node.description.clear();
                node.index = 0;
                // A replace resets what a client can see and did not send; a hidden field
                // (a password hash) is kept unless given. Decided here, on the locked row:
                // a copy taken before the transaction would undo a concurrent change.
                node.fields
                    .retain(|k, _| t.field(k).is_some_and(|f| f.is_hidden()));
            }
            apply_fields(t, &mut node, Some(&old), fields)?;
            // A login is checked when it is written: one from an older version stays usable.
            if fields.contains_key("LoginName") {
                check_login(&node)?;
            }
            check_references(conn, &node, Some(&old))?;
            if node.display_name.is_empty() && mode == UpdateMode::Replace {
                node.display_name = node.name.clone();
            }
            node.modification_date = now();
            node.modified_by = Some(by);
            let renamed = node.name != old.name;
            let activity = if renamed {
                self.refuse_user_admin_below(conn, by, &old.path, "renaming users and groups")?;
                refuse_system_item(&old, "renamed")?;
                validate_name(&node.name)?;
                let parent = crate::content::parent_path(&old.path).unwrap_or("/Root");
                node.path = format!("{parent}/{}", node.name);
                validate_path(&node.path)?;
                lock_subtree(conn, &old.path)?;
                let a = insert_activity(
                    conn,
                    ActivityKind::Move,
                    node.id,
                    &node.path,
                    Some(&old.path),
                )?;
                let moved = repath_subtree(conn, &old.path, &node.path, a)?;
                self.refuse_user_admin(by, types_of(&moved), "renaming users and groups")?;
                a
            } else {
                insert_activity(conn, ActivityKind::Update, node.id, &node.path, None)?
            };
            node.timestamp = activity.0;
            save_node(conn, &self.types, &node)?;
            Ok((node, activity))
        })
    }

    /// Renames an item; its subtree follows.
    pub fn rename(&self, at: &NodeRef, new_name: &str, by: NodeId) -> Result<Written<Node>> {
        let mut fields = Map::new();
        fields.insert("Name".into(), Json::String(new_name.to_string()));
        self.update(at, &fields, UpdateMode::Patch, by)
    }

    /// Moves an item and its subtree under `target`.
    pub fn move_to(&self, at: &NodeRef, target: &NodeRef, by: NodeId) -> Result<Written<Node>> {
        self.write(|conn| {
            let mut node = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin_below(conn, by, &node.path, "moving users and groups")?;
            refuse_system_item(&node, "moved")?;
            let target = must_find(conn, &self.types, target, Lock::Share)?;
            if is_in_subtree(&target.path, &node.path) {
                return Err(StoreError::NotAllowed(format!(
                    "{} cannot be moved into its own subtree",
                    node.path
                )));
            }
            let old_path = node.path.clone();
            let new_path = format!("{}/{}", target.path, node.name);
            validate_path(&new_path)?;
            lock_subtree(conn, &old_path)?;
            let a = insert_activity(
                conn,
                ActivityKind::Move,
                node.id,
                &new_path,
                Some(&old_path),
            )?;
            let moved = repath_subtree(conn, &old_path, &new_path, a)?;
            self.refuse_user_admin(by, types_of(&moved), "moving users and groups")?;
            node.path = new_path;
            node.parent_id = Some(target.id);
            node.modification_date = now();
            node.modified_by = Some(by);
            node.timestamp = a.0;
            save_node(conn, &self.types, &node)?;
            Ok((node, a))
        })
    }

    /// Copies an item and its subtree under `target`, as `new_name` (default: the same name).
    pub fn copy_to(
        &self,
        at: &NodeRef,
        target: &NodeRef,
        new_name: Option<&str>,
        by: NodeId,
    ) -> Result<Written<Node>> {
        self.write(|conn| {
            let source = must_find(conn, &self.types, at, Lock::Share)?;
            self.refuse_user_admin_below(conn, by, &source.path, "copying users and groups")?;
            let target = must_find(conn, &self.types, target, Lock::Share)?;
            if is_in_subtree(&target.path, &source.path) {
                return Err(StoreError::NotAllowed(format!(
                    "{} cannot be copied into its own subtree",
                    source.path
                )));
            }
            let name = new_name.unwrap_or(&source.name).to_string();
            validate_name(&name)?;
            let new_root = format!("{}/{}", target.path, name);
            validate_path(&new_root)?;
            let b = subtree_bounds(&source.path);
            let rows = conn.query(
                &format!(
                    "SELECT {NODE_COLUMNS} FROM nodes WHERE {} ORDER BY path_key",
                    subtree_clause(1)
                ),
                &[
                    b[0].as_str().into(),
                    b[1].as_str().into(),
                    b[2].as_str().into(),
                ],
            )?;
            let stamp = now();
            let old_len = source.path.len();
            let mut new_ids: HashMap<NodeId, NodeId> = HashMap::new();
            let mut root_copy = None;
            let mut copies = Vec::with_capacity(rows.len());
            for row in rows {
                let mut n = node_from_row(&self.types, row)?;
                self.refuse_user_admin(by, [&n.type_name], "copying users and groups")?;
                let old_id = n.id;
                if old_id == source.id {
                    n.name = name.clone();
                    n.path = new_root.clone();
                    n.parent_id = Some(target.id);
                } else {
                    n.path = format!("{new_root}{}", &n.path[old_len..]);
                    n.parent_id = n.parent_id.and_then(|p| new_ids.get(&p).copied());
                }
                validate_path(&n.path)?;
                n.creation_date = stamp;
                n.modification_date = stamp;
                n.created_by = Some(by);
                n.modified_by = Some(by);
                let key = path_key(&n.path);
                let fields = fields_json(&self.types, &n.type_name, &n.fields)?;
                let login = login_column(&n);
                let id = conn
                    .query_i64(
                        "INSERT INTO nodes (parent_id, name, path, path_key, type, display_name, \
                         description, idx, creation_date, modification_date, created_by, \
                         modified_by, timestamp, fields, login_key) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $10, 0, $11, $12) \
                         RETURNING id",
                        &[
                            n.parent_id.map(|p| p.0).into(),
                            Param::Text(&n.name),
                            Param::Text(&n.path),
                            Param::Text(&key),
                            Param::Text(&n.type_name),
                            Param::Text(&n.display_name),
                            Param::Text(&n.description),
                            Param::I64(n.index),
                            Param::I64(to_micros(stamp)),
                            Param::I64(by.0),
                            Param::Text(&fields),
                            login.as_deref().map_or(Param::Null, Param::Text),
                        ],
                    )
                    .map_err(|e| unique_to_conflict(e, &n))?;
                n.id = NodeId(id);
                new_ids.insert(old_id, n.id);
                if old_id == source.id {
                    root_copy = Some(n.clone());
                }
                copies.push(n);
            }
            let mut root_copy =
                root_copy.ok_or_else(|| StoreError::NotFound(source.path.clone()))?;
            let a = insert_activity(conn, ActivityKind::AddTree, root_copy.id, &new_root, None)?;
            let nb = subtree_bounds(&new_root);
            conn.execute(
                &format!(
                    "UPDATE nodes SET timestamp = $4 WHERE {}",
                    subtree_clause(1)
                ),
                &[
                    nb[0].as_str().into(),
                    nb[1].as_str().into(),
                    nb[2].as_str().into(),
                    Param::I64(a.0),
                ],
            )?;
            root_copy.timestamp = a.0;
            Ok((root_copy, a))
        })
    }

    /// Deletes an item and its subtree; returns how many items were deleted.
    pub fn delete(&self, at: &NodeRef, by: NodeId) -> Result<Written<u64>> {
        self.write(|conn| {
            let node = must_find(conn, &self.types, at, Lock::Update)?;
            self.refuse_user_admin_below(conn, by, &node.path, "deleting users and groups")?;
            refuse_system_item(&node, "deleted")?;
            lock_subtree(conn, &node.path)?;
            let a = insert_activity(conn, ActivityKind::Remove, node.id, &node.path, None)?;
            let b = subtree_bounds(&node.path);
            let deleted = conn.query(
                &format!(
                    "DELETE FROM nodes WHERE {} RETURNING type",
                    subtree_clause(1)
                ),
                &[
                    b[0].as_str().into(),
                    b[1].as_str().into(),
                    b[2].as_str().into(),
                ],
            )?;
            self.refuse_user_admin(by, types_of(&deleted), "deleting users and groups")?;
            Ok((deleted.len() as u64, a))
        })
    }

    /// Creates `items` in one transaction, in order. On the first bad item, the items before
    /// it are committed and the rest is not; the outcome names the bad item.
    pub fn import(&self, items: &[ImportItem], by: NodeId) -> Result<ImportOutcome> {
        let mut failed: Option<(usize, StoreError)> = None;
        let mut upto = items.len();
        loop {
            let mut last = None;
            let attempt = self.backend.write(&mut |conn| {
                last = None;
                let mut parents: HashMap<String, Node> = HashMap::new();
                for (i, item) in items[..upto].iter().enumerate() {
                    let created = (|| {
                        validate_path(&item.path)?;
                        let (parent_path, name) = match item.path.rfind('/') {
                            Some(cut) if cut > 0 => (&item.path[..cut], &item.path[cut + 1..]),
                            _ => return Err(StoreError::NotAllowed("/Root exists already".into())),
                        };
                        let key = path_key(parent_path);
                        if !parents.contains_key(&key) {
                            let p =
                                find(conn, &self.types, &NodeRef::from(parent_path), Lock::Share)?
                                    .ok_or_else(|| StoreError::NotFound(parent_path.to_string()))?;
                            parents.insert(key.clone(), p);
                        }
                        let parent = &parents[&key];
                        let content = NewContent {
                            type_name: item.type_name.clone(),
                            name: name.to_string(),
                            fields: item.fields.clone(),
                        };
                        let mut node = new_node(&self.types, parent, &content, Some(by))?;
                        check_login(&node)?;
                        check_references(conn, &node, None)?;
                        let a = insert_node(conn, &self.types, &mut node)?;
                        Ok((node, a))
                    })();
                    match created {
                        Ok((node, a)) => {
                            last = Some(a);
                            if parents.len() > 4096 {
                                parents.clear();
                            }
                            parents.insert(path_key(&node.path), node);
                        }
                        Err(e) if e.is_input_error() => {
                            // Stop here; the caller commits what came before.
                            failed = Some((i, e));
                            return Err(StoreError::NotAllowed("rolled back".into()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            });
            match attempt {
                Ok(()) => {
                    if let Some(a) = last {
                        self.notify(a);
                    }
                    return Ok(ImportOutcome {
                        created: upto,
                        last_activity: last,
                        error: failed,
                    });
                }
                Err(e) => match &failed {
                    _ if e.is_disk_full() => return Err(self.named_disk_full(e)),
                    // Redo the good prefix alone: a failed statement may have aborted the
                    // transaction (PostgreSQL), so it cannot simply be committed.
                    Some((i, _)) if *i < upto => upto = *i,
                    _ => return Err(e),
                },
            }
        }
    }
}
