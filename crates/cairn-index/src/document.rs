//! Building the index document of a content item.

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

/// The latest instant the index can hold, in microseconds since 1970: Tantivy keeps a date
/// as i64 nanoseconds, which end in April 2262.
pub const MAX_DATE_MICROS: i64 = i64::MAX / 1000;
/// The earliest instant the index can hold (September 1677).
pub const MIN_DATE_MICROS: i64 = i64::MIN / 1000;

/// Paths as the index keys them (lower-cased), and date text as Cairn reads and writes it (ISO 8601 / RFC 3339, a bare date, sensenet's
/// forms): the store's, so that a query reads a date exactly as an item's field does.
pub use cairn_store::content::{format_date, parse_date, path_key};

/// The value a Number is indexed and searched as: negative zero as zero (the two are
/// equal, but Tantivy's terms tell them apart, so `Rating:-0.0` missed `Rating:0`).
pub fn index_f64(n: f64) -> f64 {
    if n == 0.0 {
        0.0
    } else {
        n
    }
}

/// The index's date for `micros` since 1970. Instants outside what the index can hold
/// (such as the common "never" value 9999-12-31) are clamped to its first or last instant,
/// so they keep their order against every date in range; queries clamp their bounds alike.
pub fn index_date(micros: i64) -> DateTime {
    DateTime::from_timestamp_micros(micros.clamp(MIN_DATE_MICROS, MAX_DATE_MICROS))
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
            // A file's extracted text is the item's text: `query=apple` finds a document
            // that contains it.
            if let Some(FieldValue::Binary(b)) = node.fields.get(def.name) {
                if !b.text.is_empty() {
                    all_text.push_str(&b.text);
                    all_text.push('\n');
                }
                continue;
            }
            let Some((field, as_)) = schema.field(def.name) else {
                continue;
            };
            let Some(value) = node.value(def.name) else {
                // A Boolean without a value is "no", as sensenet indexes it: `Pinned:false`
                // finds an item that never set `Pinned`.
                if as_ == IndexedAs::Bool {
                    doc.add_bool(field, false);
                }
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
                (IndexedAs::F64, FieldValue::Number(f)) => doc.add_f64(field, index_f64(f)),
                (IndexedAs::Bool, FieldValue::Boolean(b)) => doc.add_bool(field, b),
                (IndexedAs::Date, FieldValue::DateTime(d)) => {
                    let micros = d.unix_timestamp_nanos() / 1000;
                    let micros = micros.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
                    doc.add_date(field, index_date(micros))
                }
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
    fn dates_beyond_the_index_range_are_clamped_in_order() {
        let micros = |d: DateTime| d.into_timestamp_nanos() / 1000;
        let y9999 = 253_402_214_400_000_000; // 9999-12-31
        assert_eq!(micros(index_date(y9999)), MAX_DATE_MICROS);
        assert_eq!(micros(index_date(-y9999)), MIN_DATE_MICROS);
        let y2100 = 4_102_444_800_000_000;
        assert_eq!(micros(index_date(y2100)), y2100);
        assert!(index_date(y2100) < index_date(y9999));
        assert!(index_date(-y2100) > index_date(-y9999));
    }

    #[test]
    fn ancestors_include_self() {
        assert_eq!(
            ancestors("/Root/A/b"),
            vec!["/root", "/root/a", "/root/a/b"]
        );
        assert_eq!(ancestors("/Root"), vec!["/root"]);
    }
}
