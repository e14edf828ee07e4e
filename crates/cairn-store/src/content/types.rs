//! The built-in content types: a hierarchy whose types inherit the fields of their ancestors.
//!
//! ```text
//! GenericContent ─┬─ Folder ── SystemFolder
//!                 ├─ Article
//!                 ├─ File
//!                 ├─ User
//!                 └─ Group
//! ```

use std::collections::HashMap;

use crate::error::{Result, StoreError};

/// The type of a field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Short text (at most 450 characters), indexed as one lower-cased keyword.
    ShortText,
    /// Long text, indexed as analyzed full text.
    LongText,
    /// A 64-bit integer.
    Integer,
    /// A 64-bit floating point number.
    Number,
    /// True or false.
    Boolean,
    /// A UTC date and time, with microsecond precision.
    DateTime,
    /// Ids of other content items.
    Reference,
    /// One or more values out of a fixed list.
    Choice,
    /// A file's bytes: a content-addressed blob named by its SHA-256, with its size, media
    /// type, file name and the text extracted for the index ([`crate::files`]).
    Binary,
}

/// Where a field's value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A writable column of `nodes`.
    Column,
    /// A column of `nodes` that only the repository writes (Id, Path, dates, ...).
    System,
    /// The typed field values of `nodes.fields` (JSON).
    Typed,
    /// A typed value that is never indexed nor shown (a password hash). Only the API writes
    /// it, after hashing; clients cannot name it.
    Hidden,
    /// A binary value ([`FieldKind::Binary`]) in `nodes.fields`: written only by an upload
    /// ([`crate::Store::save_binary`]), shown as a media resource, its extracted text
    /// indexed as the item's text.
    Binary,
}

/// One field of a content type.
#[derive(Clone, Debug)]
pub struct FieldDef {
    /// The field's name, case-sensitive, as in sensenet (`DisplayName`, `Body`).
    pub name: &'static str,
    /// The type of its values.
    pub kind: FieldKind,
    /// Where the value lives.
    pub storage: Storage,
    /// For [`FieldKind::Choice`]: the allowed values.
    pub choices: &'static [&'static str],
    /// Whether the field takes a list of values (Reference, Choice).
    pub multiple: bool,
}

impl FieldDef {
    const fn new(name: &'static str, kind: FieldKind, storage: Storage) -> Self {
        FieldDef {
            name,
            kind,
            storage,
            choices: &[],
            multiple: false,
        }
    }
    const fn typed(name: &'static str, kind: FieldKind) -> Self {
        Self::new(name, kind, Storage::Typed)
    }
    /// True when clients cannot write this field through the fields of a create or an
    /// update.
    pub fn is_read_only(&self) -> bool {
        matches!(self.storage, Storage::System | Storage::Binary)
    }
    /// True when the index has a field of this name (hidden values and binaries have none;
    /// a binary's extracted text goes into the item's text).
    pub fn is_indexed(&self) -> bool {
        !matches!(self.storage, Storage::Hidden | Storage::Binary)
    }
    /// True when the field is never indexed nor shown.
    pub fn is_hidden(&self) -> bool {
        self.storage == Storage::Hidden
    }
}

/// A content type with its resolved fields (inherited ones first).
#[derive(Clone, Debug)]
pub struct ContentType {
    /// The type's name (`Folder`).
    pub name: &'static str,
    /// The parent type, `None` for GenericContent.
    pub parent: Option<&'static str>,
    /// The type and its ancestors, the type first (`["SystemFolder", "Folder", "GenericContent"]`).
    pub lineage: Vec<&'static str>,
    /// Every field of the type, inherited fields first.
    pub fields: Vec<FieldDef>,
}

impl ContentType {
    /// The field named `name` (case-sensitive).
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// True when this type is `ancestor` or derives from it.
    pub fn is(&self, ancestor: &str) -> bool {
        self.lineage
            .iter()
            .any(|t| t.eq_ignore_ascii_case(ancestor))
    }
}

/// The registry of content types.
#[derive(Clone, Debug)]
pub struct ContentTypes {
    types: Vec<ContentType>,
    by_lower_name: HashMap<String, usize>,
}

const GENERIC_FIELDS: &[FieldDef] = &[
    FieldDef::new("Id", FieldKind::Integer, Storage::System),
    FieldDef {
        name: "ParentId",
        kind: FieldKind::Reference,
        storage: Storage::System,
        choices: &[],
        multiple: false,
    },
    FieldDef::new("Path", FieldKind::ShortText, Storage::System),
    FieldDef::new("Type", FieldKind::ShortText, Storage::System),
    FieldDef::new("Name", FieldKind::ShortText, Storage::Column),
    FieldDef::new("DisplayName", FieldKind::ShortText, Storage::Column),
    FieldDef::new("Description", FieldKind::LongText, Storage::Column),
    FieldDef::new("Index", FieldKind::Integer, Storage::Column),
    FieldDef::new("CreationDate", FieldKind::DateTime, Storage::System),
    FieldDef::new("ModificationDate", FieldKind::DateTime, Storage::System),
    FieldDef::new("CreatedBy", FieldKind::Reference, Storage::System),
    FieldDef::new("ModifiedBy", FieldKind::Reference, Storage::System),
    FieldDef::new("Timestamp", FieldKind::Integer, Storage::System),
];

