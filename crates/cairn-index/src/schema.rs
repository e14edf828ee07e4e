//! The Tantivy schema derived from the content types: one document per content item.
//!
//! Every field is indexed by its type: LongText analyzed, ShortText and Choice as one
//! lower-cased keyword (also a fast field, for sorting), numbers, booleans and dates as
//! indexed fast fields. Each document also carries `InTree` (every ancestor path, itself
//! included), `InFolder` (the parent path), `TypeIs` (the type and its ancestors), `_Text`
//! (all text, for queries without a field name), and the bookkeeping that lets any document
//! be checked against the database: `Timestamp`, `_ActivityId` and `_Fingerprint`.
//! `InTree`, `InFolder` and `TypeIs` only filter: indexed, no column. Dates are columns only
//! (every date query is a range, read from the column). Nothing is stored: what a search
//! returns is read from columns (`Id`, and `Path` lower-cased where a path is wanted).

use std::collections::HashMap;

use cairn_store::{ContentTypes, FieldKind};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema,
    TextFieldIndexing, TextOptions, FAST, INDEXED,
};
use tantivy::tokenizer::{
    LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::Index;

/// Tokenizer of keyword fields: the whole value, lower-cased.
pub const KEYWORD_TOKENIZER: &str = "cairn_keyword";
/// Tokenizer of analyzed text: words, lower-cased.
pub const TEXT_TOKENIZER: &str = "cairn_text";

/// Names of the fields every document has besides the content fields.
pub mod names {
    /// Every ancestor path, the item's own path included (lower-cased).
    pub const IN_TREE: &str = "InTree";
    /// The parent's path (lower-cased).
    pub const IN_FOLDER: &str = "InFolder";
    /// The type and its ancestors (lower-cased).
    pub const TYPE_IS: &str = "TypeIs";
    /// All text of the item, analyzed.
    pub const TEXT: &str = "_Text";
    /// The activity that wrote the document.
    pub const ACTIVITY_ID: &str = "_ActivityId";
    /// The fingerprint of that activity.
    pub const FINGERPRINT: &str = "_Fingerprint";
}

/// How a field is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexedAs {
    /// One lower-cased term (ShortText, Choice, paths, types).
    Keyword,
    /// Analyzed words (LongText).
    Text,
    /// i64 (Integer, Reference, ids).
    I64,
    /// f64 (Number).
    F64,
    /// bool (Boolean).
    Bool,
    /// Date (DateTime).
    Date,
}

impl IndexedAs {
    /// How a field of `kind` is indexed.
    pub fn of(kind: FieldKind) -> IndexedAs {
        match kind {
            FieldKind::ShortText | FieldKind::Choice => IndexedAs::Keyword,
            FieldKind::LongText => IndexedAs::Text,
            FieldKind::Integer | FieldKind::Reference => IndexedAs::I64,
            FieldKind::Number => IndexedAs::F64,
            FieldKind::Boolean => IndexedAs::Bool,
            FieldKind::DateTime => IndexedAs::Date,
            // Never asked of the schema (binaries have no field of their own, see
            // `FieldDef::is_indexed`); their text is indexed as the item's text.
            FieldKind::Binary => IndexedAs::Text,
        }
    }
    /// True when the field can sort results.
    pub fn is_sortable(self) -> bool {
        self != IndexedAs::Text
    }
}

/// The schema and the handles of its fields.
#[derive(Clone, Debug)]
pub struct IndexSchema {
    /// The Tantivy schema.
    pub schema: Schema,
    fields: HashMap<String, (Field, IndexedAs)>,
    /// `Id`.
    pub id: Field,
    /// `Path` (keyword).
    pub path: Field,
    /// `Timestamp`.
    pub timestamp: Field,
    /// `InTree`.
    pub in_tree: Field,
    /// `InFolder`.
    pub in_folder: Field,
    /// `TypeIs`.
    pub type_is: Field,
    /// `_Text`.
    pub text: Field,
    /// `_ActivityId`.
    pub activity_id: Field,
    /// `_Fingerprint`.
    pub fingerprint: Field,
    /// The columns every query reads (dates, `Id`), opened once per segment (see
    /// [`crate::columns`]); clones of this schema share them.
    pub columns: crate::columns::OpenColumns,
}

/// A keyword field of a content type: indexed, and a fast field so that it can sort.
fn keyword() -> TextOptions {
    TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KEYWORD_TOKENIZER)
                .set_index_option(IndexRecordOption::Basic),
        )
        .set_fast(KEYWORD_TOKENIZER)
}

