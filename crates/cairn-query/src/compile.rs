//! From the syntax tree to a Tantivy query, by the index schema.
//!
//! Values are read by the type of the field they are compared with:
//!
//! | field | `Field:value` | wildcards | ranges |
//! |---|---|---|---|
//! | Keyword (ShortText, Choice, `Path`, `Type`, `InTree`, `InFolder`, `TypeIs`) | one lower-cased term | regular expression over the terms (`ab*` is a prefix) | over lower-cased terms |
//! | Text (LongText, `_Text`) | analyzed: one word is a term, several a phrase | inside one word, or a trailing `*` of a phrase | over words |
//! | I64, F64 | a number | not allowed | numeric |
//! | Bool | `true false yes no 1 0` | not allowed | false < true |
//! | Date | RFC 3339, without offset (UTC), or a bare date: that whole day | not allowed | a bare date bound covers its day; a day template (`@@Today@@`) is its start |
//!
//! `Field:*` matches items that have a value in the field. Paths given to `InTree`,
//! `InFolder` and `Path` lose a trailing `/`. Unquoted templates `@@CurrentUser@@`,
//! `@@CurrentDate@@`, `@@Today@@`, `@@Yesterday@@`, `@@Tomorrow@@`, `@@CurrentTime@@` are
//! replaced from the [`QueryContext`]. A boolean list without a positive clause (`NOT a`
//! alone) matches every item but the excluded ones.
//!
//! The analyzers are the ones `cairn-index` registers on its indexes, so a value is cut
//! and lower-cased exactly as indexed text is.

use std::ops::{Bound, RangeBounds};
use std::sync::OnceLock;

use cairn_index::date_range::DateRangeQuery;
use cairn_index::document::{index_date, index_f64, MAX_DATE_MICROS, MIN_DATE_MICROS};
use cairn_index::{names, IndexSchema, IndexedAs, SortField, KEYWORD_TOKENIZER, TEXT_TOKENIZER};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EmptyQuery, ExistsQuery, FuzzyTermQuery, Occur as TOccur,
    PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Schema};
use tantivy::tokenizer::{TextAnalyzer, TokenizerManager};
use tantivy::{Index, Term};
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::ast::{FieldName, Occur, Part, Predicate, Value};
use crate::safe::SafeSeek;
use crate::QueryError;

/// The longest wildcard pattern (in characters) that is turned into an automaton.
pub const MAX_PATTERN_CHARS: usize = 128;

const DAY_MICROS: i64 = 86_400_000_000;

/// Runs the inner query of `Field:{{query}}`: gets the compiled query, answers the ids of
/// the items it finds, or a message saying why it could not.
pub type NestedResolver<'a> = dyn FnMut(&dyn Query) -> Result<Vec<i64>, String> + 'a;

/// What a query may depend on besides its text.
#[derive(Default)]
pub struct QueryContext<'a> {
    /// The id of the user running the query, for `@@CurrentUser@@`.
    pub current_user: Option<i64>,
    /// The current time for date templates; the system clock when `None`.
    pub now: Option<OffsetDateTime>,
    /// Runs nested queries `Field:{{...}}`; without it they are refused.
    pub nested: Option<&'a mut NestedResolver<'a>>,
}

/// Compiles `pred` against `schema`.
pub fn compile(
    pred: &Predicate,
    schema: &IndexSchema,
    ctx: &mut QueryContext<'_>,
) -> Result<Box<dyn Query>, QueryError> {
    let (keyword, text) = analyzers()?;
    let now = ctx.now.unwrap_or_else(OffsetDateTime::now_utc);
    let mut c = Compiler {
        schema,
        ctx,
        keyword,
        text,
        now,
    };
    c.compile(pred)
}

/// Checks that `name` can sort results and makes its sort key.
pub fn sort_field(
    schema: &IndexSchema,
    name: &str,
    descending: bool,
    position: usize,
) -> Result<SortField, QueryError> {
    match schema.field(name) {
        None => Err(QueryError::new(
            position,
            format!("unknown field '{name}' in the sort"),
        )),
        Some((_, as_)) if !as_.is_sortable() => Err(QueryError::new(
            position,
            format!("field '{name}' is full text (LongText) and cannot sort"),
        )),
        Some((f, as_)) if !schema.can_sort(f, as_) => Err(QueryError::new(
            position,
            format!("field '{name}' only filters (InTree, InFolder, TypeIs) and cannot sort"),
        )),
        Some(_) => Ok(SortField {
            field: name.to_string(),
            descending,
        }),
    }
}

