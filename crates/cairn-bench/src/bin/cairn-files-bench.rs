//! Files over HTTP against `cp` (issue "Files"): a large file uploaded (whole, and in
//! chunks as sensenet's client sends them) and downloaded over loopback, against `cp` of
//! the same file (each followed by an fsync of the copy, as the server syncs a blob); the
//! server's peak RSS during the upload; then many small files from several connections,
//! against as many plain creates.
//!
//!   cargo build --release -p cairn -p cairn-bench
//!   target/release/cairn-files-bench [--size-mb 1000] [--small 10000] [--json out.json]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use common::{default_cairn, emit, in_work_dir, settle_writeback, Client, Server};
use serde::Serialize;

const KEY: &str = "files-bench-key-0123456789";

#[derive(Parser, Debug)]
#[command(about = "Upload and download of a large file against cp; many small files")]
struct Args {
    /// The large file's size, in MB (10^6 bytes).
    #[arg(long, default_value_t = 1000)]
    size_mb: u64,
    /// How many small files.
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// Their size, in KB (10^3 bytes).
    #[arg(long, default_value_t = 10)]
    small_kb: usize,
    /// Connections for the small files and the creates.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Chunk size of the chunked upload, in bytes (the published client's is 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    chunk: usize,
    /// Seconds to rest after the writeback of each phase before the next: this machine's
    /// disk takes a gigabyte or two at burst speed and then slows to a third for a while,
    /// so that without a rest each phase would be timed at another disk speed.
    #[arg(long, default_value_t = 20)]
    rest: u64,
    /// Work folder (deleted afterwards unless --keep).
    #[arg(long, default_value = "/tmp/cairn-files-bench")]
    dir: PathBuf,
    /// Keep the work folder.
    #[arg(long)]
    keep: bool,
    /// The `cairn` binary (default: next to this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Also write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
struct Report {
    size_bytes: u64,
    cp_s: f64,
    cp_runs_s: Vec<f64>,
    upload_whole_s: f64,
    upload_whole_vs_cp: f64,
    upload_chunked_s: f64,
    upload_chunked_vs_cp: f64,
    chunk_bytes: usize,
    download_s: f64,
    download_vs_cp: f64,
    rss_idle_mb: f64,
    rss_peak_during_upload_mb: f64,
    rss_above_idle_mb: f64,
    small_files: usize,
    small_bytes: usize,
    connections: usize,
    small_files_per_s: f64,
    creates_per_s: f64,
    small_files_vs_creates: f64,
}

/// Fills `path` with `size` pseudo-random bytes (xorshift: incompressible, fast).
fn write_random(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path)?;
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// kB of `field` (`VmRSS`, `VmHWM`) in /proc/PID/status.
fn proc_kb(pid: u32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("{field} of {pid}"))
}

/// Reads an HTTP/1.1 answer's status and body (Content-Length or chunked), the body into
/// `sink`.
fn read_answer(conn: &mut BufReader<TcpStream>, sink: &mut dyn Write) -> Result<u16> {
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse::<u64>().ok(),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let n = u64::from_str_radix(line.trim(), 16).context("chunk size")?;
            std::io::copy(&mut conn.by_ref().take(n), sink)?;
            line.clear();
            conn.read_line(&mut line)?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        std::io::copy(&mut conn.by_ref().take(n), sink)?;
    }
    Ok(status)
}

/// One multipart upload: where, the form's fields, the file's name, a `Content-Range`.
struct Form<'a> {
    path: &'a str,
    fields: &'a [(&'a str, String)],
    file_name: &'a str,
    range: Option<String>,
}

/// A piece of work of one connection, by its number.
type Job = Arc<dyn Fn(&mut BufReader<TcpStream>, usize) -> Result<()> + Send + Sync>;

