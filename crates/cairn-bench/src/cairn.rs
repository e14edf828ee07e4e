//! Measuring Cairn itself: the `cairn` binary run as a subprocess (wall clock and the
//! child's peak RSS), the store's bulk import without an index, and opening an index with
//! [`cairn_index::Indexer::open`] (rebuild of an empty index, catch-up of an old one).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_index::document::{build, WrittenBy};
use cairn_index::{IndexSchema, Indexer, IndexerOptions, OpenReport, RebuildProgress};
use cairn_store::{DatabaseUrl, ImportItem, NodeId, Store};

use crate::corpus::{self, CorpusStats, Item};
use crate::measure::{self, Stats, Timer};
use crate::raw_tantivy;

/// How often the child's `VmHWM` is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A finished subprocess.
#[derive(Debug, Clone)]
pub struct ChildRun {
    pub status: ExitStatus,
    /// Wall clock from spawn to exit.
    pub seconds: f64,
    /// Highest `VmHWM` of the child seen while polling (bytes; 0 if never read).
    pub peak_rss: u64,
    pub stdout: String,
    /// Lines of stderr with the seconds since spawn at which they were read.
    pub stderr: Vec<(f64, String)>,
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let kib: u64 = l
            .strip_prefix("VmHWM:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    })
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn drain_lines(
    r: impl Read + Send + 'static,
    timer: Timer,
) -> thread::JoinHandle<Vec<(f64, String)>> {
    thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            lines.push((timer.secs(), line));
            buf.clear();
        }
        lines
    })
}

/// Runs `cmd` to completion with stdout and stderr captured, timing it and polling
/// `/proc/PID/status` `VmHWM` every [`POLL_INTERVAL`] until it exits.
pub fn run_child(cmd: &mut Command) -> anyhow::Result<ChildRun> {
    let timer = Timer::start();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some(hwm) = vm_hwm(pid) {
                    peak.fetch_max(hwm, Ordering::SeqCst);
                }
                thread::sleep(POLL_INTERVAL);
            }
        })
    };
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(|e| drain_lines(e, timer));
    let status = child.wait();
    let seconds = timer.secs();
    stop.store(true, Ordering::SeqCst);
    let _ = poller.join();
    let status = status.with_context(|| format!("waiting for {cmd:?}"))?;
    Ok(ChildRun {
        status,
        seconds,
        peak_rss: peak.load(Ordering::SeqCst),
        stdout: out.and_then(|h| h.join().ok()).unwrap_or_default(),
        stderr: err.and_then(|h| h.join().ok()).unwrap_or_default(),
    })
}

/// What `cairn import` printed: `imported N items in S s (R items/s); ...`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImportLine {
    pub items: u64,
    pub seconds: f64,
}

/// Finds and parses the `imported N items in S s` line of `cairn import`'s output.
pub fn parse_import_line(stdout: &str) -> Option<ImportLine> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("imported ")?;
        let (items, rest) = rest.split_once(" items in ")?;
        let (secs, _) = rest.split_once(" s")?;
        Some(ImportLine {
            items: items.trim().parse().ok()?,
            seconds: secs.trim().parse().ok()?,
        })
    })
}

/// A `cairn import` run.
#[derive(Debug, Clone)]
pub struct CairnImport {
    pub run: ChildRun,
    /// The CLI's own report.
    pub line: ImportLine,
}

impl CairnImport {
    /// Seconds since spawn of the first stderr line starting with `prefix`.
    pub fn first_line(&self, prefix: &str, containing: &str) -> Option<f64> {
        self.run
            .stderr
            .iter()
            .find(|(_, l)| l.starts_with(prefix) && l.contains(containing))
            .map(|(t, _)| *t)
    }

    /// When the repository was open and the import began: the first `importing:` line
    /// (written after the first batch was committed) or the line about the index.
    pub fn started_importing(&self) -> Option<f64> {
        self.first_line("importing:", "")
    }

    /// When the last batch was committed to the database (`importing: N/N (100%)`);
    /// after it the CLI only waits for the index and shuts it down.
    pub fn database_done(&self) -> Option<f64> {
        self.first_line("importing:", "(100%)")
    }
}

