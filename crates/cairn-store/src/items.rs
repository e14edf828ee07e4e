//! One item's row: finding it (with the row lock an operation needs), building a new one,
//! applying sent fields, inserting and saving it, and the checks every write of an item
//! makes (references, system items). Also the first start's bootstrap of `/Root`, the
//! users' folder and the administrator.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::activity::ActivityKind;
use crate::activity_log::insert_activity;
use crate::content::{
    path_key, validate_name, validate_path, ContentType, ContentTypes, FieldDef, FieldKind,
    FieldValue, Storage,
};
use crate::db::{query_in, Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::ids::{ActivityId, NodeId};
use crate::node::{NewContent, Node, NodeRef};
use crate::rows::{fields_json, node_from_row, now, to_micros, NODE_COLUMNS};
use crate::users::{login_column, login_name, user_by_login, LOGIN_COLUMN};

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

pub(crate) fn must_find(
    conn: &mut dyn Conn,
    types: &ContentTypes,
    at: &NodeRef,
    lock: Lock,
) -> Result<Node> {
    find(conn, types, at, lock)?.ok_or_else(|| StoreError::NotFound(at.to_string()))
}

/// Whether `sent`, for the read-only field `def`, is what a client that loaded `current`
/// sends back (sensenet's PUT of what a GET gave), and so is left alone:
/// - the fields every write sets anew (`ModificationDate`, `ModifiedBy`, `Timestamp`), with
///   any value: it describes the version the client loaded, perhaps one edit ago;
/// - a reference sent as null: an expanded one whose item was deleted loads as null;
/// - the item's own value otherwise (an expanded reference by its `Id`; a date to the
///   millisecond, as a JavaScript `Date` keeps it).
pub(crate) fn unchanged(def: &FieldDef, current: &Node, sent: &Json) -> bool {
    if matches!(def.name, "ModificationDate" | "ModifiedBy" | "Timestamp") {
        return true;
    }
    if def.kind == FieldKind::Reference && sent.is_null() {
        return true;
    }
    // A binary as the API shows it, sent back: the media resource names no bytes.
    if def.kind == FieldKind::Binary && sent.get("__mediaresource").is_some() {
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
pub(crate) fn apply_fields(
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

/// [`StoreError::existing_at`] for a write of `node`, whose login may be the one taken.
pub(crate) fn unique_to_conflict(e: StoreError, node: &Node) -> StoreError {
    if e.is_unique_violation() && e.violates(LOGIN_COLUMN) {
        StoreError::LoginTaken(login_name(node).unwrap_or_default().to_string())
    } else {
        e.existing_at(&node.path)
    }
}

/// Inserts `node` (id and timestamp are filled in) with an `Add` activity.
pub(crate) fn insert_node(
    conn: &mut dyn Conn,
    types: &ContentTypes,
    node: &mut Node,
) -> Result<ActivityId> {
    let id = insert_row(conn, types, node)?;
    let activity = insert_activity(conn, ActivityKind::Add, id, &node.path, None)?;
    conn.execute(
        "UPDATE nodes SET timestamp = $1 WHERE id = $2",
        &[Param::I64(activity.0), Param::I64(id.0)],
    )?;
    node.timestamp = activity.0;
    Ok(activity)
}

/// Inserts `node`'s row as it is (its timestamp 0, for the caller's activity to stamp) and
/// gives it its new id; a sibling of the same name, or a login taken, is refused.
pub(crate) fn insert_row(
    conn: &mut dyn Conn,
    types: &ContentTypes,
    node: &mut Node,
) -> Result<NodeId> {
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
    Ok(node.id)
}

/// Builds a new node under `parent` from `content`, checked against its type.
pub(crate) fn new_node(
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
pub(crate) const ADMIN_LOGIN: &str = "admin";

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
pub(crate) fn check_references(
    conn: &mut dyn Conn,
    node: &Node,
    before: Option<&Node>,
) -> Result<()> {
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
        for row in query_in(conn, "SELECT id FROM nodes WHERE id IN ({ids})", &wanted)? {
            found.insert(row.i64(0)?);
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
pub(crate) const SYSTEM_PATHS: [&str; 3] = ["/root", "/root/ims", "/root/ims/admin"];

/// Refuses to `verb` (delete, move, rename) one of the [`SYSTEM_PATHS`].
pub(crate) fn refuse_system_item(node: &Node, verb: &str) -> Result<()> {
    if SYSTEM_PATHS.contains(&path_key(&node.path).as_str()) {
        return Err(StoreError::NotAllowed(format!(
            "{} is a system item and cannot be {verb}",
            node.path
        )));
    }
    Ok(())
}

pub(crate) fn save_node(conn: &mut dyn Conn, types: &ContentTypes, node: &Node) -> Result<()> {
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
