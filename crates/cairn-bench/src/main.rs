//! `cairn-bench`: command-line driver for Cairn's benchmarks.
//!
//! * `cairn-bench corpus --items N --seed S --out FILE.jsonl` writes the
//!   fixed-seed corpus in Cairn's import format (`--out -` for stdout).
//! * `cairn-bench raw --items N --seed S --work DIR` (re)uses `DIR/corpus.jsonl`,
//!   parses it into typed rows (timed separately), then runs the raw SQLite,
//!   SQLite+FTS5 and Tantivy baselines on the same rows, each into its own fresh
//!   subfolder of `DIR`, and prints a table.
//! * `cairn-bench ingest --items N --seed S --work DIR [--cairn PATH]` measures Cairn's
//!   own ingest path against the raw SQLite and Tantivy baselines of the same run: bulk
//!   import with the `cairn` binary (subprocess), the store's import without an index,
//!   rebuilding the index from the database, and restoring an old index plus catching
//!   it up; prints a table and the ratios against the baselines.
//!
//! `--json FILE` (any subcommand) appends every result record as a JSON line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cairn_bench::cairn;
use cairn_bench::corpus::{self, CorpusStats};
use cairn_bench::measure::{self, Record, Report};
use cairn_bench::{raw_sqlite, raw_tantivy};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "cairn-bench", version, about = "Cairn benchmarks")]
struct Cli {
    /// Append every result record as a JSON line to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the fixed-seed corpus as JSON lines (Cairn's import format).
    Corpus {
        /// Number of lines (folders + articles).
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file, `-` for stdout.
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
    },
    /// Raw-engine baselines (SQLite, SQLite+FTS5, Tantivy) on the same corpus.
    Raw(RawArgs),
    /// Cairn's ingest path (import, rebuild, catch-up) against the raw baselines.
    Ingest(IngestArgs),
}

#[derive(clap::Args, Debug)]
struct IngestArgs {
    /// Number of corpus lines (folders + articles).
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Work directory (holds corpus.jsonl, the baselines' folders and cairn-data).
    #[arg(long, value_name = "DIR", default_value_os_t = default_ingest_dir())]
    work: PathBuf,
    /// The `cairn` binary (default: the `cairn` next to this executable).
    #[arg(long, value_name = "PATH")]
    cairn: Option<PathBuf>,
    /// Items added for the catch-up (default: min(items / 10, 100000)).
    #[arg(long)]
    extra: Option<usize>,
    /// Skip the two halves of the import measured alone: the store-only import (no index)
    /// and Tantivy on Cairn's documents (no database).
    #[arg(long)]
    no_halves: bool,
}

#[derive(clap::Args, Debug)]
struct RawArgs {
    /// Number of corpus lines (folders + articles).
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Work directory (holds corpus.jsonl and one subfolder per engine).
    #[arg(long, value_name = "DIR", default_value_os_t = default_work_dir())]
    work: PathBuf,
    /// Rows per SQLite transaction.
    #[arg(long, default_value_t = raw_sqlite::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// Tantivy indexing threads.
    #[arg(long, default_value_t = raw_tantivy::DEFAULT_THREADS)]
    threads: usize,
    /// Tantivy writer memory budget in MiB (overall, split across threads).
    #[arg(long, default_value_t = raw_tantivy::DEFAULT_HEAP_BYTES / (1024 * 1024))]
    heap_mb: usize,
    /// Engines to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,fts5,tantivy")]
    engines: Vec<Engine>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// Plain SQLite table.
    Sqlite,
    /// SQLite table plus contentless FTS5 table.
    Fts5,
    /// Tantivy index.
    Tantivy,
}

impl Engine {
    fn record_name(self) -> &'static str {
        match self {
            Engine::Sqlite => "raw-sqlite",
            Engine::Fts5 => "raw-sqlite-fts5",
            Engine::Tantivy => "raw-tantivy",
        }
    }
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("cairn-bench")
}

