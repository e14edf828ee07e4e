//! A content item as the store holds it, and the inputs that create or change one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::content::{format_date, ContentTypes, FieldDef, FieldValue};
use crate::ids::NodeId;

/// A content item: the columns of `nodes` plus its typed field values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique id, never reused.
    pub id: NodeId,
    /// The parent's id; `None` only for /Root.
    pub parent_id: Option<NodeId>,
    /// The name, unique among siblings case-insensitively.
    pub name: String,
    /// The full path, `/Root/...`.
    pub path: String,
    /// The content type's name.
    pub type_name: String,
    /// The display name.
    pub display_name: String,
    /// The description.
    pub description: String,
    /// The sort index among siblings.
    pub index: i64,
    /// When the item was created.
    pub creation_date: OffsetDateTime,
    /// When the item was last changed.
    pub modification_date: OffsetDateTime,
    /// Who created it.
    pub created_by: Option<NodeId>,
    /// Who changed it last.
    pub modified_by: Option<NodeId>,
    /// Grows on every change of this row: the id of the activity that changed it last.
    pub timestamp: i64,
    /// The type's own field values (absent means null).
    pub fields: BTreeMap<String, FieldValue>,
}

/// The fields every item has, kept in columns of `nodes` (the names [`Node::value`] reads
/// without `fields`).
pub const COLUMN_FIELDS: [&str; 13] = [
    "Id",
    "ParentId",
    "Path",
    "Type",
    "Name",
    "DisplayName",
    "Description",
    "Index",
    "CreationDate",
    "ModificationDate",
    "CreatedBy",
    "ModifiedBy",
    "Timestamp",
];

/// How much of an item a read loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeDetail {
    /// Everything: the columns and the typed field values.
    Whole,
    /// Only the [`COLUMN_FIELDS`]; `fields` is left empty. For reads that show nothing
    /// else (an OData `$select` of column fields): the typed values (an Article's body)
    /// are most of a row's bytes. Never write such a node back.
    Columns,
}

impl Node {
    /// The value of any field by name, the system and column fields included.
    pub fn value(&self, field: &str) -> Option<FieldValue> {
        let v = match field {
            "Id" => FieldValue::Integer(self.id.0),
            "ParentId" => FieldValue::Reference(self.parent_id.into_iter().collect()),
            "Path" => FieldValue::Text(self.path.clone()),
            "Type" => FieldValue::Text(self.type_name.clone()),
            "Name" => FieldValue::Text(self.name.clone()),
            "DisplayName" => FieldValue::Text(self.display_name.clone()),
            "Description" => FieldValue::Text(self.description.clone()),
            "Index" => FieldValue::Integer(self.index),
            "CreationDate" => FieldValue::DateTime(self.creation_date),
            "ModificationDate" => FieldValue::DateTime(self.modification_date),
            "CreatedBy" => FieldValue::Reference(self.created_by.into_iter().collect()),
            "ModifiedBy" => FieldValue::Reference(self.modified_by.into_iter().collect()),
            "Timestamp" => FieldValue::Integer(self.timestamp),
            other => return self.fields.get(other).cloned(),
        };
        Some(v)
    }

    /// The API's JSON of the field `def`, null when absent. A binary is sensenet's media
    /// resource: where to download it, its media type and its ETag (the blob's hash).
    pub fn field_json(&self, def: &FieldDef) -> Value {
        match self.value(def.name) {
            None => Value::Null,
            Some(FieldValue::Binary(b)) => {
                let mut m = Map::new();
                m.insert("edit_media".into(), Value::Null);
                m.insert(
                    "media_src".into(),
                    format!(
                        "/binaryhandler.ashx?nodeid={}&propertyname={}",
                        self.id.0, def.name
                    )
                    .into(),
                );
                m.insert("content_type".into(), b.content_type.into());
                m.insert("media_etag".into(), format!("\"{}\"", b.hash).into());
                let mut outer = Map::new();
                outer.insert("__mediaresource".into(), Value::Object(m));
                Value::Object(outer)
            }
            Some(v) => v.to_json(def),
        }
    }

    /// Every field of the item's type as JSON, null for absent values.
    pub fn to_json(&self, types: &ContentTypes) -> Map<String, Value> {
        let mut out = Map::new();
        match types.get(&self.type_name) {
            Ok(t) => {
                for def in t.fields.iter().filter(|d| !d.is_hidden()) {
                    out.insert(def.name.to_string(), self.field_json(def));
                }
            }
            Err(_) => {
                out.insert("Id".into(), self.id.0.into());
                out.insert("Path".into(), self.path.clone().into());
                out.insert("Name".into(), self.name.clone().into());
                out.insert("Type".into(), self.type_name.clone().into());
                out.insert(
                    "ModificationDate".into(),
                    format_date(self.modification_date).into(),
                );
            }
        }
        out
    }
}

/// What is needed to create an item: its type, its name and any writable fields.
#[derive(Clone, Debug, Default)]
pub struct NewContent {
    /// The content type (case-insensitive).
    pub type_name: String,
    /// The name; when empty, the `Name` field or the DisplayName is used.
    pub name: String,
    /// Writable field values by field name (JSON, checked against the type).
    pub fields: Map<String, Value>,
}

/// Addresses an item by id or by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRef {
    /// By id.
    Id(NodeId),
    /// By path (case-insensitive).
    Path(String),
}

impl From<NodeId> for NodeRef {
    fn from(id: NodeId) -> Self {
        NodeRef::Id(id)
    }
}

impl From<&str> for NodeRef {
    fn from(path: &str) -> Self {
        NodeRef::Path(path.to_string())
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Id(id) => write!(f, "id {id}"),
            NodeRef::Path(p) => f.write_str(p),
        }
    }
}

/// The id, path and timestamp of an item: what the integrity check compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStamp {
    /// The item's id.
    pub id: NodeId,
    /// Its path.
    pub path: String,
    /// Its timestamp.
    pub timestamp: i64,
}
