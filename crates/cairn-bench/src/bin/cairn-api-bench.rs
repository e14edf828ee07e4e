//! `cairn-api-bench`: Cairn's HTTP API under load from a second process (wrk over
//! loopback), against the same queries on SQLite FTS5 over the same corpus.
//!
//! One run, for one corpus size:
//!
//! 1. the fixed-seed corpus (`corpus::ensure_jsonl`), imported once with `cairn import`
//!    into `DIR/N<items>/data` (kept and reused while the corpus is the same);
//! 2. SQLite FTS5 (`raw_sqlite::insert_fts5` plus an index on `publish_date`, `ANALYZE`)
//!    over the same rows in `DIR/N<items>/fts5.db`, and the five queries run in-process,
//!    single-threaded, repeatedly (p50/p99 per query);
//! 3. a copy of the imported data folder served by `cairn serve` on 127.0.0.1; wrk
//!    (`scripts/get.lua`) runs a single-item GET and the five CQL queries at each
//!    concurrency (default 1, 8 and 64 connections), then creates (`scripts/create.lua`)
//!    from 64 connections while a probe connection checks read-your-writes (create, then
//!    query the new Name at once); afterwards the index's `$count` of the folder is compared
//!    with the database's row count and with the 201 answers wrk saw.
//!
//! Results are printed as Markdown tables and, with `--json`, written as one JSON document.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_bench::corpus::{self, Row};
use cairn_bench::raw_sqlite;
use clap::Parser;
use rusqlite::{params, Connection, OpenFlags};
use serde::Serialize;

use common::{json_string, url_encode, Client, Server, WrkRun, WrkSpec};

#[derive(Parser, Debug)]
#[command(about = "Cairn HTTP API (wrk over loopback) against SQLite FTS5, same corpus")]
struct Args {
    #[command(flatten)]
    bench: common::BenchArgs,
    /// Seconds of each wrk run at 8 and more connections.
    #[arg(long, default_value_t = 20)]
    duration: u32,
    /// Seconds of each wrk run at 1 connection.
    #[arg(long, default_value_t = 10)]
    latency_duration: u32,
    /// Connection counts for the read scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<u32>,
    /// Connections of the create run.
    #[arg(long, default_value_t = 64)]
    create_connections: u32,
    /// wrk threads (at most the connection count).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Seconds spent on each FTS5 query (at least 5 runs, at most --fts5-max-runs).
    #[arg(long, default_value_t = 15.0)]
    fts5_budget: f64,
    #[arg(long, default_value_t = 2000)]
    fts5_max_runs: usize,
    /// Parts to run: `fts5`, `engine` (Cairn's query path in process), `raw` (raw
    /// Tantivy's best form of each query on Cairn's index), `http` (every scenario over
    /// HTTP), `create` (only the creates over HTTP).
    #[arg(long, value_delimiter = ',', default_value = "fts5,engine,http")]
    parts: Vec<String>,
    /// Threads of the raw Tantivy throughput run (compared with `cairn serve` at this
    /// many connections).
    #[arg(long, default_value_t = 8)]
    raw_threads: usize,
    /// Do not wait for a quiet machine before measuring.
    #[arg(long)]
    no_wait: bool,
    /// Keep an import made by another `cairn` build (at 10M items an import takes
    /// half an hour; the index format must be the same).
    #[arg(long)]
    reuse_import: bool,
    /// Serve the imported data folder itself rather than a fresh copy of it (the creates
    /// then stay in it; at 10M items a copy is tens of GB).
    #[arg(long)]
    in_place: bool,
    /// Write all results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The query parameters, all taken from the corpus.
#[derive(Debug, Clone, Serialize)]
struct Params {
    term: String,
    term_rank: usize,
    term_expected_fraction: f64,
    folder: String,
    folder_articles: u64,
    articles: u64,
    date_from: String,
    date_to: String,
    prefix: String,
    prefix_vocab_words: usize,
}

#[derive(Debug, Clone, Serialize)]
struct Scenario {
    name: &'static str,
    what: String,
    /// CQL (empty for GET and create).
    cql: String,
    /// Path and query for wrk (empty for GET by id and create).
    path: String,
}

#[derive(Debug, Clone, Serialize)]
struct Fts5Result {
    name: &'static str,
    sql: String,
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    rows: usize,
    hits: u64,
    /// Cairn only: the p50 of each half of a run, in ms: the index search, then the
    /// page's items from the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    halves_p50_ms: Option<(f64, f64)>,
}

/// Raw Tantivy on Cairn's index (`cairn_bench::raw_queries`): one thread, then
/// `threads` threads at once.
#[derive(Debug, Clone, Serialize)]
struct RawResult {
    name: &'static str,
    hits: u64,
    runs: usize,
    p50_ms: f64,
    p99_ms: f64,
    threads: usize,
    threads_per_sec: f64,
    threads_p50_ms: f64,
    threads_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct HttpResult {
    name: &'static str,
    connections: u32,
    run: WrkRun,
    hits: Option<u64>,
    quiet: String,
}

#[derive(Debug, Clone, Default, Serialize)]
struct CreateCheck {
    folder: String,
    wrk_created: u64,
    wrk_failed: u64,
    probes: u64,
    probes_found: u64,
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    index_count: u64,
    database_count: u64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    items: usize,
    seed: u64,
    cairn: String,
    cairn_source: Option<String>,
    import_secs: Option<f64>,
    fts5_build_secs: Option<f64>,
    fts5_bytes: u64,
    data_bytes: u64,
    index_bytes: u64,
    server_ready_secs: f64,
    params: Option<Params>,
    scenarios: Vec<Scenario>,
    fts5: Vec<Fts5Result>,
    engine: Vec<Fts5Result>,
    raw: Vec<RawResult>,
    http: Vec<HttpResult>,
    create_check: Option<CreateCheck>,
    notes: Vec<String>,
}

const KEY: &str = "cairn-api-bench-key-0123456789abcdef";
const TERM_RANK: usize = 20;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common::BenchPaths {
        cairn,
        scripts,
        base,
    } = args.bench.paths()?;
    let log = base.join("run.log");
    let mut report = Report {
        items: args.bench.items,
        seed: args.bench.seed,
        cairn: cairn.display().to_string(),
        cairn_source: cairn
            .parent()
            .and_then(|d| fs::read_to_string(d.join("SOURCE")).ok())
            .map(|s| s.lines().next().unwrap_or("").to_string()),
        ..Report::default()
    };

