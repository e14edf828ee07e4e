//! OData v3 `$filter` and `$orderby`, as sensenet's OData service takes them.
//!
//! `$filter` is parsed into the same syntax tree as CQL ([`crate::ast`]) and compiled by the
//! same compiler, so `Name eq 'x'` and `Name:'x'` are the same query:
//!
//! ```text
//! Or        ⇒ And { or And }
//! And       ⇒ Unary { and Unary }
//! Unary     ⇒ not Unary | Compare
//! Compare   ⇒ Primary [ (eq | ne | gt | ge | lt | le) Primary ]
//! Primary   ⇒ ( Or ) | Function | Field | Literal
//! Function  ⇒ startswith(Field, 'x') | endswith(Field, 'x') | substringof('x', Field)
//!           | contains(Field, 'x') | isof('Type') | tolower(Field) | toupper(Field)
//! Literal   ⇒ 'text' ('' is a quote) | 12 | -1.5 | 2.5M | true | false | null
//!           | datetime'2024-01-01T00:00:00' | datetimeoffset'...' | guid'...'
//! ```
//!
//! `Field eq null` means the field has no value, `Field ne null` that it has one.
//! `startswith`, `endswith` and `substringof` become the wildcard values `x*`, `*x`, `*x*`
//! (the text of `x` stays literal); `isof('T')` is `TypeIs:T`. A boolean field alone
//! (`$filter=Pinned`) means `Pinned eq true`. Operators and function names are
//! case-insensitive; field names are not.

use std::ops::Bound;

use cairn_index::{IndexSchema, SortField};

use crate::ast::{Clause, FieldName, Occur, Part, Predicate, Value};
use crate::parse::MAX_DEPTH;
use crate::QueryError;

/* ================================================================== $orderby */

/// Parses `$orderby`: `Field [asc|desc], ...`. An empty text gives no sort keys.
pub fn parse_orderby(text: &str, schema: &IndexSchema) -> Result<Vec<SortField>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i == chars.len() {
        return Ok(out);
    }
    loop {
        skip_ws(&mut i);
        let start = i;
        while chars
            .get(i)
            .is_some_and(|c| !c.is_whitespace() && *c != ',')
        {
            i += 1;
        }
        if i == start {
            return Err(QueryError::new(start, "expected a field name in $orderby"));
        }
        let name: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        let mut descending = false;
        let dir_start = i;
        while chars.get(i).is_some_and(|c| c.is_alphabetic()) {
            i += 1;
        }
        if i > dir_start {
            let dir: String = chars[dir_start..i].iter().collect();
            match dir.to_ascii_lowercase().as_str() {
                "asc" => {}
                "desc" => descending = true,
                _ => {
                    return Err(QueryError::new(
                        dir_start,
                        format!("expected asc, desc or ',' in $orderby, not '{dir}'"),
                    ))
                }
            }
        }
        let sort = crate::compile::sort_field(schema, &name, descending, start)?;
        out.push(sort);
        if out.len() > cairn_index::search::MAX_SORT_KEYS {
            return Err(QueryError::new(
                start,
                format!(
                    "at most {} sort fields are allowed",
                    cairn_index::search::MAX_SORT_KEYS
                ),
            ));
        }
        skip_ws(&mut i);
        match chars.get(i) {
            None => return Ok(out),
            Some(',') => i += 1,
            Some(c) => {
                return Err(QueryError::new(
                    i,
                    format!("unexpected '{c}' in $orderby, expected ','"),
                ))
            }
        }
    }
}

/* ================================================================== $filter */

#[derive(Clone, Debug, PartialEq)]
enum T {
    Eof,
    LParen,
    RParen,
    Comma,
    /// An identifier or keyword (field, operator, function, true/false/null).
    Ident(String),
    /// A quoted string literal, unescaped.
    Str(String),
    /// A typed literal: datetime'...', guid'...'.
    Typed(String, String),
    /// A number, as written (without a type suffix).
    Num(String),
}

#[derive(Clone, Debug)]
struct Tk {
    t: T,
    pos: usize,
}

