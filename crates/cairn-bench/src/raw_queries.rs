//! The five typical queries as raw Tantivy would best run them, on Cairn's own index: the
//! floor that Cairn's query path (CQL, its filters and collectors, HTTP, the items from
//! the database) is measured against (issue 18: p50 within 1.5×, throughput at 8
//! connections ≥ 0.6×).
//!
//! Same index, same documents, same semantics (the benchmark checks that both find the
//! same number of hits), but each query built by hand in the form Tantivy runs fastest:
//!
//! | query | raw form |
//! |---|---|
//! | term | `TermQuery` on `_Text` OR each long-text field, `TopDocs` by score (block-max WAND) |
//! | intree | `InTree` AND `TypeIs` term queries, `TopDocs` ordered by the `Name` fast field |
//! | date | `RangeQuery` on `PublishDate`; every match scores the same, so the first 20 in index order (a plain walk of Tantivy's scorer, `cairn_index::search::first_in_index_order`) |
//! | prefix | `RegexQuery` `prefix.*` on the same fields as the term, `TopDocs` by score |
//! | count | the term query with `Count` alone (no ranking) |
//! | date-columns | not raw: the date range as Cairn runs it (`cairn_index::date_range`, each segment's column opened once), read the same way, to measure that against Tantivy's `RangeQuery` on the same searcher |
//!
//! Each answer ends, as Cairn's does, with the 20 hits' `Id` from the fast field.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_index::{IndexSchema, TEXT_TOKENIZER};
use tantivy::collector::sort_key::SortByErasedType;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery};
use tantivy::schema::{Field, FieldType, IndexRecordOption};
use tantivy::{DateTime, DocAddress, Index, IndexReader, Order, ReloadPolicy, Searcher, Term};

/// What a raw query returns per page, as Cairn's answers do.
pub const TOP: usize = 20;

/// The parameters of the five queries (the API benchmark takes them from the corpus).
#[derive(Clone, Debug)]
pub struct QueryParams {
    /// A word (lower case).
    pub term: String,
    /// The folder of the InTree query, as written in CQL (`/Root/Corpus/F75`).
    pub folder: String,
    /// The content type of the InTree query (lower case, as `TypeIs` keeps it).
    pub type_is: String,
    /// First day of the date range (`YYYY-MM-DD`), included.
    pub date_from: String,
    /// Last day of the date range, included.
    pub date_to: String,
    /// The prefix of the wildcard query (lower case, without the `*`).
    pub prefix: String,
}

/// One query in its raw form.
pub struct RawQuery {
    /// `term`, `intree`, `date`, `prefix` or `count`.
    pub name: &'static str,
    how: How,
    query: Box<dyn Query>,
}

enum How {
    /// `TopDocs` by score.
    Ranked,
    /// `TopDocs` by a fast field, ascending.
    SortedBy(&'static str),
    /// Every match scores the same: the first matches in index order.
    FirstInIndexOrder,
    /// `Count` only.
    Count,
}

/// Cairn's index opened read-only by Tantivy itself.
pub struct RawIndex {
    reader: IndexReader,
    text_fields: Vec<Field>,
    in_tree: Field,
    type_is: Field,
    publish_date: Field,
    /// The opened date columns of `date-columns`, kept across its runs as Cairn keeps them.
    date_columns: cairn_index::columns::OpenColumns,
}

impl RawIndex {
    /// Opens the index in `dir` (a Cairn data folder's `index`).
    pub fn open(dir: &Path) -> anyhow::Result<RawIndex> {
        let index =
            Index::open_in_dir(dir).with_context(|| format!("opening {}", dir.display()))?;
        IndexSchema::register_tokenizers(&index);
        let schema = index.schema();
        // `_Text` and the long-text fields: the fields a bare word searches.
        let text_fields: Vec<Field> = schema
            .fields()
            .filter(|(_, e)| match e.field_type() {
                FieldType::Str(o) => o
                    .get_indexing_options()
                    .is_some_and(|i| i.tokenizer() == TEXT_TOKENIZER),
                _ => false,
            })
            .map(|(f, _)| f)
            .collect();
        anyhow::ensure!(!text_fields.is_empty(), "no full-text field in the index");
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(RawIndex {
            reader,
            text_fields,
            in_tree: schema.get_field("InTree")?,
            type_is: schema.get_field("TypeIs")?,
            publish_date: schema.get_field("PublishDate")?,
            date_columns: Default::default(),
        })
    }