/// The tokenizers cairn-index registers, taken from an index it set up.
fn analyzers() -> Result<(TextAnalyzer, TextAnalyzer), QueryError> {
    static MANAGER: OnceLock<TokenizerManager> = OnceLock::new();
    let manager = MANAGER.get_or_init(|| {
        let index = Index::create_in_ram(Schema::builder().build());
        IndexSchema::register_tokenizers(&index);
        index.tokenizers().clone()
    });
    match (manager.get(KEYWORD_TOKENIZER), manager.get(TEXT_TOKENIZER)) {
        (Some(k), Some(t)) => Ok((k, t)),
        _ => Err(QueryError::new(0, "the index tokenizers are not available")),
    }
}

fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let t = stream.token();
        out.push((t.position, t.text.clone()));
    }
    out
}

fn escape_regex(out: &mut String, text: &str) {
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.'
                | '+'
                | '*'
                | '?'
                | '('
                | ')'
                | '|'
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
                | '$'
                | '#'
                | '&'
                | '-'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A date value: an instant, or a whole day (a bare date).
#[derive(Clone, Copy, Debug)]
enum DateValue {
    Instant(i64),
    Day(i64),
}

fn micros(d: OffsetDateTime) -> Option<i64> {
    i64::try_from(d.unix_timestamp_nanos() / 1000).ok()
}

/// A JavaScript `Date` as its `toString()` writes it (`Tue Jan 09 2024 10:00:00 GMT+0100
/// (Central European Standard Time)`): what the `@sensenet/query` builder puts in a query
/// when given a `Date`. The zone's name in parentheses is only a label.
fn parse_js_date(text: &str) -> Option<OffsetDateTime> {
    let js = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day] [year] [hour]:[minute]:[second] \
         GMT[offset_hour sign:mandatory][offset_minute]"
    );
    let t = match text.find(" (") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    };
    OffsetDateTime::parse(t, js).ok()
}

