//! Blobs in PostgreSQL: rows of 1 MiB (`PgBlobs`, what Cairn uses) against large objects
//! (`lo_*`, PostgreSQL's other way to keep bytes), on one server started for the run, the
//! same bytes into each: many small files and one large one written, the large one read
//! whole and by random ranges, the space each takes, and a backup of each database
//! (Cairn's own, `pg_dump` of the whole database, large objects included).
//!
//! The large-object side is written here only to be measured: each blob is `lo_create`,
//! then `lo_put` of 1 MiB at a time in one transaction (what `lo_write` does through a
//! descriptor), read by `lo_get(oid, offset, length)`.
//!
//!   cargo build --release -p cairn-bench
//!   target/release/cairn-pgblobs-bench [--large-mb 200] [--small 2000] [--json out.json]

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use cairn_store::files::{BlobStore, PgBlobs, StagedFile};
use cairn_store::{CancelToken, DatabaseUrl, Store};
use clap::Parser;
use common::{emit, in_work_dir};
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Blobs in PostgreSQL: 1 MiB rows against large objects")]
struct Args {
    /// The large file's size, in MB (10^6 bytes).
    #[arg(long, default_value_t = 200)]
    large_mb: usize,
    /// How many small files.
    #[arg(long, default_value_t = 2000)]
    small: usize,
    /// Their size, in KB (10^3 bytes).
    #[arg(long, default_value_t = 10)]
    small_kb: usize,
    /// Random 64 KiB range reads of the large file.
    #[arg(long, default_value_t = 1000)]
    ranges: usize,
    /// Work folder (deleted afterwards unless --keep).
    #[arg(long, default_value = "/tmp/cairn-pgblobs-bench")]
    dir: PathBuf,
    /// Keep the work folder.
    #[arg(long)]
    keep: bool,
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One way of keeping blobs, measured.
#[derive(Serialize, Debug, Default)]
struct Side {
    small_files_per_s: f64,
    large_write_mb_per_s: f64,
    large_read_mb_per_s: f64,
    range_read_p50_ms: f64,
    range_read_p99_ms: f64,
    bytes_on_disk: i64,
    backup_s: f64,
    backup_bytes: u64,
}

#[derive(Serialize, Debug)]
struct Report {
    large_bytes: usize,
    small_files: usize,
    small_bytes: usize,
    range_reads: usize,
    rows: Side,
    large_objects: Side,
    /// Rows against large objects (above 1: rows faster or smaller).
    write_rows_vs_lo: f64,
    read_rows_vs_lo: f64,
    small_rows_vs_lo: f64,
    backup_rows_vs_lo: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let report = in_work_dir(&args.dir, args.keep, |work| run(&args, work))?;
    emit(&report, args.json.as_deref())
}

/// Bytes `n` of a fixed-seed, incompressible stream.
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

fn run(args: &Args, work: &Path) -> Result<Report> {
    let pg = cairn_testkit::PgCluster::start().context("start PostgreSQL")?;
    let rows_url = pg.create_database("bench_rows")?;
    let lo_url = pg.create_database("bench_lo")?;
    // Both are Cairn databases (the tables, the meta): the backup is Cairn's own.
    let rows_store = Store::open(&DatabaseUrl::parse(&rows_url)?)?;
    let lo_store = Store::open(&DatabaseUrl::parse(&lo_url)?)?;
    let mut lo = postgres::Client::connect(&lo_url, postgres::NoTls)?;
    lo.batch_execute(
        "CREATE TABLE IF NOT EXISTS lo_blobs (hash TEXT PRIMARY KEY, oid OID NOT NULL, \
         size BIGINT NOT NULL)",
    )?;
    let rows = PgBlobs::new(&rows_url);
    let small_bytes = args.small_kb * 1000;
    let large = random_bytes(1, args.large_mb * 1_000_000);
    let large_file = work.join("large.bin");
    std::fs::write(&large_file, &large)?;

    let mut r = Side::default();
    let mut l = Side::default();

    // Small files: each staged (hashed) and stored, one transaction each.
    let t = Instant::now();
    for i in 0..args.small {
        let body = random_bytes(1000 + i as u64, small_bytes);
        let mut staged = StagedFile::create(&rows)?;
        staged.write(&body)?;
        staged.into_blob(&rows)?;
    }
    r.small_files_per_s = args.small as f64 / t.elapsed().as_secs_f64();
    // As a store of large objects would: from the staged file, on a connection of its own
    // (as `PgBlobs` stores each blob).
    let t = Instant::now();
    let staged = work.join("small.part");
    for i in 0..args.small {
        let body = random_bytes(1000 + i as u64, small_bytes);
        std::fs::write(&staged, &body)?;
        let mut c = postgres::Client::connect(&lo_url, postgres::NoTls)?;
        lo_store_bytes(
            &mut c,
            &format!("small{i}"),
            &mut std::fs::File::open(&staged)?,
        )?;
    }
    l.small_files_per_s = args.small as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "small files/s: rows {:.0}, large objects {:.0}",
        r.small_files_per_s, l.small_files_per_s
    );

    // The large file: written from a local file, read whole.
    let mb = large.len() as f64 / 1e6;
    let t = Instant::now();
    let mut staged = StagedFile::create(&rows)?;
    staged.copy_from(&large_file, &mut |_| {})?;
    let id = staged.into_blob(&rows)?;
    r.large_write_mb_per_s = mb / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let oid = lo_store_bytes(&mut lo, "large", &mut std::fs::File::open(&large_file)?)?;
    l.large_write_mb_per_s = mb / t.elapsed().as_secs_f64();
    eprintln!(
        "large write MB/s: rows {:.0}, large objects {:.0}",
        r.large_write_mb_per_s, l.large_write_mb_per_s
    );