/// One multipart upload on `conn`: `form`, then `len` bytes of `data` as the file part.
/// Returns the status and the answer.
fn upload(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    form: Form<'_>,
    data: &mut dyn Read,
    len: u64,
) -> Result<(u16, String)> {
    let Form {
        path,
        fields,
        file_name,
        range,
    } = form;
    let b = "----cairn-files-bench";
    let mut head = String::new();
    for (k, v) in fields {
        head.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    head.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = format!("\r\n--{b}--\r\n");
    let total = head.len() as u64 + len + tail.len() as u64;
    let range = range
        .map(|r| format!("Content-Range: {r}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n{range}\
         Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {total}\r\n\r\n{head}"
    );
    let s = conn.get_mut();
    s.write_all(req.as_bytes())?;
    let copied = std::io::copy(&mut data.take(len), s)?;
    if copied != len {
        bail!("the source held {copied} bytes, not {len}");
    }
    s.write_all(tail.as_bytes())?;
    let mut answer = Vec::new();
    let status = read_answer(conn, &mut answer)?;
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

fn connect(addr: SocketAddr) -> Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    Ok(BufReader::with_capacity(1 << 20, s))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cairn = args.cairn.clone().unwrap_or_else(default_cairn);
    let report = in_work_dir(&args.dir, args.keep, |work| run(&args, &cairn, work))?;
    emit(&report, args.json.as_deref())
}

fn run(args: &Args, cairn: &Path, work: &Path) -> Result<Report> {
    let size = args.size_mb * 1_000_000;
    let src = work.join("big.bin");
    eprintln!("writing {} MB of random bytes", args.size_mb);
    write_random(&src, size, 7)?;

    // cp, then an fsync of the copy (what the server does with a blob); three times, each
    // after the writeback of what went before (the disk's speed varies from minute to
    // minute here): the median is the peer. Every upload and download below also starts
    // with nothing left to write back, so that none pays for the one before it.
    let copy = work.join("copy.bin");
    let mut cps = Vec::new();
    let settle = || {
        settle_writeback();
        std::thread::sleep(Duration::from_secs(args.rest));
    };
    for _ in 0..3 {
        settle();
        let t = Instant::now();
        let ok = Command::new("cp").arg(&src).arg(&copy).status()?.success()
            && Command::new("sync").arg(&copy).status()?.success();
        anyhow::ensure!(ok, "cp failed");
        cps.push(t.elapsed().as_secs_f64());
        std::fs::remove_file(&copy)?;
    }
    cps.sort_by(f64::total_cmp);
    let cp_s = cps[1];
    eprintln!("cp + sync: {cps:.2?} s, median {cp_s:.2} s");

    let data = work.join("data");
    let server = Server::start(
        cairn,
        &data,
        KEY,
        &work.join("server.log"),
        Duration::from_secs(120),
    )?;
    let addr = server.addr;
    let pid = server.pid();
    let mut c = Client::new(addr, KEY);
    c.post(
        "/odata.svc/Root",
        r#"{"__ContentType":"Folder","Name":"bench"}"#,
    )?
    .ok()?;
    c.post(
        "/odata.svc/Root",
        r#"{"__ContentType":"Folder","Name":"small"}"#,
    )?
    .ok()?;
    c.post(
        "/odata.svc/Root",
        r#"{"__ContentType":"Folder","Name":"plain"}"#,
    )?
    .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = proc_kb(pid, "VmRSS")?;

    // Whole.
    // Connected after the rest: an idle connection is closed by the server's header timeout.
    settle();
    let mut conn = connect(addr)?;
    let t = Instant::now();
    let fields = [
        ("FileName", "big.bin".to_string()),
        ("Overwrite", "true".to_string()),
        ("FileLength", size.to_string()),
    ];
    let (status, answer) = upload(
        &mut conn,
        addr,
        Form {
            path: "/odata.svc/Root/bench/Upload",
            fields: &fields,
            file_name: "big.bin",
            range: None,
        },
        &mut File::open(&src)?,
        size,
    )?;
    let upload_whole_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(status == 200, "upload: {status} {answer}");
    let rss_peak = proc_kb(pid, "VmHWM")?;
    eprintln!(
        "upload (whole): {upload_whole_s:.2} s; peak RSS {} MB",
        rss_peak / 1024
    );

    // In chunks, as the published client sends them (it resends the first chunk). Other
    // bytes than the whole upload's (the same would only be hashed, not stored again).
    let src2 = work.join("big2.bin");
    write_random(&src2, size, 8)?;
    let src = src2;
    settle();
    let mut conn = connect(addr)?;
    let t = Instant::now();
    let mut f = File::open(&src)?;
    let first = (args.chunk as u64).min(size);
    let mut head = vec![0u8; first as usize];
    f.read_exact(&mut head)?;
    let begin = [
        ("ChunkToken", "0*0*False*False".to_string()),
        ("FileName", "big2.bin".to_string()),
        ("Overwrite", "true".to_string()),
        ("PropertyName", "Binary".to_string()),
        ("FileLength", size.to_string()),
        ("UseChunk", "true".to_string()),
        ("create", "1".to_string()),
    ];
    let (status, token) = upload(
        &mut conn,
        addr,
        Form {
            path: "/odata.svc/Root/bench/Upload",
            fields: &begin,
            file_name: "big2.bin",
            range: Some(format!("bytes 0-{}/{size}", first - 1)),
        },
        &mut &head[..],
        first,
    )?;
    anyhow::ensure!(status == 200, "begin: {status} {token}");
    let mut f = File::open(&src)?;
    let mut start = 0u64;
    while start < size {
        let n = (args.chunk as u64).min(size - start);
        let fields = [
            ("FileLength", size.to_string()),
            ("ChunkToken", token.clone()),
        ];
        let (status, answer) = upload(
            &mut conn,
            addr,
            Form {
                path: "/odata.svc/Root/bench/Upload",
                fields: &fields,
                file_name: "big2.bin",
                range: Some(format!("bytes {start}-{}/{size}", start + n - 1)),
            },
            &mut f,
            n,
        )?;
        anyhow::ensure!(status == 200, "chunk at {start}: {status} {answer}");
        start += n;
    }
    let upload_chunked_s = t.elapsed().as_secs_f64();
    eprintln!("upload (chunks of {}): {upload_chunked_s:.2} s", args.chunk);

    // Download into a file, synced.
    settle();
    let mut conn = connect(addr)?;
    let out = work.join("down.bin");
    let t = Instant::now();
    {
        let mut sink = File::create(&out)?;
        let req = format!(
            "GET /Root/bench/big.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        );
        conn.get_mut().write_all(req.as_bytes())?;
        let status = read_answer(&mut conn, &mut sink)?;
        anyhow::ensure!(status == 200, "download: {status}");
        sink.sync_all()?;
    }
    let download_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(std::fs::metadata(&out)?.len() == size, "download length");
    std::fs::remove_file(&out)?;
    eprintln!("download: {download_s:.2} s");

    // Small files from several connections, then as many plain creates.
    let small_bytes = args.small_kb * 1000;
    let run_parallel = |job: Job| -> Result<f64> {
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let workers: Vec<_> = (0..args.connections)
            .map(|_| {
                let (next, job, total) = (next.clone(), job.clone(), args.small);
                std::thread::spawn(move || -> Result<()> {
                    let mut conn = connect(addr)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok(());
                        }
                        job(&mut conn, i)?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(args.small as f64 / t.elapsed().as_secs_f64())
    };
    let small_files_per_s = run_parallel(Arc::new(move |conn, i| {
        let mut body = vec![0u8; small_bytes];
        body[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let name = format!("s{i}.bin");
        let fields = [
            ("FileName", name.clone()),
            ("FileLength", small_bytes.to_string()),
        ];
        let (status, answer) = upload(
            conn,
            addr,
            Form {
                path: "/odata.svc/Root/small/Upload",
                fields: &fields,
                file_name: &name,
                range: None,
            },
            &mut &body[..],
            small_bytes as u64,
        )?;
        anyhow::ensure!(status == 200, "small upload: {status} {answer}");
        Ok(())
    }))?;
    eprintln!("small files: {small_files_per_s:.0}/s");
    let creates_per_s = run_parallel(Arc::new(move |conn, i| {
        let body = format!(r#"{{"__ContentType":"Folder","Name":"p{i}"}}"#);
        let req = format!(
            "POST /odata.svc/Root/plain HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(req.as_bytes())?;
        let status = read_answer(conn, &mut std::io::sink())?;
        anyhow::ensure!(status == 201, "create: {status}");
        Ok(())
    }))?;
    eprintln!("plain creates: {creates_per_s:.0}/s");
    server.stop(Duration::from_secs(120))?;

    let mb = |kb: u64| kb as f64 / 1024.0;
    Ok(Report {
        size_bytes: size,
        cp_s,
        cp_runs_s: cps,
        upload_whole_s,
        upload_whole_vs_cp: cp_s / upload_whole_s,
        upload_chunked_s,
        upload_chunked_vs_cp: cp_s / upload_chunked_s,
        chunk_bytes: args.chunk,
        download_s,
        download_vs_cp: cp_s / download_s,
        rss_idle_mb: mb(rss_idle),
        rss_peak_during_upload_mb: mb(rss_peak),
        rss_above_idle_mb: mb(rss_peak.saturating_sub(rss_idle)),
        small_files: args.small,
        small_bytes,
        connections: args.connections,
        small_files_per_s,
        creates_per_s,
        small_files_vs_creates: small_files_per_s / creates_per_s,
    })
}
