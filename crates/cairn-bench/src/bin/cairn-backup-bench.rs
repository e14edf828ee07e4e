//! `cairn-backup-bench`: online backups of a running `cairn serve`, against plain copies
//! and a full rebuild, on a repository made with `cairn import`.
//!
//! One run, for one corpus size (the import is shared with `cairn-api-bench`:
//! `DIR/N<items>/data`, made once; this benchmark works on a copy, `DIR/N<items>/bk/`):
//!
//! 1. **Hot index backup against `cp -r`**: `cp -r index` + `sync` of the copied files,
//!    a `BackupIndex` into an empty backup folder, `cp` again, a second full `BackupIndex`
//!    (the first one moved out of the folder so nothing is hard-linked), `cp` again: every
//!    copy in the same (warm) page-cache state. MB/s = bytes ÷ seconds; the backup's
//!    seconds are its own `FinishedAt - StartedAt`, its bytes `CopiedBytes`.
//! 2. **Incremental**: 1% of the items changed (PATCH over HTTP, 64 connections), then a
//!    `BackupIndex` next to the full one: time and newly written bytes against the full one.
//! 3. **Writes during a backup**: wrk creates (`scripts/create.lua`, 64 connections) for a
//!    fixed time without a backup, then with `BackupRepository` running back to back, in
//!    alternating rounds.
//! 4. **Restore + catch-up against a rebuild**: `BackupRepository`, 10k more activities
//!    (PATCH), server stopped; on a copy of the data folder `cairn restore --index-only`
//!    from that backup, then `cairn serve` start until `/health` (it catches the index up
//!    before listening), `cairn index check` (must pass, not timed); then
//!    `cairn index rebuild` of the same data folder.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_bench::corpus;
use cairn_bench::measure::dir_size;
use clap::Parser;
use serde::Serialize;

use common::{json_string, Client, Server, WrkRun, WrkSpec};

#[derive(Parser, Debug)]
#[command(about = "Cairn online backups against cp -r, writes, incremental, restore+catch-up")]
struct Args {
    #[command(flatten)]
    bench: common::BenchArgs,
    /// Seconds of each create-load window.
    #[arg(long, default_value_t = 20)]
    write_secs: u32,
    /// Rounds of (without backup, with backup) create load.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Items changed before the incremental backup (default: 1% of the corpus).
    #[arg(long)]
    changes: Option<u64>,
    /// Activities written after the backup that is restored.
    #[arg(long, default_value_t = 10_000)]
    catchup: u64,
    /// Parts: `copy` (full index backups against cp -r), `incremental` (after `--changes`),
    /// `writes` (creates with and without backups), `restore` (a repository backup, a
    /// copy of the data folder, restore + catch-up against a rebuild); not by default:
    /// `repository` (one full repository backup) and `restore-index` (after
    /// `incremental`: its index backup restored in place and caught up; ends the run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "copy,incremental,writes,restore"
    )]
    parts: Vec<String>,
    #[arg(long)]
    no_wait: bool,
    /// Keep an import made by another `cairn` build (the index format must be the same).
    #[arg(long)]
    reuse_import: bool,
    /// Work on the imported data folder itself, not on a copy of it (at 10M items a copy
    /// does not fit beside it). The backups are removed at the end; the changes stay.
    #[arg(long)]
    in_place: bool,
    #[arg(long)]
    json: Option<PathBuf>,
}

const KEY: &str = "cairn-backup-bench-key-0123456789abcdef";

#[derive(Debug, Clone, Serialize)]
struct CopyRun {
    what: String,
    bytes: u64,
    /// Bytes newly written (not hard-linked); equal to `bytes` for cp and full backups.
    new_bytes: u64,
    files: u64,
    seconds: f64,
    /// Wall clock seen by the client (POST until the poll saw it finished).
    wall_seconds: f64,
    mb_per_s: f64,
    /// Share of the CPU others used meanwhile.
    others_cpu: f64,
}