const ARTICLE_FIELDS: &[FieldDef] = &[
    FieldDef::typed("Subtitle", FieldKind::ShortText),
    FieldDef::typed("Body", FieldKind::LongText),
    FieldDef::typed("Author", FieldKind::ShortText),
    FieldDef::typed("PublishDate", FieldKind::DateTime),
    FieldDef::typed("Rating", FieldKind::Number),
    FieldDef::typed("ReadCount", FieldKind::Integer),
    FieldDef::typed("Pinned", FieldKind::Boolean),
    FieldDef {
        name: "Category",
        kind: FieldKind::Choice,
        storage: Storage::Typed,
        choices: &["News", "Blog", "Tutorial", "Reference"],
        multiple: false,
    },
    FieldDef {
        name: "Related",
        kind: FieldKind::Reference,
        storage: Storage::Typed,
        choices: &[],
        multiple: true,
    },
];

const FILE_FIELDS: &[FieldDef] = &[
    FieldDef::new("Binary", FieldKind::Binary, Storage::Binary),
    FieldDef::typed("MimeType", FieldKind::ShortText),
    FieldDef::typed("Size", FieldKind::Integer),
];

const USER_FIELDS: &[FieldDef] = &[
    FieldDef::typed("LoginName", FieldKind::ShortText),
    FieldDef::typed("Email", FieldKind::ShortText),
    FieldDef::typed("FullName", FieldKind::ShortText),
    FieldDef::typed("Enabled", FieldKind::Boolean),
    FieldDef::new("PasswordHash", FieldKind::ShortText, Storage::Hidden),
];

const GROUP_FIELDS: &[FieldDef] = &[FieldDef {
    name: "Members",
    kind: FieldKind::Reference,
    storage: Storage::Typed,
    choices: &[],
    multiple: true,
}];

/// (name, parent, own fields), parents before children.
const BUILT_IN: &[(&str, Option<&str>, &[FieldDef])] = &[
    ("GenericContent", None, GENERIC_FIELDS),
    ("Folder", Some("GenericContent"), &[]),
    ("SystemFolder", Some("Folder"), &[]),
    ("Article", Some("GenericContent"), ARTICLE_FIELDS),
    ("File", Some("GenericContent"), FILE_FIELDS),
    ("User", Some("GenericContent"), USER_FIELDS),
    ("Group", Some("GenericContent"), GROUP_FIELDS),
];

impl ContentTypes {
    /// The built-in types.
    pub fn built_in() -> Self {
        let mut types: Vec<ContentType> = Vec::new();
        let mut by_lower_name: HashMap<String, usize> = HashMap::new();
        for (name, parent, own) in BUILT_IN {
            let (mut lineage, mut fields) = match parent {
                Some(p) => {
                    let parent: &ContentType = &types[by_lower_name[&p.to_lowercase()]];
                    (parent.lineage.clone(), parent.fields.clone())
                }
                None => (Vec::new(), Vec::new()),
            };
            lineage.insert(0, *name);
            fields.extend(own.iter().cloned());
            by_lower_name.insert(name.to_lowercase(), types.len());
            types.push(ContentType {
                name,
                parent: *parent,
                lineage,
                fields,
            });
        }
        ContentTypes {
            types,
            by_lower_name,
        }
    }

    /// The type named `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Result<&ContentType> {
        self.by_lower_name
            .get(&name.to_lowercase())
            .map(|&i| &self.types[i])
            .ok_or_else(|| StoreError::UnknownType(name.to_string()))
    }

    /// Every type, parents before children.
    pub fn all(&self) -> &[ContentType] {
        &self.types
    }

    /// Every distinct field over all types (a field name has one kind in every type).
    pub fn all_fields(&self) -> Vec<&FieldDef> {
        let mut seen = std::collections::HashSet::new();
        self.types
            .iter()
            .flat_map(|t| t.fields.iter())
            .filter(|f| seen.insert(f.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_and_inheritance() {
        let types = ContentTypes::built_in();
        let sf = types.get("systemfolder").unwrap();
        assert_eq!(sf.lineage, vec!["SystemFolder", "Folder", "GenericContent"]);
        assert!(sf.field("DisplayName").is_some());
        assert!(sf.is("Folder") && !sf.is("Article"));
        let article = types.get("Article").unwrap();
        assert_eq!(article.field("Body").unwrap().kind, FieldKind::LongText);
        assert!(types.get("Nope").is_err());
        // The column fields are exactly those kept in columns of `nodes`.
        for f in types.all_fields() {
            let in_column = matches!(f.storage, Storage::Column | Storage::System);
            assert_eq!(
                crate::node::COLUMN_FIELDS.contains(&f.name),
                in_column,
                "{}",
                f.name
            );
        }
        // One kind per field name across types.
        let mut kinds = HashMap::new();
        for t in types.all() {
            for f in &t.fields {
                assert_eq!(*kinds.entry(f.name).or_insert(f.kind), f.kind, "{}", f.name);
            }
        }
    }
}
