//! The syntax tree of a query, shared by CQL and OData `$filter`.
//!
//! The tree keeps sensenet's (Lucene's) boolean model: a [`Predicate::Bool`] is a list of
//! [`Clause`]s, each with an [`Occur`]: `Must` (`+`, `AND`), `MustNot` (`-`, `NOT`) or
//! `Should` (`OR`, and juxtaposition, sensenet's default operator). Values are kept as
//! written (escapes resolved, wildcards marked); their meaning depends on the field's type
//! and is decided by the compiler.
//!
//! Every node that can be wrong carries the 0-based character offset where it starts in
//! the query text, so that the compiler can say where an error is.
//!
//! The [`Display`](std::fmt::Display) form of a tree is valid CQL that parses back to the
//! same tree (positions aside): `(+Type:folder -_Text:'a b')`.

use std::fmt;
use std::ops::Bound;

/// A parsed CQL query: the predicate and the control keywords (`.TOP`, `.SORT`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Cql {
    /// What to match.
    pub predicate: Predicate,
    /// The control keywords, in the order written.
    pub controls: Vec<Control>,
}

/// A control keyword and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The keyword and its parameter.
    pub kind: ControlKind,
    /// Character offset of the keyword's `.`.
    pub position: usize,
}

/// The control keywords of CQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// `.TOP:n`.
    Top(usize),
    /// `.SKIP:n`.
    Skip(usize),
    /// `.SORT:Field` (ascending) or `.REVERSESORT:Field` (descending).
    Sort {
        /// The field name, case-sensitive.
        field: String,
        /// True for `.REVERSESORT`.
        descending: bool,
    },
    /// `.COUNTONLY`.
    CountOnly,
    /// `.AUTOFILTERS:ON|OFF`.
    Autofilters(bool),
    /// `.LIFESPAN:ON|OFF`.
    Lifespan(bool),
    /// `.QUICK` (accepted, no effect).
    Quick,
    /// `.ALLVERSIONS` (accepted, no effect: Cairn keeps no versions).
    AllVersions,
    /// `.SELECT:Field` (accepted, no effect).
    Select(String),
}

/// How a clause takes part in its boolean list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occur {
    /// Optional: at least one optional clause must match when the list has no `Must`.
    Should,
    /// Required (`+`, `AND`).
    Must,
    /// Excluded (`-`, `NOT`, `!`).
    MustNot,
}

/// One member of a boolean list.
#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    /// How it takes part.
    pub occur: Occur,
    /// What it matches.
    pub predicate: Predicate,
}

/// A field name and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldName {
    /// The name, case-sensitive (`_Text` for bare values).
    pub name: String,
    /// Character offset of the name (of the value, for bare values).
    pub position: usize,
}

/// One piece of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Literal text (escapes resolved; may contain `*` or `?` written escaped).
    Text(String),
    /// The wildcard `*`: any characters, none included.
    AnyChars,
    /// The wildcard `?`: exactly one character.
    OneChar,
}

/// A value as written: literal text and wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The pieces, adjacent literal pieces merged.
    pub parts: Vec<Part>,
    /// Whether it was written between quotes (`'...'` or `"..."`).
    pub quoted: bool,
    /// Character offset of the value (of its opening quote when quoted).
    pub position: usize,
}

/// What a query matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    /// A boolean list.
    Bool(Vec<Clause>),
    /// `Field:value`: equality, a wildcard pattern, or a phrase, by the field's type.
    Match {
        /// The field.
        field: FieldName,
        /// The value.
        value: Value,
        /// `~n` after the value: the similarity (0..1) of a fuzzy term, or the slop of a
        /// phrase.
        tilde: Option<f64>,
    },
    /// `Field:[a TO b}`, `Field:>a`, ...
    Range {
        /// The field.
        field: FieldName,
        /// The lower bound.
        lower: Bound<Value>,
        /// The upper bound.
        upper: Bound<Value>,
    },
    /// `Field:{{query}}`: the field holds the id of an item that `query` finds.
    Nested {
        /// The (reference or id) field.
        field: FieldName,
        /// The inner query.
        query: Box<Predicate>,
    },
    /// `clause^n`.
    Boost {
        /// The boosted predicate.
        predicate: Box<Predicate>,
        /// The factor.
        boost: f32,
    },
}

