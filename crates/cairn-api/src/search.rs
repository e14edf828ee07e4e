//! Collections and content queries: what the index answers for the API. The index gives
//! the ids, their order and the total; the items themselves come from the database.
//!
//! [`ListRequest`] is the whole question, so it can be answered by the local index or sent
//! to the search service ([`crate::backend`]) as JSON.

use cairn_index::{search, Indexer, SearchRequest, SortField};
use cairn_store::content::{parent_path, path_key};
use cairn_store::{Node, NodeDetail, NodeId};
use serde::{Deserialize, Serialize};
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Term, Value};
use tantivy::TantivyDocument;

use crate::error::{ApiError, ApiResult};
use crate::odata::options::Options;
use crate::state::AppState;

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

/// One page of a collection or query, with the items.
#[derive(Debug)]
pub struct Listing {
    /// The items, in order.
    pub nodes: Vec<Node>,
    /// All matches.
    pub total: usize,
    /// `.COUNTONLY` was asked: no items, only the total.
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
fn system_folders(indexer: &Indexer) -> ApiResult<Vec<String>> {
    let schema = indexer.schema();
    let searcher = indexer.searcher();
    let q = term(schema.type_is, "systemfolder");
    let top = searcher
        .search(
            &*q,
            &tantivy::collector::TopDocs::with_limit(10_000).order_by_score(),
        )
        .map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for (_, addr) in top {
        let doc: TantivyDocument = searcher.doc(addr).map_err(ApiError::internal)?;
        if let Some(p) = doc.get_first(schema.path).and_then(|v| v.as_str()) {
            out.push(path_key(p));
        }
    }
    Ok(out)
}

/// Answers `req` from a local index. Blocking.
pub fn run_list(indexer: &Indexer, req: &ListRequest) -> ApiResult<ListAnswer> {
    let schema = indexer.schema();
    let key = path_key(&req.container);
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut constant_score = false;
    let (mut sort, top, skip, count_only, autofilters) = match &req.query {
        Some(q) => {
            // Every item is in /Root's subtree: there the subtree filter would only cost
            // an intersection with every document (Tantivy drops an AllQuery from one).
            let scope: Box<dyn Query> = if key == "/root" {
                Box::new(AllQuery)
            } else {
                filter(schema.in_tree, &key)
            };
            clauses.push((Occur::Must, scope));
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
    let query = BooleanQuery::new(clauses);
    let result = search(
        &indexer.searcher(),
        schema,
        &SearchRequest {
            query: &query,
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

/// The children of `container` (no `query`), or the matches of `query` in its subtree,
/// filtered, sorted and paged as `opts` says; with the exact total when `count` (or
/// `.COUNTONLY`), else `total` is only the page's end. Blocking.
pub fn list(
    state: &AppState,
    container: &str,
    opts: &Options,
    user: Option<NodeId>,
    count: bool,
) -> ApiResult<Listing> {
    let req = ListRequest {
        container: container.to_string(),
        query: opts.query.clone(),
        filter: opts.filter.clone(),
        orderby: opts.orderby.clone(),
        top: opts.top,
        skip: opts.skip,
        autofilters: opts.autofilters,
        user: user.map(|u| u.0),
        max_top: state.config.max_top,
        count,
    };
    let answer = state.search.list(&req)?;
    let ids: Vec<NodeId> = answer.ids.into_iter().map(NodeId).collect();
    let mut nodes = ordered(state, &ids, opts.node_detail())?;
    // The index chose these items; the database may have moved one out since (a move the
    // indexer has not applied yet). An answer never holds an item outside what was asked.
    let key = path_key(container);
    let below = format!("{key}/");
    nodes.retain(|n| {
        if opts.query.is_some() {
            let p = path_key(&n.path);
            p == key || p.starts_with(&below)
        } else {
            parent_path(&n.path).is_some_and(|parent| path_key(parent) == key)
        }
    });
    Ok(Listing {
        nodes,
        total: answer.total,
        count_only: answer.count_only,
    })
}

/// The items of `ids` from the database, in the order of `ids` (missing ones left out),
/// in as much `detail` as the answer shows.
pub fn ordered(state: &AppState, ids: &[NodeId], detail: NodeDetail) -> ApiResult<Vec<Node>> {
    let mut found: std::collections::HashMap<NodeId, Node> = state
        .store
        .nodes_by_ids_with(ids, detail)?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}
