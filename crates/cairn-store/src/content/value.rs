//! Typed field values and their JSON form, checked against the field's definition.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::types::{FieldDef, FieldKind};
use crate::error::{Result, StoreError};
use crate::ids::NodeId;

/// The most characters a ShortText value may hold.
pub const MAX_SHORT_TEXT: usize = 450;
/// The most bytes a LongText value may hold.
pub const MAX_LONG_TEXT: usize = 4 << 20;

/// A checked value of one field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// ShortText or LongText.
    Text(String),
    /// Integer.
    Integer(i64),
    /// Number (finite).
    Number(f64),
    /// Boolean.
    Boolean(bool),
    /// DateTime, in UTC.
    DateTime(OffsetDateTime),
    /// Reference: ids of other items.
    Reference(Vec<NodeId>),
    /// Choice: canonical spellings of the chosen options.
    Choice(Vec<String>),
    /// Binary: a file's bytes, by their blob.
    Binary(BinaryValue),
}

/// A binary field's value: the blob that holds the bytes and what is known of them. Stored
/// as one JSON object in `nodes.fields`; the bytes themselves are in the blob store
/// ([`crate::files`]), written and synced before the row that names them commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryValue {
    /// The SHA-256 of the bytes, 64 lower-case hex digits: the blob's name.
    pub hash: String,
    /// The number of bytes.
    pub size: i64,
    /// The media type (`application/pdf`).
    pub content_type: String,
    /// The file name it was uploaded with.
    pub file_name: String,
    /// The text extracted for the index (empty when the type has none, or extraction
    /// failed or was cut off: `extract_note` says why).
    pub text: String,
    /// Why the text is missing or partial, if it is.
    pub extract_note: Option<String>,
}

impl BinaryValue {
    /// The stored JSON object.
    pub fn to_stored_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("Hash".into(), self.hash.clone().into());
        o.insert("Size".into(), self.size.into());
        o.insert("ContentType".into(), self.content_type.clone().into());
        o.insert("FileName".into(), self.file_name.clone().into());
        if !self.text.is_empty() {
            o.insert("Text".into(), self.text.clone().into());
        }
        if let Some(n) = &self.extract_note {
            o.insert("ExtractNote".into(), n.clone().into());
        }
        Value::Object(o)
    }

    /// The value stored as `v`, checked.
    pub fn from_stored_json(v: &Value) -> Option<BinaryValue> {
        let o = v.as_object()?;
        let hash = o.get("Hash")?.as_str()?;
        if !crate::files::is_blob_hash(hash) {
            return None;
        }
        let text = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        Some(BinaryValue {
            hash: hash.to_string(),
            size: o.get("Size")?.as_i64().filter(|n| *n >= 0)?,
            content_type: text("ContentType").unwrap_or_default(),
            file_name: text("FileName").unwrap_or_default(),
            text: text("Text").unwrap_or_default(),
            extract_note: text("ExtractNote"),
        })
    }
}

fn invalid(def: &FieldDef, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidValue {
        field: def.name.to_string(),
        reason: reason.into(),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a date as sensenet clients send it: RFC 3339, or without an offset (taken as UTC),
/// or a bare date (midnight UTC).
pub fn parse_date(s: &str) -> Option<OffsetDateTime> {
    if let Ok(d) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(d.to_offset(UtcOffset::UTC));
    }
    let no_offset = format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    if let Ok(d) = PrimitiveDateTime::parse(s, no_offset) {
        return Some(d.assume_utc());
    }
    let date_only = format_description!("[year]-[month]-[day]");
    time::Date::parse(s, date_only)
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// Formats a date as RFC 3339 in UTC (`2024-03-05T10:20:30Z`).
pub fn format_date(d: OffsetDateTime) -> String {
    d.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| d.unix_timestamp().to_string())
}

fn as_i64(def: &FieldDef, v: &Value) -> Result<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| invalid(def, format!("expected an integer, got {n}"))),
        other => Err(invalid(
            def,
            format!("expected an integer, got {}", kind_of(other)),
        )),
    }
}

fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    }
}

