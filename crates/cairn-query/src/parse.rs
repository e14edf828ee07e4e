//! The CQL parser: a recursive descent over the tokens of the lexer (`lex.rs`), after
//! sensenet's `CqlParser`.
//!
//! ```text
//! Query       ⇒ { Control | OrExp }                 juxtaposed expressions are OR-ed
//! OrExp       ⇒ AndExp { (OR | ||) AndExp }
//! AndExp      ⇒ NotExp { (AND | &&) NotExp }
//! NotExp      ⇒ { NOT | ! } Clause
//! Clause      ⇒ [ + | - ] Primary [ ^ Number ]
//! Primary     ⇒ ( Query )
//!             | Field: FieldValue
//!             | Value [ ~ [Number] ] | Range         (bare: the _Text field)
//! FieldValue  ⇒ Value [ ~ [Number] ] | Range | (< | <= | > | >= | <>) Value
//!             | ( ValueList ) | {{ Query }}
//! ValueList   ⇒ { OrExp over values }               the field applies to every value
//! Range       ⇒ ([ | {) [Value] TO [Value] (] | })  a missing or * bound is open
//! Control     ⇒ .TOP:n | .SKIP:n | .SORT:Field | .REVERSESORT:Field | .COUNTONLY
//!             | .AUTOFILTERS:ON|OFF | .LIFESPAN:ON|OFF | .QUICK | .ALLVERSIONS | .SELECT:x
//! ```
//!
//! Precedence, tightest first: `NOT`, `AND`, `OR`, juxtaposition. Boolean lists are built
//! and flattened as sensenet does (a one-clause list merges its occurrence into its
//! parent's), so `a OR NOT b` means `a -b`, as in sensenet.
//!
//! Groups nest at most [`MAX_DEPTH`] levels deep.

use std::ops::Bound;

use crate::ast::{Clause, Control, ControlKind, Cql, FieldName, Occur, Predicate, Value};
use crate::lex::{lex, Tok, Token};
use crate::QueryError;

/// How deeply groups (`( )`, value lists, `{{ }}`) may nest.
pub const MAX_DEPTH: usize = 64;

/// A count (`.TOP`, `.SKIP`, `$top`, `$skip`): a whole number, saturated at `usize::MAX`
/// when it is larger (every such count is clamped or empties the answer anyway); `None`
/// for anything that is not a whole number.
pub fn parse_count(text: &str) -> Option<usize> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<usize>().unwrap_or(usize::MAX))
}

/// Parses CQL text into its syntax tree.
pub fn parse(text: &str) -> Result<Cql, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let tokens = lex(&chars)?;
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
        controls: Vec::new(),
    };
    let mut exps = Vec::new();
    while !p.at(&Tok::Eof) {
        if p.parse_control_if_any()? {
            continue;
        }
        exps.push(p.parse_or(None)?);
    }
    if exps.is_empty() {
        return Err(QueryError::new(
            p.pos(),
            "empty query: give at least one expression",
        ));
    }
    Ok(Cql {
        predicate: combine(exps, Occur::Should),
        controls: p.controls,
    })
}

/// Where a value list is: the field its values belong to.
#[derive(Clone)]
struct Ctx {
    field: FieldName,
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    depth: usize,
    controls: Vec<Control>,
}

/// Adds `pred` to `clauses` with `occur`, merging a one-clause list into the parent as
/// sensenet's `AddBooleanClause` does.
fn add_clause(clauses: &mut Vec<Clause>, pred: Predicate, occur: Occur) {
    match pred {
        Predicate::Bool(mut inner) if inner.len() == 1 => {
            let mut c = inner.pop().expect("one clause");
            c.occur = match (occur, c.occur) {
                (Occur::Should, o) => o,
                (Occur::MustNot, Occur::MustNot) => Occur::Must,
                (Occur::MustNot, _) | (_, Occur::MustNot) => Occur::MustNot,
                (o, _) => o,
            };
            clauses.push(c);
        }
        pred => clauses.push(Clause {
            occur,
            predicate: pred,
        }),
    }
}

