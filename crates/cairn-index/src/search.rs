//! Search building blocks: run a Tantivy query with sort, top and skip; get item ids and
//! the total count.

use cairn_store::NodeId;
use tantivy::collector::sort_key::SortByErasedType;
use tantivy::collector::{Collector, Count, TopDocs};
use tantivy::query::{EnableScoring, Query};
use tantivy::{DocAddress, DocSet, Order, Searcher, TERMINATED};

use crate::error::{IndexError, Result};
use crate::schema::IndexSchema;

/// The most sort keys a search takes.
pub const MAX_SORT_KEYS: usize = 3;

/// One sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortField {
    /// The field name (case-sensitive).
    pub field: String,
    /// Descending when true.
    pub descending: bool,
}

/// A search: the query, the sort (relevance when empty), and the page.
pub struct SearchRequest<'q> {
    /// What to match.
    pub query: &'q dyn Query,
    /// Sort keys, most significant first.
    pub sort: Vec<SortField>,
    /// How many ids to return at most.
    pub top: usize,
    /// How many to skip first.
    pub skip: usize,
    /// Whether the exact total is wanted. Without it, a search may stop early.
    pub count: bool,
    /// The caller knows that every match scores the same (see
    /// `cairn_query::CqlQuery::constant_score`): with no sort and no count, the first
    /// matches in index order are the answer, and the search stops after them.
    pub constant_score: bool,
}

/// Ids of one page of hits, and how many items matched in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchResult {
    /// The page, in order.
    pub ids: Vec<NodeId>,
    /// All matches when `count` was asked; otherwise `skip` plus the page's length.
    pub total: usize,
}

fn key(schema: &IndexSchema, s: &SortField) -> Result<(SortByErasedType, Order)> {
    match schema.field(&s.field) {
        Some((f, as_)) if schema.can_sort(f, as_) => Ok((
            SortByErasedType::for_field(&s.field),
            if s.descending {
                Order::Desc
            } else {
                Order::Asc
            },
        )),
        Some((_, as_)) if as_.is_sortable() => Err(IndexError::InvalidSearch(format!(
            "field {} only filters and cannot sort",
            s.field
        ))),
        Some(_) => Err(IndexError::InvalidSearch(format!(
            "field {} is full text and cannot sort",
            s.field
        ))),
        None => Err(IndexError::InvalidSearch(format!(
            "unknown field {}",
            s.field
        ))),
    }
}

/// Runs `req` on `searcher`.
pub fn search(
    searcher: &Searcher,
    schema: &IndexSchema,
    req: &SearchRequest<'_>,
) -> Result<SearchResult> {
    if req.sort.len() > MAX_SORT_KEYS {
        return Err(IndexError::InvalidSearch(format!(
            "at most {MAX_SORT_KEYS} sort fields"
        )));
    }
    let keys = req
        .sort
        .iter()
        .map(|s| key(schema, s))
        .collect::<Result<Vec<_>>>()?;
    // From the last document on there is nothing to rank. Such a skip would only size the
    // top-k heap (`skip + top` entries), and a huge one would not fit in memory.
    let past_the_end = req.skip as u64 >= searcher.num_docs();
    let total;
    let addrs: Vec<DocAddress>;
    if req.top == 0 || past_the_end {
        total = if req.top == 0 || req.count {
            searcher.search(req.query, &Count)?
        } else {
            req.skip
        };
        addrs = Vec::new();
    } else if !req.count && keys.is_empty() && req.constant_score {
        addrs = first_in_index_order(searcher, req.query, req.skip, req.top)?;
        total = req.skip + addrs.len();
    } else {
        let top = TopDocs::with_limit(req.top).and_offset(req.skip);
        let mut it = keys.into_iter();
        let (hits, counted) = match (it.next(), it.next(), it.next()) {
            (None, _, _) => ranked(searcher, req.query, top.order_by_score(), req.count)?,
            (Some(a), None, _) => ranked(searcher, req.query, top.order_by(a), req.count)?,
            (Some(a), Some(b), None) => {
                ranked(searcher, req.query, top.order_by((a, b)), req.count)?
            }
            (Some(a), Some(b), Some(c)) => {
                ranked(searcher, req.query, top.order_by((a, b, c)), req.count)?
            }
        };
        total = counted.unwrap_or(req.skip + hits.len());
        addrs = hits;
    }
    Ok(SearchResult {
        ids: node_ids(searcher, schema, &addrs)?,
        total,
    })
}

/// The `Id` of each hit, in order, from the segments' `Id` columns as the index keeps them
/// open ([`crate::columns`]): opening one decodes its block index, which at 10M items
/// costs more than the rest of a date range's first page.
fn node_ids(
    searcher: &Searcher,
    schema: &IndexSchema,
    addrs: &[DocAddress],
) -> Result<Vec<NodeId>> {
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    schema.columns.keep_only(searcher);
    let mut columns: Vec<Option<tantivy::columnar::Column<i64>>> =
        vec![None; searcher.segment_readers().len()];
    let mut ids = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let slot = columns
            .get_mut(addr.segment_ord as usize)
            .ok_or_else(|| IndexError::InvalidSearch("a hit outside the searcher".into()))?;
        let col = match slot {
            Some(col) => col,
            None => slot.insert(
                schema
                    .columns
                    .id(searcher.segment_reader(addr.segment_ord))?,
            ),
        };
        if let Some(id) = col.first(addr.doc_id) {
            ids.push(NodeId(id));
        }
    }
    Ok(ids)
}

/// The path of the document at `addr`, lower-cased (as the `Path` column keeps it; the
/// index stores no field).
pub fn path_of(searcher: &Searcher, addr: DocAddress) -> Result<Option<String>> {
    let Some(col) = searcher
        .segment_reader(addr.segment_ord)
        .fast_fields()
        .str("Path")?
    else {
        return Ok(None);
    };
    let Some(ord) = col.term_ords(addr.doc_id).next() else {
        return Ok(None);
    };
    let mut path = String::new();
    let found = col.ord_to_str(ord, &mut path).map_err(|e| IndexError::Io {
        context: "read the Path column".into(),
        cause: e,
    })?;
    Ok(found.then_some(path))
}

/// Runs a ranking collector, with the exact count of all matches in the same pass when
/// `count`.
fn ranked<C, S>(
    searcher: &Searcher,
    query: &dyn Query,
    top: C,
    count: bool,
) -> Result<(Vec<DocAddress>, Option<usize>)>
where
    C: Collector<Fruit = Vec<(S, DocAddress)>>,
{
    let addresses = |hits: Vec<(S, DocAddress)>| hits.into_iter().map(|h| h.1).collect();
    if count {
        let (hits, n) = searcher.search(query, &(top, Count))?;
        Ok((addresses(hits), Some(n)))
    } else {
        Ok((addresses(searcher.search(query, &top)?), None))
    }
}

/// Matches `skip..skip + top` in index order (segment by segment, doc id order), leaving
/// the rest of the matches unvisited. For a query whose matches all score the same this
/// is the relevance order: Tantivy breaks ties of score by document address.
pub fn first_in_index_order(
    searcher: &Searcher,
    query: &dyn Query,
    skip: usize,
    top: usize,
) -> Result<Vec<DocAddress>> {
    let want = skip.saturating_add(top);
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut out = Vec::with_capacity(want.min(4096));
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        if out.len() >= want {
            break;
        }
        let alive = reader.alive_bitset();
        let mut scorer = weight.scorer(reader, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED && out.len() < want {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                out.push(DocAddress::new(ord as u32, doc));
            }
            doc = scorer.advance();
        }
    }
    Ok(out.into_iter().skip(skip).collect())
}