impl FieldValue {
    /// Checks a JSON value against `def`. `Ok(None)` means null: the field is cleared.
    pub fn from_json(def: &FieldDef, v: &Value) -> Result<Option<FieldValue>> {
        if v.is_null() {
            return Ok(None);
        }
        let value = match def.kind {
            FieldKind::ShortText | FieldKind::LongText => {
                let Value::String(s) = v else {
                    return Err(invalid(
                        def,
                        format!("expected a string, got {}", kind_of(v)),
                    ));
                };
                if def.kind == FieldKind::ShortText && s.chars().count() > MAX_SHORT_TEXT {
                    return Err(invalid(def, "longer than 450 characters"));
                }
                if s.len() > MAX_LONG_TEXT {
                    return Err(invalid(def, "longer than 4 MiB"));
                }
                FieldValue::Text(s.clone())
            }
            FieldKind::Integer => FieldValue::Integer(as_i64(def, v)?),
            FieldKind::Number => match v.as_f64() {
                Some(f) if f.is_finite() => FieldValue::Number(f),
                _ => {
                    return Err(invalid(
                        def,
                        format!("expected a number, got {}", kind_of(v)),
                    ))
                }
            },
            FieldKind::Boolean => match v {
                Value::Bool(b) => FieldValue::Boolean(*b),
                _ => {
                    return Err(invalid(
                        def,
                        format!("expected true or false, got {}", kind_of(v)),
                    ))
                }
            },
            FieldKind::DateTime => match v.as_str().and_then(parse_date) {
                Some(d) => FieldValue::DateTime(d),
                None => return Err(invalid(def, "expected a date like 2024-03-05T10:20:30Z")),
            },
            FieldKind::Reference => {
                let items = list(v);
                if !def.multiple && items.len() > 1 {
                    return Err(invalid(def, "takes one reference"));
                }
                let mut ids = Vec::with_capacity(items.len());
                for item in items {
                    // An expanded reference (`$expand`), sent back as it was loaded, counts
                    // by its `Id`.
                    let item = match item {
                        Value::Object(o) => o.get("Id").ok_or_else(|| {
                            invalid(def, "a referenced item is given by its id, or with its Id")
                        })?,
                        other => other,
                    };
                    let id = as_i64(def, item)?;
                    if id <= 0 {
                        return Err(invalid(def, format!("{id} is not a content id")));
                    }
                    ids.push(NodeId(id));
                }
                FieldValue::Reference(ids)
            }
            FieldKind::Choice => {
                let items = list(v);
                if !def.multiple && items.len() > 1 {
                    return Err(invalid(def, "takes one option"));
                }
                let mut chosen = Vec::with_capacity(items.len());
                for item in items {
                    let s = item.as_str().ok_or_else(|| {
                        invalid(def, format!("expected an option, got {}", kind_of(item)))
                    })?;
                    let canonical = def
                        .choices
                        .iter()
                        .find(|c| c.eq_ignore_ascii_case(s))
                        .ok_or_else(|| {
                            invalid(
                                def,
                                format!("{s:?} is not one of {}", def.choices.join(", ")),
                            )
                        })?;
                    chosen.push(canonical.to_string());
                }
                FieldValue::Choice(chosen)
            }
            // Only the stored form: clients cannot write a binary field (it is read-only;
            // an upload writes it).
            FieldKind::Binary => match BinaryValue::from_stored_json(v) {
                Some(b) => FieldValue::Binary(b),
                None => return Err(invalid(def, "not a stored binary value")),
            },
        };
        Ok(Some(value))
    }

    /// The JSON form, as stored in `nodes.fields` and returned by the API (a binary is
    /// shown otherwise: [`crate::Node::to_json`]).
    pub fn to_json(&self, def: &FieldDef) -> Value {
        match self {
            FieldValue::Text(s) => Value::String(s.clone()),
            FieldValue::Integer(i) => Value::from(*i),
            FieldValue::Number(f) => Value::from(*f),
            FieldValue::Boolean(b) => Value::Bool(*b),
            FieldValue::DateTime(d) => Value::String(format_date(*d)),
            // A single reference is its id, or null when it names nothing (Root's parent).
            FieldValue::Reference(ids) if !def.multiple => {
                ids.first().map_or(Value::Null, |id| Value::from(id.0))
            }
            FieldValue::Reference(ids) => ids.iter().map(|i| Value::from(i.0)).collect(),
            FieldValue::Choice(c) => c.iter().map(|s| Value::String(s.clone())).collect(),
            FieldValue::Binary(b) => b.to_stored_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ContentTypes;
    use serde_json::json;

    #[test]
    fn checks_values_by_kind() {
        let types = ContentTypes::built_in();
        let a = types.get("Article").unwrap();
        let f = |n| a.field(n).unwrap();
        assert_eq!(
            FieldValue::from_json(f("ReadCount"), &json!(3)).unwrap(),
            Some(FieldValue::Integer(3))
        );
        assert!(FieldValue::from_json(f("ReadCount"), &json!("3")).is_err());
        assert!(FieldValue::from_json(f("ReadCount"), &json!(3.5)).is_err());
        assert!(FieldValue::from_json(f("Rating"), &json!("x")).is_err());
        assert!(FieldValue::from_json(f("Pinned"), &json!(1)).is_err());
        assert!(FieldValue::from_json(f("PublishDate"), &json!("yesterday")).is_err());
        let d = FieldValue::from_json(f("PublishDate"), &json!("2024-03-05T10:20:30+02:00"))
            .unwrap()
            .unwrap();
        assert_eq!(d.to_json(f("PublishDate")), json!("2024-03-05T08:20:30Z"));
        assert_eq!(
            FieldValue::from_json(f("Category"), &json!("news")).unwrap(),
            Some(FieldValue::Choice(vec!["News".into()]))
        );
        assert!(FieldValue::from_json(f("Category"), &json!("Gossip")).is_err());
        assert!(FieldValue::from_json(f("Related"), &json!([1, -2])).is_err());
        assert_eq!(
            FieldValue::from_json(f("Body"), &json!(null)).unwrap(),
            None
        );
        assert!(FieldValue::from_json(f("Subtitle"), &json!("x".repeat(451))).is_err());
    }

    #[test]
    fn dates_without_offset_are_utc() {
        let d = parse_date("2024-03-05T10:20:30").unwrap();
        assert_eq!(format_date(d), "2024-03-05T10:20:30Z");
        assert_eq!(
            format_date(parse_date("2024-03-05").unwrap()),
            "2024-03-05T00:00:00Z"
        );
    }
}
