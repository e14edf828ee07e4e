//! The CQL lexer: characters to tokens, each with its character offset.
//!
//! Follows sensenet's lexer: white space and `//...`, `/*...*/` comments separate tokens;
//! `( ) [ ] { } : + - ! ^ ~` are signs; `&&`, `||`, `AND`, `OR`, `NOT`, `TO` are operators
//! (upper case only); `<`, `<=`, `>`, `>=`, `<>` follow a field's colon; `'...'` and `"..."`
//! are quoted values in which `\` escapes the next character; `.WORD` is a control keyword;
//! a word or quoted text immediately followed by `:` is a field name; anything else is an
//! unquoted value, in which `\` escapes too and `*`, `?` are wildcards.
//!
//! Two deviations make everyday values easier to write: `-` and `+` end a word only at its
//! start (`my-file.txt` and `2024-03-05` are one value), and where a value is expected
//! (after `Field:`, a comparison, `[`, `{` or `TO`), `-5`, `+5` and `.txt` are values too.

use crate::ast::{Part, Value};
use crate::QueryError;

/// A token kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Eof,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Colon,
    Comma,
    Plus,
    Minus,
    Caret,
    Tilde,
    And,
    Or,
    Not,
    To,
    Lt,
    Le,
    Gt,
    Ge,
    Neq,
    /// `.NAME`, the name without the dot.
    Control(String),
    /// A field name; its colon is part of the token.
    Field(String),
    /// A value.
    Word(Value),
}

/// A token and where it starts and ends (character offsets).
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
    pub end: usize,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Eof => "end of the query".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::Colon => "':'".into(),
            Tok::Comma => "','".into(),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Caret => "'^'".into(),
            Tok::Tilde => "'~'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::To => "TO".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Neq => "'<>'".into(),
            Tok::Control(n) => format!("'.{n}'"),
            Tok::Field(n) => format!("field '{n}'"),
            Tok::Word(v) => format!("'{}'", v.text()),
        }
    }
}

/// Characters that end an unquoted word.
fn ends_word(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | ':' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '~' | '!' | '&' | '|'
        )
}

struct Lexer<'a> {
    chars: &'a [char],
    i: usize,
    out: Vec<Token>,
}