fn default_ingest_dir() -> PathBuf {
    std::env::temp_dir().join("cairn-bench-ingest")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut report = Report::new(cli.json.clone());
    match cli.command {
        Command::Corpus { items, seed, out } => {
            corpus_cmd(items, seed, &out, &mut report)?;
            if out == Path::new("-") {
                // stdout carries the corpus itself.
                measure::write_table(&report.records, io::stderr().lock())?;
                return Ok(());
            }
        }
        Command::Raw(args) => raw_cmd(&args, &mut report)?,
        Command::Ingest(args) => {
            let summary = ingest_cmd(&args, &mut report)?;
            report.print()?;
            println!();
            for line in summary {
                println!("{line}");
            }
            return Ok(());
        }
    }
    report.print()?;
    Ok(())
}

fn describe(stats: &CorpusStats) -> String {
    format!(
        "{} lines: {} folders, {} articles ({:.1}% articles), folder depth <= {}, \
         {}..{} children per folder, {:.1} MiB",
        stats.lines,
        stats.folders,
        stats.articles,
        100.0 * stats.articles as f64 / stats.lines.max(1) as f64,
        stats.max_depth,
        stats.min_children,
        stats.max_children,
        stats.bytes as f64 / (1024.0 * 1024.0)
    )
}

fn corpus_cmd(items: usize, seed: u64, out: &Path, report: &mut Report) -> anyhow::Result<()> {
    let timer = measure::Timer::start();
    let stats = if out == Path::new("-") {
        corpus::generate(items, seed, io::stdout().lock())?
    } else {
        // With its `.meta.json` sidecar, so that the other benchmarks reuse the file.
        corpus::ensure_jsonl(out, items, seed)?.meta.stats
    };
    let secs = timer.secs();
    eprintln!("corpus: {}", describe(&stats));
    report.push(Record::new(
        "corpus-generate",
        stats.lines,
        secs,
        stats.bytes,
        measure::peak_rss(),
    ))?;
    Ok(())
}

/// Removes and recreates `dir`.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Makes sure `work/corpus.jsonl` holds the corpus for `(items, seed)`, recording its
/// generation if it had to be generated. Returns its path and stats.
fn ensure_corpus(
    work: &Path,
    items: usize,
    seed: u64,
    report: &mut Report,
) -> anyhow::Result<(PathBuf, CorpusStats)> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let corpus_path = work.join("corpus.jsonl");
    let ensured = corpus::ensure_jsonl(&corpus_path, items, seed)?;
    let stats = ensured.meta.stats;
    match ensured.generated_secs {
        Some(secs) => {
            eprintln!("generated {}", corpus_path.display());
            report.push(Record::new(
                "corpus-generate",
                stats.lines,
                secs,
                stats.bytes,
                measure::peak_rss(),
            ))?;
        }
        None => eprintln!(
            "reusing {} (items {items}, seed {seed})",
            corpus_path.display()
        ),
    }
    eprintln!("corpus: {}", describe(&stats));
    Ok((corpus_path, stats))
}

/// Parses the corpus file into rows, recording the time as `parse-jsonl`.
fn load_rows(
    corpus_path: &Path,
    stats: &CorpusStats,
    report: &mut Report,
) -> anyhow::Result<Vec<corpus::Row>> {
    if !measure::reset_peak_rss() {
        eprintln!("note: cannot reset VmHWM; peak RSS values are whole-process peaks");
    }
    let (rows, secs) = measure::time(|| corpus::load_rows(corpus_path));
    let rows = rows?;
    report.push(Record::new(
        "parse-jsonl",
        rows.len() as u64,
        secs,
        stats.bytes,
        measure::peak_rss(),
    ))?;
    eprintln!(
        "rows parsed into memory: RSS {:.1} MiB (included in the engines' peak RSS)",
        measure::current_rss() as f64 / (1024.0 * 1024.0)
    );
    Ok(rows)
}

