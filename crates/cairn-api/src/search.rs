//! Collections and content queries: what the index answers for the API. The index gives
//! the ids, their order and the total; the items themselves come from the database.

use cairn_index::{search, SearchRequest, SortField};
use cairn_store::content::path_key;
use cairn_store::{Node, NodeId};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Term, Value};
use tantivy::TantivyDocument;

use crate::error::{ApiError, ApiResult};
use crate::odata::options::Options;
use crate::state::AppState;

/// One page of a collection or query.
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

/// Paths of every SystemFolder (what `.AUTOFILTERS:ON` hides).
fn system_folders(state: &AppState) -> ApiResult<Vec<String>> {
    let schema = state.indexer.schema();
    let searcher = state.indexer.searcher();
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

/// The children of `container` (no `query`), or the matches of `query` in its subtree,
/// filtered, sorted and paged as `opts` says. Blocking.
pub fn list(
    state: &AppState,
    container: &str,
    opts: &Options,
    user: Option<cairn_store::NodeId>,
) -> ApiResult<Listing> {
    let schema = state.indexer.schema();
    let key = path_key(container);
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let (mut sort, top, skip, count_only, autofilters) = match &opts.query {
        Some(q) => {
            clauses.push((Occur::Must, term(schema.in_tree, &key)));
            let mut ctx = cairn_query::QueryContext {
                current_user: user.map(|u| u.0),
                now: None,
                nested: None,
            };
            let cql = cairn_query::parse_cql_with(q, schema, &mut ctx)?;
            clauses.push((Occur::Must, cql.query));
            (cql.sort, cql.top, cql.skip, cql.count_only, cql.autofilters)
        }
        None => {
            clauses.push((Occur::Must, term(schema.in_folder, &key)));
            let sort = vec![
                SortField {
                    field: "Index".into(),
                    descending: false,
                },
                SortField {
                    field: "Name".into(),
                    descending: false,
                },
            ];
            (sort, None, None, false, None)
        }
    };
    if let Some(f) = &opts.filter {
        clauses.push((Occur::Must, cairn_query::parse_filter(f, schema)?));
    }
    if let Some(o) = &opts.orderby {
        sort = cairn_query::parse_orderby(o, schema)?;
    }
    if opts.autofilters.or(autofilters).unwrap_or(false) {
        for p in system_folders(state)? {
            if key != p && !key.starts_with(&format!("{p}/")) {
                clauses.push((Occur::MustNot, term(schema.in_tree, &p)));
            }
        }
    }
    // The query's .SKIP/.TOP choose a window of hits; OData's $skip/$top page within it.
    let max = state.config.max_top;
    let window_start = skip.unwrap_or(0).saturating_add(opts.skip.unwrap_or(0));
    let window_end = top
        .map_or(usize::MAX, |t| skip.unwrap_or(0).saturating_add(t))
        .min(window_start.saturating_add(opts.top.unwrap_or(max)));
    let top = window_end.saturating_sub(window_start).min(max);
    let skip = window_start;
    let query = BooleanQuery::new(clauses);
    let searcher = state.indexer.searcher();
    let result = search(
        &searcher,
        schema,
        &SearchRequest {
            query: &query,
            sort,
            top: if count_only { 0 } else { top },
            skip,
        },
    )?;
    let nodes = ordered(state, &result.ids)?;
    Ok(Listing {
        nodes,
        total: result.total,
        count_only,
    })
}

/// The items of `ids` from the database, in the order of `ids` (missing ones left out).
pub fn ordered(state: &AppState, ids: &[NodeId]) -> ApiResult<Vec<Node>> {
    let mut found: std::collections::HashMap<NodeId, Node> = state
        .store
        .nodes_by_ids(ids)?
        .into_iter()
        .map(|n| (n.id, n))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

/// The id of the user whose LoginName is `login` (case-insensitive). Blocking.
pub fn find_user(state: &AppState, login: &str) -> ApiResult<Option<NodeId>> {
    let schema = state.indexer.schema();
    let Some((field, _)) = schema.field("LoginName") else {
        return Ok(None);
    };
    let query = BooleanQuery::new(vec![
        (Occur::Must, term(field, &login.to_lowercase())),
        (Occur::Must, term(schema.type_is, "user")),
    ]);
    let r = search(
        &state.indexer.searcher(),
        schema,
        &SearchRequest {
            query: &query,
            sort: Vec::new(),
            top: 1,
            skip: 0,
        },
    )?;
    Ok(r.ids.first().copied())
}