fn parse_date_value(text: &str) -> Option<DateValue> {
    let t = text.trim();
    let d = cairn_index::document::parse_date(t)
        .or_else(|| cairn_index::document::parse_date(&t.replacen(' ', "T", 1)))
        .or_else(|| parse_js_date(t))?;
    let m = micros(d)?;
    Some(if t.contains(':') {
        DateValue::Instant(m)
    } else {
        DateValue::Day(m)
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn date_term(f: Field, m: i64) -> Term {
    Term::from_field_date(f, index_date(m))
}

/// A date bound at `m` microseconds. Instants the index cannot hold are clamped to its first
/// or last one, which then stands for everything beyond: such a bound takes that instant in.
fn date_bound(f: Field, m: i64, inclusive: bool) -> Bound<Term> {
    let beyond = !(MIN_DATE_MICROS..=MAX_DATE_MICROS).contains(&m);
    if inclusive || beyond {
        Bound::Included(date_term(f, m))
    } else {
        Bound::Excluded(date_term(f, m))
    }
}

fn kind_name(as_: IndexedAs) -> &'static str {
    match as_ {
        IndexedAs::Keyword => "text",
        IndexedAs::Text => "full-text",
        IndexedAs::I64 => "integer",
        IndexedAs::F64 => "number",
        IndexedAs::Bool => "boolean",
        IndexedAs::Date => "date",
    }
}

struct Compiler<'s, 'c, 'a> {
    schema: &'s IndexSchema,
    ctx: &'c mut QueryContext<'a>,
    keyword: TextAnalyzer,
    text: TextAnalyzer,
    now: OffsetDateTime,
}

type Compiled = Result<Box<dyn Query>, QueryError>;

impl Compiler<'_, '_, '_> {
    fn compile(&mut self, pred: &Predicate) -> Compiled {
        match pred {
            Predicate::Bool(clauses) => {
                let mut subs: Vec<(TOccur, Box<dyn Query>)> = Vec::with_capacity(clauses.len());
                let mut positive = false;
                for c in clauses {
                    let q = self.compile(&c.predicate)?;
                    let occur = match c.occur {
                        Occur::Should => TOccur::Should,
                        Occur::Must => TOccur::Must,
                        Occur::MustNot => TOccur::MustNot,
                    };
                    positive |= occur != TOccur::MustNot;
                    // Tantivy probes excluded scorers with `seek_danger`, which some of its
                    // scorers mishandle (debug assertions, overflows); terms are safe.
                    let q = if occur == TOccur::MustNot && !q.is::<TermQuery>() {
                        SafeSeek::wrap(q)
                    } else {
                        q
                    };
                    subs.push((occur, q));
                }
                if !positive {
                    subs.push((TOccur::Must, Box::new(AllQuery)));
                }
                Ok(Box::new(BooleanQuery::new(subs)))
            }
            Predicate::Match {
                field,
                value,
                tilde,
            } if field.name == names::TEXT => {
                // `_Text` is the short texts' field plus every long-text field.
                let mut subs = vec![(TOccur::Should, self.compile_match(field, value, *tilde)?)];
                for name in self.schema.long_text_fields() {
                    let f = FieldName {
                        name: name.to_string(),
                        ..field.clone()
                    };
                    subs.push((TOccur::Should, self.compile_match(&f, value, *tilde)?));
                }
                Ok(Box::new(BooleanQuery::new(subs)))
            }
            Predicate::Match {
                field,
                value,
                tilde,
            } => self.compile_match(field, value, *tilde),
            Predicate::Range {
                field,
                lower,
                upper,
            } => self.compile_range(field, lower, upper),
            Predicate::Nested { field, query } => {
                let (f, as_) = self.field(field)?;
                if as_ != IndexedAs::I64 {
                    return Err(QueryError::new(
                        field.position,
                        format!(
                            "a nested query {{{{...}}}} needs an id or reference field; '{}' is a {} field",
                            field.name,
                            kind_name(as_)
                        ),
                    ));
                }
                let inner = self.compile(query)?;
                let Some(resolve) = self.ctx.nested.as_mut() else {
                    return Err(QueryError::new(
                        field.position,
                        "nested queries {{...}} are not supported here",
                    ));
                };
                let ids =
                    resolve(inner.as_ref()).map_err(|m| QueryError::new(field.position, m))?;
                if ids.is_empty() {
                    return Ok(Box::new(EmptyQuery));
                }
                Ok(Box::new(TermSetQuery::new(
                    ids.into_iter().map(|id| Term::from_field_i64(f, id)),
                )))
            }
            Predicate::Boost { predicate, boost } => {
                let inner = self.compile(predicate)?;
                Ok(Box::new(BoostQuery::new(inner, *boost)))
            }
        }
    }

    fn field(&self, field: &FieldName) -> Result<(Field, IndexedAs), QueryError> {
        if field.name.starts_with('_') && field.name != names::TEXT {
            return Err(QueryError::new(
                field.position,
                format!("field '{}' cannot be searched", field.name),
            ));
        }
        self.schema.field(&field.name).ok_or_else(|| {
            QueryError::new(field.position, format!("unknown field '{}'", field.name))
        })
    }

    /// The name of an unquoted `@@Template@@`.
    fn template_name(v: &Value) -> Option<String> {
        let text = v.as_literal().filter(|_| !v.quoted)?;
        let name = text.strip_prefix("@@")?.strip_suffix("@@")?;
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// Whether `v` is a template for a day (`@@Today@@`, ...): sensenet defines those as the
    /// start of the day, so as a range bound they are that instant, where a bare date written
    /// out covers its whole day. Compared for equality, both cover the day.
    fn is_day_template(v: &Value) -> bool {
        Self::template_name(v).is_some_and(|n| {
            ["currentdate", "today", "yesterday", "tomorrow"]
                .iter()
                .any(|d| n.eq_ignore_ascii_case(d))
        })
    }

    /// The value with an unquoted `@@Template@@` replaced.
    fn resolve(&self, v: &Value) -> Result<Value, QueryError> {
        let Some(name) = Self::template_name(v) else {
            return Ok(v.clone());
        };
        let name = name.as_str();
        let day = |d: OffsetDateTime| {
            let d = d.to_offset(UtcOffset::UTC).date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        };
        let now = self.now;
        let resolved = match name.to_ascii_lowercase().as_str() {
            "currentuser" | "currentuser.id" => match self.ctx.current_user {
                Some(id) => id.to_string(),
                None => {
                    return Err(QueryError::new(
                        v.position,
                        format!("@@{name}@@ needs a signed-in user"),
                    ))
                }
            },
            "currentdate" | "today" => day(now),
            "yesterday" | "tomorrow" => {
                let shifted = if name.eq_ignore_ascii_case("yesterday") {
                    now.checked_sub(Duration::days(1))
                } else {
                    now.checked_add(Duration::days(1))
                };
                match shifted {
                    Some(d) => day(d),
                    None => return Err(QueryError::new(v.position, "the date is out of range")),
                }
            }
            "currenttime" | "now" => cairn_index::document::format_date(now),
            _ => {
                return Err(QueryError::new(
                    v.position,
                    format!(
                        "unknown template '@@{name}@@' (known: @@CurrentUser@@, @@CurrentDate@@, \
                         @@Today@@, @@Yesterday@@, @@Tomorrow@@, @@CurrentTime@@)"
                    ),
                ))
            }
        };
        Ok(Value::literal(resolved, v.position))
    }

    /// The value's text when it has no wildcards.
    fn literal(v: &Value, field: &FieldName, as_: IndexedAs) -> Result<String, QueryError> {
        v.as_literal().ok_or_else(|| {
            QueryError::new(
                v.position,
                format!(
                    "wildcards cannot be used on {} field '{}'",
                    kind_name(as_),
                    field.name
                ),
            )
        })
    }

    fn lower_keyword(&mut self, text: &str) -> String {
        tokens(&mut self.keyword, text)
            .into_iter()
            .map(|t| t.1)
            .collect()
    }

    /// The keyword term of `text` in `field`: lower-cased, paths without a trailing `/`.
    fn keyword_text(&mut self, field: &FieldName, text: &str) -> String {
        let mut text = text;
        if [names::IN_TREE, names::IN_FOLDER, "Path"].contains(&field.name.as_str()) {
            let trimmed = text.trim_end_matches('/');
            text = if trimmed.is_empty() && !text.is_empty() {
                "/"
            } else {
                trimmed
            };
        }
        self.lower_keyword(text)
    }

    fn exists(&mut self, f: Field, as_: IndexedAs, field: &FieldName) -> Compiled {
        if self.schema.schema.get_field_entry(f).is_fast() {
            return Ok(Box::new(ExistsQuery::new(field.name.clone(), false)));
        }
        match as_ {
            IndexedAs::Keyword | IndexedAs::Text => self.regex("(?s).*", f, field.position),
            _ => Err(QueryError::new(
                field.position,
                format!("field '{}' cannot be tested for a value", field.name),
            )),
        }
    }

    fn regex(&mut self, pattern: &str, f: Field, position: usize) -> Compiled {
        RegexQuery::from_pattern(pattern, f)
            .map(|q| Box::new(q) as Box<dyn Query>)
            .map_err(|_| QueryError::new(position, "the wildcard pattern is too complex"))
    }

    /// A regular expression for wildcard `parts`, literal pieces lower-cased.
    fn pattern(&mut self, parts: &[Part], position: usize) -> Result<String, QueryError> {
        let len: usize = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.chars().count(),
                _ => 1,
            })
            .sum();
        if len > MAX_PATTERN_CHARS {
            return Err(QueryError::new(
                position,
                format!("a wildcard pattern may have at most {MAX_PATTERN_CHARS} characters"),
            ));
        }
        let mut re = String::from("(?s)");
        for p in parts {
            match p {
                Part::Text(t) => {
                    let lower = self.lower_keyword(t);
                    escape_regex(&mut re, &lower);
                }
                Part::AnyChars => re.push_str(".*"),
                Part::OneChar => re.push('.'),
            }
        }
        Ok(re)
    }

    fn fuzzy(&self, term: Term, word: &str, similarity: f64, value: &Value) -> Compiled {
        if !(0.0..=1.0).contains(&similarity) {
            return Err(QueryError::new(
                value.position,
                format!("the similarity after '~' must be between 0 and 1, not {similarity}"),
            ));
        }
        let len = word.chars().count() as f64;
        let edits = ((1.0 - similarity) * len).floor().clamp(0.0, 2.0) as u8;
        Ok(Box::new(FuzzyTermQuery::new(term, edits, true)))
    }

    fn compile_match(&mut self, field: &FieldName, value: &Value, tilde: Option<f64>) -> Compiled {
        let (f, as_) = self.field(field)?;
        let value = self.resolve(value)?;
        if value.is_any() {
            if tilde.is_some() {
                return Err(QueryError::new(value.position, "'*~' means nothing"));
            }
            return self.exists(f, as_, field);
        }
        if tilde.is_some() && value.has_wildcard() {
            return Err(QueryError::new(
                value.position,
                "a value cannot have both wildcards and '~'",
            ));
        }
        if tilde.is_some() && !matches!(as_, IndexedAs::Keyword | IndexedAs::Text) {
            return Err(QueryError::new(
                value.position,
                format!(
                    "'~' (fuzzy or proximity search) works on text fields; '{}' is a {} field",
                    field.name,
                    kind_name(as_)
                ),
            ));
        }
        match as_ {
            IndexedAs::Keyword => match value.as_literal() {
                Some(text) => {
                    let t = self.keyword_text(field, &text);
                    let term = Term::from_field_text(f, &t);
                    match tilde {
                        Some(s) => self.fuzzy(term, &t, s, &value),
                        None => Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic))),
                    }
                }
                None => {
                    let re = self.pattern(&value.parts, value.position)?;
                    self.regex(&re, f, value.position)
                }
            },
            IndexedAs::Text => self.text_match(f, field, &value, tilde),
            IndexedAs::I64 => {
                let text = Self::literal(&value, field, as_)?;
                let n = self.int(&text, field, &value)?;
                Ok(Box::new(TermQuery::new(
                    Term::from_field_i64(f, n),
                    IndexRecordOption::Basic,
                )))
            }
            IndexedAs::F64 => {
                let text = Self::literal(&value, field, as_)?;
                let n = self.float(&text, field, &value)?;
                Ok(Box::new(TermQuery::new(
                    Term::from_field_f64(f, n),
                    IndexRecordOption::Basic,
                )))
            }
            IndexedAs::Bool => {
                let text = Self::literal(&value, field, as_)?;
                let b = self.boolean(&text, field, &value)?;
                Ok(Box::new(TermQuery::new(
                    Term::from_field_bool(f, b),
                    IndexRecordOption::Basic,
                )))
            }
            IndexedAs::Date => {
                let text = Self::literal(&value, field, as_)?;
                let (lo, hi) = match self.date(&text, field, &value)? {
                    DateValue::Instant(m) => (
                        Bound::Included(date_term(f, m)),
                        Bound::Included(date_term(f, m)),
                    ),
                    DateValue::Day(m) => (
                        Bound::Included(date_term(f, m)),
                        date_bound(f, m.saturating_add(DAY_MICROS), false),
                    ),
                };
                self.date_range(f, lo, hi)
            }
        }
    }

    fn text_match(
        &mut self,
        f: Field,
        field: &FieldName,
        value: &Value,
        tilde: Option<f64>,
    ) -> Compiled {
        if let Some(text) = value.as_literal() {
            let toks = tokens(&mut self.text, &text);
            return match toks.len() {
                0 => Ok(Box::new(EmptyQuery)),
                1 => {
                    let term = Term::from_field_text(f, &toks[0].1);
                    match tilde {
                        Some(s) => self.fuzzy(term, &toks[0].1, s, value),
                        None => Ok(Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))),
                    }
                }
                _ => {
                    let slop = match tilde {
                        None => 0,
                        Some(n) if n.fract() == 0.0 && n <= f64::from(u32::MAX) => n as u32,
                        Some(n) => {
                            return Err(QueryError::new(
                                value.position,
                                format!("the proximity after a phrase's '~' must be a whole number, not {n}"),
                            ))
                        }
                    };
                    let terms = toks
                        .into_iter()
                        .map(|(p, t)| (p, Term::from_field_text(f, &t)))
                        .collect();
                    Ok(SafeSeek::wrap(Box::new(
                        PhraseQuery::new_with_offset_and_slop(terms, slop),
                    )))
                }
            };
        }
        // Wildcards: cut the pattern into words as the text tokenizer does.
        let mut words: Vec<Vec<Part>> = Vec::new();
        let mut cur: Vec<Part> = Vec::new();
        let mut buf = [0u8; 4];
        for p in &value.parts {
            match p {
                Part::Text(t) => {
                    for c in t.chars() {
                        if c.is_alphanumeric() {
                            Value::push_text(&mut cur, c.encode_utf8(&mut buf));
                        } else if !cur.is_empty() {
                            words.push(std::mem::take(&mut cur));
                        }
                    }
                }
                other => cur.push(other.clone()),
            }
        }
        if !cur.is_empty() {
            words.push(cur);
        }
        match words.len() {
            0 => Ok(Box::new(EmptyQuery)),
            1 => {
                if matches!(words[0].as_slice(), [Part::AnyChars]) {
                    return self.exists(f, IndexedAs::Text, field);
                }
                let re = self.pattern(&words[0], value.position)?;
                self.regex(&re, f, value.position)
            }
            n => {
                let mut terms = Vec::with_capacity(n);
                for (i, w) in words.iter().enumerate() {
                    let text = match w.as_slice() {
                        [Part::Text(t)] if i + 1 < n => t,
                        [Part::Text(t), Part::AnyChars] if i + 1 == n => t,
                        _ => {
                            return Err(QueryError::new(
                                value.position,
                                format!(
                                    "on full-text field '{}' a wildcard must stay inside one word, \
                                     or be the trailing '*' of a phrase",
                                    field.name
                                ),
                            ))
                        }
                    };
                    let t = self.lower_keyword(text);
                    terms.push((i, Term::from_field_text(f, &t)));
                }
                Ok(SafeSeek::wrap(Box::new(
                    PhrasePrefixQuery::new_with_offset(terms),
                )))
            }
        }
    }

    fn int(&self, text: &str, field: &FieldName, v: &Value) -> Result<i64, QueryError> {
        text.trim().parse::<i64>().map_err(|_| {
            QueryError::new(
                v.position,
                format!("'{text}' is not an integer (field '{}')", field.name),
            )
        })
    }

    fn float(&self, text: &str, field: &FieldName, v: &Value) -> Result<f64, QueryError> {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(index_f64)
            .ok_or_else(|| {
                QueryError::new(
                    v.position,
                    format!("'{text}' is not a number (field '{}')", field.name),
                )
            })
    }

    fn boolean(&self, text: &str, field: &FieldName, v: &Value) -> Result<bool, QueryError> {
        parse_bool(text).ok_or_else(|| {
            QueryError::new(
                v.position,
                format!(
                    "'{text}' is not a boolean (field '{}'): use true, false, yes, no, 1 or 0",
                    field.name
                ),
            )
        })
    }

    fn date(&self, text: &str, field: &FieldName, v: &Value) -> Result<DateValue, QueryError> {
        parse_date_value(text).ok_or_else(|| {
            QueryError::new(
                v.position,
                format!(
                    "'{text}' is not a date (field '{}'): use 2024-03-05, 2024-03-05T10:20:30 or \
                     2024-03-05T10:20:30Z",
                    field.name
                ),
            )
        })
    }

    fn compile_range(
        &mut self,
        field: &FieldName,
        lower: &Bound<Value>,
        upper: &Bound<Value>,
    ) -> Compiled {
        let (f, as_) = self.field(field)?;
        if matches!((lower, upper), (Bound::Unbounded, Bound::Unbounded)) {
            return self.exists(f, as_, field);
        }
        if as_ == IndexedAs::Bool {
            return self.bool_range(f, field, lower, upper);
        }
        let lower = self.bound_term(f, as_, field, lower, true)?;
        let upper = self.bound_term(f, as_, field, upper, false)?;
        if as_ == IndexedAs::Date {
            return self.date_range(f, lower, upper);
        }
        Ok(Box::new(RangeQuery::new(lower, upper)))
    }

    /// A date range, read from the date's column as the index keeps it open.
    fn date_range(&self, f: Field, lower: Bound<Term>, upper: Bound<Term>) -> Compiled {
        DateRangeQuery::new(f, lower, upper, &self.schema.columns)
            .map(|q| Box::new(q) as Box<dyn Query>)
            .map_err(|e| QueryError::new(0, format!("date range: {e}")))
    }

    /// A range over false < true: the values it admits, as terms.
    fn bool_range(
        &mut self,
        f: Field,
        field: &FieldName,
        lower: &Bound<Value>,
        upper: &Bound<Value>,
    ) -> Compiled {
        let bound = |b: &Bound<Value>| -> Result<Bound<bool>, QueryError> {
            Ok(match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(v) | Bound::Excluded(v) => {
                    let v = self.resolve(v)?;
                    let text = Self::literal(&v, field, IndexedAs::Bool)?;
                    let b2 = self.boolean(&text, field, &v)?;
                    if matches!(b, Bound::Included(_)) {
                        Bound::Included(b2)
                    } else {
                        Bound::Excluded(b2)
                    }
                }
            })
        };
        let (lo, hi) = (bound(lower)?, bound(upper)?);
        let admitted: Vec<bool> = [false, true]
            .into_iter()
            .filter(|x| (lo, hi).contains(x))
            .collect();
        Ok(match admitted.as_slice() {
            [] => Box::new(EmptyQuery),
            [one] => Box::new(TermQuery::new(
                Term::from_field_bool(f, *one),
                IndexRecordOption::Basic,
            )),
            _ => return self.exists(f, IndexedAs::Bool, field),
        })
    }

    fn bound_term(
        &mut self,
        f: Field,
        as_: IndexedAs,
        field: &FieldName,
        bound: &Bound<Value>,
        is_lower: bool,
    ) -> Result<Bound<Term>, QueryError> {
        let (v, inclusive) = match bound {
            Bound::Unbounded => return Ok(Bound::Unbounded),
            Bound::Included(v) => (v, true),
            Bound::Excluded(v) => (v, false),
        };
        let day_start = Self::is_day_template(v);
        let v = self.resolve(v)?;
        let text = Self::literal(&v, field, as_)?;
        let wrap = |t: Term| {
            if inclusive {
                Bound::Included(t)
            } else {
                Bound::Excluded(t)
            }
        };
        Ok(match as_ {
            IndexedAs::Keyword => {
                let t = self.keyword_text(field, &text);
                wrap(Term::from_field_text(f, &t))
            }
            IndexedAs::Text => {
                let toks = tokens(&mut self.text, &text);
                if toks.len() != 1 {
                    return Err(QueryError::new(
                        v.position,
                        format!(
                            "a range bound on full-text field '{}' must be one word",
                            field.name
                        ),
                    ));
                }
                wrap(Term::from_field_text(f, &toks[0].1))
            }
            IndexedAs::I64 => wrap(Term::from_field_i64(f, self.int(&text, field, &v)?)),
            IndexedAs::F64 => wrap(Term::from_field_f64(f, self.float(&text, field, &v)?)),
            IndexedAs::Bool => wrap(Term::from_field_bool(f, self.boolean(&text, field, &v)?)),
            IndexedAs::Date => match self.date(&text, field, &v)? {
                DateValue::Instant(m) => date_bound(f, m, inclusive),
                DateValue::Day(m) if day_start => date_bound(f, m, inclusive),
                // A bare date stands for its whole day.
                DateValue::Day(m) => match (is_lower, inclusive) {
                    (true, true) => date_bound(f, m, true),
                    (true, false) => date_bound(f, m.saturating_add(DAY_MICROS), true),
                    (false, true) => date_bound(f, m.saturating_add(DAY_MICROS), false),
                    (false, false) => date_bound(f, m, false),
                },
            },
        })
    }
}