/// A keyword that only filters (`InTree`, `InFolder`, `TypeIs`): indexed, not a fast
/// field. Nothing sorts by them, and their columns (every ancestor path of every item)
/// were the dearest part of a document to index.
fn filter_keyword() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(KEYWORD_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic)
            // How many ancestors or types an item has says nothing of its relevance.
            .set_fieldnorms(false),
    )
}

fn text() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

fn numeric() -> NumericOptions {
    NumericOptions::default() | INDEXED | FAST
}

impl IndexSchema {
    /// The schema for `types`.
    pub fn new(types: &ContentTypes) -> IndexSchema {
        let mut b = Schema::builder();
        let mut fields = HashMap::new();
        for def in types.all_fields().into_iter().filter(|d| d.is_indexed()) {
            let as_ = if def.name == "Id" {
                IndexedAs::I64
            } else {
                IndexedAs::of(def.kind)
            };
            let f = match as_ {
                IndexedAs::Keyword => b.add_text_field(def.name, keyword()),
                IndexedAs::Text => b.add_text_field(def.name, text()),
                IndexedAs::I64 => b.add_i64_field(def.name, numeric()),
                IndexedAs::F64 => b.add_f64_field(def.name, numeric()),
                IndexedAs::Bool => b.add_bool_field(def.name, numeric()),
                // A column only: every query of a date is a range (a day, or one instant
                // as [t, t]), which Tantivy answers from the column whether or not the
                // field is indexed; terms of microsecond instants were one per item.
                IndexedAs::Date => b.add_date_field(
                    def.name,
                    (DateOptions::default() | FAST).set_precision(DateTimePrecision::Microseconds),
                ),
            };
            fields.insert(def.name.to_string(), (f, as_));
        }
        let mut extra = |name: &str, f: Field, as_| {
            fields.insert(name.to_string(), (f, as_));
            f
        };
        let in_tree = extra(
            names::IN_TREE,
            b.add_text_field(names::IN_TREE, filter_keyword()),
            IndexedAs::Keyword,
        );
        let in_folder = extra(
            names::IN_FOLDER,
            b.add_text_field(names::IN_FOLDER, filter_keyword()),
            IndexedAs::Keyword,
        );
        let type_is = extra(
            names::TYPE_IS,
            b.add_text_field(names::TYPE_IS, filter_keyword()),
            IndexedAs::Keyword,
        );
        let text_f = extra(
            names::TEXT,
            b.add_text_field(names::TEXT, text()),
            IndexedAs::Text,
        );
        // Bookkeeping, read as columns only (integrity check, repair): not indexed.
        let activity_id = extra(
            names::ACTIVITY_ID,
            b.add_i64_field(names::ACTIVITY_ID, NumericOptions::default() | FAST),
            IndexedAs::I64,
        );
        let fingerprint = extra(
            names::FINGERPRINT,
            b.add_i64_field(names::FINGERPRINT, NumericOptions::default() | FAST),
            IndexedAs::I64,
        );
        let schema = b.build();
        let get = |n: &str| fields[n].0;
        IndexSchema {
            id: get("Id"),
            path: get("Path"),
            timestamp: get("Timestamp"),
            in_tree,
            in_folder,
            type_is,
            text: text_f,
            activity_id,
            fingerprint,
            schema,
            fields,
            columns: crate::columns::OpenColumns::default(),
        }
    }

    /// The analyzed long-text fields that a search of `_Text` also covers (`_Text` itself
    /// holds only the short texts, so long texts are tokenized once).
    pub fn long_text_fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .fields
            .iter()
            .filter(|(name, (_, as_))| *as_ == IndexedAs::Text && name.as_str() != names::TEXT)
            .map(|(name, _)| name.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// True when results can be sorted by `field`: a field with a column of values (not
    /// full text, and not one of the filters `InTree`, `InFolder`, `TypeIs`).
    pub fn can_sort(&self, field: Field, as_: IndexedAs) -> bool {
        as_.is_sortable() && self.schema.get_field_entry(field).is_fast()
    }

    /// The field named `name` (case-sensitive) and how it is indexed.
    pub fn field(&self, name: &str) -> Option<(Field, IndexedAs)> {
        self.fields.get(name).copied()
    }

    /// Registers Cairn's tokenizers on an opened or created index.
    pub fn register_tokenizers(index: &Index) {
        let keyword = || {
            TextAnalyzer::builder(RawTokenizer::default())
                .filter(LowerCaser)
                .build()
        };
        index.tokenizers().register(KEYWORD_TOKENIZER, keyword());
        index
            .fast_field_tokenizer()
            .register(KEYWORD_TOKENIZER, keyword());
        index.tokenizers().register(
            TEXT_TOKENIZER,
            TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .build(),
        );
    }
}