fn lex_filter(chars: &[char]) -> Result<Vec<Tk>, QueryError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let pos = i;
        let Some(&c) = chars.get(i) else {
            out.push(Tk { t: T::Eof, pos });
            return Ok(out);
        };
        let t = match c {
            '(' => {
                i += 1;
                T::LParen
            }
            ')' => {
                i += 1;
                T::RParen
            }
            ',' => {
                i += 1;
                T::Comma
            }
            '\'' => T::Str(string_literal(chars, &mut i)?),
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
                    || (matches!(chars.get(i), Some('-' | '+'))
                        && matches!(chars.get(i - 1), Some('e' | 'E')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                if chars
                    .get(i)
                    .is_some_and(|c| matches!(c, 'm' | 'M' | 'd' | 'D' | 'f' | 'F' | 'l' | 'L'))
                {
                    i += 1;
                }
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    return Err(QueryError::new(start, "malformed number"));
                }
                T::Num(text)
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if chars.get(i) == Some(&'\'') {
                    let lit = string_literal(chars, &mut i)?;
                    T::Typed(word, lit)
                } else if chars.get(i) == Some(&'/') {
                    return Err(QueryError::new(
                        i,
                        "navigation paths (Field/Sub) are not supported in $filter",
                    ));
                } else {
                    T::Ident(word)
                }
            }
            _ => return Err(QueryError::new(pos, format!("unexpected '{c}' in $filter"))),
        };
        out.push(Tk { t, pos });
    }
}

fn string_literal(chars: &[char], i: &mut usize) -> Result<String, QueryError> {
    let start = *i;
    *i += 1;
    let mut s = String::new();
    loop {
        match chars.get(*i) {
            None => return Err(QueryError::new(start, "unclosed string literal")),
            Some('\'') if chars.get(*i + 1) == Some(&'\'') => {
                s.push('\'');
                *i += 2;
            }
            Some('\'') => {
                *i += 1;
                return Ok(s);
            }
            Some(&c) => {
                s.push(c);
                *i += 1;
            }
        }
    }
}

/// A `$filter` operand or expression before lowering.
#[derive(Clone, Debug)]
enum Ex {
    Field(FieldName),
    Lit(Lit, usize),
    Pred(Predicate),
}

#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    Text(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn of(word: &str) -> Option<Op> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            _ => return None,
        })
    }
    /// The operator with its operands swapped: `5 lt F` is `F gt 5`.
    fn swapped(self) -> Op {
        match self {
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            o => o,
        }
    }
}

struct FilterParser {
    toks: Vec<Tk>,
    i: usize,
    depth: usize,
}

/// Parses OData `$filter` text into a predicate.
pub fn parse_filter(text: &str) -> Result<Predicate, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let toks = lex_filter(&chars)?;
    let mut p = FilterParser {
        toks,
        i: 0,
        depth: 0,
    };
    if p.peek() == &T::Eof {
        return Err(QueryError::new(0, "empty $filter"));
    }
    let ex = p.or()?;
    if p.peek() != &T::Eof {
        return Err(p.unexpected("an operator (and, or, eq, ...)"));
    }
    p.predicate(ex)
}

fn not(pred: Predicate) -> Predicate {
    Predicate::Bool(vec![Clause {
        occur: Occur::MustNot,
        predicate: pred,
    }])
}

fn all_of(preds: Vec<Predicate>, occur: Occur) -> Predicate {
    Predicate::Bool(
        preds
            .into_iter()
            .map(|predicate| Clause { occur, predicate })
            .collect(),
    )
}

fn describe(t: &T) -> String {
    match t {
        T::Eof => "end of the filter".into(),
        T::LParen => "'('".into(),
        T::RParen => "')'".into(),
        T::Comma => "','".into(),
        T::Ident(w) => format!("'{w}'"),
        T::Str(s) => format!("'{s}'"),
        T::Typed(k, s) => format!("{k}'{s}'"),
        T::Num(n) => n.clone(),
    }
}