impl Value {
    /// A literal value (no wildcards), as if quoted.
    pub fn literal(text: impl Into<String>, position: usize) -> Value {
        Value {
            parts: vec![Part::Text(text.into())],
            quoted: true,
            position,
        }
    }

    /// The value `*`: any value at all (the field exists).
    pub fn any(position: usize) -> Value {
        Value {
            parts: vec![Part::AnyChars],
            quoted: false,
            position,
        }
    }

    /// The text when the value has no wildcards.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::AnyChars | Part::OneChar => return None,
            }
        }
        Some(out)
    }

    /// True when the value has a wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Text(_)))
    }

    /// True for the value `*` alone.
    pub fn is_any(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::AnyChars])
    }

    /// The text with wildcards shown as `*` and `?` (escaped ones are not told apart).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::AnyChars => out.push('*'),
                Part::OneChar => out.push('?'),
            }
        }
        out
    }

    /// True when the value was written quoted and contains white space (a phrase).
    pub fn is_phrase(&self) -> bool {
        self.quoted
            && self
                .parts
                .iter()
                .any(|p| matches!(p, Part::Text(t) if t.chars().any(char::is_whitespace)))
    }

    /// Appends a literal piece, merging it with a preceding one.
    pub(crate) fn push_text(parts: &mut Vec<Part>, s: &str) {
        if let Some(Part::Text(t)) = parts.last_mut() {
            t.push_str(s);
        } else {
            parts.push(Part::Text(s.to_string()));
        }
    }
}

impl Predicate {
    /// True when every item it matches gets the same relevance score: ranges (constant
    /// score in Tantivy), required or excluded ranges, and nothing that scores by text.
    /// Relevance order is then index order, which a search can read without visiting
    /// every match.
    pub fn constant_score(&self) -> bool {
        match self {
            Predicate::Range { .. } => true,
            Predicate::Bool(clauses) => {
                let scoring: Vec<&Clause> = clauses
                    .iter()
                    .filter(|c| c.occur != Occur::MustNot)
                    .collect();
                let all_must = scoring.iter().all(|c| c.occur == Occur::Must);
                (all_must || scoring.len() == 1)
                    && !scoring.is_empty()
                    && scoring.iter().all(|c| c.predicate.constant_score())
            }
            Predicate::Match { .. } | Predicate::Nested { .. } | Predicate::Boost { .. } => false,
        }
    }

    /// `field:value` with a literal value.
    pub fn equals(field: &str, value: &str) -> Predicate {
        Predicate::Match {
            field: FieldName {
                name: field.to_string(),
                position: 0,
            },
            value: Value::literal(value, 0),
            tilde: None,
        }
    }
}

/* ------------------------------------------------------------------ display */

const KEYWORDS: [&str; 4] = ["AND", "OR", "NOT", "TO"];

fn write_unquoted(f: &mut fmt::Formatter<'_>, parts: &[Part]) -> fmt::Result {
    // (character, is a wildcard)
    let chars: Vec<(char, bool)> = parts
        .iter()
        .flat_map(|p| match p {
            Part::Text(t) => t.chars().map(|c| (c, false)).collect::<Vec<_>>(),
            Part::AnyChars => vec![('*', true)],
            Part::OneChar => vec![('?', true)],
        })
        .collect();
    let whole: String = chars.iter().map(|c| c.0).collect();
    let keyword = KEYWORDS.contains(&whole.as_str());
    for (i, &(c, wild)) in chars.iter().enumerate() {
        let first = i == 0;
        let next = chars.get(i + 1).map(|c| c.0);
        let safe = wild
            || c.is_alphanumeric()
            || c == '_'
            || c == '@'
            || (!first && matches!(c, '-' | '+' | '.' | '/' | ','))
            // Values are always shown where a value is expected: there `-5`, `+5` and `.x`
            // are values, not operators or control keywords.
            || (first && matches!(c, '-' | '+') && next.is_some_and(|n| n.is_ascii_digit() || n == '.'))
            || (first && c == '.')
            || (first && c == '/' && !matches!(next, Some('/' | '*')));
        if !safe || (first && keyword) {
            f.write_str("\\")?;
        }
        write!(f, "{c}")?;
    }
    Ok(())
}