#[derive(Debug, Clone, Serialize)]
struct WriteRound {
    round: u32,
    with_backup: bool,
    backups_finished: u64,
    run: WrkRun,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Restore {
    backup_secs: f64,
    backup_bytes: u64,
    activities: u64,
    write_secs: f64,
    restore_secs: f64,
    /// `cp -r` + sync of the backup's index folder: what a restore must at least copy.
    restore_floor_secs: f64,
    catchup_listen_secs: f64,
    catchup_ready_secs: f64,
    plain_start_secs: f64,
    check_passed: bool,
    check_secs: f64,
    check_output: String,
    rebuild_secs: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    items: usize,
    cairn_source: Option<String>,
    index_bytes: u64,
    data_bytes: u64,
    copies: Vec<CopyRun>,
    incremental: Option<(CopyRun, u64)>,
    writes: Vec<WriteRound>,
    restore: Option<Restore>,
    notes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common::BenchPaths {
        cairn,
        scripts,
        base,
    } = args.bench.paths()?;
    let log = base.join("backup-run.log");
    let mut report = Report {
        items: args.bench.items,
        cairn_source: cairn
            .parent()
            .and_then(|d| fs::read_to_string(d.join("SOURCE")).ok())
            .map(|s| s.lines().next().unwrap_or("").to_string()),
        ..Report::default()
    };

    let corpus_path = base.join("corpus.jsonl");
    let pristine = base.join("data");
    // A reused import needs no corpus (at 10M items its 14 GB may have been deleted).
    if !(args.reuse_import && pristine.join(".bench-imported").exists()) {
        corpus::ensure_jsonl(&corpus_path, args.bench.items, args.bench.seed)?;
    }
    if !args.no_wait {
        eprintln!(
            "import: {}",
            common::wait_quiet(0.20, Duration::from_secs(7200))
        );
    }
    if let Some(s) = common::ensure_imported(
        &cairn,
        &corpus_path,
        args.bench.items,
        &pristine,
        &log,
        args.reuse_import,
    )? {
        eprintln!("cairn import: {s:.1} s");
    }

    let bk = base.join("bk");
    common::remove_tree(&bk)?;
    fs::create_dir_all(&bk)?;
    let data = if args.in_place {
        pristine.clone()
    } else {
        let data = bk.join("data");
        eprintln!("copying {} to {}", pristine.display(), data.display());
        common::copy_tree(&pristine, &data)?;
        let _ = fs::remove_file(data.join(".bench-imported"));
        data
    };
    report.data_bytes = dir_size(&data)?;
    report.index_bytes = dir_size(&data.join("index"))?;

    let server = Server::start(&cairn, &data, KEY, &log, Duration::from_secs(3600))?;
    eprintln!("cairn serve on {}", server.addr);
    let result = run(
        &args,
        &cairn,
        &scripts,
        &bk,
        &data,
        server,
        &log,
        &mut report,
    );
    print_report(&report);
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run(
    args: &Args,
    cairn: &Path,
    scripts: &Path,
    bk: &Path,
    data: &Path,
    server: Server,
    log: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut client = Client::new(server.addr, KEY);
    let wait = |what: &str| {
        if !args.no_wait {
            let q = common::wait_quiet(0.20, Duration::from_secs(7200));
            eprintln!("{what}: {q}");
        }
    };
    let (lo, hi) = common::article_ids(&mut client)?;
    let has = |p: &str| args.parts.iter().any(|x| x == p);

    // 1. Full hot index backups against cp -r, interleaved.
    if has("copy") || has("incremental") {
        let moved = bk.join("moved");
        fs::create_dir_all(&moved)?;
        let targets = ["f1", "f2", "b1"];
        for i in 0..=targets.len() {
            wait("cp");
            common::settle_writeback();
            let c = cp_index(&data.join("index"), &bk.join(format!("cp{i}")))?;
            eprintln!("cp -r: {:.0} MB/s", c.mb_per_s);
            report.copies.push(c);
            common::remove_tree(&bk.join(format!("cp{i}")))?;
            let Some(target) = targets.get(i) else { break };
            wait("backup");
            common::settle_writeback();
            let b = backup(&mut client, server.pid(), "BackupIndex", target)?;
            eprintln!("BackupIndex {target}: {:.0} MB/s", b.mb_per_s);
            report.copies.push(b);
            if *target != "b1" {
                // Out of the backup folder, so that the next one is a full copy again.
                fs::rename(data.join("backups").join(target), moved.join(target))?;
            }
        }

        common::remove_tree(&moved)?;
    }

    // 2. Incremental after 1% changes.
    if has("incremental") {
        let n = args.changes.unwrap_or(args.bench.items as u64 / 100);
        let (secs, done) = common::patch_many(
            KEY,
            server.addr,
            lo,
            hi,
            n,
            "inc",
            u64::from(args.connections),
        )?;
        eprintln!("changed {done} items in {secs:.1} s");
        wait("incremental backup");
        common::settle_writeback();
        let b = backup(&mut client, server.pid(), "BackupIndex", "b2")?;
        eprintln!(
            "BackupIndex b2: {:.2} s, {} new bytes of {}",
            b.seconds, b.new_bytes, b.bytes
        );
        report.incremental = Some((b, done));
    }

    // 3. Writes with and without a backup running.
    if has("writes") {
        let create = scripts.join("create.lua");
        let tag = common::run_tag();
        let folder = format!("BackupBench-{tag}");
        client
            .post(
                "/odata.svc/Root",
                &format!(
                    "{{\"__ContentType\":\"Folder\",\"Name\":{}}}",
                    json_string(&folder)
                ),
            )?
            .ok()?;
        let text: String = (0..60)
            .map(|i| corpus::word((i * 37) % 1500))
            .collect::<Vec<_>>()
            .join(" ");
        for round in 1..=args.rounds {
            for with_backup in [false, true] {
                let mut best: Option<WriteRound> = None;
                for attempt in 1..=3u32 {
                    wait("writes");
                    let stop = Arc::new(AtomicBool::new(false));
                    let finished = Arc::new(AtomicU64::new(0));
                    let looper = with_backup.then(|| {
                        let (stop, finished, addr, pid) =
                            (stop.clone(), finished.clone(), server.addr, server.pid());
                        let backups = data.join("backups");
                        thread::spawn(move || -> anyhow::Result<()> {
                            let mut c = Client::new(addr, KEY);
                            let mut k = 0;
                            let mut previous: Option<String> = None;
                            while !stop.load(Ordering::SeqCst) {
                                k += 1;
                                let target = format!("w{round}-{attempt}-{k}");
                                backup(&mut c, pid, "BackupRepository", &target)?;
                                finished.fetch_add(1, Ordering::SeqCst);
                                // Keep the disk from filling up: the one before is no longer
                                // the newest, nothing links from it any more.
                                if let Some(p) = previous.replace(target) {
                                    common::remove_tree(&backups.join(p))?;
                                }
                            }
                            if let Some(p) = previous {
                                common::remove_tree(&backups.join(p))?;
                            }
                            Ok(())
                        })
                    });
                    if with_backup {
                        // Let the first backup start before the load does.
                        thread::sleep(Duration::from_millis(200));
                    }
                    let wargs = vec![
                        KEY.to_string(),
                        format!("/odata.svc/Root/{folder}"),
                        format!("{tag}{round}{}{attempt}", u8::from(with_backup)),
                        text.clone(),
                    ];
                    let run = common::run_wrk(
                        &WrkSpec {
                            script: &create,
                            url: &server.url("/"),
                            threads: 2,
                            connections: args.connections,
                            secs: args.write_secs,
                            args: &wargs,
                        },
                        Some(server.pid()),
                    );
                    stop.store(true, Ordering::SeqCst);
                    if let Some(h) = looper {
                        h.join().expect("backup loop")?;
                    }
                    let run = run?;
                    eprintln!(
                    "writes round {round} backup={with_backup}: {:.0} creates/s (p50 {:.1} ms, p99 {:.1} ms), {} backups finished, others' CPU {:.0}%",
                    run.rps,
                    run.p50_ms,
                    run.p99_ms,
                    finished.load(Ordering::SeqCst),
                    run.others_cpu * 100.0
                );
                    let others = run.others_cpu;
                    let w = WriteRound {
                        round,
                        with_backup,
                        backups_finished: finished.load(Ordering::SeqCst),
                        run,
                    };
                    if best.as_ref().is_none_or(|b| others < b.run.others_cpu) {
                        best = Some(w);
                    }
                    if others <= 0.10 || args.no_wait {
                        break;
                    }
                    eprintln!("others used {:.0}% of the CPU; again", others * 100.0);
                }
                report.writes.extend(best);
            }
        }
    }

    // 4a. One full repository backup, timed by its steps, then removed.
    if has("repository") {
        wait("repository backup");
        common::settle_writeback();
        let b = backup(&mut client, server.pid(), "BackupRepository", "full")?;
        eprintln!(
            "BackupRepository full: {:.1} s, {:.0} MB/s, {} bytes",
            b.seconds, b.mb_per_s, b.bytes
        );
        report.copies.push(b);
        common::remove_tree(&data.join("backups/full"))?;
    }

    // 4b. The index restored from the incremental part's backup (b2), caught up with
    // `--catchup` changes made after it, in the data folder itself (no copy: 10M items).
    if has("restore-index") {
        let mut r = Restore::default();
        changes_then_stop(server, (lo, hi), args, "ri", &mut r)?;
        wait("restore");
        common::settle_writeback();
        restore_and_catch_up(cairn, &data.join("backups/b2"), data, log, &wait, &mut r)?;
        wait("plain start");
        let s = Server::start(cairn, data, KEY, log, Duration::from_secs(3600))?;
        r.plain_start_secs = s.ready_secs;
        s.stop(Duration::from_secs(600))?;
        eprintln!(
            "restore {:.2} s + catch-up {:.2} s (a start with nothing to catch up {:.2} s); check {} in {:.1} s",
            r.restore_secs, r.catchup_ready_secs, r.plain_start_secs, r.check_passed, r.check_secs
        );
        for b in ["b1", "b2"] {
            common::remove_tree(&data.join("backups").join(b))?;
        }
        report.restore = Some(r);
        return Ok(());
    }

    // 4. Restore + catch-up against a rebuild.
    if has("restore") {
        let mut r = Restore::default();
        wait("repository backup");
        let b = backup(&mut client, server.pid(), "BackupRepository", "r1")?;
        r.backup_secs = b.seconds;
        r.backup_bytes = b.bytes;
        changes_then_stop(server, (lo, hi), args, "cu", &mut r)?;

        // The same start without anything to catch up, for scale.
        wait("plain start");
        let s = Server::start(cairn, data, KEY, log, Duration::from_secs(3600))?;
        r.plain_start_secs = s.ready_secs;
        s.stop(Duration::from_secs(600))?;

        let copy = bk.join("restored");
        common::remove_tree(&copy)?;
        common::copy_tree(data, &copy)?;
        wait("restore");
        common::settle_writeback();
        let floor = cp_index(&data.join("backups/r1/index"), &bk.join("restore-floor"))?;
        r.restore_floor_secs = floor.seconds;
        common::remove_tree(&bk.join("restore-floor"))?;
        common::settle_writeback();
        restore_and_catch_up(cairn, &data.join("backups/r1"), &copy, log, &wait, &mut r)?;
        eprintln!(
            "restore {:.2} s + catch-up {:.2} s; check {}",
            r.restore_secs, r.catchup_ready_secs, r.check_passed
        );
        wait("rebuild");
        common::settle_writeback();
        r.rebuild_secs = common::run_logged(
            Command::new(cairn)
                .arg("index")
                .arg("rebuild")
                .arg("--data")
                .arg(&copy),
            log,
        )?;
        eprintln!("rebuild {:.1} s", r.rebuild_secs);
        common::remove_tree(&copy)?;
        report.restore = Some(r);
    } else {
        server.stop(Duration::from_secs(600))?;
    }
    Ok(())
}

/// Lowest and highest article id of the corpus.
/// `--catchup` changes of articles with ids in `ids` (the activities a restored index
/// catches up), timed into `r`; then the server is stopped.
fn changes_then_stop(
    server: Server,
    ids: (u64, u64),
    args: &Args,
    tag: &str,
    r: &mut Restore,
) -> anyhow::Result<()> {
    let (secs, done) = common::patch_many(
        KEY,
        server.addr,
        ids.0,
        ids.1,
        args.catchup,
        tag,
        u64::from(args.connections),
    )?;
    r.activities = done;
    r.write_secs = secs;
    eprintln!("wrote {done} activities in {secs:.1} s");
    server.stop(Duration::from_secs(600))?;
    Ok(())
}

/// `cairn restore --index-only` of `backup` into the stopped repository `data`, then a
/// start that catches the index up (until `/health`), then `cairn index check`: each timed
/// into `r`.
fn restore_and_catch_up(
    cairn: &Path,
    backup: &Path,
    data: &Path,
    log: &Path,
    wait: &dyn Fn(&str),
    r: &mut Restore,
) -> anyhow::Result<()> {
    r.restore_secs = common::run_logged(
        Command::new(cairn)
            .arg("restore")
            .arg("--from")
            .arg(backup)
            .arg("--data")
            .arg(data)
            .arg("--index-only"),
        log,
    )?;
    wait("catch-up");
    common::settle_writeback();
    let s = Server::start(cairn, data, KEY, log, Duration::from_secs(3600))?;
    r.catchup_listen_secs = s.listening_secs;
    r.catchup_ready_secs = s.ready_secs;
    s.stop(Duration::from_secs(600))?;
    let t = Instant::now();
    let out = Command::new(cairn)
        .arg("index")
        .arg("check")
        .arg("--data")
        .arg(data)
        .output()?;
    r.check_secs = t.elapsed().as_secs_f64();
    r.check_passed = out.status.success();
    r.check_output = String::from_utf8_lossy(&out.stdout)
        .lines()
        .take(5)
        .collect::<Vec<_>>()
        .join(" / ");
    Ok(())
}

/// `cp -r SRC DST`, then `sync` of every copied file and of the folder.
fn cp_index(src: &Path, dst: &Path) -> anyhow::Result<CopyRun> {
    common::remove_tree(dst)?;
    let watch = common::CpuWatch::start(None);
    let t0 = Instant::now();
    let st = Command::new("cp").arg("-r").arg(src).arg(dst).status()?;
    anyhow::ensure!(st.success(), "cp -r failed");
    let mut files: Vec<PathBuf> = fs::read_dir(dst)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    let n = files.len() as u64;
    files.push(dst.to_path_buf());
    let st = Command::new("sync").args(&files).status()?;
    anyhow::ensure!(st.success(), "sync failed");
    let seconds = t0.elapsed().as_secs_f64();
    let bytes = dir_size(dst)?;
    Ok(CopyRun {
        what: "cp -r + sync".into(),
        bytes,
        new_bytes: bytes,
        files: n,
        seconds,
        wall_seconds: seconds,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        others_cpu: watch.others_share(),
    })
}

/// RFC 3339 (`2026-11-27T14:55:37.123456789Z`) to seconds since the epoch.
fn rfc3339_secs(s: &str) -> Option<f64> {
    let whole = format!("{}Z", s.get(..19)?);
    let secs = corpus::parse_date(&whole)? as f64;
    let frac = s
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| r.trim_end_matches(|c: char| !c.is_ascii_digit()))
        .filter(|r| !r.is_empty())
        .and_then(|r| format!("0.{r}").parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(secs + frac)
}

/// Starts `action` (`BackupIndex` or `BackupRepository`) into `target` and polls
/// `QueryIndexBackup` until it is finished.
fn backup(
    client: &mut Client,
    server_pid: u32,
    action: &str,
    target: &str,
) -> anyhow::Result<CopyRun> {
    let watch = common::CpuWatch::start(Some(server_pid));
    let t0 = Instant::now();
    let a = client
        .post(
            &format!("/odata.svc/('Root')/{action}"),
            &format!("{{\"target\":{}}}", json_string(target)),
        )?
        .ok()?;
    let v = a.json()?;
    let mine = |v: &serde_json::Value| {
        v["Current"]["TargetPath"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/{target}")))
    };
    anyhow::ensure!(mine(&v), "{action} {target} did not start: {}", a.body);
    let (info, wall) = loop {
        let a = client.get("/odata.svc/('Root')/QueryIndexBackup")?.ok()?;
        let v = a.json()?;
        let state = v["State"].as_str().unwrap_or("");
        if mine(&v) && !matches!(state, "Started" | "Executing" | "CancelRequested") {
            if state != "Finished" {
                bail!("{action} {target} ended {state}: {}", a.body);
            }
            break (v["Current"].clone(), t0.elapsed().as_secs_f64());
        }
        thread::sleep(Duration::from_millis(5));
    };
    let started = info["StartedAt"].as_str().and_then(rfc3339_secs);
    let finished = info["FinishedAt"].as_str().and_then(rfc3339_secs);
    let seconds = match (started, finished) {
        (Some(s), Some(f)) if f >= s => f - s,
        _ => wall,
    };
    let bytes = info["CopiedBytes"].as_u64().unwrap_or(0);
    let target_path = PathBuf::from(info["TargetPath"].as_str().unwrap_or(""));
    let (new_bytes, files) = new_bytes(&target_path)?;
    Ok(CopyRun {
        what: format!("{action} {target}"),
        bytes,
        new_bytes,
        files,
        seconds,
        wall_seconds: wall,
        mb_per_s: bytes as f64 / 1e6 / seconds,
        others_cpu: watch.others_share(),
    })
}

/// Bytes of files under `dir` that are not hard-linked elsewhere, and the file count.
fn new_bytes(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                if m.nlink() == 1 {
                    bytes += m.len();
                }
            }
        }
    }
    Ok((bytes, files))
}