    /// A searcher over the index as it is now.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The five queries for `p`.
    pub fn queries(&self, p: &QueryParams) -> anyhow::Result<Vec<RawQuery>> {
        let words = |make: &dyn Fn(Field) -> anyhow::Result<Box<dyn Query>>| {
            let subs = self
                .text_fields
                .iter()
                .map(|f| Ok((Occur::Should, make(*f)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok::<_, anyhow::Error>(Box::new(BooleanQuery::new(subs)) as Box<dyn Query>)
        };
        let term = |f: Field| -> anyhow::Result<Box<dyn Query>> {
            Ok(Box::new(TermQuery::new(
                Term::from_field_text(f, &p.term),
                IndexRecordOption::WithFreqs,
            )))
        };
        let day = |d: &str| -> anyhow::Result<DateTime> {
            let secs = crate::corpus::parse_date(&format!("{d}T00:00:00Z"))
                .with_context(|| format!("date {d}"))?;
            Ok(DateTime::from_timestamp_secs(secs))
        };
        let to = day(&p.date_to)?;
        let to_next = DateTime::from_timestamp_secs(to.into_timestamp_secs() + 86_400);
        let folder = cairn_index::document::path_key(&p.folder);
        let keyword = |f: Field, t: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(f, t),
                IndexRecordOption::Basic,
            ))
        };
        let prefix = format!("{}.*", regex_escape(&p.prefix));
        Ok(vec![
            RawQuery {
                name: "term",
                how: How::Ranked,
                query: words(&term)?,
            },
            RawQuery {
                name: "intree",
                how: How::SortedBy("Name"),
                query: Box::new(BooleanQuery::new(vec![
                    (Occur::Must, keyword(self.in_tree, &folder)),
                    (Occur::Must, keyword(self.type_is, &p.type_is)),
                ])),
            },
            RawQuery {
                name: "date",
                how: How::FirstInIndexOrder,
                query: Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_date(self.publish_date, day(&p.date_from)?)),
                    Bound::Excluded(Term::from_field_date(self.publish_date, to_next)),
                )),
            },
            RawQuery {
                name: "date-columns",
                how: How::FirstInIndexOrder,
                query: Box::new(cairn_index::date_range::DateRangeQuery::new(
                    self.publish_date,
                    Bound::Included(Term::from_field_date(self.publish_date, day(&p.date_from)?)),
                    Bound::Excluded(Term::from_field_date(self.publish_date, to_next)),
                    &self.date_columns,
                )?),
            },
            RawQuery {
                name: "prefix",
                how: How::Ranked,
                query: words(&|f| Ok(Box::new(RegexQuery::from_pattern(&prefix, f)?)))?,
            },
            RawQuery {
                name: "count",
                how: How::Count,
                query: words(&term)?,
            },
        ])
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = !c.is_alphanumeric();
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

impl RawQuery {
    /// Runs the query once: the page's ids (none for `count`) and, for `count`, the total.
    pub fn run(&self, searcher: &Searcher) -> anyhow::Result<(Vec<i64>, usize)> {
        let addrs: Vec<DocAddress> = match self.how {
            How::Count => return Ok((Vec::new(), searcher.search(&*self.query, &Count)?)),
            How::Ranked => searcher
                .search(&*self.query, &TopDocs::with_limit(TOP).order_by_score())?
                .into_iter()
                .map(|h| h.1)
                .collect(),
            How::SortedBy(field) => searcher
                .search(
                    &*self.query,
                    &TopDocs::with_limit(TOP)
                        .order_by((SortByErasedType::for_field(field), Order::Asc)),
                )?
                .into_iter()
                .map(|h| h.1)
                .collect(),
            How::FirstInIndexOrder => {
                cairn_index::search::first_in_index_order(searcher, &*self.query, 0, TOP)?
            }
        };
        let mut ids = Vec::with_capacity(addrs.len());
        let mut columns: Vec<Option<tantivy::columnar::Column<i64>>> =
            vec![None; searcher.segment_readers().len()];
        for a in &addrs {
            let col = match &mut columns[a.segment_ord as usize] {
                Some(c) => c,
                slot => slot.insert(
                    searcher
                        .segment_reader(a.segment_ord)
                        .fast_fields()
                        .i64("Id")?,
                ),
            };
            ids.extend(col.first(a.doc_id));
        }
        let n = ids.len();
        Ok((ids, n))
    }

    /// All matches (to check that the raw form answers the same question as Cairn's).
    pub fn hits(&self, searcher: &Searcher) -> anyhow::Result<usize> {
        Ok(searcher.search(&*self.query, &Count)?)
    }
}

/// Latencies (ms, sorted) of `threads` threads running `q` back to back for `secs`.
pub struct Load {
    /// Every run's latency in ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Runs per second, all threads together.
    pub per_sec: f64,
}

/// Runs `q` from `threads` threads for `secs` seconds (after one warm-up run each).
pub fn load(index: &RawIndex, q: &RawQuery, threads: usize, secs: f64) -> anyhow::Result<Load> {
    let searcher = index.searcher();
    q.run(&searcher)?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (searcher, stop) = (searcher.clone(), stop.clone());
                s.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut times = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        std::hint::black_box(q.run(&searcher)?);
                        times.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(times)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a query thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    all.sort_by(f64::total_cmp);
    Ok(Load {
        per_sec: all.len() as f64 / elapsed,
        latencies_ms: all,
    })
}
