//! `cairn-repo-bench`: backups into a repository (issue 13), on a stopped repository made
//! with `cairn import` (shared with the other benchmarks: `DIR/N<items>/data`, copied to
//! `DIR/N<items>/repo/data` for this run), against a real S3-compatible server (moto,
//! started here on 127.0.0.1) and a local folder:
//!
//! 1. **Full backup into S3** (`cairn backup create --data D --to s3://bench/cairn/full`),
//!    against uploading the files of a plain backup of the same repository with boto3's
//!    managed transfer (`scripts/s3_upload.py`, what `aws s3 cp --recursive` does) to the
//!    same server. Ratio = the peer's seconds ÷ Cairn's (≥ 0.9 is the target).
//! 2. **Incremental**: 1% of the articles changed (PATCH over HTTP through `cairn serve`,
//!    stopped afterwards), then a second backup into the same repository: the bytes it
//!    added at the server (object sizes, listed) and its time, against the full one's.
//! 3. **Encrypted against plain, local folder**: `--to FOLDER/e1 --encrypt-to age1...`
//!    against `--to FOLDER/p2`, back to back. Ratio = plain seconds ÷ encrypted (≥ 0.8).
//!
//! Every timed run is a whole `cairn` process (start to exit), with the page cache as the
//! previous step left it; `sync` and a writeback wait come before each.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_bench::measure::dir_size;
use cairn_testkit::MotoServer;
use clap::Parser;
use serde::Serialize;

use common::Server;

#[derive(Parser, Debug)]
#[command(about = "Cairn backups into S3 (moto) and encrypted, against boto3 and plain")]
struct Args {
    #[command(flatten)]
    bench: common::BenchArgs,
    /// Articles changed before the incremental backup (default: 1% of the corpus).
    #[arg(long)]
    changes: Option<u64>,
    /// The Python with boto3 (default: the workspace's .venv, which `.ci/run` makes).
    #[arg(long)]
    python: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the work folder afterwards (it is deleted by default: it holds GBs).
    #[arg(long)]
    keep: bool,
}

const KEY: &str = "cairn-repo-bench-key-0123456789abcdef";
const BUCKET: &str = "bench";

#[derive(Debug, Default, Serialize)]
struct Report {
    items: usize,
    data_bytes: u64,
    plain_backup_bytes: u64,
    plain_local_secs: f64,
    s3_full_secs: f64,
    s3_full_stored_bytes: u64,
    peer_upload_secs: f64,
    peer_upload_bytes: u64,
    full_ratio: f64,
    changed: u64,
    s3_incremental_secs: f64,
    s3_incremental_stored_bytes: u64,
    incremental_bytes_ratio: f64,
    incremental_time_ratio: f64,
    plain_local_again_secs: f64,
    encrypted_local_secs: f64,
    encrypted_local_stored_bytes: u64,
    encrypted_ratio: f64,
}

