//! `cairn-archive-bench`: continuous archiving (issue 14) under write load. On a fresh
//! repository served by `cairn serve`, wrk `create.lua` (64 connections) for a while:
//!
//! - archiving off, into a local folder, and into S3 (moto, started here), interleaved over
//!   rounds: creates/s, and the ratio of each archiving run to the run without;
//! - while archiving, `/metrics`' `cairn_archive_lag_seconds` sampled every 100 ms: its p99
//!   and maximum (how long the oldest change not yet shipped has waited);
//! - after the load, how long until everything is shipped.
//!
//! Each run starts on an empty data folder; an archiving run waits for its first base
//! backup before the load starts, so that only the shipping of changes is measured.
//!
//! With `--postgres`, each run serves a new database of a throwaway PostgreSQL cluster
//! (started here, as the tests start theirs): archiving is then pg_receivewal's WAL.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_testkit::MotoServer;
use clap::Parser;
use serde::Serialize;

use common::{Client, Server};

#[derive(Parser, Debug)]
#[command(about = "Creates with continuous archiving on (local, S3) against off; archive lag")]
struct Args {
    /// Work folder (deleted afterwards).
    #[arg(long, default_value = "/tmp/cairn-archive-bench")]
    dir: PathBuf,
    /// The `cairn` binary (default: next to this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Folder of the wrk Lua scripts (default: crates/cairn-bench/scripts).
    #[arg(long)]
    scripts: Option<PathBuf>,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 20)]
    secs: u32,
    /// Rounds (each runs off, local, S3).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    #[arg(long)]
    json: Option<PathBuf>,
    /// On PostgreSQL (a cluster started here) instead of SQLite.
    #[arg(long)]
    postgres: bool,
}

const KEY: &str = "cairn-archive-bench-key-0123456789";

#[derive(Debug, Default, Serialize, Clone)]
struct RunResult {
    mode: String,
    round: u32,
    creates_per_sec: f64,
    p99_ms: f64,
    lag_p99_secs: f64,
    lag_max_secs: f64,
    lag_samples: usize,
    drain_secs: f64,
    others_cpu: f64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    connections: u32,
    secs: u32,
    runs: Vec<RunResult>,
    off_creates_per_sec: f64,
    local_creates_per_sec: f64,
    s3_creates_per_sec: f64,
    local_ratio: f64,
    s3_ratio: f64,
    local_lag_p99_secs: f64,
    s3_lag_p99_secs: f64,
}

fn metric(client: &mut Client, name: &str) -> Option<f64> {
    let a = client.get("/metrics").ok()?;
    a.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        n => v[n / 2],
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cairn = args.cairn.clone().unwrap_or_else(common::default_cairn);
    let scripts = args.scripts.clone().unwrap_or_else(common::default_scripts);
    common::remove_tree(&args.dir)?;
    fs::create_dir_all(&args.dir)?;
    let moto = MotoServer::start().context("start moto (.ci/run installs it)")?;
    moto.create_bucket("bench")?;
    // The server reaches S3 through the environment it inherits.
    for (k, v) in moto.env() {
        std::env::set_var(k, v);
    }
    let pg = if args.postgres {
        Some(cairn_testkit::PgCluster::start().context("start PostgreSQL")?)
    } else {
        None
    };
    let result = run(&args, &cairn, &scripts, pg.as_ref());
    common::remove_tree(&args.dir)?;
    common::emit(&result?, args.json.as_deref())
}

fn run(
    args: &Args,
    cairn: &Path,
    scripts: &Path,
    pg: Option<&cairn_testkit::PgCluster>,
) -> anyhow::Result<Report> {
    let log = args.dir.join("run.log");
    let mut report = Report {
        connections: args.connections,
        secs: args.secs,
        ..Report::default()
    };
    for round in 0..args.rounds {
        for mode in ["off", "local", "s3"] {
            let r = one_run(args, cairn, scripts, &log, mode, round, pg)?;
            eprintln!(
                "round {round} {mode}: {:.0} creates/s (p99 {:.1} ms), archive lag p99 {:.2} s, \
                 max {:.2} s ({} samples), drained {:.2} s after the load, others' CPU {:.0}%",
                r.creates_per_sec,
                r.p99_ms,
                r.lag_p99_secs,
                r.lag_max_secs,
                r.lag_samples,
                r.drain_secs,
                r.others_cpu * 100.0
            );
            report.runs.push(r);
        }
    }
    let pick = |mode: &str, f: fn(&RunResult) -> f64| {
        median(
            report
                .runs
                .iter()
                .filter(|r| r.mode == mode)
                .map(f)
                .collect(),
        )
    };
    report.off_creates_per_sec = pick("off", |r| r.creates_per_sec);
    report.local_creates_per_sec = pick("local", |r| r.creates_per_sec);
    report.s3_creates_per_sec = pick("s3", |r| r.creates_per_sec);
    report.local_ratio = report.local_creates_per_sec / report.off_creates_per_sec.max(1e-9);
    report.s3_ratio = report.s3_creates_per_sec / report.off_creates_per_sec.max(1e-9);
    report.local_lag_p99_secs = pick("local", |r| r.lag_p99_secs);
    report.s3_lag_p99_secs = pick("s3", |r| r.lag_p99_secs);
    eprintln!(
        "creates/s: off {:.0}, local {:.0} ({:.2}x), S3 {:.0} ({:.2}x); lag p99: local {:.2} s, \
         S3 {:.2} s",
        report.off_creates_per_sec,
        report.local_creates_per_sec,
        report.local_ratio,
        report.s3_creates_per_sec,
        report.s3_ratio,
        report.local_lag_p99_secs,
        report.s3_lag_p99_secs
    );
    Ok(report)
}

