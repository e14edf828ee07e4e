//! Saving an uploaded file: the item with its binary value, created or overwritten in one
//! transaction with its activity. The blob is in the blob store already
//! ([`crate::files`]).

use serde_json::Map;

use crate::activity::ActivityKind;
use crate::activity_log::insert_activity;
use crate::content::{BinaryValue, ContentType, FieldKind, FieldValue, Storage};
use crate::error::{Result, StoreError};
use crate::ids::NodeId;
use crate::items::{find, insert_node, must_find, new_node, save_node, Lock};
use crate::node::{NewContent, Node, NodeRef};
use crate::rows::now;
use crate::store::{Store, Written};

/// An uploaded file to save.
#[derive(Clone, Debug)]
pub struct SaveBinary {
    /// The folder it goes into.
    pub parent: NodeRef,
    /// The item's name (the file name).
    pub name: String,
    /// The type of a new item (`File` unless the uploader names another).
    pub type_name: String,
    /// The binary field written (`Binary`).
    pub property: String,
    /// The value: blob, size, media type, extracted text.
    pub value: BinaryValue,
    /// True: an existing item of that name gets the new bytes. False: the new item takes a
    /// free name (`name(1).ext`), as sensenet does.
    pub overwrite: bool,
}

/// The most names tried for a file that must not overwrite (`a(1).txt` .. `a(999).txt`).
const MAX_SUFFIX: u32 = 999;

/// `a.txt` as `a(n).txt`.
fn suffixed(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}({n}).{ext}"),
        _ => format!("{name}({n})"),
    }
}

/// The binary field `property` of `t`, or why it has none.
fn binary_field<'t>(t: &'t ContentType, property: &str) -> Result<&'t crate::FieldDef> {
    t.fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(property) && f.kind == FieldKind::Binary)
        .ok_or_else(|| StoreError::InvalidValue {
            field: property.to_string(),
            reason: format!("{} has no binary field {property:?}", t.name),
        })
}

/// Writes `value` into the binary field `property` of `node` (whose type is `t`), as
/// [`set_binary`]; an error when the type has no such field.
pub(crate) fn set_binary_field(
    t: &ContentType,
    node: &mut Node,
    property: &str,
    value: &BinaryValue,
) -> Result<()> {
    let field = binary_field(t, property)?;
    set_binary(t, node, field.name, value);
    Ok(())
}

/// Writes `value` into `node` (whose type is `t`): the binary field, and `MimeType` and
/// `Size` where the type has them.
fn set_binary(t: &ContentType, node: &mut Node, field: &str, value: &BinaryValue) {
    if t.field("MimeType").is_some() {
        node.fields.insert(
            "MimeType".into(),
            FieldValue::Text(value.content_type.clone()),
        );
    }
    if t.field("Size").is_some() {
        node.fields
            .insert("Size".into(), FieldValue::Integer(value.size));
    }
    node.fields
        .insert(field.to_string(), FieldValue::Binary(value.clone()));
}

impl Store {
    /// Saves an uploaded file (see [`SaveBinary`]). The item appears with its bytes, in
    /// one transaction: no reader sees it without them.
    pub fn save_binary(&self, save: &SaveBinary, by: NodeId) -> Result<Written<Node>> {
        self.write(|conn| {
            let parent = must_find(conn, &self.types, &save.parent, Lock::Share)?;
            let parent_type = self.types.get(&parent.type_name)?;
            if !parent_type.is("Folder") {
                return Err(StoreError::NotAllowed(format!(
                    "files are uploaded into folders; {} is a {}",
                    parent.path, parent.type_name
                )));
            }
            let mut name = save.name.clone();
            for n in 1..=MAX_SUFFIX + 1 {
                let path = format!("{}/{}", parent.path, name);
                let existing = find(conn, &self.types, &NodeRef::Path(path), Lock::Update)?;
                let Some(old) = existing else { break };
                if save.overwrite {
                    self.refuse_user_admin(by, [&old.type_name], "changing users and groups")?;
                    let t = self.types.get(&old.type_name)?;
                    let field = binary_field(t, &save.property)?;
                    let mut node = old.clone();
                    set_binary(t, &mut node, field.name, &save.value);
                    node.modification_date = now();
                    node.modified_by = Some(by);
                    let activity =
                        insert_activity(conn, ActivityKind::Update, node.id, &node.path, None)?;
                    node.timestamp = activity.0;
                    save_node(conn, &self.types, &node)?;
                    return Ok((node, activity));
                }
                if n > MAX_SUFFIX {
                    return Err(StoreError::AlreadyExists(format!(
                        "{}/{} (and {MAX_SUFFIX} numbered names)",
                        parent.path, save.name
                    )));
                }
                name = suffixed(&save.name, n);
            }
            self.refuse_user_admin(by, [&save.type_name], "creating users and groups")?;
            let content = NewContent {
                type_name: save.type_name.clone(),
                name,
                fields: Map::new(),
            };
            let mut node = new_node(&self.types, &parent, &content, Some(by))?;
            let t = self.types.get(&node.type_name)?;
            let field = binary_field(t, &save.property)?;
            debug_assert_eq!(field.storage, Storage::Binary);
            set_binary(t, &mut node, field.name, &save.value);
            let activity = insert_node(conn, &self.types, &mut node)?;
            Ok((node, activity))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::suffixed;

    #[test]
    fn free_names_are_numbered_before_the_extension() {
        assert_eq!(suffixed("a.txt", 1), "a(1).txt");
        assert_eq!(suffixed("a.b.txt", 2), "a.b(2).txt");
        assert_eq!(suffixed("README", 3), "README(3)");
        assert_eq!(suffixed(".env", 1), ".env(1)");
    }
}
