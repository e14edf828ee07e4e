//! `cairn-bench`: command-line driver for Cairn's benchmarks.
//!
//! * `cairn-bench corpus --items N --seed S --out FILE.jsonl` writes the
//!   fixed-seed corpus in Cairn's import format (`--out -` for stdout).
//! * `cairn-bench raw --items N --seed S --work DIR` (re)uses `DIR/corpus.jsonl`,
//!   parses it into typed rows (timed separately), then runs the raw SQLite,
//!   SQLite+FTS5 and Tantivy baselines on the same rows, each into its own fresh
//!   subfolder of `DIR`, and prints a table.
//!
//! `--json FILE` (any subcommand) appends every result record as a JSON line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context;
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
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        corpus::generate(items, seed, file)?
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

fn raw_cmd(args: &RawArgs, report: &mut Report) -> anyhow::Result<()> {
    fs::create_dir_all(&args.work).with_context(|| format!("creating {}", args.work.display()))?;
    let corpus_path = args.work.join("corpus.jsonl");

    let ensured = corpus::ensure_jsonl(&corpus_path, args.items, args.seed)?;
    let stats = &ensured.meta.stats;
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
            "reusing {} (items {}, seed {})",
            corpus_path.display(),
            args.items,
            args.seed
        ),
    }
    eprintln!("corpus: {}", describe(stats));

    if !measure::reset_peak_rss() {
        eprintln!("note: cannot reset VmHWM; peak RSS values are whole-process peaks");
    }
    let (rows, secs) = measure::time(|| corpus::load_rows(&corpus_path));
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