    let t = Instant::now();
    let (mut reader, _) = rows.open(&id.hash)?.context("the large blob")?;
    let mut back = Vec::with_capacity(large.len());
    reader.read_to_end(&mut back)?;
    r.large_read_mb_per_s = mb / t.elapsed().as_secs_f64();
    anyhow::ensure!(back == large, "rows gave other bytes");
    let t = Instant::now();
    let back = lo_read(&mut lo, oid, 0, large.len())?;
    l.large_read_mb_per_s = mb / t.elapsed().as_secs_f64();
    anyhow::ensure!(back == large, "large objects gave other bytes");
    eprintln!(
        "large read MB/s: rows {:.0}, large objects {:.0}",
        r.large_read_mb_per_s, l.large_read_mb_per_s
    );

    // Random 64 KiB ranges, as a download's Range requests read them (a reader per range).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let want = 64 << 10;
    let starts: Vec<usize> = (0..args.ranges)
        .map(|_| rng.random_range(0..large.len() - want))
        .collect();
    let mut times = Vec::with_capacity(starts.len());
    for &at in &starts {
        let t = Instant::now();
        let (mut reader, _) = rows.open(&id.hash)?.context("the large blob")?;
        reader.seek(SeekFrom::Start(at as u64))?;
        let mut buf = vec![0u8; want];
        reader.read_exact(&mut buf)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(buf == large[at..at + want], "a range from rows differs");
    }
    (r.range_read_p50_ms, r.range_read_p99_ms) = p50_p99(&mut times);
    times.clear();
    for &at in &starts {
        let t = Instant::now();
        let mut c = postgres::Client::connect(&lo_url, postgres::NoTls)?;
        let buf = lo_read(&mut c, oid, at, want)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            buf == large[at..at + want],
            "a range from large objects differs"
        );
    }
    (l.range_read_p50_ms, l.range_read_p99_ms) = p50_p99(&mut times);
    eprintln!(
        "64 KiB range p50 ms: rows {:.2}, large objects {:.2}",
        r.range_read_p50_ms, l.range_read_p50_ms
    );

    let mut c = postgres::Client::connect(&rows_url, postgres::NoTls)?;
    r.bytes_on_disk = c
        .query_one(
            "SELECT (pg_total_relation_size('blobs') + pg_total_relation_size('blob_chunks'))::BIGINT",
            &[],
        )?
        .get(0);
    l.bytes_on_disk = lo
        .query_one(
            "SELECT (pg_total_relation_size('pg_largeobject') \
             + pg_total_relation_size('pg_largeobject_metadata') \
             + pg_total_relation_size('lo_blobs'))::BIGINT",
            &[],
        )?
        .get(0);

    for (side, store, name) in [(&mut r, &rows_store, "rows"), (&mut l, &lo_store, "lo")] {
        let t = Instant::now();
        let made = store.backup_database(&work.join(name), &|_, _| {}, &CancelToken::new())?;
        side.backup_s = t.elapsed().as_secs_f64();
        side.backup_bytes = made.bytes;
    }
    eprintln!(
        "backup s: rows {:.2}, large objects {:.2}",
        r.backup_s, l.backup_s
    );
    drop(pg);
    Ok(Report {
        large_bytes: large.len(),
        small_files: args.small,
        small_bytes,
        range_reads: args.ranges,
        write_rows_vs_lo: r.large_write_mb_per_s / l.large_write_mb_per_s,
        read_rows_vs_lo: r.large_read_mb_per_s / l.large_read_mb_per_s,
        small_rows_vs_lo: r.small_files_per_s / l.small_files_per_s,
        backup_rows_vs_lo: l.backup_s / r.backup_s,
        rows: r,
        large_objects: l,
    })
}

fn p50_p99(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (
        common::percentile(times, 50.0),
        common::percentile(times, 99.0),
    )
}

/// One large object holding everything `src` reads, in one transaction of 1 MiB writes.
fn lo_store_bytes(c: &mut postgres::Client, name: &str, src: &mut dyn Read) -> Result<u32> {
    let mut tx = c.transaction()?;
    let oid: u32 = tx.query_one("SELECT lo_create(0)", &[])?.get(0);
    let mut buf = vec![0u8; 1 << 20];
    let mut at: i64 = 0;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = src.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        tx.execute("SELECT lo_put($1, $2, $3)", &[&oid, &at, &&buf[..n]])?;
        at += n as i64;
    }
    tx.execute(
        "INSERT INTO lo_blobs (hash, oid, size) VALUES ($1, $2, $3)",
        &[&name, &oid, &at],
    )?;
    tx.commit()?;
    Ok(oid)
}

/// `len` bytes of the large object `oid` from `at`, 1 MiB per `lo_get`.
fn lo_read(c: &mut postgres::Client, oid: u32, at: usize, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut tx = c.transaction()?;
    while out.len() < len {
        let n = (len - out.len()).min(1 << 20) as i32;
        let off = (at + out.len()) as i64;
        let got: Vec<u8> = tx
            .query_one("SELECT lo_get($1, $2, $3)", &[&oid, &off, &n])?
            .get(0);
        anyhow::ensure!(!got.is_empty(), "large object {oid} ends early");
        out.write_all(&got)?;
    }
    tx.commit()?;
    Ok(out)
}
