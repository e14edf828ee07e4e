//! A page of a collection or content query, with its items: the ids, their order and the
//! total from the index (local, or the search service: [`cairn_search::run_list`]), the
//! items from the database.

use cairn_search::ListRequest;
use cairn_store::content::{parent_path, path_key};
use cairn_store::{Node, NodeDetail, NodeId};

use super::options::Options;
use crate::error::ApiResult;
use crate::state::AppState;

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