/// One predicate, or a list of all of them with `occur`.
fn combine(mut preds: Vec<Predicate>, occur: Occur) -> Predicate {
    if preds.len() == 1 {
        return preds.pop().expect("one predicate");
    }
    let mut clauses = Vec::with_capacity(preds.len());
    for p in preds {
        add_clause(&mut clauses, p, occur);
    }
    Predicate::Bool(clauses)
}

fn with_occur(pred: Predicate, occur: Occur) -> Predicate {
    let mut clauses = Vec::with_capacity(1);
    add_clause(&mut clauses, pred, occur);
    Predicate::Bool(clauses)
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.i.min(self.tokens.len() - 1)].tok
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.i + ahead).min(self.tokens.len() - 1)]
    }

    fn pos(&self) -> usize {
        self.peek_at(0).pos
    }

    fn at(&self, t: &Tok) -> bool {
        self.peek() == t
    }

    fn bump(&mut self) -> Token {
        let t = self.peek_at(0).clone();
        if self.i < self.tokens.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn unexpected(&self, what: &str) -> QueryError {
        QueryError::new(
            self.pos(),
            format!("unexpected {}, expected {what}", self.peek().describe()),
        )
    }

    fn enter(&mut self, pos: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::new(
                pos,
                format!("the query nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /* -------------------------------------------------------------- expressions */

    fn parse_or(&mut self, ctx: Option<&Ctx>) -> Result<Predicate, QueryError> {
        let mut preds = vec![self.parse_and(ctx)?];
        while self.at(&Tok::Or) {
            self.bump();
            preds.push(self.parse_and(ctx)?);
        }
        Ok(combine(preds, Occur::Should))
    }

    fn parse_and(&mut self, ctx: Option<&Ctx>) -> Result<Predicate, QueryError> {
        let mut preds = vec![self.parse_not(ctx)?];
        while self.at(&Tok::And) {
            self.bump();
            preds.push(self.parse_not(ctx)?);
        }
        Ok(combine(preds, Occur::Must))
    }

    fn parse_not(&mut self, ctx: Option<&Ctx>) -> Result<Predicate, QueryError> {
        let mut not = false;
        while self.at(&Tok::Not) {
            self.bump();
            not = !not;
        }
        let pred = self.parse_clause(ctx)?;
        Ok(if not {
            with_occur(pred, Occur::MustNot)
        } else {
            pred
        })
    }

    fn parse_clause(&mut self, ctx: Option<&Ctx>) -> Result<Predicate, QueryError> {
        let occur = match self.peek() {
            Tok::Plus => Some(Occur::Must),
            Tok::Minus => Some(Occur::MustNot),
            _ => None,
        };
        if occur.is_some() {
            self.bump();
        }
        let mut pred = self.parse_primary(ctx)?;
        if self.at(&Tok::Caret) {
            self.bump();
            let pos = self.pos();
            let boost = match self.bump().tok {
                Tok::Word(v) => v
                    .as_literal()
                    .and_then(|s| s.parse::<f32>().ok())
                    .filter(|b| b.is_finite() && *b >= 0.0),
                _ => None,
            };
            let Some(boost) = boost else {
                return Err(QueryError::new(
                    pos,
                    "expected a boost factor (a non-negative number) after '^'",
                ));
            };
            pred = Predicate::Boost {
                predicate: Box::new(pred),
                boost,
            };
        }
        Ok(match occur {
            Some(o) => with_occur(pred, o),
            None => pred,
        })
    }

    fn parse_primary(&mut self, ctx: Option<&Ctx>) -> Result<Predicate, QueryError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::LParen => match ctx {
                Some(ctx) => self.parse_value_list(ctx),
                None => {
                    self.bump();
                    self.enter(pos)?;
                    let mut exps = Vec::new();
                    loop {
                        match self.peek() {
                            Tok::RParen => break,
                            Tok::Eof => {
                                return Err(QueryError::new(
                                    self.pos(),
                                    format!("the '(' at position {pos} is not closed: missing ')'"),
                                ))
                            }
                            _ => {}
                        }
                        if self.parse_control_if_any()? {
                            continue;
                        }
                        exps.push(self.parse_or(None)?);
                    }
                    self.bump();
                    self.leave();
                    if exps.is_empty() {
                        return Err(QueryError::new(pos, "empty group '()'"));
                    }
                    Ok(combine(exps, Occur::Should))
                }
            },
            Tok::Field(name) => {
                if let Some(ctx) = ctx {
                    return Err(QueryError::new(
                        pos,
                        format!(
                            "field '{name}' inside the value list of field '{}': only values may be listed",
                            ctx.field.name
                        ),
                    ));
                }
                self.bump();
                let field = FieldName {
                    name,
                    position: pos,
                };
                self.parse_field_value(&Ctx { field })
            }
            Tok::Word(_) | Tok::LBracket | Tok::LBrace => {
                let ctx = match ctx {
                    Some(c) => c.clone(),
                    None => Ctx {
                        field: FieldName {
                            name: cairn_index::names::TEXT.to_string(),
                            position: pos,
                        },
                    },
                };
                self.parse_field_value(&ctx)
            }
            Tok::Control(_) if ctx.is_some() => Err(QueryError::new(
                pos,
                "a control keyword cannot stand inside a value list",
            )),
            _ => Err(self.unexpected("a field, a value or '('")),
        }
    }

    fn parse_field_value(&mut self, ctx: &Ctx) -> Result<Predicate, QueryError> {
        let field = ctx.field.clone();
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Word(_) => {
                let value = self.parse_value()?;
                let tilde = self.parse_tilde(&value)?;
                Ok(Predicate::Match {
                    field,
                    value,
                    tilde,
                })
            }
            Tok::LBrace
                if matches!(self.peek_at(1).tok, Tok::LBrace) && self.peek_at(1).pos == pos + 1 =>
            {
                self.bump();
                self.bump();
                self.enter(pos)?;
                let mut exps = Vec::new();
                loop {
                    match self.peek() {
                        Tok::RBrace
                            if matches!(self.peek_at(1).tok, Tok::RBrace)
                                && self.peek_at(1).pos == self.pos() + 1 =>
                        {
                            break
                        }
                        Tok::Eof => {
                            return Err(QueryError::new(
                                self.pos(),
                                format!(
                                    "the '{{{{' at position {pos} is not closed: missing '}}}}'"
                                ),
                            ))
                        }
                        Tok::Control(_) => {
                            return Err(QueryError::new(
                                self.pos(),
                                "a control keyword cannot stand inside a nested query",
                            ))
                        }
                        _ => exps.push(self.parse_or(None)?),
                    }
                }
                self.bump();
                self.bump();
                self.leave();
                if exps.is_empty() {
                    return Err(QueryError::new(pos, "empty nested query '{{}}'"));
                }
                Ok(Predicate::Nested {
                    field,
                    query: Box::new(combine(exps, Occur::Should)),
                })
            }
            Tok::LBracket | Tok::LBrace => self.parse_range(field),
            Tok::LParen => self.parse_value_list(ctx),
            op @ (Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge | Tok::Neq) => {
                self.bump();
                let value = self.parse_exact_value()?;
                Ok(match op {
                    Tok::Neq => with_occur(
                        Predicate::Match {
                            field,
                            value,
                            tilde: None,
                        },
                        Occur::MustNot,
                    ),
                    Tok::Lt => Predicate::Range {
                        field,
                        lower: Bound::Unbounded,
                        upper: Bound::Excluded(value),
                    },
                    Tok::Le => Predicate::Range {
                        field,
                        lower: Bound::Unbounded,
                        upper: Bound::Included(value),
                    },
                    Tok::Gt => Predicate::Range {
                        field,
                        lower: Bound::Excluded(value),
                        upper: Bound::Unbounded,
                    },
                    _ => Predicate::Range {
                        field,
                        lower: Bound::Included(value),
                        upper: Bound::Unbounded,
                    },
                })
            }
            _ => Err(self.unexpected(&format!("a value for field '{}'", field.name))),
        }
    }

    fn parse_value_list(&mut self, ctx: &Ctx) -> Result<Predicate, QueryError> {
        let pos = self.pos();
        self.bump();
        self.enter(pos)?;
        let mut exps = Vec::new();
        loop {
            match self.peek() {
                Tok::RParen => break,
                Tok::Eof => {
                    return Err(QueryError::new(
                        self.pos(),
                        format!("the '(' at position {pos} is not closed: missing ')'"),
                    ))
                }
                _ => exps.push(self.parse_or(Some(ctx))?),
            }
        }
        self.bump();
        self.leave();
        if exps.is_empty() {
            return Err(QueryError::new(pos, "empty value list '()'"));
        }
        Ok(combine(exps, Occur::Should))
    }

    fn parse_value(&mut self) -> Result<Value, QueryError> {
        match self.peek().clone() {
            Tok::Word(v) => {
                self.bump();
                Ok(v)
            }
            _ => Err(self.unexpected("a value")),
        }
    }

    /// A value without wildcards (comparisons).
    fn parse_exact_value(&mut self) -> Result<Value, QueryError> {
        let v = self.parse_value()?;
        if v.has_wildcard() {
            return Err(QueryError::new(
                v.position,
                "wildcards cannot be used in a comparison",
            ));
        }
        Ok(v)
    }

    fn parse_tilde(&mut self, value: &Value) -> Result<Option<f64>, QueryError> {
        if !self.at(&Tok::Tilde) {
            return Ok(None);
        }
        let tilde = self.bump();
        let number = match self.peek() {
            Tok::Word(v) if v.position == tilde.end => v
                .as_literal()
                .and_then(|s| s.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)),
            _ => None,
        };
        match number {
            Some(n) => {
                self.bump();
                Ok(Some(n))
            }
            None if value.is_phrase() => Err(QueryError::new(
                tilde.end,
                "expected a proximity (a whole number) after the phrase's '~'",
            )),
            None => Ok(Some(DEFAULT_SIMILARITY)),
        }
    }

    fn parse_range(&mut self, field: FieldName) -> Result<Predicate, QueryError> {
        let start = self.bump();
        let lower_inclusive = start.tok == Tok::LBracket;
        let lower = self.parse_bound()?;
        if !self.at(&Tok::To) {
            return Err(self.unexpected("TO in the range"));
        }
        self.bump();
        let upper = self.parse_bound()?;
        let upper_inclusive = match self.peek() {
            Tok::RBracket => true,
            Tok::RBrace => false,
            _ => return Err(self.unexpected("']' or '}' to end the range")),
        };
        self.bump();
        if lower.is_none() && upper.is_none() {
            return Err(QueryError::new(
                start.pos,
                "a range needs at least one bound",
            ));
        }
        let bound = |v: Option<Value>, inclusive: bool| match v {
            None => Bound::Unbounded,
            Some(v) if inclusive => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
        };
        Ok(Predicate::Range {
            field,
            lower: bound(lower, lower_inclusive),
            upper: bound(upper, upper_inclusive),
        })
    }

    /// A range bound: a value, or nothing / `*` for an open end.
    fn parse_bound(&mut self) -> Result<Option<Value>, QueryError> {
        match self.peek() {
            Tok::Word(v) if v.is_any() => {
                self.bump();
                Ok(None)
            }
            Tok::Word(_) => self.parse_exact_value().map(Some),
            Tok::To | Tok::RBracket | Tok::RBrace => Ok(None),
            _ => Err(self.unexpected("a range bound")),
        }
    }

    /* -------------------------------------------------------------- controls */

    /// Parses a control keyword if one comes next.
    fn parse_control_if_any(&mut self) -> Result<bool, QueryError> {
        let Tok::Control(name) = self.peek().clone() else {
            return Ok(false);
        };
        let pos = self.pos();
        self.bump();
        let upper = name.to_ascii_uppercase();
        let kind = match upper.as_str() {
            "TOP" => ControlKind::Top(self.control_number(&upper)?),
            "SKIP" => ControlKind::Skip(self.control_number(&upper)?),
            "SORT" | "REVERSESORT" => ControlKind::Sort {
                field: self.control_param(&upper)?.1,
                descending: upper == "REVERSESORT",
            },
            "SELECT" => ControlKind::Select(self.control_param(&upper)?.1),
            "AUTOFILTERS" => ControlKind::Autofilters(self.control_switch(&upper)?),
            "LIFESPAN" => ControlKind::Lifespan(self.control_switch(&upper)?),
            "COUNTONLY" => ControlKind::CountOnly,
            "QUICK" => ControlKind::Quick,
            "ALLVERSIONS" => ControlKind::AllVersions,
            _ => {
                return Err(QueryError::new(
                    pos,
                    format!(
                        "unknown control keyword '.{name}' (known: .TOP .SKIP .SORT .REVERSESORT \
                         .COUNTONLY .AUTOFILTERS .LIFESPAN .QUICK .ALLVERSIONS .SELECT)"
                    ),
                ))
            }
        };
        self.controls.push(Control {
            kind,
            position: pos,
        });
        Ok(true)
    }

    /// `:param` after a control keyword, as text, with its position.
    fn control_param(&mut self, name: &str) -> Result<(usize, String), QueryError> {
        if !self.at(&Tok::Colon) {
            return Err(self.unexpected(&format!("':' after .{name}")));
        }
        self.bump();
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Word(v) if !v.has_wildcard() => {
                self.bump();
                Ok((pos, v.text()))
            }
            _ => Err(self.unexpected(&format!("the parameter of .{name}"))),
        }
    }

    fn control_number(&mut self, name: &str) -> Result<usize, QueryError> {
        let (pos, text) = self.control_param(name)?;
        parse_count(&text).ok_or_else(|| {
            QueryError::new(
                pos,
                format!("the parameter of .{name} must be a whole number, not '{text}'"),
            )
        })
    }

    fn control_switch(&mut self, name: &str) -> Result<bool, QueryError> {
        let (pos, text) = self.control_param(name)?;
        match text.to_ascii_uppercase().as_str() {
            "ON" => Ok(true),
            "OFF" => Ok(false),
            _ => Err(QueryError::new(
                pos,
                format!("the parameter of .{name} must be ON or OFF, not '{text}'"),
            )),
        }
    }
}