    // 1. Corpus and import.
    let corpus_path = base.join("corpus.jsonl");
    let ensured = corpus::ensure_jsonl(&corpus_path, args.bench.items, args.bench.seed)?;
    eprintln!(
        "corpus: {} lines ({} articles){}",
        ensured.meta.stats.lines,
        ensured.meta.stats.articles,
        ensured
            .generated_secs
            .map(|s| format!(", generated in {s:.1} s"))
            .unwrap_or_default()
    );
    let data = base.join("data");
    if !args.no_wait {
        eprintln!(
            "import: {}",
            common::wait_quiet(0.20, Duration::from_secs(7200))
        );
    }
    report.import_secs = common::ensure_imported(
        &cairn,
        &corpus_path,
        args.bench.items,
        &data,
        &log,
        args.reuse_import,
    )?;
    if let Some(s) = report.import_secs {
        eprintln!("cairn import: {s:.1} s");
    }
    report.data_bytes = cairn_bench::measure::dir_size(&data)?;
    report.index_bytes = cairn_bench::measure::dir_size(&data.join("index")).unwrap_or(0);

    // 2. Parameters from the corpus (and the FTS5 rows when the database must be built).
    let fts_db = base.join("fts5.db");
    let fts_marker = base.join("fts5.db.done");
    let need_fts_build = args.parts.iter().any(|p| p == "fts5")
        && fs::read_to_string(&fts_marker).ok().as_deref() != Some(&corpus_key(&args));
    let (params, rows) = scan_corpus(&corpus_path, need_fts_build)?;
    eprintln!("params: {params:?}");
    if let Some(rows) = rows {
        for p in raw_sqlite::db_files(&fts_db) {
            let _ = fs::remove_file(p);
        }
        let t0 = Instant::now();
        raw_sqlite::insert_fts5(&rows, &fts_db, raw_sqlite::DEFAULT_BATCH_ROWS)?;
        drop(rows);
        let conn = raw_sqlite::open(&fts_db)?;
        conn.execute_batch(
            "CREATE INDEX items_publish_date ON items(publish_date); ANALYZE;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        drop(conn);
        report.fts5_build_secs = Some(t0.elapsed().as_secs_f64());
        fs::write(&fts_marker, corpus_key(&args))?;
        eprintln!(
            "FTS5 database built in {:.1} s",
            report.fts5_build_secs.unwrap_or(0.0)
        );
    }
    report.fts5_bytes = raw_sqlite::db_files(&fts_db)
        .iter()
        .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    let scenarios = scenarios(&params);
    report.scenarios = scenarios.clone();
    report.params = Some(params.clone());

    // Before each in-process part: wait for a quiet machine and note how it was.
    let quiet = |part: &str, notes: &mut Vec<String>| {
        if !args.no_wait {
            let q = common::wait_quiet(0.20, Duration::from_secs(7200));
            eprintln!("{part}: {q}");
            notes.push(format!("{part}: {q}"));
        }
    };

    // 3. FTS5, in-process.
    if args.parts.iter().any(|p| p == "fts5") {
        quiet("fts5", &mut report.notes);
        report.fts5 = run_fts5(&fts_db, &params, args.fts5_budget, args.fts5_max_runs)?;
    }

    // 4. Cairn's query path in-process, measured as FTS5 is.
    if args.parts.iter().any(|p| p == "engine") {
        quiet("engine", &mut report.notes);
        report.engine = run_engine(&data, &scenarios, args.fts5_budget, args.fts5_max_runs)?;
    }

    // 4b. Raw Tantivy on Cairn's own index: the floor of each query.
    if args.parts.iter().any(|p| p == "raw") {
        quiet("raw", &mut report.notes);
        report.raw = run_raw(&data, &params, &args)?;
    }

    // 5. HTTP.
    if args.parts.iter().any(|p| p == "http" || p == "create") {
        run_http(&args, &cairn, &scripts, &data, &base, &mut report)?;
    }

    print_report(&report);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}

fn corpus_key(args: &Args) -> String {
    format!(
        "{} {} {}",
        args.bench.items,
        args.bench.seed,
        corpus::GENERATOR_VERSION
    )
}

/// Reads the corpus once: folder subtree sizes (for InTree), the article count, and the
/// rows when the FTS5 database must be built.
fn scan_corpus(path: &Path, want_rows: bool) -> anyhow::Result<(Params, Option<Vec<Row>>)> {
    let mut subtree: HashMap<String, u64> = HashMap::new();
    let mut articles = 0u64;
    let mut rows = want_rows.then(Vec::new);
    for (i, item) in corpus::read_jsonl(path)?.enumerate() {
        let item = item?;
        if item.type_name == "Article" {
            articles += 1;
            let mut p = item.parent_path();
            while p.len() > corpus::ROOT_PATH.len() {
                *subtree.entry(p.to_string()).or_default() += 1;
                p = corpus::split_path(p).0;
            }
        }
        if let Some(rows) = rows.as_mut() {
            rows.push(Row::from_item(i as i64 + 1, &item));
        }
    }
    // InTree: the folder whose subtree holds closest to 10% of all articles.
    let want = articles / 10;
    let (folder, folder_articles) = subtree
        .iter()
        .min_by_key(|(p, n)| (n.abs_diff(want), (*p).clone()))
        .map(|(p, n)| (p.clone(), *n))
        .context("the corpus has no folders below its root")?;
    // Prefix: three letters of a mid-frequency word that start 3..=10 vocabulary words.
    let vocab = corpus::vocabulary();
    let prefix = (100..vocab.len())
        .filter_map(|r| vocab[r].get(..3))
        .find(|p| (3..=10).contains(&vocab.iter().filter(|w| w.starts_with(p)).count()))
        .unwrap_or("bra")
        .to_string();
    let prefix_vocab_words = vocab.iter().filter(|w| w.starts_with(&prefix)).count();
    let term = corpus::word(TERM_RANK).to_string();
    Ok((
        Params {
            term_expected_fraction: corpus::expected_doc_fraction(TERM_RANK, 175),
            term,
            term_rank: TERM_RANK,
            folder,
            folder_articles,
            articles,
            date_from: "2020-01-01".into(),
            date_to: "2020-12-31".into(),
            prefix,
            prefix_vocab_words,
        },
        rows,
    ))
}

const Q_SUFFIX: &str = "&$top=20&metadata=no&$select=Id,Name";

fn scenarios(p: &Params) -> Vec<Scenario> {
    let q = |name: &'static str, what: String, cql: String, suffix: &str| Scenario {
        name,
        what,
        path: format!("/odata.svc/Root?query={}{}", url_encode(&cql), suffix),
        cql,
    };
    vec![
        Scenario {
            name: "get",
            what: "single item by id, /odata.svc/content(ID), random existing ids".into(),
            cql: String::new(),
            path: String::new(),
        },
        q(
            "term",
            format!("a term (rank {}), top 20 by relevance", p.term_rank),
            p.term.clone(),
            Q_SUFFIX,
        ),
        q(
            "intree",
            "InTree + TypeIs + sort by Name + top 20".into(),
            format!(
                "InTree:'{}' AND TypeIs:Article .SORT:Name .TOP:20",
                p.folder
            ),
            Q_SUFFIX,
        ),
        q(
            "date",
            "PublishDate range (one year), top 20".into(),
            format!("PublishDate:['{}' TO '{}']", p.date_from, p.date_to),
            Q_SUFFIX,
        ),
        q(
            "prefix",
            "wildcard prefix, top 20 by relevance".into(),
            format!("{}*", p.prefix),
            Q_SUFFIX,
        ),
        q(
            "count",
            "the term with .COUNTONLY".into(),
            format!("{} .COUNTONLY", p.term),
            "&metadata=no",
        ),
        Scenario {
            name: "create",
            what: "POST an Article into a folder; answers when searchable".into(),
            cql: String::new(),
            path: String::new(),
        },
    ]
}

// ---------------------------------------------------------------------------
// FTS5
// ---------------------------------------------------------------------------

fn run_fts5(
    db: &Path,
    p: &Params,
    budget: f64,
    max_runs: usize,
) -> anyhow::Result<Vec<Fts5Result>> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let from = corpus::parse_date(&format!("{}T00:00:00Z", p.date_from)).expect("date");
    let to = corpus::parse_date(&format!("{}T00:00:00Z", p.date_to)).expect("date") + 86_400;
    let folder_lo = format!("{}/", p.folder);
    let folder_hi = format!("{}0", p.folder); // '0' follows '/'
    let prefix = format!("{}*", p.prefix);
    let ranked = "SELECT i.id, i.name FROM (SELECT rowid, rank FROM items_fts \
                  WHERE items_fts MATCH ?1 ORDER BY rank LIMIT 20) f \
                  JOIN items i ON i.id = f.rowid ORDER BY f.rank";
    let intree = "SELECT id, name FROM items WHERE path > ?1 AND path < ?2 \
                  AND type = 'Article' ORDER BY name LIMIT 20";
    let date = "SELECT id, name FROM items WHERE publish_date >= ?1 AND publish_date < ?2 LIMIT 20";
    let count = "SELECT count(*) FROM items_fts WHERE items_fts MATCH ?1";