fn raw_cmd(args: &RawArgs, report: &mut Report) -> anyhow::Result<()> {
    let (corpus_path, stats) = ensure_corpus(&args.work, args.items, args.seed, report)?;
    let rows = load_rows(&corpus_path, &stats, report)?;

    for &engine in &args.engines {
        let dir = args.work.join(engine.record_name());
        fresh_dir(&dir)?;
        measure::reset_peak_rss();
        eprintln!("running {} in {}", engine.record_name(), dir.display());
        let stats = match engine {
            Engine::Sqlite => {
                raw_sqlite::insert_all(&rows, &dir.join("items.db"), args.batch_rows)?
            }
            Engine::Fts5 => raw_sqlite::insert_fts5(&rows, &dir.join("items.db"), args.batch_rows)?,
            Engine::Tantivy => {
                raw_tantivy::index_all_with(&rows, &dir, args.threads, args.heap_mb * 1024 * 1024)?
            }
        };
        report.push(stats.record(engine.record_name(), measure::peak_rss()))?;
        if engine == Engine::Tantivy {
            tantivy_info(&dir, stats.items)?;
        }
    }
    Ok(())
}

/// Prints segment count and how many documents some vocabulary ranks match.
fn tantivy_info(dir: &Path, docs: u64) -> anyhow::Result<()> {
    let ranks = [0usize, 5, 12, 50, 200, 1000, corpus::VOCAB_SIZE - 1];
    let words: Vec<&str> = ranks.iter().map(|&r| corpus::word(r)).collect();
    let freqs = raw_tantivy::body_doc_freqs(dir, &words)?;
    let parts: Vec<String> = ranks
        .iter()
        .zip(&words)
        .zip(&freqs)
        .map(|((r, w), f)| {
            format!(
                "#{r} {w:?} {f} ({:.1}%)",
                100.0 * *f as f64 / docs.max(1) as f64
            )
        })
        .collect();
    eprintln!(
        "tantivy: {} segment(s); Body doc freq by word rank: {}",
        raw_tantivy::segment_count(dir)?,
        parts.join(", ")
    );
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs `cairn import` and prints what the CLI said.
fn run_cairn_import(
    cairn_bin: &Path,
    data: &Path,
    file: &Path,
) -> anyhow::Result<cairn::CairnImport> {
    eprintln!(
        "running {} import --data {} {}",
        cairn_bin.display(),
        data.display(),
        file.display()
    );
    let import = cairn::cairn_import(cairn_bin, data, file)?;
    for line in import.run.stdout.lines() {
        eprintln!("  cairn: {}", line.trim());
    }
    // Progress lines come once a second; show one every ten seconds and the last one.
    let mut shown = f64::NEG_INFINITY;
    let n = import.run.stderr.len();
    for (i, (t, line)) in import.run.stderr.iter().enumerate() {
        let progress = line.starts_with("importing:") || line.starts_with("rebuilding the index:");
        if !progress || *t >= shown + 10.0 || line.contains("(100%)") || i + 1 == n {
            eprintln!("  cairn [{t:7.2} s]: {line}");
            if progress {
                shown = *t;
            }
        }
    }
    Ok(import)
}

/// Records of the `ingest` subcommand, each with how busy the rest of the machine was.
struct Steps<'a> {
    report: &'a mut Report,
    cpu: Option<measure::CpuSample>,
    /// Per record: the share of the machine's CPU other processes used during its step,
    /// and the CPU seconds the step itself used (this process and its children).
    others: Vec<(String, f64, f64)>,
}

impl Steps<'_> {
    /// A step begins: give freed memory back to the system, reset this process's peak RSS
    /// and sample the CPU counters.
    fn start(&mut self) {
        measure::release_free_memory();
        measure::reset_peak_rss();
        self.cpu = measure::cpu_sample();
    }

    /// A step ended with `record`.
    fn push(&mut self, record: Record) -> io::Result<()> {
        if let (Some(before), Some(now)) = (self.cpu.take(), measure::cpu_sample()) {
            let share = before.others_share(&now);
            if share >= 0.05 {
                eprintln!(
                    "  note: other processes used {:.0}% of the machine's CPU during {}",
                    share * 100.0,
                    record.name
                );
            }
            self.others
                .push((record.name.clone(), share, before.own_secs(&now)));
        }
        self.report.push(record)
    }
}