/// The similarity of a fuzzy term written `term~` without a number (sensenet's default).
pub const DEFAULT_SIMILARITY: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree of `q`, as CQL.
    fn ast(q: &str) -> String {
        match parse(q) {
            Ok(c) => c.to_string(),
            Err(e) => panic!("{q:?}: {e}"),
        }
    }

    /// The error of `q`: (position, message).
    fn err(q: &str) -> (usize, String) {
        match parse(q) {
            Ok(c) => panic!("{q:?} parsed as {c}"),
            Err(e) => (e.position, e.message),
        }
    }

    #[test]
    fn terms_and_values() {
        assert_eq!(ast("Name:abc"), "Name:abc");
        assert_eq!(ast("Name:'quoted value'"), "Name:'quoted value'");
        assert_eq!(ast("Body:\"a phrase\""), "Body:'a phrase'");
        assert_eq!(ast("apple"), "_Text:apple");
        assert_eq!(ast("'it\\'s'"), "_Text:'it\\'s'");
        assert_eq!(ast("Name:my-file.txt"), "Name:my-file.txt");
        assert_eq!(ast("Index:-5"), "Index:-5");
        assert_eq!(ast("Name:.htaccess"), "Name:.htaccess");
        assert_eq!(ast("Name: abc"), "Name:abc");
        assert_eq!(ast("InTree:/Root/A"), "InTree:/Root/A");
        assert_eq!(ast("'Display Name':x"), "'Display Name':x");
        assert_eq!(ast("a\\ b"), "_Text:a\\ b");
        assert_eq!(ast("Name:a\\:b"), "Name:a\\:b");
    }

    #[test]
    fn wildcards() {
        assert_eq!(ast("ab*"), "_Text:ab*");
        assert_eq!(ast("Name:'a?c*'"), "Name:'a?c*'");
        assert_eq!(ast("Name:a\\*b"), "Name:a\\*b");
        let c = parse("Name:'a\\*b*'").unwrap();
        let Predicate::Match { value, .. } = c.predicate else {
            panic!()
        };
        assert_eq!(
            value.parts,
            vec![
                crate::ast::Part::Text("a*b".into()),
                crate::ast::Part::AnyChars
            ]
        );
    }

    #[test]
    fn operators_and_precedence() {
        assert_eq!(ast("a b"), "_Text:a _Text:b");
        assert_eq!(ast("a AND b"), "+_Text:a +_Text:b");
        assert_eq!(ast("a && b || c"), "(+_Text:a +_Text:b) _Text:c");
        assert_eq!(ast("a OR b AND c"), "_Text:a (+_Text:b +_Text:c)");
        assert_eq!(ast("a OR b c"), "(_Text:a _Text:b) _Text:c");
        assert_eq!(ast("+a -b c"), "+_Text:a -_Text:b _Text:c");
        assert_eq!(ast("NOT a"), "-_Text:a");
        assert_eq!(ast("!a"), "-_Text:a");
        assert_eq!(ast("NOT NOT a"), "_Text:a");
        // A negated group of one negated clause is that clause, as `NOT NOT a` is.
        assert_eq!(ast("NOT (NOT a)"), "+_Text:a");
        assert_eq!(ast("Type:x NOT (NOT Name:a)"), "Type:x +Name:a");
        assert_eq!(ast("b AND NOT (NOT a)"), "+_Text:b +_Text:a");
        assert_eq!(ast("b AND (NOT a)"), "+_Text:b -_Text:a");
        assert_eq!(ast("a AND NOT b"), "+_Text:a -_Text:b");
        // sensenet's (Lucene's) flattening: OR NOT is AND NOT.
        assert_eq!(ast("a OR NOT b"), "_Text:a -_Text:b");
        assert_eq!(ast("(a OR b) AND c"), "+(_Text:a _Text:b) +_Text:c");
        assert_eq!(
            ast("+(a b) -(c d)"),
            "+(_Text:a _Text:b) -(_Text:c _Text:d)"
        );
        assert_eq!(ast("a^2"), "_Text:a^2");
        assert_eq!(ast("(a b)^1.5"), "(_Text:a _Text:b)^1.5");
        assert_eq!(ast("roam~"), "_Text:roam~0.5");
        assert_eq!(ast("roam~0.8"), "_Text:roam~0.8");
        assert_eq!(ast("\"jakarta apache\"~10"), "_Text:'jakarta apache'~10");
        assert_eq!(ast("a /* comment */ b // more\n"), "_Text:a _Text:b");
    }

    #[test]
    fn lists_ranges_comparisons() {
        assert_eq!(ast("Id:(1 2 3)"), "Id:1 Id:2 Id:3");
        assert_eq!(ast("Id:(1 OR (2 3))"), "Id:1 (Id:2 Id:3)");
        assert_eq!(ast("Name:(a AND NOT b)"), "+Name:a -Name:b");
        assert_eq!(ast("Index:[1 TO 5]"), "Index:[1 TO 5]");
        assert_eq!(ast("Index:{1 TO 5}"), "Index:{1 TO 5}");
        assert_eq!(ast("Index:[1 TO 5}"), "Index:[1 TO 5}");
        assert_eq!(ast("Index:['10' TO '19'}"), "Index:['10' TO '19'}");
        assert_eq!(ast("Index:[* TO 5]"), "Index:{* TO 5]");
        assert_eq!(ast("Index:[5 TO ]"), "Index:[5 TO *}");
        assert_eq!(ast("Index:[-5 TO -1]"), "Index:[-5 TO -1]");
        assert_eq!(
            ast("CreationDate:[2024-01-01 TO 2024-12-31]"),
            "CreationDate:[2024-01-01 TO 2024-12-31]"
        );
        assert_eq!(ast("Index:>5"), "Index:{5 TO *}");
        assert_eq!(ast("Index:>=5"), "Index:[5 TO *}");
        assert_eq!(ast("Index:<5"), "Index:{* TO 5}");
        assert_eq!(ast("Index:<='5'"), "Index:{* TO '5']");
        assert_eq!(ast("Name:<>x"), "-Name:x");
        assert_eq!(ast("CreatedBy:{{Name:admin}}"), "CreatedBy:{{Name:admin }}");
        assert_eq!(
            ast("CreatedBy:{{Index:{1 TO 5}}}"),
            "CreatedBy:{{Index:{1 TO 5} }}"
        );
    }

    #[test]
    fn special_fields_are_plain_fields() {
        assert_eq!(ast("InTree:'/Root/A'"), "InTree:'/Root/A'");
        assert_eq!(ast("InFolder:/Root/A/"), "InFolder:/Root/A/");
        assert_eq!(ast("Type:Folder"), "Type:Folder");
        assert_eq!(ast("TypeIs:Folder"), "TypeIs:Folder");
    }

    #[test]
    fn controls() {
        let c = parse(
            "Name:a .TOP:5 .SKIP:10 .SORT:Name .REVERSESORT:Index .COUNTONLY \
             .AUTOFILTERS:OFF .LIFESPAN:ON .QUICK .ALLVERSIONS",
        )
        .unwrap();
        let kinds: Vec<ControlKind> = c.controls.into_iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ControlKind::Top(5),
                ControlKind::Skip(10),
                ControlKind::Sort {
                    field: "Name".into(),
                    descending: false
                },
                ControlKind::Sort {
                    field: "Index".into(),
                    descending: true
                },
                ControlKind::CountOnly,
                ControlKind::Autofilters(false),
                ControlKind::Lifespan(true),
                ControlKind::Quick,
                ControlKind::AllVersions,
            ]
        );
        // Controls may stand anywhere an expression may start.
        assert_eq!(
            ast(".TOP:3 a (b .SKIP:1 c)"),
            "_Text:a (_Text:b _Text:c) .TOP:3 .SKIP:1"
        );
        assert_eq!(
            parse("a .top:3").unwrap().controls[0].kind,
            ControlKind::Top(3)
        );
    }

    #[test]
    fn error_positions() {
        assert_eq!(err("").0, 0);
        assert_eq!(err("   ").0, 3);
        assert_eq!(err(".TOP:5").0, 6);
        assert_eq!(
            err("Name:"),
            (
                5,
                "unexpected end of the query, expected a value for field 'Name'".into()
            )
        );
        assert_eq!(err("(a").0, 2);
        assert!(err("(a").1.contains("missing ')'"));
        assert_eq!(err("a)").0, 1);
        assert_eq!(err("a AND").0, 5);
        assert_eq!(err("Name:'abc").0, 5);
        assert_eq!(err("x .FOO").0, 2);
        assert_eq!(err("x .TOP:abc").0, 7);
        assert_eq!(err("x .AUTOFILTERS:MAYBE").0, 15);
        assert_eq!(err("Index:[1 TO 2").0, 13);
        assert_eq!(err("Index:[1 2]").0, 9);
        assert_eq!(err("Index:[ TO ]").0, 6);
        assert_eq!(err("Index:>'a*'").0, 7);
        assert_eq!(err("a & b").0, 2);
        assert_eq!(err("a^x").0, 2);
        assert_eq!(err("\"a b\"~").0, 6);
        assert_eq!(err("Id:(Name:x)").0, 4);
        assert_eq!(err("Id:()").0, 3);
        assert_eq!(err("()").0, 0);
        assert_eq!(err("a \\").0, 2);
        assert_eq!(err("CreatedBy:{{a").0, 13);
        assert_eq!(err("CreatedBy:{{ a .TOP:1}}").0, 15);
        // Positions count characters, not bytes.
        assert_eq!(err("ÁÉ:é )").0, 5);
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(ast(&ok), "_Text:a");
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(err(&deep).0, MAX_DEPTH);
        let very = "(".repeat(100_000);
        assert_eq!(err(&very).0, MAX_DEPTH);
        let values = format!("Id:{}1", "(".repeat(1000));
        assert_eq!(err(&values).0, 3 + MAX_DEPTH);
        let nested = "X:{{".repeat(1000);
        assert!(parse(&nested).is_err());
        let nots = format!("{}a", "NOT ".repeat(100_000));
        assert_eq!(ast(&nots), "_Text:a");
    }
}