impl FilterParser {
    fn peek(&self) -> &T {
        &self.toks[self.i.min(self.toks.len() - 1)].t
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].pos
    }
    fn bump(&mut self) -> Tk {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), T::Ident(w) if w.eq_ignore_ascii_case(k))
    }
    fn unexpected(&self, what: &str) -> QueryError {
        QueryError::new(
            self.pos(),
            format!("unexpected {}, expected {what}", describe(self.peek())),
        )
    }
    fn expect(&mut self, t: T, what: &str) -> Result<(), QueryError> {
        if self.peek() == &t {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }
    fn enter(&mut self, pos: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::new(
                pos,
                format!("the filter nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Ex, QueryError> {
        self.chain("or", Self::and, Occur::Should)
    }

    fn and(&mut self) -> Result<Ex, QueryError> {
        self.chain("and", Self::unary, Occur::Must)
    }

    /// `operand (word operand)*`: one operand as it is, several joined with `occur`.
    fn chain(
        &mut self,
        word: &str,
        operand: fn(&mut Self) -> Result<Ex, QueryError>,
        occur: Occur,
    ) -> Result<Ex, QueryError> {
        let mut items = vec![operand(self)?];
        while self.keyword(word) {
            self.bump();
            items.push(operand(self)?);
        }
        if items.len() == 1 {
            return Ok(items.pop().expect("one"));
        }
        let preds = items
            .into_iter()
            .map(|e| self.predicate(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ex::Pred(all_of(preds, occur)))
    }

    fn unary(&mut self) -> Result<Ex, QueryError> {
        if self.keyword("not") {
            let pos = self.pos();
            self.bump();
            self.enter(pos)?;
            let inner = self.unary()?;
            self.depth -= 1;
            let pred = self.predicate(inner)?;
            return Ok(Ex::Pred(not(pred)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Ex, QueryError> {
        let left = self.primary()?;
        let T::Ident(w) = self.peek().clone() else {
            return Ok(left);
        };
        let Some(op) = Op::of(&w) else {
            return Ok(left);
        };
        let op_pos = self.pos();
        self.bump();
        let right = self.primary()?;
        Ok(Ex::Pred(self.comparison(left, op, right, op_pos)?))
    }

    fn comparison(
        &self,
        left: Ex,
        op: Op,
        right: Ex,
        op_pos: usize,
    ) -> Result<Predicate, QueryError> {
        match (left, right) {
            (Ex::Field(f), Ex::Lit(l, p)) => Self::field_cmp(f, op, l, p),
            (Ex::Lit(l, p), Ex::Field(f)) => Self::field_cmp(f, op.swapped(), l, p),
            (Ex::Pred(pred), Ex::Lit(Lit::Bool(b), _))
            | (Ex::Lit(Lit::Bool(b), _), Ex::Pred(pred))
                if matches!(op, Op::Eq | Op::Ne) =>
            {
                Ok(if b == (op == Op::Eq) { pred } else { not(pred) })
            }
            _ => Err(QueryError::new(
                op_pos,
                "a comparison needs a field on one side and a literal value on the other",
            )),
        }
    }

    fn field_cmp(field: FieldName, op: Op, lit: Lit, pos: usize) -> Result<Predicate, QueryError> {
        let value = match lit {
            Lit::Null => {
                let exists = Predicate::Match {
                    field,
                    value: Value::any(pos),
                    tilde: None,
                };
                return match op {
                    Op::Eq => Ok(not(exists)),
                    Op::Ne => Ok(exists),
                    _ => Err(QueryError::new(
                        pos,
                        "null can only be compared with eq or ne",
                    )),
                };
            }
            Lit::Bool(b) => Value::literal(b.to_string(), pos),
            Lit::Text(t) => Value::literal(t, pos),
        };
        Ok(match op {
            Op::Eq => Predicate::Match {
                field,
                value,
                tilde: None,
            },
            Op::Ne => not(Predicate::Match {
                field,
                value,
                tilde: None,
            }),
            Op::Gt => Predicate::Range {
                field,
                lower: Bound::Excluded(value),
                upper: Bound::Unbounded,
            },
            Op::Ge => Predicate::Range {
                field,
                lower: Bound::Included(value),
                upper: Bound::Unbounded,
            },
            Op::Lt => Predicate::Range {
                field,
                lower: Bound::Unbounded,
                upper: Bound::Excluded(value),
            },
            Op::Le => Predicate::Range {
                field,
                lower: Bound::Unbounded,
                upper: Bound::Included(value),
            },
        })
    }

    /// An expression that must be a predicate: a boolean field alone means `eq true`.
    fn predicate(&self, ex: Ex) -> Result<Predicate, QueryError> {
        match ex {
            Ex::Pred(p) => Ok(p),
            Ex::Field(f) => Ok(Predicate::Match {
                value: Value::literal("true", f.position),
                field: f,
                tilde: None,
            }),
            Ex::Lit(_, pos) => Err(QueryError::new(
                pos,
                "a literal alone is not a condition: compare a field with it",
            )),
        }
    }

    fn primary(&mut self) -> Result<Ex, QueryError> {
        let tk = self.bump();
        let pos = tk.pos;
        match tk.t {
            T::LParen => {
                self.enter(pos)?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(T::RParen, "')'")?;
                Ok(inner)
            }
            T::Str(s) => Ok(Ex::Lit(Lit::Text(s), pos)),
            T::Num(n) => Ok(Ex::Lit(Lit::Text(n), pos)),
            T::Typed(kind, s) => match kind.to_ascii_lowercase().as_str() {
                "datetime" | "datetimeoffset" | "guid" | "time" => Ok(Ex::Lit(Lit::Text(s), pos)),
                _ => Err(QueryError::new(
                    pos,
                    format!("unknown literal type '{kind}'"),
                )),
            },
            T::Ident(w) if self.peek() == &T::LParen => self.function(&w, pos),
            T::Ident(w) => match w.to_ascii_lowercase().as_str() {
                "null" => Ok(Ex::Lit(Lit::Null, pos)),
                "true" => Ok(Ex::Lit(Lit::Bool(true), pos)),
                "false" => Ok(Ex::Lit(Lit::Bool(false), pos)),
                "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" => {
                    Err(QueryError::new(
                        pos,
                        format!("unexpected operator '{w}', expected an operand"),
                    ))
                }
                _ => Ok(Ex::Field(FieldName {
                    name: w,
                    position: pos,
                })),
            },
            t => {
                self.i -= usize::from(t != T::Eof);
                Err(self.unexpected("a field, a literal, a function or '('"))
            }
        }
    }

    fn field_arg(&mut self) -> Result<FieldName, QueryError> {
        let pos = self.pos();
        match self.primary()? {
            Ex::Field(f) => Ok(f),
            _ => Err(QueryError::new(pos, "expected a field name")),
        }
    }

    fn text_arg(&mut self) -> Result<(String, usize), QueryError> {
        let pos = self.pos();
        match self.bump().t {
            T::Str(s) | T::Num(s) => Ok((s, pos)),
            _ => Err(QueryError::new(pos, "expected a string literal")),
        }
    }

    fn function(&mut self, name: &str, pos: usize) -> Result<Ex, QueryError> {
        self.bump(); // (
        self.enter(pos)?;
        let lower = name.to_ascii_lowercase();
        let wild = |field: FieldName, parts: Vec<Part>, vpos: usize| {
            let parts: Vec<Part> = parts
                .into_iter()
                .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()))
                .collect();
            let parts = match parts.as_slice() {
                [Part::AnyChars, Part::AnyChars] => vec![Part::AnyChars],
                _ => parts,
            };
            Ex::Pred(Predicate::Match {
                field,
                value: Value {
                    parts,
                    quoted: true,
                    position: vpos,
                },
                tilde: None,
            })
        };
        let ex = match lower.as_str() {
            "startswith" | "endswith" | "contains" => {
                let field = self.field_arg()?;
                self.expect(T::Comma, "','")?;
                let (s, vpos) = self.text_arg()?;
                let parts = match lower.as_str() {
                    "startswith" => vec![Part::Text(s), Part::AnyChars],
                    "endswith" => vec![Part::AnyChars, Part::Text(s)],
                    _ => vec![Part::AnyChars, Part::Text(s), Part::AnyChars],
                };
                wild(field, parts, vpos)
            }
            "substringof" => {
                let (s, vpos) = self.text_arg()?;
                self.expect(T::Comma, "','")?;
                let field = self.field_arg()?;
                wild(
                    field,
                    vec![Part::AnyChars, Part::Text(s), Part::AnyChars],
                    vpos,
                )
            }
            "isof" => {
                let (s, vpos) = self.text_arg()?;
                if self.peek() == &T::Comma {
                    return Err(QueryError::new(
                        self.pos(),
                        "isof takes one argument here: isof('Type')",
                    ));
                }
                Ex::Pred(Predicate::Match {
                    field: FieldName {
                        name: cairn_index::names::TYPE_IS.to_string(),
                        position: pos,
                    },
                    value: Value::literal(s, vpos),
                    tilde: None,
                })
            }
            "tolower" | "toupper" | "trim" => Ex::Field(self.field_arg()?),
            _ => {
                return Err(QueryError::new(
                    pos,
                    format!(
                        "unknown function '{name}' (known: startswith, endswith, substringof, \
                         contains, isof, tolower, toupper, trim)"
                    ),
                ))
            }
        };
        self.expect(T::RParen, "')'")?;
        self.depth -= 1;
        Ok(ex)
    }
}