fn write_quoted(f: &mut fmt::Formatter<'_>, parts: &[Part]) -> fmt::Result {
    f.write_str("'")?;
    for p in parts {
        match p {
            Part::AnyChars => f.write_str("*")?,
            Part::OneChar => f.write_str("?")?,
            Part::Text(t) => {
                for c in t.chars() {
                    if matches!(c, '\\' | '\'' | '*' | '?') {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
            }
        }
    }
    f.write_str("'")
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted || self.parts.is_empty() {
            write_quoted(f, &self.parts)
        } else {
            write_unquoted(f, &self.parts)
        }
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.name.is_empty()
            && self.name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !self.name.starts_with(|c: char| c.is_ascii_digit())
            && !KEYWORDS.contains(&self.name.as_str());
        if plain {
            f.write_str(&self.name)
        } else {
            write_quoted(f, &[Part::Text(self.name.clone())])
        }
    }
}

fn write_bound(f: &mut fmt::Formatter<'_>, b: &Bound<Value>) -> fmt::Result {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => write!(f, "{v}"),
        Bound::Unbounded => f.write_str("*"),
    }
}

/// The clauses of a boolean predicate, each with its `+`/`-`, separated by spaces.
fn write_clauses(f: &mut fmt::Formatter<'_>, clauses: &[Clause]) -> fmt::Result {
    for (i, c) in clauses.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        match c.occur {
            Occur::Should => {}
            Occur::Must => f.write_str("+")?,
            Occur::MustNot => f.write_str("-")?,
        }
        write!(f, "{}", c.predicate)?;
    }
    Ok(())
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Bool(clauses) => {
                f.write_str("(")?;
                write_clauses(f, clauses)?;
                f.write_str(")")
            }
            Predicate::Match {
                field,
                value,
                tilde,
            } => {
                write!(f, "{field}:{value}")?;
                if let Some(t) = tilde {
                    write!(f, "~{t}")?;
                }
                Ok(())
            }
            Predicate::Range {
                field,
                lower,
                upper,
            } => {
                write!(f, "{field}:")?;
                f.write_str(if matches!(lower, Bound::Included(_)) {
                    "["
                } else {
                    "{"
                })?;
                write_bound(f, lower)?;
                f.write_str(" TO ")?;
                write_bound(f, upper)?;
                f.write_str(if matches!(upper, Bound::Included(_)) {
                    "]"
                } else {
                    "}"
                })
            }
            Predicate::Nested { field, query } => write!(f, "{field}:{{{{{query} }}}}"),
            Predicate::Boost { predicate, boost } => match **predicate {
                Predicate::Boost { .. } => write!(f, "({predicate})^{boost}"),
                _ => write!(f, "{predicate}^{boost}"),
            },
        }
    }
}

/// A control parameter as CQL: plain, or quoted when it needs to be.
fn param(s: &str) -> FieldName {
    FieldName {
        name: s.to_string(),
        position: 0,
    }
}

impl fmt::Display for ControlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: &bool| if *b { "ON" } else { "OFF" };
        match self {
            ControlKind::Top(n) => write!(f, ".TOP:{n}"),
            ControlKind::Skip(n) => write!(f, ".SKIP:{n}"),
            ControlKind::Sort { field, descending } => write!(
                f,
                ".{}:{}",
                if *descending { "REVERSESORT" } else { "SORT" },
                param(field)
            ),
            ControlKind::CountOnly => f.write_str(".COUNTONLY"),
            ControlKind::Autofilters(b) => write!(f, ".AUTOFILTERS:{}", on(b)),
            ControlKind::Lifespan(b) => write!(f, ".LIFESPAN:{}", on(b)),
            ControlKind::Quick => f.write_str(".QUICK"),
            ControlKind::AllVersions => f.write_str(".ALLVERSIONS"),
            ControlKind::Select(s) => write!(f, ".SELECT:{}", param(s)),
        }
    }
}

impl fmt::Display for Cql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole query's clauses need no parentheses of their own: with them, a query
        // nested as deep as the parser allows would show one level deeper than it allows.
        match &self.predicate {
            Predicate::Bool(clauses) if !clauses.is_empty() => write_clauses(f, clauses)?,
            other => write!(f, "{other}")?,
        }
        for c in &self.controls {
            write!(f, " {}", c.kind)?;
        }
        Ok(())
    }
}