fn print_report(r: &Report) {
    println!(
        "## {} items, cairn {}; data folder {:.0} MB, index {:.0} MB",
        r.items,
        r.cairn_source.as_deref().unwrap_or("?"),
        r.data_bytes as f64 / 1e6,
        r.index_bytes as f64 / 1e6
    );
    if !r.copies.is_empty() {
        println!();
        println!("| copy | MB | files | seconds | MB/s | client wall s | others' CPU |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for c in &r.copies {
            println!(
                "| {} | {:.1} | {} | {:.3} | {:.0} | {:.3} | {:.0}% |",
                c.what,
                c.bytes as f64 / 1e6,
                c.files,
                c.seconds,
                c.mb_per_s,
                c.wall_seconds,
                c.others_cpu * 100.0
            );
        }
        let mean = |pred: &dyn Fn(&CopyRun) -> bool| {
            let v: Vec<f64> = r
                .copies
                .iter()
                .filter(|c| pred(c))
                .map(|c| c.mb_per_s)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let cp = mean(&|c| c.what.starts_with("cp"));
        let bk = mean(&|c| c.what.starts_with("Backup"));
        println!();
        println!(
            "backup {bk:.0} MB/s vs cp {cp:.0} MB/s (means): {:.2}x (target >= 0.9x)",
            bk / cp
        );
    }
    if let Some((inc, changed)) = &r.incremental {
        let full = r
            .copies
            .iter()
            .find(|c| c.what == "BackupIndex b1")
            .or_else(|| r.copies.iter().find(|c| c.what.starts_with("Backup")));
        println!();
        println!(
            "incremental after {changed} changed items: {:.3} s, {:.1} MB new of {:.1} MB ({} files)",
            inc.seconds,
            inc.new_bytes as f64 / 1e6,
            inc.bytes as f64 / 1e6,
            inc.files
        );
        if let Some(f) = full {
            println!(
                "  against the full one ({:.3} s, {:.1} MB): time {:.1}%, new bytes {:.1}% (target <= 10%)",
                f.seconds,
                f.bytes as f64 / 1e6,
                100.0 * inc.seconds / f.seconds,
                100.0 * inc.new_bytes as f64 / f.bytes as f64
            );
        }
    }
    if !r.writes.is_empty() {
        println!();
        println!("| round | backup running | creates/s | p50 ms | p99 ms | backups finished | non-2xx | others' CPU |");
        println!("|---:|---|---:|---:|---:|---:|---:|---:|");
        for w in &r.writes {
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0}% |",
                w.round,
                if w.with_backup { "yes" } else { "no" },
                w.run.rps,
                w.run.p50_ms,
                w.run.p99_ms,
                w.backups_finished,
                w.run.non_2xx + w.run.socket_errors,
                w.run.others_cpu * 100.0
            );
        }
        let mean = |b: bool| {
            let v: Vec<f64> = r
                .writes
                .iter()
                .filter(|w| w.with_backup == b)
                .map(|w| w.run.rps)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        println!();
        println!(
            "writes during backups {:.0}/s vs without {:.0}/s: {:.2}x (target >= 0.8x)",
            mean(true),
            mean(false),
            mean(true) / mean(false)
        );
    }
    if let Some(x) = &r.restore {
        let total = x.restore_secs + x.catchup_ready_secs;
        println!();
        println!("| step | seconds |");
        println!("|---|---:|");
        println!(
            "| BackupRepository r1 ({:.0} MB) | {:.2} |",
            x.backup_bytes as f64 / 1e6,
            x.backup_secs
        );
        println!(
            "| {} PATCHes after it (activities to catch up) | {:.2} |",
            x.activities, x.write_secs
        );
        println!(
            "| `cairn restore --index-only` (verify, stage, swap) | {:.2} |",
            x.restore_secs
        );
        println!(
            "| for scale: `cp -r` + sync of the backup's index folder | {:.2} |",
            x.restore_floor_secs
        );
        println!(
            "| `cairn serve` start until /health, catching up (listening after {:.2}) | {:.2} |",
            x.catchup_listen_secs, x.catchup_ready_secs
        );
        println!(
            "| `cairn serve` start until /health with nothing to catch up | {:.2} |",
            x.plain_start_secs
        );
        println!("| restore + catch-up | {total:.2} |");
        println!("| `cairn index check` afterwards | {:.2} |", x.check_secs);
        println!(
            "| `cairn index rebuild` of the same data | {:.2} |",
            x.rebuild_secs
        );
        println!();
        println!(
            "rebuild / (restore + catch-up) = {:.1}x (target >= 20x); index check after catch-up: {} ({})",
            x.rebuild_secs / total,
            if x.check_passed { "passed" } else { "FAILED" },
            x.check_output
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}