/// Runs `cairn import --data DATA FILE` and checks that it succeeded.
pub fn cairn_import(cairn: &Path, data: &Path, file: &Path) -> anyhow::Result<CairnImport> {
    let mut cmd = Command::new(cairn);
    cmd.arg("import")
        .arg("--data")
        .arg(data)
        .arg(file)
        // The database must be the one in `data`, whatever the caller's environment says.
        .env_remove("CAIRN_DATABASE")
        .env_remove("CAIRN_DATA");
    let run = run_child(&mut cmd)?;
    if !run.status.success() {
        bail!(
            "{} import failed ({}):\n{}{}",
            cairn.display(),
            run.status,
            run.stdout,
            stderr_text(&run)
        );
    }
    let Some(line) = parse_import_line(&run.stdout) else {
        bail!(
            "{} import printed no \"imported N items in S s\" line:\n{}{}",
            cairn.display(),
            run.stdout,
            stderr_text(&run)
        );
    };
    Ok(CairnImport { run, line })
}

fn stderr_text(run: &ChildRun) -> String {
    run.stderr.iter().map(|(_, l)| format!("{l}\n")).collect()
}

/// Bytes of an SQLite database: the file and its `-wal`.
pub fn sqlite_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [db.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Copies the files of the flat folder `from` into `to` (created; must not exist yet).
/// Returns the number of files and bytes copied. Subfolders are an error.
pub fn copy_flat_dir(from: &Path, to: &Path) -> anyhow::Result<(u64, u64)> {
    if to.exists() {
        bail!("{} exists already", to.display());
    }
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let (mut files, mut bytes) = (0, 0);
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            bail!("{} is not flat: {:?}", from.display(), entry.file_name());
        }
        if ft.is_file() {
            bytes += fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
            files += 1;
        }
    }
    Ok((files, bytes))
}

/// Flushes the files of a flat folder to disk (`fsync` each, then the folder).
pub fn sync_flat_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

/// `path` with its leading `from` segment(s) replaced by `to` (`None` if `path` is not
/// `from` or below it).
pub fn rebase(path: &str, from: &str, to: &str) -> Option<String> {
    let rest = path.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{to}{rest}"))
}

/// Writes the corpus of `items` lines for `seed` to `out`, with every path moved from
/// [`corpus::ROOT_PATH`] to `root` (the root folder's name changes with it).
pub fn write_rebased(
    out: &Path,
    items: usize,
    seed: u64,
    root: &str,
) -> anyhow::Result<CorpusStats> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut corpus = corpus::items(items, seed);
    let mut bytes = 0u64;
    for mut item in corpus.by_ref() {
        item.path = rebase(&item.path, corpus::ROOT_PATH, root)
            .with_context(|| format!("{} is not below {}", item.path, corpus::ROOT_PATH))?;
        let line = item.to_json_line();
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
    }
    w.flush()?;
    Ok(CorpusStats {
        bytes,
        ..corpus.stats()
    })
}

/// Imports the JSON lines file `file` into a new SQLite database `db` with
/// [`Store::import`] in batches of `batch` lines, with no index at all: the database
/// half of `cairn import` (reading and parsing the lines included).
pub fn store_import(file: &Path, db: &Path, batch: usize) -> anyhow::Result<Stats> {
    if db.exists() {
        bail!(
            "{} exists already; the import needs a fresh database",
            db.display()
        );
    }
    let batch = batch.max(1);
    let timer = Timer::start();
    let store = Store::open(&DatabaseUrl::Sqlite(db.to_path_buf()))
        .with_context(|| format!("opening {}", db.display()))?;
    let reader = BufReader::with_capacity(
        1 << 20,
        File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let mut pending: Vec<ImportItem> = Vec::with_capacity(batch);
    let mut imported = 0u64;
    let mut commit = |pending: &mut Vec<ImportItem>| -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let outcome = store.import(pending, store.admin_id())?;
        if let Some((i, e)) = outcome.error {
            bail!("{}: {e}", pending[i].path);
        }
        imported += outcome.created as u64;
        pending.clear();
        Ok(())
    };
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item = Item::from_json_line(&line).with_context(|| format!("line {}", n + 1))?;
        pending.push(ImportItem {
            path: item.path,
            type_name: item.type_name,
            fields: item.json,
            binaries: Vec::new(),
        });
        if pending.len() >= batch {
            commit(&mut pending)?;
        }
    }
    commit(&mut pending)?;
    drop(store);
    Ok(Stats {
        items: imported,
        seconds: timer.secs(),
        bytes: sqlite_size(db),
    })
}