fn one_run(
    args: &Args,
    cairn: &Path,
    scripts: &Path,
    log: &Path,
    mode: &str,
    round: u32,
    pg: Option<&cairn_testkit::PgCluster>,
) -> anyhow::Result<RunResult> {
    if let Some(pg) = pg {
        // A database of its own; the archive's slot of an earlier run would hold WAL.
        pg.psql(
            "postgres",
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots",
        )?;
        let url = pg.create_database(&format!("bench_{mode}_{round}"))?;
        std::env::set_var("CAIRN_DATABASE", url);
    }
    let data = args.dir.join(format!("{mode}-{round}"));
    common::remove_tree(&data)?;
    fs::create_dir_all(&data)?;
    let repo = match mode {
        "local" => Some(args.dir.join(format!("arch-{round}")).display().to_string()),
        "s3" => Some(format!("s3://bench/arch-{round}")),
        _ => None,
    };
    if let Some(repo) = &repo {
        fs::write(
            data.join("cairn.toml"),
            format!(
                "[backup.archive]\nrepository = \"{repo}\"\nbase_every = \"24h\"\nindex_every = \"24h\"\n"
            ),
        )?;
    }
    common::wait_quiet(0.15, Duration::from_secs(60));
    let server = Server::start(cairn, &data, KEY, log, Duration::from_secs(120))?;
    let mut client = Client::new(server.addr, KEY);
    client
        .post(
            "/odata.svc/Root",
            r#"{"__ContentType":"Folder","Name":"Load"}"#,
        )?
        .ok()?;
    if let (Some(repo), Some(_)) = (&repo, pg) {
        // The first base backup (pg_basebackup's), before the load.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = std::process::Command::new(cairn)
                .args(["backup", "timeline", "--json", repo])
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if v["Bases"].as_array().is_some_and(|b| !b.is_empty()) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("no base backup within 2 minutes: {v}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    } else if repo.is_some() {
        // The first base backup, before the load.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = client
                .get("/odata.svc/('Root')/GetBackupPolicies")?
                .json()?;
            let based = v["Policies"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["Name"] == "archive-base" && !p["LastSuccess"].is_null());
            if based {
                break;
            }
            if Instant::now() >= deadline {
                bail!("no base backup within 2 minutes: {v}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = repo.is_some().then(|| {
        let (stop, samples, addr) = (stop.clone(), samples.clone(), server.addr);
        thread::spawn(move || {
            let mut c = Client::new(addr, KEY);
            while !stop.load(Ordering::SeqCst) {
                if let Some(lag) = metric(&mut c, "cairn_archive_lag_seconds") {
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(lag);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let run = common::run_creates(
        &server,
        scripts,
        KEY,
        "/odata.svc/Root/Load",
        &format!("{mode}{round}"),
        "archived benchmark article",
        args.connections,
        args.secs,
    );
    stop.store(true, Ordering::SeqCst);
    if let Some(h) = sampler {
        let _ = h.join();
    }
    let run = run?;
    // After the load: until nothing waits.
    let drained = Instant::now();
    let mut drain_secs = 0.0;
    if repo.is_some() {
        let deadline = drained + Duration::from_secs(120);
        loop {
            let lag = metric(&mut client, "cairn_archive_lag_seconds");
            let pending = metric(&mut client, "cairn_archive_pending_bytes");
            if lag == Some(0.0) && pending == Some(0.0) {
                drain_secs = drained.elapsed().as_secs_f64();
                break;
            }
            if Instant::now() >= deadline {
                bail!("the archive did not drain within 2 minutes");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    server.stop(Duration::from_secs(120))?;
    let mut lags = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lags.sort_by(|a, b| a.total_cmp(b));
    common::remove_tree(&data)?;
    Ok(RunResult {
        mode: mode.to_string(),
        round,
        creates_per_sec: run.rps,
        p99_ms: run.p99_ms,
        lag_p99_secs: if lags.is_empty() {
            0.0
        } else {
            common::percentile(&lags, 99.0)
        },
        lag_max_secs: lags.last().copied().unwrap_or(0.0),
        lag_samples: lags.len(),
        drain_secs,
        others_cpu: run.others_cpu,
    })
}
