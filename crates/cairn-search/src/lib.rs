//! # cairn-search
//!
//! Search as a library: a collection (the children of a folder) or a content query (CQL in
//! a subtree, with OData's `$filter`, `$orderby`, `$top`, `$skip`), answered by the index
//! alone with ids in order and the total. The items themselves come from the database
//! (the API's business); [`ListRequest`] is the whole question, so the same answer comes
//! from a local index or from the search service, which runs [`run_list`] too.
#![warn(missing_docs)]

mod error;

pub use error::SearchError;

use cairn_index::document::path_key;
use cairn_index::{search, Indexer, SearchRequest, SortField};
use serde::{Deserialize, Serialize};
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Term};

/// A collection or query request, as the index sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListRequest {
    /// The folder: its children, or (with `query`) its subtree.
    pub container: String,
    /// A content query.
    pub query: Option<String>,
    /// An OData `$filter`.
    pub filter: Option<String>,
    /// An OData `$orderby`.
    pub orderby: Option<String>,
    /// OData `$top`.
    pub top: Option<usize>,
    /// OData `$skip`.
    pub skip: Option<usize>,
    /// `enableautofilters`.
    pub autofilters: Option<bool>,
    /// The caller, for `@@CurrentUser@@`.
    pub user: Option<i64>,
    /// The cap of `$top`.
    pub max_top: usize,
    /// Whether the exact total is wanted (`$inlinecount=allpages`, `$count`). A node
    /// that does not send it wants it.
    #[serde(default = "wanted")]
    pub count: bool,
}

fn wanted() -> bool {
    true
}

/// The index's answer: one page of ids and the total.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListAnswer {
    /// The page, in order.
    pub ids: Vec<i64>,
    /// All matches (when counted; see [`ListRequest::count`]).
    pub total: usize,
    /// `.COUNTONLY` was asked.
    pub count_only: bool,
}

fn term(field: tantivy::schema::Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

/// A clause that only filters: it adds nothing to the relevance score (an ancestor path
/// would otherwise rank items by their depth).
fn filter(field: tantivy::schema::Field, text: &str) -> Box<dyn Query> {
    Box::new(ConstScoreQuery::new(term(field, text), 0.0))
}

/// Paths of every SystemFolder (what `.AUTOFILTERS:ON` hides).
fn system_folders(indexer: &Indexer) -> Result<Vec<String>, SearchError> {
    let schema = indexer.schema();
    let searcher = indexer.searcher();
    let q = term(schema.type_is, "systemfolder");
    let top = searcher.search(
        &*q,
        &tantivy::collector::TopDocs::with_limit(10_000).order_by_score(),
    )?;
    let mut out = Vec::new();
    for (_, addr) in top {
        if let Some(p) = cairn_index::search::path_of(&searcher, addr)? {
            out.push(path_key(&p));
        }
    }
    Ok(out)
}

/// The clauses as one query: a single required clause as itself, not wrapped. Tantivy
/// picks its specialised scorers (block-max WAND for a plain disjunction of terms, such as
/// a word in `_Text` and the long-text fields) from the query it is given; wrapped in
/// another `BooleanQuery` it runs a generic intersection instead. For the benchmark's
/// common word this made no measurable difference (WAND has little to skip there; see
/// docs/benchmarks.md, issue 18), but a rarer word's top k can skip blocks.
fn one_query(mut clauses: Vec<(Occur, Box<dyn Query>)>) -> Box<dyn Query> {
    if clauses.len() == 1 && clauses[0].0 == Occur::Must {
        if let Some((_, q)) = clauses.pop() {
            return q;
        }
    }
    if !clauses.iter().any(|(o, _)| *o != Occur::MustNot) {
        // Only exclusions (not built today, but kept whole): of everything.
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Answers `req` from a local index. Blocking.
pub fn run_list(indexer: &Indexer, req: &ListRequest) -> Result<ListAnswer, SearchError> {
    let schema = indexer.schema();
    let key = path_key(&req.container);
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut constant_score = false;
    let (mut sort, top, skip, count_only, autofilters) = match &req.query {
        Some(q) => {
            // Every item is in /Root's subtree: there the query needs no subtree filter
            // (see `one_query` for why not even an AllQuery).
            if key != "/root" {
                clauses.push((Occur::Must, filter(schema.in_tree, &key)));
            }
            let mut ctx = cairn_query::QueryContext {
                current_user: req.user,
                now: None,
                nested: None,
            };
            let cql = cairn_query::parse_cql_with(q, schema, &mut ctx)?;
            constant_score = cql.constant_score;
            clauses.push((Occur::Must, cql.query));
            (cql.sort, cql.top, cql.skip, cql.count_only, cql.autofilters)
        }
        None => {
            clauses.push((Occur::Must, filter(schema.in_folder, &key)));
            let by = |f: &str| SortField {
                field: f.into(),
                descending: false,
            };
            (vec![by("Index"), by("Name")], None, None, false, None)
        }
    };
    if let Some(f) = &req.filter {
        clauses.push((Occur::Must, cairn_query::parse_filter(f, schema)?));
        constant_score = false;
    }
    if let Some(o) = &req.orderby {
        sort = cairn_query::parse_orderby(o, schema)?;
    }
    // The query's own `.AUTOFILTERS` is the more specific word: it wins over the URL's.
    if autofilters.or(req.autofilters).unwrap_or(false) {
        for p in system_folders(indexer)? {
            if key != p && !key.starts_with(&format!("{p}/")) {
                clauses.push((Occur::MustNot, term(schema.in_tree, &p)));
            }
        }
    }
    // The query's .SKIP/.TOP choose a window of hits; OData's $skip/$top page within it.
    let max = req.max_top.max(1);
    let window_start = skip.unwrap_or(0).saturating_add(req.skip.unwrap_or(0));
    let window_end = top
        .map_or(usize::MAX, |t| skip.unwrap_or(0).saturating_add(t))
        .min(window_start.saturating_add(req.top.unwrap_or(max)));
    let top = window_end.saturating_sub(window_start).min(max);
    let query = one_query(clauses);
    let result = search(
        &indexer.searcher(),
        schema,
        &SearchRequest {
            query: &*query,
            sort,
            top: if count_only { 0 } else { top },
            skip: window_start,
            count: req.count || count_only,
            constant_score,
        },
    )?;
    Ok(ListAnswer {
        ids: result.ids.into_iter().map(|i| i.0).collect(),
        total: result.total,
        count_only,
    })
}