/// The `ingest` subcommand; returns the summary lines printed after the table.
fn ingest_cmd(args: &IngestArgs, report: &mut Report) -> anyhow::Result<Vec<String>> {
    let cairn_bin = match &args.cairn {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("cairn"),
    };
    anyhow::ensure!(
        cairn_bin.is_file(),
        "{} not found; build it with `cargo build --release -p cairn` or pass --cairn PATH",
        cairn_bin.display()
    );
    let work = &args.work;
    let (corpus_path, stats) = ensure_corpus(work, args.items, args.seed, report)?;
    let mut steps = Steps {
        report,
        cpu: None,
        others: Vec::new(),
    };

    // 1. Raw baselines on the same rows, each into a fresh folder.
    let rows = load_rows(&corpus_path, &stats, steps.report)?;
    let dir = work.join("raw-sqlite");
    fresh_dir(&dir)?;
    steps.start();
    eprintln!("running raw-sqlite in {}", dir.display());
    let sqlite =
        raw_sqlite::insert_all(&rows, &dir.join("items.db"), raw_sqlite::DEFAULT_BATCH_ROWS)?;
    steps.push(sqlite.record("raw-sqlite", measure::peak_rss()))?;
    let dir = work.join("raw-tantivy");
    fresh_dir(&dir)?;
    steps.start();
    eprintln!("running raw-tantivy in {}", dir.display());
    let tantivy = raw_tantivy::index_all(&rows, &dir)?;
    steps.push(tantivy.record("raw-tantivy", measure::peak_rss()))?;
    let row_count = rows.len() as u64;
    drop(rows);
    measure::release_free_memory();
    eprintln!("rows freed: RSS {}", mib(measure::current_rss()));

    // 2. Cairn's bulk import, end to end, with the real binary.
    let data = work.join("cairn-data");
    fresh_dir(&data)?;
    let db = data.join("cairn.db");
    let index_dir = data.join("index");
    steps.start();
    let import = run_cairn_import(&cairn_bin, &data, &corpus_path)?;
    if import.line.items != row_count {
        eprintln!(
            "warning: cairn imported {} items, the corpus has {row_count}",
            import.line.items
        );
    }
    let import_db = cairn::sqlite_size(&db);
    let import_index = measure::dir_size(&index_dir)?;
    steps.push(Record::new(
        "cairn-import",
        import.line.items,
        import.run.seconds,
        import_db + import_index,
        import.run.peak_rss,
    ))?;

    // 2a. The index half alone: Tantivy on Cairn's own documents, with the raw baseline's
    // writer. No import can beat this, so it bounds the import ratio from above.
    let docs_only = if args.no_halves {
        None
    } else {
        let dir = work.join("tantivy-cairn-docs");
        fresh_dir(&dir)?;
        steps.start();
        eprintln!("indexing Cairn's documents alone in {}", dir.display());
        let s = cairn::index_cairn_documents(&db, &dir)?;
        steps.push(s.record("tantivy-cairn-docs", measure::peak_rss()))?;
        let _ = fs::remove_dir_all(&dir);
        Some(s)
    };

    // 2b. The database half alone: the store's import without any index.
    let store_only = if args.no_halves {
        None
    } else {
        let dir = work.join("cairn-store-only");
        fresh_dir(&dir)?;
        steps.start();
        eprintln!("running the store-only import in {}", dir.display());
        let s = cairn::store_import(&corpus_path, &dir.join("cairn.db"), 10_000)?;
        steps.push(s.record("cairn-store-only", measure::peak_rss()))?;
        Some(s)
    };

    // 3. Rebuild: open the store and an empty index in this process.
    fs::remove_dir_all(&index_dir).with_context(|| format!("removing {}", index_dir.display()))?;
    steps.start();
    eprintln!("rebuilding {} from {}", index_dir.display(), db.display());
    let rebuild = cairn::open_index(&index_dir, &db)?;
    anyhow::ensure!(
        matches!(
            rebuild.report.action,
            cairn_index::StartupAction::Rebuilt(_)
        ),
        "opening an empty index did not rebuild it: {:?}",
        rebuild.report.action
    );
    steps.push(Record::new(
        "cairn-rebuild",
        rebuild.nodes,
        rebuild.open_secs,
        rebuild.index_bytes,
        measure::peak_rss(),
    ))?;
    eprintln!(
        "  Store::open {:.3} s, Indexer::open {:.3} s, shutdown {:.3} s; {:?}",
        rebuild.store_open_secs, rebuild.open_secs, rebuild.shutdown_secs, rebuild.report.action
    );

    // 4. Catch-up: keep the rebuilt index aside, add K items, put the old index back.
    let old_index = work.join("index-old");
    if old_index.exists() {
        fs::remove_dir_all(&old_index)
            .with_context(|| format!("removing {}", old_index.display()))?;
    }
    cairn::copy_flat_dir(&index_dir, &old_index)?;
    let extra_items = args.extra.unwrap_or((args.items / 10).min(100_000));
    let extra_seed = args.seed.wrapping_add(1);
    let extra_path = work.join("extra.jsonl");
    let extra_stats = cairn::write_rebased(&extra_path, extra_items, extra_seed, "/Root/Extra")?;
    eprintln!(
        "extra corpus (seed {extra_seed}, paths under /Root/Extra): {}",
        describe(&extra_stats)
    );
    steps.start();
    let extra = run_cairn_import(&cairn_bin, &data, &extra_path)?;
    steps.push(Record::new(
        "cairn-import-extra",
        extra.line.items,
        extra.run.seconds,
        cairn::sqlite_size(&db) + measure::dir_size(&index_dir)?,
        extra.run.peak_rss,
    ))?;

    fs::remove_dir_all(&index_dir).with_context(|| format!("removing {}", index_dir.display()))?;
    steps.start();
    let timer = measure::Timer::start();
    let (files, bytes) = cairn::copy_flat_dir(&old_index, &index_dir)?;
    cairn::sync_flat_dir(&index_dir).with_context(|| format!("syncing {}", index_dir.display()))?;
    let restore_secs = timer.secs();
    steps.push(Record::new(
        "restore-copy(files)",
        files,
        restore_secs,
        bytes,
        measure::peak_rss(),
    ))?;
    steps.start();
    eprintln!("catching up the old index {}", index_dir.display());
    let catch_up = cairn::open_index(&index_dir, &db)?;
    anyhow::ensure!(
        catch_up.report.action == cairn_index::StartupAction::CaughtUp,
        "opening the old index did not just catch up: {:?}",
        catch_up.report.action
    );
    let activities = catch_up.report.catch_up.activities;
    steps.push(Record::new(
        "cairn-catch-up(activities)",
        activities,
        catch_up.open_secs,
        catch_up.index_bytes,
        measure::peak_rss(),
    ))?;
    eprintln!(
        "  Store::open {:.3} s, Indexer::open {:.3} s, shutdown {:.3} s; {:?}",
        catch_up.store_open_secs,
        catch_up.open_secs,
        catch_up.shutdown_secs,
        catch_up.report.catch_up
    );
    let _ = fs::remove_dir_all(&old_index);

    // 5. Ratios.
    let per_sec = |items: u64, secs: f64| items as f64 / secs.max(1e-9);
    let import_rate = per_sec(import.line.items, import.run.seconds);
    let (slower_name, slower_rate) = if sqlite.items_per_sec() <= tantivy.items_per_sec() {
        ("raw-sqlite", sqlite.items_per_sec())
    } else {
        ("raw-tantivy", tantivy.items_per_sec())
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let import_ratio = import_rate / slower_rate.max(1e-9);
    let rebuild_rate = per_sec(rebuild.nodes, rebuild.open_secs);
    let catch_up_rate = per_sec(activities, catch_up.open_secs);
    // The rebuild measured on `rebuild.nodes` items, scaled to the database the catch-up ran on.
    let scaled_rebuild = rebuild.open_secs * catch_up.nodes as f64 / rebuild.nodes.max(1) as f64;
    let mut s = Vec::new();
    let others: Vec<String> = steps
        .others
        .iter()
        .map(|(name, share, _)| format!("{name} {:.0}%", share * 100.0))
        .collect();
    s.push(format!(
        "CPU used by other processes during each step (share of all cores): {}",
        others.join(", ")
    ));
    let own: Vec<String> = steps
        .others
        .iter()
        .map(|(name, _, secs)| format!("{name} {secs:.1}"))
        .collect();
    s.push(format!(
        "CPU seconds used by each step itself (all threads, children included): {}",
        own.join(", ")
    ));
    s.push(format!(
        "import: {:.0} items/s end to end = {import_ratio:.2} x the slower baseline \
         ({slower_name}, {slower_rate:.0} items/s); target >= 0.70: {}",
        import_rate,
        verdict(import_ratio >= 0.7)
    ));
    s.push(format!(
        "  vs raw-sqlite {:.2} x, vs raw-tantivy {:.2} x; the CLI itself reported {:.1} s \
         ({:.0} items/s), the subprocess took {:.1} s",
        import_rate / sqlite.items_per_sec().max(1e-9),
        import_rate / tantivy.items_per_sec().max(1e-9),
        import.line.seconds,
        per_sec(import.line.items, import.line.seconds),
        import.run.seconds
    ));
    if let Some(db_done) = import.database_done() {
        s.push(format!(
            "  timeline: last batch committed at {db_done:.1} s ({:.0} items/s into the \
             database while the indexer ran alongside), then {:.1} s waiting for the index \
             and shutting down",
            per_sec(import.line.items, db_done),
            import.run.seconds - db_done
        ));
    }
    if let Some(so) = &store_only {
        s.push(format!(
            "  store only (parse + database, no index): {:.0} items/s = {:.2} x raw-sqlite; \
             {:.1} s of the import's {:.1} s",
            so.items_per_sec(),
            so.items_per_sec() / sqlite.items_per_sec().max(1e-9),
            so.seconds,
            import.run.seconds
        ));
    }
    if let Some(d) = &docs_only {
        s.push(format!(
            "  index only (Tantivy on Cairn's documents, raw-tantivy's writer): {:.0} items/s \
             = {:.2} x raw-tantivy, the most any import could reach; the import is {:.2} x it",
            d.items_per_sec(),
            d.items_per_sec() / tantivy.items_per_sec().max(1e-9),
            import_rate / d.items_per_sec().max(1e-9)
        ));
    }
    s.push(format!(
        "  database {} (raw-sqlite {}, {:.2} x); index {} (raw-tantivy {}, {:.2} x); \
         peak RSS {}",
        mib(import_db),
        mib(sqlite.bytes),
        import_db as f64 / sqlite.bytes.max(1) as f64,
        mib(import_index),
        mib(tantivy.bytes),
        import_index as f64 / tantivy.bytes.max(1) as f64,
        mib(import.run.peak_rss)
    ));
    s.push(format!(
        "rebuild: {rebuild_rate:.0} items/s ({} items in {:.1} s, + {:.1} s shutdown/merges) = \
         {:.2} x raw-tantivy; target >= 30,000 items/s: {}",
        rebuild.nodes,
        rebuild.open_secs,
        rebuild.shutdown_secs,
        rebuild_rate / tantivy.items_per_sec().max(1e-9),
        verdict(rebuild_rate >= 30_000.0)
    ));
    s.push(format!(
        "catch-up: {activities} activities in {:.2} s = {catch_up_rate:.0} activities/s \
         ({} commits, {} documents)",
        catch_up.open_secs, catch_up.report.catch_up.commits, catch_up.report.catch_up.documents
    ));
    s.push(format!(
        "  vs a rebuild of the same database ({} items, scaled: {:.1} s): catch-up {:.3} x, \
         restore copy + catch-up ({:.2} s + {:.2} s) {:.3} x",
        catch_up.nodes,
        scaled_rebuild,
        catch_up.open_secs / scaled_rebuild.max(1e-9),
        restore_secs,
        catch_up.open_secs,
        (restore_secs + catch_up.open_secs) / scaled_rebuild.max(1e-9)
    ));
    Ok(s)
}