/// Splits `text` into tokens; the last one is [`Tok::Eof`].
pub(crate) fn lex(chars: &[char]) -> Result<Vec<Token>, QueryError> {
    let mut lx = Lexer {
        chars,
        i: 0,
        out: Vec::new(),
    };
    loop {
        lx.skip_blank();
        let pos = lx.i;
        let Some(c) = lx.peek(0) else {
            lx.out.push(Token {
                tok: Tok::Eof,
                pos,
                end: pos,
            });
            return Ok(lx.out);
        };
        let tok = lx.token(c)?;
        lx.out.push(Token {
            tok,
            pos,
            end: lx.i,
        });
    }
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn skip_blank(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => self.i += 1,
                (Some('/'), Some('/')) => {
                    while let Some(c) = self.peek(0) {
                        self.i += 1;
                        if c == '\n' {
                            break;
                        }
                    }
                }
                (Some('/'), Some('*')) => {
                    self.i += 2;
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => break,
                            (Some('*'), Some('/')) => {
                                self.i += 2;
                                break;
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// True when the previous token is one after which a value is expected.
    fn value_expected(&self) -> bool {
        matches!(
            self.out.last().map(|t| &t.tok),
            Some(
                Tok::Field(_)
                    | Tok::Lt
                    | Tok::Le
                    | Tok::Gt
                    | Tok::Ge
                    | Tok::Neq
                    | Tok::LBracket
                    | Tok::LBrace
                    | Tok::To
            )
        )
    }

    fn token(&mut self, c: char) -> Result<Tok, QueryError> {
        let pos = self.i;
        let single = |t: Tok, lx: &mut Self| {
            lx.i += 1;
            Ok(t)
        };
        match c {
            '(' => single(Tok::LParen, self),
            ')' => single(Tok::RParen, self),
            '[' => single(Tok::LBracket, self),
            ']' => single(Tok::RBracket, self),
            '{' => single(Tok::LBrace, self),
            '}' => single(Tok::RBrace, self),
            ':' => single(Tok::Colon, self),
            ',' => single(Tok::Comma, self),
            '^' => single(Tok::Caret, self),
            '~' => single(Tok::Tilde, self),
            '!' => single(Tok::Not, self),
            '+' | '-'
                if !(self.value_expected()
                    && self.peek(1).is_some_and(|d| d.is_ascii_digit() || d == '.')) =>
            {
                single(if c == '+' { Tok::Plus } else { Tok::Minus }, self)
            }
            '&' | '|' => {
                if self.peek(1) == Some(c) {
                    self.i += 2;
                    Ok(if c == '&' { Tok::And } else { Tok::Or })
                } else {
                    Err(QueryError::new(
                        pos,
                        format!("invalid operator '{c}', use '{c}{c}'"),
                    ))
                }
            }
            '<' => {
                self.i += 1;
                match self.peek(0) {
                    Some('=') => single(Tok::Le, self),
                    Some('>') => single(Tok::Neq, self),
                    _ => Ok(Tok::Lt),
                }
            }
            '>' => {
                self.i += 1;
                match self.peek(0) {
                    Some('=') => single(Tok::Ge, self),
                    _ => Ok(Tok::Gt),
                }
            }
            '\'' | '"' => self.quoted(c),
            '.' if !self.value_expected() => {
                self.i += 1;
                let start = self.i;
                while self.peek(0).is_some_and(|c| c.is_alphabetic()) {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(QueryError::new(
                        pos,
                        "expected a control keyword after '.' (.TOP, .SKIP, .SORT, ...)",
                    ));
                }
                Ok(Tok::Control(self.chars[start..self.i].iter().collect()))
            }
            _ => self.unquoted(),
        }
    }

    fn quoted(&mut self, quote: char) -> Result<Tok, QueryError> {
        let pos = self.i;
        self.i += 1;
        let mut parts = Vec::new();
        let mut buf = [0u8; 4];
        loop {
            let Some(c) = self.peek(0) else {
                return Err(QueryError::new(pos, "unclosed quoted value"));
            };
            self.i += 1;
            match c {
                _ if c == quote => break,
                '\\' => {
                    let Some(e) = self.peek(0) else {
                        return Err(QueryError::new(pos, "unclosed quoted value"));
                    };
                    self.i += 1;
                    Value::push_text(&mut parts, e.encode_utf8(&mut buf));
                }
                '*' => parts.push(Part::AnyChars),
                '?' => parts.push(Part::OneChar),
                _ => Value::push_text(&mut parts, c.encode_utf8(&mut buf)),
            }
        }
        if self.peek(0) == Some(':') {
            self.i += 1;
            let name = Value {
                parts,
                quoted: true,
                position: pos,
            }
            .text();
            return Ok(Tok::Field(name));
        }
        if parts.is_empty() {
            parts.push(Part::Text(String::new()));
        }
        Ok(Tok::Word(Value {
            parts,
            quoted: true,
            position: pos,
        }))
    }

    fn unquoted(&mut self) -> Result<Tok, QueryError> {
        let pos = self.i;
        let mut parts = Vec::new();
        let mut escaped = false;
        let mut buf = [0u8; 4];
        while let Some(c) = self.peek(0) {
            if ends_word(c) && self.i > pos {
                break;
            }
            self.i += 1;
            match c {
                '\\' => {
                    let Some(e) = self.peek(0) else {
                        return Err(QueryError::new(
                            self.i - 1,
                            "'\\' at the end of the query escapes nothing",
                        ));
                    };
                    self.i += 1;
                    escaped = true;
                    Value::push_text(&mut parts, e.encode_utf8(&mut buf));
                }
                '*' => parts.push(Part::AnyChars),
                '?' => parts.push(Part::OneChar),
                _ => Value::push_text(&mut parts, c.encode_utf8(&mut buf)),
            }
        }
        let value = Value {
            parts,
            quoted: false,
            position: pos,
        };
        if self.peek(0) == Some(':') {
            self.i += 1;
            return Ok(Tok::Field(value.text()));
        }
        if !escaped {
            if let Some(text) = value.as_literal() {
                match text.as_str() {
                    "AND" => return Ok(Tok::And),
                    "OR" => return Ok(Tok::Or),
                    "NOT" => return Ok(Tok::Not),
                    "TO" => return Ok(Tok::To),
                    _ => {}
                }
            }
        }
        Ok(Tok::Word(value))
    }
}