/// Runs `cairn ARGS` with `env` (S3's settings); its wall seconds.
fn timed(
    cairn: &Path,
    env: &[(&'static str, String)],
    args: &[&str],
    log: &Path,
) -> anyhow::Result<f64> {
    common::settle_writeback();
    let mut c = Command::new(cairn);
    c.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    common::run_logged(&mut c, log)
}

/// Bytes the server holds under `prefix`.
fn stored(moto: &MotoServer, prefix: &str) -> anyhow::Result<u64> {
    Ok(moto
        .objects(BUCKET, prefix)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|(_, n)| n)
        .sum())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (paths, log, pristine) = common::imported(&args.bench, "repo-run.log")?;
    let report = common::in_work_dir(&paths.base.join("repo"), args.keep, |work| {
        run(&args, &paths.cairn, &pristine, work, &log)
    })?;
    common::emit(&report, args.json.as_deref())
}

fn run(
    args: &Args,
    cairn: &Path,
    pristine: &Path,
    work: &Path,
    log: &Path,
) -> anyhow::Result<Report> {
    let mut r = Report {
        items: args.bench.items,
        ..Report::default()
    };
    let data = work.join("data");
    eprintln!("copying {} to {}", pristine.display(), data.display());
    common::copy_tree(pristine, &data)?;
    let _ = fs::remove_file(data.join(".bench-imported"));
    let _ = common::remove_tree(&data.join("backups"));
    r.data_bytes = dir_size(&data)?;
    let d = data.to_str().context("data path")?;
    let moto = MotoServer::start().map_err(|e| anyhow::anyhow!("{e}"))?;
    moto.create_bucket(BUCKET)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // `cairn backup create --data D --to TO MORE...`, timed (S3 reached at moto; the
    // local runs after it is stopped do not use it).
    let env = moto.env();
    let backup_to = |to: &str, more: &[&str]| {
        let args = [&["backup", "create", "--data", d, "--to", to][..], more].concat();
        timed(cairn, &env, &args, log)
    };

    // 1. Plain local (the peer's files), full into S3, the peer.
    let plain = work.join("local");
    let p1 = plain.join("p1");
    r.plain_local_secs = backup_to(p1.to_str().context("path")?, &[])?;
    r.plain_backup_bytes = dir_size(&p1)?;
    eprintln!(
        "plain local backup: {:.1} s, {} bytes",
        r.plain_local_secs, r.plain_backup_bytes
    );
    r.s3_full_secs = backup_to("s3://bench/cairn/full", &[])?;
    r.s3_full_stored_bytes = stored(&moto, "cairn/")?;
    eprintln!(
        "full into S3: {:.1} s, {} bytes stored",
        r.s3_full_secs, r.s3_full_stored_bytes
    );
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python3"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3_upload.py");
    common::settle_writeback();
    let out = Command::new(&python)
        .arg(&script)
        .args([&moto.endpoint(), BUCKET, "peer"])
        .arg(&p1)
        .output()
        .with_context(|| format!("run {}", python.display()))?;
    if !out.status.success() {
        bail!("the peer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    r.peer_upload_secs = peer["seconds"].as_f64().context("peer seconds")?;
    r.peer_upload_bytes = peer["bytes"].as_u64().context("peer bytes")?;
    r.full_ratio = r.peer_upload_secs / r.s3_full_secs;
    eprintln!(
        "boto3 upload: {:.1} s; ratio {:.2}",
        r.peer_upload_secs, r.full_ratio
    );

    // 2. 1% changed, then incremental.
    let server = Server::start(cairn, &data, KEY, log, Duration::from_secs(3600))?;
    let mut client = common::Client::new(server.addr, KEY);
    let (lo, hi) = common::article_ids(&mut client)?;
    let n = args.changes.unwrap_or(args.bench.items as u64 / 100);
    let (secs, done) = common::patch_many(KEY, server.addr, lo, hi, n, "repo", 16)?;
    eprintln!("{done} articles changed in {secs:.1} s");
    r.changed = done;
    server.stop(Duration::from_secs(600))?;
    let before = stored(&moto, "cairn/")?;
    r.s3_incremental_secs = backup_to("s3://bench/cairn/incr", &[])?;
    r.s3_incremental_stored_bytes = stored(&moto, "cairn/")? - before;
    r.incremental_bytes_ratio =
        r.s3_incremental_stored_bytes as f64 / r.s3_full_stored_bytes as f64;
    r.incremental_time_ratio = r.s3_incremental_secs / r.s3_full_secs;
    eprintln!(
        "incremental: {:.1} s, {} bytes ({:.1}% of the full one's bytes, {:.1}% of its time)",
        r.s3_incremental_secs,
        r.s3_incremental_stored_bytes,
        r.incremental_bytes_ratio * 100.0,
        r.incremental_time_ratio * 100.0
    );
    drop(moto);

    // 3. Encrypted against plain, local.
    let p2 = plain.join("p2");
    r.plain_local_again_secs = backup_to(p2.to_str().context("path")?, &[])?;
    common::remove_tree(&p2)?;
    let key = work.join("key.txt");
    let out = Command::new(cairn)
        .args(["backup", "keygen"])
        .arg(&key)
        .output()?;
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let enc = work.join("encrypted");
    r.encrypted_local_secs = backup_to(
        enc.join("e1").to_str().context("path")?,
        &["--encrypt-to", &recipient],
    )?;
    r.encrypted_local_stored_bytes = dir_size(&enc)?;
    r.encrypted_ratio = r.plain_local_again_secs / r.encrypted_local_secs;
    eprintln!(
        "local: plain {:.1} s, encrypted {:.1} s; ratio {:.2}",
        r.plain_local_again_secs, r.encrypted_local_secs, r.encrypted_ratio
    );
    Ok(r)
}
