//! `cairn-pitr-bench`: a restore to a point in time (issue 14) against the same database
//! restore followed by a full index rebuild, on the imported repository of
//! `cairn-api-bench` (`DIR/N<items>/data`, copied):
//!
//! 1. `cairn serve` with `[backup.archive]` into a local folder: its base backup (index and
//!    database), then wrk `create.lua` (64 connections) until about `--writes` creates;
//!    the archive drained; the server stopped.
//! 2. **Cairn**: `cairn restore --from ARCH --at latest --data A` (the base, then every
//!    change), then `cairn serve --data A` from spawn until it listens (it catches the
//!    base's index up over the writes first).
//! 3. **Peer**: the same `cairn restore --from ARCH --at latest --data B`, its index removed,
//!    then `cairn index rebuild --data B`: the only way to a consistent index without an
//!    index snapshot.
//!
//! Ratio = peer seconds ÷ Cairn seconds (target ≥ 3). `cairn index check` must pass on both
//! (not timed).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;

use common::{Client, Server};

#[derive(Parser, Debug)]
#[command(about = "Restore to a time (base + changes + catch-up) against restore + rebuild")]
struct Args {
    #[command(flatten)]
    bench: common::BenchArgs,
    /// Creates written after the base backup (about; wrk runs for a duration).
    #[arg(long, default_value_t = 100_000)]
    writes: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const KEY: &str = "cairn-pitr-bench-key-0123456789abc";

#[derive(Debug, Default, Serialize)]
struct Report {
    items: usize,
    writes: u64,
    write_secs: f64,
    base_secs: f64,
    restore_at_secs: f64,
    catch_up_start_secs: f64,
    cairn_secs: f64,
    peer_restore_at_secs: f64,
    peer_rebuild_secs: f64,
    peer_secs: f64,
    ratio: f64,
}

fn timed(cmd: &mut Command, log: &Path) -> anyhow::Result<f64> {
    common::settle_writeback();
    common::run_logged(cmd, log)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (paths, log, pristine) = common::imported(&args.bench, "pitr-run.log")?;
    let report = common::in_work_dir(&paths.base.join("pitr"), false, |work| {
        run(&args, &paths.cairn, &paths.scripts, &pristine, work, &log)
    })?;
    common::emit(&report, args.json.as_deref())
}

fn run(
    args: &Args,
    cairn: &Path,
    scripts: &Path,
    pristine: &Path,
    work: &Path,
    log: &Path,
) -> anyhow::Result<Report> {
    let mut r = Report {
        items: args.bench.items,
        ..Report::default()
    };
    let data = work.join("data");
    let arch = work.join("arch");
    common::copy_tree(pristine, &data)?;
    fs::write(
        data.join("cairn.toml"),
        format!(
            "[backup.archive]\nrepository = \"{}\"\nbase_every = \"24h\"\nindex_every = \"24h\"\n",
            arch.display()
        ),
    )?;
    let server = Server::start(cairn, &data, KEY, log, Duration::from_secs(600))?;
    let mut client = Client::new(server.addr, KEY);
    let t = Instant::now();
    loop {
        let v = client
            .get("/odata.svc/('Root')/GetBackupPolicies")?
            .json()?;
        let done = v["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["Name"] == "archive-base" && !p["LastSuccess"].is_null());
        if done {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("no base backup within 10 minutes: {v}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    r.base_secs = t.elapsed().as_secs_f64();
    eprintln!("base backup: {:.1} s", r.base_secs);
    client
        .post(
            "/odata.svc/Root",
            r#"{"__ContentType":"Folder","Name":"Pitr"}"#,
        )?
        .ok()?;
    // About `writes` creates: wrk runs for a duration, so run it in slices.
    let t = Instant::now();
    let mut slice = 0;
    while r.writes < args.writes {
        let run = common::run_creates(
            &server,
            scripts,
            KEY,
            "/odata.svc/Root/Pitr",
            &format!("p{slice}"),
            "point in time",
            64,
            20,
        )?;
        slice += 1;
        r.writes += run.lua.get("created").copied().unwrap_or(0);
        eprintln!("creates so far: {}", r.writes);
    }
    r.write_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    loop {
        let m = client.get("/metrics")?.body;
        let lag0 = m.lines().any(|l| l == "cairn_archive_lag_seconds 0");
        let pending0 = m.lines().any(|l| l == "cairn_archive_pending_bytes 0");
        if lag0 && pending0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the archive did not drain");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop(Duration::from_secs(300))?;

    // Cairn: restore to the time, then start (catch-up) until listening.
    let a = work.join("a");
    r.restore_at_secs = timed(
        Command::new(cairn)
            .args(["restore", "--from"])
            .arg(&arch)
            .args(["--at", "latest", "--data"])
            .arg(&a),
        log,
    )?;
    common::settle_writeback();
    let started = Server::start(cairn, &a, KEY, log, Duration::from_secs(1200))?;
    r.catch_up_start_secs = started.listening_secs;
    started.stop(Duration::from_secs(300))?;
    r.cairn_secs = r.restore_at_secs + r.catch_up_start_secs;
    eprintln!(
        "cairn: restore to the time {:.1} s + start with catch-up {:.1} s = {:.1} s",
        r.restore_at_secs, r.catch_up_start_secs, r.cairn_secs
    );
    check(cairn, &a, log)?;
    common::remove_tree(&a)?;

    // Peer: the same restore, then a full rebuild of the index.
    let b = work.join("b");
    r.peer_restore_at_secs = timed(
        Command::new(cairn)
            .args(["restore", "--from"])
            .arg(&arch)
            .args(["--at", "latest", "--data"])
            .arg(&b),
        log,
    )?;
    common::remove_tree(&b.join("index"))?;
    r.peer_rebuild_secs = timed(
        Command::new(cairn)
            .args(["index", "rebuild", "--data"])
            .arg(&b),
        log,
    )?;
    r.peer_secs = r.peer_restore_at_secs + r.peer_rebuild_secs;
    eprintln!(
        "peer: restore {:.1} s + rebuild {:.1} s = {:.1} s",
        r.peer_restore_at_secs, r.peer_rebuild_secs, r.peer_secs
    );
    check(cairn, &b, log)?;
    r.ratio = r.peer_secs / r.cairn_secs.max(1e-9);
    eprintln!("ratio (peer ÷ cairn): {:.2}", r.ratio);
    Ok(r)
}

fn check(cairn: &Path, data: &Path, log: &Path) -> anyhow::Result<()> {
    let ok = Command::new(cairn)
        .args(["index", "check", "--data"])
        .arg(data)
        .status()
        .context("run cairn index check")?
        .success();
    if !ok {
        bail!(
            "index check found differences in {} (see {})",
            data.display(),
            log.display()
        );
    }
    Ok(())
}