/// Indexes every item of the Cairn database `db` into a new index in `dir` with a plain
/// Tantivy writer, using Cairn's own schema and documents ([`cairn_index::document::build`])
/// and the raw baseline's writer settings ([`raw_tantivy::index_all`]'s threads and memory).
///
/// This is the index half of `cairn import` alone: what Tantivy costs on Cairn's richer
/// documents (InTree, TypeIs, `_Text`, keyword fast fields, bookkeeping), with no database,
/// no activity log and no indexer around it. The items are read into memory first (not
/// timed); building the documents, indexing, the commit and the merges are timed, as in
/// the raw baseline.
pub fn index_cairn_documents(db: &Path, dir: &Path) -> anyhow::Result<Stats> {
    let store = Store::open(&DatabaseUrl::Sqlite(db.to_path_buf()))
        .with_context(|| format!("opening {}", db.display()))?;
    let mut nodes = Vec::new();
    let mut after = NodeId(0);
    loop {
        let page = store.scan_nodes(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        nodes.extend(page);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let schema = IndexSchema::new(store.types());
    let by = WrittenBy {
        activity: 1,
        fingerprint: 0,
    };
    let timer = Timer::start();
    let index = tantivy::Index::create_in_dir(dir, schema.schema.clone())
        .with_context(|| format!("creating an index in {}", dir.display()))?;
    IndexSchema::register_tokenizers(&index);
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(
        raw_tantivy::DEFAULT_THREADS,
        raw_tantivy::DEFAULT_HEAP_BYTES,
    )?;
    for node in &nodes {
        writer.add_document(build(&schema, store.types(), node, by))?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(Stats {
        items: nodes.len() as u64,
        seconds: timer.secs(),
        bytes: measure::dir_size(dir)?,
    })
}

/// What [`open_index`] measured.
#[derive(Debug, Clone)]
pub struct IndexOpen {
    pub report: OpenReport,
    /// Items in the database (`Store::count_nodes`) after opening.
    pub nodes: u64,
    /// Seconds of `Store::open`.
    pub store_open_secs: f64,
    /// Seconds of `Indexer::open` (rebuild or catch-up included).
    pub open_secs: f64,
    /// Seconds of `Indexer::shutdown` (final commit, waiting for merges).
    pub shutdown_secs: f64,
    /// Index size after shutdown.
    pub index_bytes: u64,
}

/// Opens the repository in the data folder `data` (`cairn.db`, `index/`) as `cairn serve`
/// would, without the background indexer: for measuring queries in process. The database
/// is the one `CAIRN_DATABASE` names, as for `cairn serve`, else `data/cairn.db`. The index
/// must be complete (an empty one would be rebuilt here). Shut the indexer down after.
pub fn open_repository(data: &Path) -> anyhow::Result<(Arc<Store>, Arc<Indexer>)> {
    let url = match std::env::var("CAIRN_DATABASE") {
        Ok(u) => DatabaseUrl::parse(&u).with_context(|| format!("CAIRN_DATABASE {u}"))?,
        Err(_) => DatabaseUrl::Sqlite(data.join("cairn.db")),
    };
    let store = Arc::new(Store::open(&url).with_context(|| format!("opening {url:?}"))?);
    let (indexer, _) = Indexer::open(
        &data.join("index"),
        store.clone(),
        IndexerOptions::default(),
        &|_| {},
    )
    .with_context(|| format!("opening the index of {}", data.display()))?;
    Ok((store, indexer))
}

/// Opens the store at `db` and the index at `index_dir` with default options, timing
/// `Indexer::open` (which rebuilds an empty index and catches up an old one), then shuts
/// the indexer down.
pub fn open_index(index_dir: &Path, db: &Path) -> anyhow::Result<IndexOpen> {
    let t = Timer::start();
    let store = Arc::new(
        Store::open(&DatabaseUrl::Sqlite(db.to_path_buf()))
            .with_context(|| format!("opening {}", db.display()))?,
    );
    let store_open_secs = t.secs();
    let step = AtomicU64::new(0);
    let progress = |p: RebuildProgress| {
        // About every 10%.
        let tenth = p.done * 10 / p.total.max(1);
        if p.done > 0 && step.fetch_max(tenth, Ordering::Relaxed) < tenth {
            eprintln!("  rebuilding: {} / {} items", p.done, p.total);
        }
    };
    let t = Timer::start();
    let (indexer, report) = Indexer::open(
        index_dir,
        store.clone(),
        IndexerOptions::default(),
        &progress,
    )
    .with_context(|| format!("opening the index {}", index_dir.display()))?;
    let open_secs = t.secs();
    let t = Timer::start();
    indexer
        .shutdown(None)
        .context("shutting the indexer down")?;
    let shutdown_secs = t.secs();
    drop(indexer);
    let nodes = store.count_nodes()?;
    drop(store);
    Ok(IndexOpen {
        report,
        nodes,
        store_open_secs,
        open_secs,
        shutdown_secs,
        index_bytes: measure::dir_size(index_dir)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_import_line() {
        let out = "imported 100000 items in 12.3 s (8130 items/s); index #100005\n";
        assert_eq!(
            parse_import_line(out),
            Some(ImportLine {
                items: 100_000,
                seconds: 12.3
            })
        );
        assert_eq!(parse_import_line("nothing here\n"), None);
    }

    #[test]
    fn rebases_paths() {
        let r = |p| rebase(p, "/Root/Corpus", "/Root/Extra");
        assert_eq!(r("/Root/Corpus").as_deref(), Some("/Root/Extra"));
        assert_eq!(r("/Root/Corpus/F1/a").as_deref(), Some("/Root/Extra/F1/a"));
        assert_eq!(r("/Root/Corpus2/a"), None);
        assert_eq!(r("/Root/Other"), None);
    }

    #[test]
    fn child_peak_rss_and_files() {
        let run = run_child(Command::new("sh").args(["-c", "sleep 0.2; echo hi"])).unwrap();
        assert!(run.status.success());
        assert_eq!(run.stdout.trim(), "hi");
        assert!(run.seconds >= 0.2);
        assert!(run.peak_rss > 0);

        let dir = std::env::temp_dir().join(format!("cairn-bench-cairn-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/x"), [1u8; 10]).unwrap();
        fs::write(dir.join("a/y"), [2u8; 5]).unwrap();
        assert_eq!(
            copy_flat_dir(&dir.join("a"), &dir.join("b")).unwrap(),
            (2, 15)
        );
        sync_flat_dir(&dir.join("b")).unwrap();
        assert_eq!(fs::read(dir.join("b/y")).unwrap(), vec![2u8; 5]);
        assert!(copy_flat_dir(&dir.join("a"), &dir.join("b")).is_err());

        let extra = dir.join("extra.jsonl");
        let stats = write_rebased(&extra, 50, 7, "/Root/Extra").unwrap();
        assert_eq!(stats.lines, 50);
        let items: Vec<Item> = corpus::read_jsonl(&extra)
            .unwrap()
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(items.len(), 50);
        assert_eq!(items[0].path, "/Root/Extra");
        assert!(items.iter().all(|i| i.path.starts_with("/Root/Extra")));
        assert_eq!(fs::metadata(&extra).unwrap().len(), stats.bytes);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_index_half_indexes_every_item_of_the_database() {
        let dir = std::env::temp_dir().join(format!("cairn-bench-docs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let corpus = dir.join("c.jsonl");
        write_rebased(&corpus, 300, 3, "/Root/Corpus").unwrap();
        let db = dir.join("cairn.db");
        let imported = store_import(&corpus, &db, 64).unwrap();
        assert_eq!(imported.items, 300);
        let stats = index_cairn_documents(&db, &dir.join("index")).unwrap();
        let nodes = Store::open(&DatabaseUrl::Sqlite(db.clone()))
            .unwrap()
            .count_nodes()
            .unwrap();
        // The import's 300 items and what the repository holds from its start (/Root, ...).
        assert!(nodes > 300);
        assert_eq!(stats.items, nodes);
        assert!(stats.bytes > 0);
        let index = tantivy::Index::open_in_dir(dir.join("index")).unwrap();
        assert_eq!(index.reader().unwrap().searcher().num_docs(), nodes);
        assert!(index_cairn_documents(&db, &dir.join("index")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
