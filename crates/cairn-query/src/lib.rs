//! # cairn-query
//!
//! The query languages of Cairn, compiled to Tantivy queries over the index of
//! `cairn-index`:
//!
//! - sensenet's Content Query Language (CQL): [`parse_cql`] — `TypeIs:Folder AND
//!   InTree:/Root/A .SORT:Name .TOP:10`;
//! - OData `$filter`: [`parse_filter`] — `startswith(Name,'a') and Index gt 3`;
//! - OData `$orderby`: [`parse_orderby`] — `DisplayName desc, Index`.
//!
//! Text goes through a hand-written lexer and recursive-descent parser into a syntax tree
//! ([`ast`]), then [`compile`] turns the tree into a query by the types of the fields in
//! the [`IndexSchema`]. No input makes these functions panic; a bad query gives a
//! [`QueryError`] that says what is wrong and at which character (0-based).
//!
//! The grammar is in [`parse`], the meaning of values per field type in [`compile`], the
//! `$filter` subset in [`odata`].
#![warn(missing_docs)]

pub mod ast;
pub mod compile;
mod lex;
pub mod odata;
pub mod parse;
mod safe;

use cairn_index::{IndexSchema, SortField};
use tantivy::query::Query;

pub use compile::QueryContext;
pub use parse::MAX_DEPTH;

/// A query that cannot be understood: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct QueryError {
    /// The 0-based character offset in the query text where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl QueryError {
    /// An error at `position`.
    pub fn new(position: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            position,
            message: message.into(),
        }
    }
}

/// A compiled CQL query: the Tantivy query and what its control keywords ask for.
#[derive(Debug)]
pub struct CqlQuery {
    /// What to match.
    pub query: Box<dyn Query>,
    /// `.SORT` / `.REVERSESORT` keys, in the order written (relevance when empty).
    pub sort: Vec<SortField>,
    /// `.TOP:n`; `.TOP:0` means no limit, as in sensenet.
    pub top: Option<usize>,
    /// `.SKIP:n`.
    pub skip: Option<usize>,
    /// `.COUNTONLY`: only the number of hits is wanted.
    pub count_only: bool,
    /// `.AUTOFILTERS:ON|OFF`, when given.
    pub autofilters: Option<bool>,
    /// `.LIFESPAN:ON|OFF`, when given.
    pub lifespan: Option<bool>,
    /// Every match scores the same (see [`ast::Predicate::constant_score`]): relevance
    /// order is index order.
    pub constant_score: bool,
}

/// Parses and compiles a CQL query.
///
/// Nested queries (`Field:{{...}}`) and `@@CurrentUser@@` need a [`QueryContext`]: see
/// [`parse_cql_with`].
pub fn parse_cql(text: &str, schema: &IndexSchema) -> Result<CqlQuery, QueryError> {
    parse_cql_with(text, schema, &mut QueryContext::default())
}

/// Parses and compiles a CQL query with a context (current user, clock, nested queries).
pub fn parse_cql_with(
    text: &str,
    schema: &IndexSchema,
    ctx: &mut QueryContext<'_>,
) -> Result<CqlQuery, QueryError> {
    let cql = parse::parse(text)?;
    let query = compile::compile(&cql.predicate, schema, ctx)?;
    let mut out = CqlQuery {
        query,
        sort: Vec::new(),
        top: None,
        skip: None,
        count_only: false,
        autofilters: None,
        lifespan: None,
        constant_score: cql.predicate.constant_score(),
    };
    for c in &cql.controls {
        match &c.kind {
            ast::ControlKind::Top(n) => out.top = (*n > 0).then_some(*n),
            ast::ControlKind::Skip(n) => out.skip = Some(*n),
            ast::ControlKind::Sort { field, descending } => {
                if out.sort.len() == cairn_index::search::MAX_SORT_KEYS {
                    return Err(QueryError::new(
                        c.position,
                        format!(
                            "at most {} sort fields are allowed",
                            cairn_index::search::MAX_SORT_KEYS
                        ),
                    ));
                }
                out.sort
                    .push(compile::sort_field(schema, field, *descending, c.position)?);
            }
            ast::ControlKind::CountOnly => out.count_only = true,
            ast::ControlKind::Autofilters(b) => out.autofilters = Some(*b),
            ast::ControlKind::Lifespan(b) => out.lifespan = Some(*b),
            ast::ControlKind::Quick
            | ast::ControlKind::AllVersions
            | ast::ControlKind::Select(_) => {}
        }
    }
    Ok(out)
}

/// Parses and compiles an OData `$filter`.
pub fn parse_filter(text: &str, schema: &IndexSchema) -> Result<Box<dyn Query>, QueryError> {
    let pred = odata::parse_filter(text)?;
    compile::compile(&pred, schema, &mut QueryContext::default())
}

/// Parses an OData `$orderby`: `Field [asc|desc], ...`; checks that every field can sort.
pub fn parse_orderby(text: &str, schema: &IndexSchema) -> Result<Vec<SortField>, QueryError> {
    odata::parse_orderby(text, schema)
}