    type Bind = Vec<rusqlite::types::Value>;
    let text = |s: &str| rusqlite::types::Value::Text(s.to_string());
    let int = rusqlite::types::Value::Integer;
    let cases: Vec<(&'static str, &str, Bind, String, Bind)> = vec![
        (
            "term",
            ranked,
            vec![text(&p.term)],
            count.to_string(),
            vec![text(&p.term)],
        ),
        (
            "intree",
            intree,
            vec![text(&folder_lo), text(&folder_hi)],
            "SELECT count(*) FROM items WHERE path > ?1 AND path < ?2 AND type = 'Article'".into(),
            vec![text(&folder_lo), text(&folder_hi)],
        ),
        (
            "date",
            date,
            vec![int(from), int(to)],
            "SELECT count(*) FROM items WHERE publish_date >= ?1 AND publish_date < ?2".into(),
            vec![int(from), int(to)],
        ),
        (
            "prefix",
            ranked,
            vec![text(&prefix)],
            count.to_string(),
            vec![text(&prefix)],
        ),
        (
            "count",
            count,
            vec![text(&p.term)],
            count.to_string(),
            vec![text(&p.term)],
        ),
    ];
    let mut out = Vec::new();
    for (name, sql, bind, count_sql, count_bind) in cases {
        let hits: i64 = conn.query_row(
            &count_sql,
            rusqlite::params_from_iter(count_bind.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(sql)?;
        let once = |stmt: &mut rusqlite::Statement| -> anyhow::Result<usize> {
            let mut rows = stmt.query(rusqlite::params_from_iter(bind.iter()))?;
            let mut n = 0usize;
            while let Some(r) = rows.next()? {
                let v: rusqlite::types::Value = r.get(0)?;
                std::hint::black_box(v);
                if r.as_ref().column_count() > 1 {
                    let s: String = r.get(1)?;
                    std::hint::black_box(s);
                }
                n += 1;
            }
            Ok(n)
        };
        let nrows = once(&mut stmt)?; // warm-up
        let mut times = Vec::new();
        let t0 = Instant::now();
        while times.len() < max_runs && (times.len() < 5 || t0.elapsed().as_secs_f64() < budget) {
            let t = Instant::now();
            let n = once(&mut stmt)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(n);
        }
        times.sort_by(f64::total_cmp);
        let r = Fts5Result {
            name,
            sql: sql.split_whitespace().collect::<Vec<_>>().join(" "),
            runs: times.len(),
            p50_ms: common::percentile(&times, 50.0),
            p99_ms: common::percentile(&times, 99.0),
            mean_ms: times.iter().sum::<f64>() / times.len() as f64,
            rows: nrows,
            hits: hits as u64,
            halves_p50_ms: None,
        };
        eprintln!(
            "fts5 {name}: p50 {:.3} ms, p99 {:.3} ms over {} runs; {} hits",
            r.p50_ms, r.p99_ms, r.runs, r.hits
        );
        out.push(r);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Cairn in-process
// ---------------------------------------------------------------------------

/// The five CQL queries through the code a `GET /odata.svc/Root?query=...&$top=20`
/// runs, minus HTTP and JSON: `cairn_search::run_list` (CQL parse, the `/Root`
/// subtree filter, the Tantivy search; no total, as without `$inlinecount`), then the
/// page's items from the database (as the FTS5 statements fetch id and name). Single
/// thread, in process, repeated like the FTS5 queries: the same footing as FTS5.
fn run_engine(
    data: &Path,
    scenarios: &[Scenario],
    budget: f64,
    max_runs: usize,
) -> anyhow::Result<Vec<Fts5Result>> {
    let (store, indexer) = cairn_bench::cairn::open_repository(data)?;
    let mut out = Vec::new();
    for sc in scenarios.iter().filter(|s| !s.cql.is_empty()) {
        let req = cairn_search::ListRequest {
            container: "/Root".into(),
            query: Some(sc.cql.clone()),
            top: Some(20),
            max_top: 1000,
            count: false,
            ..Default::default()
        };
        // As much of each item as the HTTP request's `$select` shows.
        let opts = cairn_api::odata::options::Options::parse(
            sc.path.split_once('?').map(|(_, q)| q),
            usize::MAX,
        )
        .map_err(|e| anyhow::anyhow!("{}: {}", sc.path, e.message))?;
        let detail = opts.node_detail();
        // The rows, the hits, and the seconds of the search alone.
        let once = || -> anyhow::Result<(usize, usize, f64)> {
            let t = Instant::now();
            let answer = cairn_search::run_list(&indexer, &req)
                .map_err(|e| anyhow::anyhow!("{}: {e}", sc.cql))?;
            let search = t.elapsed().as_secs_f64();
            let ids: Vec<cairn_store::NodeId> = answer
                .ids
                .iter()
                .copied()
                .map(cairn_store::NodeId)
                .collect();
            let nodes = store.nodes_by_ids_with(&ids, detail)?;
            for n in &nodes {
                std::hint::black_box(&n.name);
            }
            Ok((nodes.len(), answer.total, search))
        };
        let (rows, _, _) = once()?; // warm-up
        let (mut times, mut searches, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        let t0 = Instant::now();
        while times.len() < max_runs && (times.len() < 5 || t0.elapsed().as_secs_f64() < budget) {
            let t = Instant::now();
            let r = once()?;
            let whole = t.elapsed().as_secs_f64();
            times.push(whole * 1000.0);
            searches.push(r.2 * 1000.0);
            reads.push((whole - r.2) * 1000.0);
            std::hint::black_box(r);
        }
        for v in [&mut times, &mut searches, &mut reads] {
            v.sort_by(f64::total_cmp);
        }
        let counted = cairn_search::run_list(
            &indexer,
            &cairn_search::ListRequest {
                count: true,
                ..req.clone()
            },
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", sc.cql))?;
        let r = Fts5Result {
            name: sc.name,
            sql: sc.cql.clone(),
            runs: times.len(),
            p50_ms: common::percentile(&times, 50.0),
            p99_ms: common::percentile(&times, 99.0),
            mean_ms: times.iter().sum::<f64>() / times.len() as f64,
            rows,
            hits: counted.total as u64,
            halves_p50_ms: Some((
                common::percentile(&searches, 50.0),
                common::percentile(&reads, 50.0),
            )),
        };
        eprintln!(
            "engine {}: p50 {:.3} ms (search {:.3} + items {:.3}), p99 {:.3} ms over {} runs; {} hits",
            r.name,
            r.p50_ms,
            common::percentile(&searches, 50.0),
            common::percentile(&reads, 50.0),
            r.p99_ms,
            r.runs,
            r.hits
        );
        out.push(r);
    }
    indexer.shutdown(None)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Raw Tantivy
// ---------------------------------------------------------------------------

/// The five queries as raw Tantivy runs them best, on the imported index: one thread
/// repeated like the FTS5 statements, then `--raw-threads` threads for `--duration`.
fn run_raw(data: &Path, p: &Params, args: &Args) -> anyhow::Result<Vec<RawResult>> {
    use cairn_bench::raw_queries::{load, QueryParams, RawIndex};
    let index = RawIndex::open(&data.join("index"))?;
    let queries = index.queries(&QueryParams {
        term: p.term.clone(),
        folder: p.folder.clone(),
        type_is: "article".into(),
        date_from: p.date_from.clone(),
        date_to: p.date_to.clone(),
        prefix: p.prefix.clone(),
    })?;
    let searcher = index.searcher();
    let mut out = Vec::new();
    for q in &queries {
        let hits = q.hits(&searcher)? as u64;
        let one = load(&index, q, 1, args.fts5_budget)?;
        let many = load(&index, q, args.raw_threads, f64::from(args.duration))?;
        let r = RawResult {
            name: q.name,
            hits,
            runs: one.latencies_ms.len(),
            p50_ms: common::percentile(&one.latencies_ms, 50.0),
            p99_ms: common::percentile(&one.latencies_ms, 99.0),
            threads: args.raw_threads,
            threads_per_sec: many.per_sec,
            threads_p50_ms: common::percentile(&many.latencies_ms, 50.0),
            threads_p99_ms: common::percentile(&many.latencies_ms, 99.0),
        };
        eprintln!(
            "raw {}: p50 {:.3} ms, p99 {:.3} ms over {} runs; {} threads: {:.0}/s (p50 {:.3}, p99 {:.3} ms); {} hits",
            r.name, r.p50_ms, r.p99_ms, r.runs, r.threads, r.threads_per_sec, r.threads_p50_ms, r.threads_p99_ms, r.hits
        );
        out.push(r);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

fn run_http(
    args: &Args,
    cairn: &Path,
    scripts: &Path,
    data: &Path,
    base: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let log = base.join("serve.log");
    let work = if args.in_place {
        data.to_path_buf()
    } else {
        let work = base.join("work");
        common::remove_tree(&work)?;
        eprintln!("copying {} to {}", data.display(), work.display());
        common::copy_tree(data, &work)?;
        // The copy's writeback would otherwise run under the first measurements (it made
        // the creates' p99 0.5-0.9 s): wait until the kernel has written it.
        let secs = common::settle_writeback();
        eprintln!("the copy written back in {secs:.1} s");
        work
    };
    let server = Server::start(cairn, &work, KEY, &log, Duration::from_secs(3600))?;
    report.server_ready_secs = server.ready_secs;
    eprintln!(
        "cairn serve on {} (ready after {:.2} s)",
        server.addr, server.ready_secs
    );
    let result = http_scenarios(args, scripts, &server, &work, report);
    let stop = server.stop(Duration::from_secs(300));
    result?;
    stop?;
    Ok(())
}

fn http_scenarios(
    args: &Args,
    scripts: &Path,
    server: &Server,
    work: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut client = Client::new(server.addr, KEY);
    let get_script = scripts.join("get.lua");
    let create_script = scripts.join("create.lua");

    // The id range of the corpus's articles (ids are given in import order).
    let id_of = |client: &mut Client, sort: &str| -> anyhow::Result<u64> {
        let cql = format!("InTree:'{}' {sort}:Id .TOP:1", corpus::ROOT_PATH);
        let a = client
            .get(&format!(
                "/odata.svc/Root?query={}&metadata=no&$select=Id",
                url_encode(&cql)
            ))?
            .ok()?;
        a.json()?["d"]["results"][0]["Id"]
            .as_u64()
            .context("no Id in the answer")
    };
    let lo = id_of(&mut client, ".SORT")?;
    let hi = id_of(&mut client, ".REVERSESORT")?;
    for id in [lo, (lo + hi) / 2, hi] {
        client
            .get(&format!("/odata.svc/content({id})?metadata=no"))?
            .ok()
            .with_context(|| format!("content({id})"))?;
    }
    eprintln!("ids {lo}..={hi}");

    // Check every query once and record its total hits.
    let mut hits: HashMap<&str, u64> = HashMap::new();
    for s in report.scenarios.iter().filter(|s| !s.path.is_empty()) {
        let a = client
            .get(&format!("{}&$inlinecount=allpages", s.path))?
            .ok()
            .with_context(|| format!("scenario {}", s.name))?;
        let v = a.json()?;
        let n = v["d"]["__count"].as_u64().unwrap_or(0);
        let results = v["d"]["results"].as_array().map_or(0, Vec::len);
        eprintln!("{}: {n} hits, {results} in the answer", s.name);
        if s.name != "count" && n > 0 && results == 0 {
            bail!("{}: no results in {:.300}", s.name, a.body);
        }
        hits.insert(s.name, n);
    }

    let key = KEY.to_string();
    let reads: Vec<(&'static str, String, Vec<String>)> = report
        .scenarios
        .iter()
        .filter(|s| s.name != "create")
        .map(|s| {
            if s.name == "get" {
                (
                    s.name,
                    server.url("/"),
                    vec![key.clone(), "ids".into(), lo.to_string(), hi.to_string()],
                )
            } else {
                (s.name, server.url(&s.path), vec![key.clone()])
            }
        })
        .collect();
    // Part `create` alone runs only the creates.
    let reads_wanted = args.parts.iter().any(|p| p == "http");
    for (name, url, wargs) in reads.iter().filter(|_| reads_wanted) {
        for &c in &args.concurrency {
            let spec = WrkSpec {
                script: &get_script,
                url,
                threads: args.threads.min(c),
                connections: c,
                secs: if c == 1 {
                    args.latency_duration
                } else {
                    args.duration
                },
                args: wargs,
            };
            let (run, quiet) = least_disturbed(args, || {
                let run = common::run_wrk(&spec, Some(server.pid()))?;
                eprintln!(
                    "{name} c{c}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}, errors {}, others' CPU {:.0}%",
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    run.non_2xx,
                    run.socket_errors,
                    run.others_cpu * 100.0
                );
                Ok((run.others_cpu, run))
            })?;
            report.http.push(HttpResult {
                name,
                connections: c,
                run,
                hits: hits.get(name).copied(),
                quiet,
            });
        }
    }

    // Creates, with a read-your-writes probe on one more connection; a new folder for
    // each attempt.
    let ((run, check), quiet) = least_disturbed(args, || {
        let (run, check) = creates(args, &create_script, server, work, &mut client)?;
        Ok((run.others_cpu, (run, check)))
    })?;
    report.http.push(HttpResult {
        name: "create",
        connections: args.create_connections,
        run,
        hits: None,
        quiet,
    });
    report.create_check = Some(check);
    Ok(())
}

/// Runs `attempt` after waiting for a quiet machine, up to three times while others
/// used more than 10% of the CPU during it; keeps the least disturbed result.
fn least_disturbed<T>(
    args: &Args,
    mut attempt: impl FnMut() -> anyhow::Result<(f64, T)>,
) -> anyhow::Result<(T, String)> {
    let mut best: Option<(f64, T, String)> = None;
    for i in 0..3 {
        let quiet = if args.no_wait {
            "not checked".to_string()
        } else {
            common::wait_quiet(0.20, Duration::from_secs(7200))
        };
        let (others, r) = attempt()?;
        let quiet = format!("attempt {}: {quiet}", i + 1);
        if best.as_ref().is_none_or(|(o, _, _)| others < *o) {
            best = Some((others, r, quiet));
        }
        if others <= 0.10 || args.no_wait {
            break;
        }
        eprintln!("others used {:.0}% of the CPU; again", others * 100.0);
    }
    let (_, r, q) = best.expect("at least one attempt");
    Ok((r, q))
}

fn creates(
    args: &Args,
    create_script: &Path,
    server: &Server,
    work: &Path,
    client: &mut Client,
) -> anyhow::Result<(WrkRun, CreateCheck)> {
    let key = KEY.to_string();
    let tag = common::run_tag();
    let folder_name = format!("Bench-{tag}");
    client
        .post(
            "/odata.svc/Root",
            &format!(
                "{{\"__ContentType\":\"Folder\",\"Name\":{}}}",
                json_string(&folder_name)
            ),
        )?
        .ok()?;
    let folder_path = format!("/odata.svc/Root/{folder_name}");
    let text: String = (0..60)
        .map(|i| corpus::word((i * 37) % 1500))
        .collect::<Vec<_>>()
        .join(" ");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        let (addr, folder_path, folder_name) =
            (server.addr, folder_path.clone(), folder_name.clone());
        thread::spawn(move || -> anyhow::Result<(u64, u64, Vec<f64>)> {
            let mut c = Client::new(addr, KEY);
            let (mut n, mut found) = (0u64, 0u64);
            let mut times = Vec::new();
            // Let wrk ramp up first.
            thread::sleep(Duration::from_millis(500));
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("probe-{n}");
                let t = Instant::now();
                c.post(
                    &folder_path,
                    &format!(
                        "{{\"__ContentType\":\"Article\",\"Name\":\"{name}\",\"Body\":\"probe\"}}"
                    ),
                )?
                .ok()?;
                let cql = format!("InFolder:'/Root/{folder_name}' AND Name:'{name}' .COUNTONLY");
                let a = c
                    .get(&format!(
                        "/odata.svc/Root?query={}&metadata=no",
                        url_encode(&cql)
                    ))?
                    .ok()?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                if a.json()?["d"]["__count"].as_u64() == Some(1) {
                    found += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok((n, found, times))
        })
    };
    let wargs = vec![
        key.clone(),
        folder_path.clone(),
        tag.clone(),
        text.replace('"', ""),
    ];
    let c = args.create_connections;
    let run = common::run_wrk(
        &WrkSpec {
            script: create_script,
            url: &server.url("/"),
            threads: args.threads.min(c),
            connections: c,
            secs: args.duration,
            args: &wargs,
        },
        Some(server.pid()),
    );
    stop.store(true, Ordering::SeqCst);
    let probe = probe.join().expect("probe thread");
    let run = run?;
    let (probes, probes_found, mut ptimes) = probe?;
    ptimes.sort_by(f64::total_cmp);
    // What the index holds for the folder and what the database holds. The creates wrk
    // had in flight when it stopped are still being committed and indexed: compare until
    // the two agree, for at most 10 s (a difference that stays is a lost item).
    let settle = Instant::now();
    let (index_count, database_count) = loop {
        let database_count = database_children(work, &format!("/Root/{folder_name}"))?;
        let index_count: u64 = client
            .get(&format!("{folder_path}/$count"))?
            .ok()?
            .body
            .trim()
            .parse()
            .context("$count")?;
        if index_count == database_count || settle.elapsed() > Duration::from_secs(10) {
            break (index_count, database_count);
        }
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "index and database compared {:.2} s after wrk ended",
        settle.elapsed().as_secs_f64()
    );
    let check = CreateCheck {
        folder: format!("/Root/{folder_name}"),
        wrk_created: run.lua.get("created").copied().unwrap_or(0),
        wrk_failed: run.lua.get("failed").copied().unwrap_or(0),
        probes,
        probes_found,
        probe_p50_ms: common::percentile(&ptimes, 50.0),
        probe_p99_ms: common::percentile(&ptimes, 99.0),
        index_count,
        database_count,
    };
    eprintln!(
        "create c{c}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, others' CPU {:.0}%; {check:?}",
        run.rps,
        run.p50_ms,
        run.p99_ms,
        run.others_cpu * 100.0
    );
    Ok((run, check))
}

/// Children of `path` in the served repository's database, read beside the running
/// server: the PostgreSQL database that `CAIRN_DATABASE` names (the bench's `cairn`
/// processes inherit it), else the data folder's SQLite file (read-only).
fn database_children(data: &Path, path: &str) -> anyhow::Result<u64> {
    let sql = "SELECT count(*) FROM nodes WHERE parent_id = (SELECT id FROM nodes WHERE path = $1)";
    if let Some(url) = std::env::var("CAIRN_DATABASE")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    {
        let mut c = postgres::Client::connect(&url, postgres::NoTls)?;
        let n: i64 = c.query_one(sql, &[&path])?.get(0);
        return Ok(n as u64);
    }
    let conn = Connection::open_with_flags(
        data.join("cairn.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let n: i64 = conn.query_row(&sql.replace("$1", "?1"), params![path], |r| r.get(0))?;
    Ok(n as u64)
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn print_report(r: &Report) {
    println!(
        "## {} items (seed {}), cairn {}",
        r.items,
        r.seed,
        r.cairn_source.as_deref().unwrap_or("?")
    );
    if let Some(p) = &r.params {
        println!();
        println!(
            "term `{}` (rank {}, expected in {:.0}% of articles); InTree `{}` ({} of {} articles); \
             dates {}..{}; prefix `{}*` ({} vocabulary words)",
            p.term,
            p.term_rank,
            p.term_expected_fraction * 100.0,
            p.folder,
            p.folder_articles,
            p.articles,
            p.date_from,
            p.date_to,
            p.prefix,
            p.prefix_vocab_words
        );
    }
    println!();
    println!(
        "import {}; data folder {:.0} MiB (index {:.0} MiB); FTS5 database {:.0} MiB{}; server ready {:.2} s after start",
        r.import_secs
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "reused".into()),
        r.data_bytes as f64 / 1048576.0,
        r.index_bytes as f64 / 1048576.0,
        r.fts5_bytes as f64 / 1048576.0,
        r.fts5_build_secs
            .map(|s| format!(" (built in {s:.1} s)"))
            .unwrap_or_default(),
        r.server_ready_secs
    );
    println!();
    println!("| scenario | conns | req/s | p50 ms | p99 ms | hits | non-2xx | others' CPU |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for h in &r.http {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.0}% |",
            h.name,
            h.connections,
            h.run.rps,
            h.run.p50_ms,
            h.run.p99_ms,
            h.hits.map(|n| n.to_string()).unwrap_or_default(),
            h.run.non_2xx + h.run.socket_errors,
            h.run.others_cpu * 100.0
        );
    }
    if !r.fts5.is_empty() {
        println!();
        println!("| query | FTS5 runs | FTS5 p50 ms | FTS5 p99 ms | FTS5 hits | Cairn c1 p50 | c1 p99 | ratio p50 c1 | Cairn c8 p50 | c8 p99 | ratio p50 c8 |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in &r.fts5 {
            let at = |c: u32| {
                r.http
                    .iter()
                    .find(|h| h.name == f.name && h.connections == c)
            };
            let cell = |c: u32| match at(c) {
                Some(h) => format!(
                    "{:.2} | {:.2} | {:.3}",
                    h.run.p50_ms,
                    h.run.p99_ms,
                    h.run.p50_ms / f.p50_ms
                ),
                None => "- | - | -".into(),
            };
            println!(
                "| {} | {} | {:.3} | {:.3} | {} | {} | {} |",
                f.name,
                f.runs,
                f.p50_ms,
                f.p99_ms,
                f.hits,
                cell(1),
                cell(8)
            );
        }
    }
    if !r.engine.is_empty() {
        println!();
        println!("In process, single thread, no HTTP (Cairn: `run_list` + the page's items from the database):");
        println!();
        println!("| query | FTS5 p50 ms | FTS5 p99 ms | Cairn runs | Cairn p50 ms | of it: search p50 | items p50 | Cairn p99 ms | Cairn hits | **Cairn p50 / FTS5 p50** |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for e in &r.engine {
            let f = r.fts5.iter().find(|f| f.name == e.name);
            let (search, items) = e.halves_p50_ms.unwrap_or_default();
            println!(
                "| {} | {} | {} | {} | {:.3} | {search:.3} | {items:.3} | {:.3} | {} | {} |",
                e.name,
                f.map(|f| format!("{:.3}", f.p50_ms)).unwrap_or_default(),
                f.map(|f| format!("{:.3}", f.p99_ms)).unwrap_or_default(),
                e.runs,
                e.p50_ms,
                e.p99_ms,
                e.hits,
                f.map(|f| format!("**{:.3}**", e.p50_ms / f.p50_ms))
                    .unwrap_or_default(),
            );
        }
    }
    if !r.raw.is_empty() {
        println!();
        println!(
            "Raw Tantivy on Cairn's index (in process) against Cairn over HTTP (targets: p50 ≤ 1.5× at 1 connection; \
             req/s ≥ 0.6× and p99 ≤ 4× p50 at {} connections):",
            r.raw[0].threads
        );
        println!();
        println!("| query | raw hits | Cairn hits | raw p50 ms | Cairn c1 p50 ms | **c1 ÷ raw** | raw {0}-thread q/s | Cairn c{0} req/s | **c{0} ÷ raw** | Cairn c{0} p50 | c{0} p99 | **p99 ÷ p50** |", r.raw[0].threads);
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for x in &r.raw {
            let at = |c: usize| {
                r.http
                    .iter()
                    .find(|h| h.name == x.name && h.connections as usize == c)
            };
            let (c1, cn) = (at(1), at(x.threads));
            let f = |v: Option<f64>, d: usize| v.map(|v| format!("{v:.d$}")).unwrap_or("-".into());
            println!(
                "| {} | {} | {} | {:.3} | {} | **{}** | {:.0} | {} | **{}** | {} | {} | **{}** |",
                x.name,
                x.hits,
                c1.or(cn)
                    .and_then(|h| h.hits)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                x.p50_ms,
                f(c1.map(|h| h.run.p50_ms), 3),
                f(c1.map(|h| h.run.p50_ms / x.p50_ms), 2),
                x.threads_per_sec,
                f(cn.map(|h| h.run.rps), 0),
                f(cn.map(|h| h.run.rps / x.threads_per_sec), 2),
                f(cn.map(|h| h.run.p50_ms), 2),
                f(cn.map(|h| h.run.p99_ms), 2),
                f(cn.map(|h| h.run.p99_ms / h.run.p50_ms), 1),
            );
        }
    }
    if let Some(c) = &r.create_check {
        println!();
        println!(
            "creates into {}: wrk saw {} created (201) and {} other answers; probe: {}/{} found by a query right after the create answered (create+query p50 {:.1} ms, p99 {:.1} ms); index $count {} vs database {} children",
            c.folder,
            c.wrk_created,
            c.wrk_failed,
            c.probes_found,
            c.probes,
            c.probe_p50_ms,
            c.probe_p99_ms,
            c.index_count,
            c.database_count
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
