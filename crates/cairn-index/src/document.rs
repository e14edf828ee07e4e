//! Building the index document of a content item.

use cairn_store::content::path_key;
use cairn_store::{ContentTypes, FieldValue, Node};
use tantivy::{DateTime, TantivyDocument};

use crate::schema::{IndexSchema, IndexedAs};

/// Who wrote a document: the activity and its fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrittenBy {
    /// The activity id.
    pub activity: i64,
    /// Its fingerprint.
    pub fingerprint: i64,
}

/// Every ancestor path of `path`, itself included, lower-cased: `/root`, `/root/a`, ...
pub fn ancestors(path: &str) -> Vec<String> {
    let key = path_key(path);
    let mut out = Vec::new();
    for (i, c) in key.char_indices() {
        if c == '/' && i > 0 {
            out.push(key[..i].to_string());
        }
    }
    out.push(key);
    out
}

/// The document of `node`.
pub fn build(
    schema: &IndexSchema,
    types: &ContentTypes,
    node: &Node,
    by: WrittenBy,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    let mut all_text = String::new();
    if let Ok(t) = types.get(&node.type_name) {
        for def in &t.fields {
            let Some((field, as_)) = schema.field(def.name) else {
                continue;
            };
            let Some(value) = node.value(def.name) else {
                continue;
            };
            match (as_, value) {
                (IndexedAs::Keyword | IndexedAs::Text, FieldValue::Text(s)) if !s.is_empty() => {
                    // `_Text` gathers the short texts; a search of `_Text` also covers the
                    // long-text fields, which are tokenized once, in their own fields.
                    if as_ == IndexedAs::Keyword && def.name != "Path" && def.name != "Type" {
                        all_text.push_str(&s);
                        all_text.push('\n');
                    }
                    doc.add_text(field, &s);
                }
                (IndexedAs::Keyword, FieldValue::Choice(options)) => {
                    for o in options {
                        doc.add_text(field, &o);
                    }
                }
                (IndexedAs::I64, FieldValue::Integer(i)) => doc.add_i64(field, i),
                (IndexedAs::I64, FieldValue::Reference(ids)) => {
                    for id in ids {
                        doc.add_i64(field, id.0);
                    }
                }
                (IndexedAs::F64, FieldValue::Number(f)) => doc.add_f64(field, f),
                (IndexedAs::Bool, FieldValue::Boolean(b)) => doc.add_bool(field, b),
                (IndexedAs::Date, FieldValue::DateTime(d)) => doc.add_date(
                    field,
                    DateTime::from_timestamp_micros((d.unix_timestamp_nanos() / 1000) as i64),
                ),
                _ => {}
            }
        }
        for ancestor in t.lineage.iter() {
            doc.add_text(schema.type_is, ancestor);
        }
    }
    for a in ancestors(&node.path) {
        doc.add_text(schema.in_tree, &a);
    }
    if let Some(parent) = cairn_store::content::parent_path(&node.path) {
        doc.add_text(schema.in_folder, parent);
    }
    if !all_text.is_empty() {
        doc.add_text(schema.text, &all_text);
    }
    doc.add_i64(schema.activity_id, by.activity);
    doc.add_i64(schema.fingerprint, by.fingerprint);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_include_self() {
        assert_eq!(
            ancestors("/Root/A/b"),
            vec!["/root", "/root/a", "/root/a/b"]
        );
        assert_eq!(ancestors("/Root"), vec!["/root"]);
    }
}
