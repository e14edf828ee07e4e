//! Shared by `cairn-api-bench` and `cairn-backup-bench` (each binary has `mod common;`):
//! a minimal HTTP/1.1 client over loopback, starting and stopping `cairn serve`, running
//! `wrk` and parsing its output, waiting for a quiet machine, and CPU accounting of the
//! processes that are not ours.
//!
//! Not every binary uses every helper.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cairn_bench::corpus;
use serde::Serialize;

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// One keep-alive connection to the server, with the administrator's key.
pub struct Client {
    addr: SocketAddr,
    key: String,
    conn: Option<BufReader<TcpStream>>,
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("not JSON (status {}): {:.200}", self.status, self.body))
    }

    pub fn ok(self) -> anyhow::Result<Answer> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            bail!("HTTP {}: {:.300}", self.status, self.body)
        }
    }
}

impl Client {
    pub fn new(addr: SocketAddr, key: &str) -> Client {
        Client {
            addr,
            key: key.to_string(),
            conn: None,
        }
    }

    /// Sends one request (reconnecting once if a kept-alive connection was closed).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let reused = self.conn.is_some();
        match self.try_request(method, path, body) {
            Ok(a) => Ok(a),
            Err(_) if reused => {
                self.conn = None;
                self.try_request(method, path, body)
            }
            Err(e) => Err(e),
        }
    }

    pub fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, body: &str) -> anyhow::Result<Answer> {
        self.request("POST", path, Some(body))
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Answer> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
                .with_context(|| format!("connect {}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.key,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body.as_bytes());
        conn.get_mut().write_all(&req)?;

        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line)? == 0 {
                bail!("connection closed in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut buf = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size {line:?}"))?;
                let start = buf.len();
                buf.resize(start + size, 0);
                conn.read_exact(&mut buf[start..])?;
                line.clear();
                conn.read_line(&mut line)?;
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            buf.resize(n, 0);
            conn.read_exact(&mut buf)?;
        } else if method != "HEAD" {
            conn.read_to_end(&mut buf)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&buf).into_owned(),
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A running `cairn serve` that we started.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Seconds from spawn until `/health` answered 200.
    pub ready_secs: f64,
    /// Seconds from spawn until the address was printed (the server listens only after
    /// opening the repository and catching the index up).
    pub listening_secs: f64,
}

impl Server {
    /// Starts `cairn serve --data DATA --listen 127.0.0.1:0 --admin-key KEY`, its stderr
    /// appended to `log`, and waits (up to `timeout`) for `/health`.
    pub fn start(
        cairn: &Path,
        data: &Path,
        key: &str,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Server> {
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let t0 = Instant::now();
        let mut child = Command::new(cairn)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--admin-key", key])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("start {} serve", cairn.display()))?;
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = t0 + timeout;
        let addr: SocketAddr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(line) => {
                    if let Some(rest) = line.split("http://").nth(1) {
                        let a = rest.split_whitespace().next().unwrap_or("");
                        break a.parse().with_context(|| format!("address in {line:?}"))?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "cairn serve exited before listening (see {})",
                        log.display()
                    );
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("cairn serve exited with {status} (see {})", log.display());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("cairn serve did not listen within {timeout:?}");
            }
        };
        let listening_secs = t0.elapsed().as_secs_f64();
        let mut client = Client::new(addr, key);
        loop {
            if let Ok(a) = client.get("/health") {
                if a.status == 200 {
                    break;
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("no /health within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(Server {
            child,
            addr,
            ready_secs: t0.elapsed().as_secs_f64(),
            listening_secs,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGTERM, then waits for the final commit (SIGKILL after `timeout`). Returns the
    /// seconds it took.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("warning: cairn serve exited with {status}");
                }
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("cairn serve did not stop within {timeout:?}; killed");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    /// A server left running by an error is stopped (SIGTERM, then SIGKILL).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            for _ in 0..600 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------

/// One wrk run, parsed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WrkRun {
    pub threads: u32,
    pub connections: u32,
    pub duration_secs: u32,
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// `key=value` pairs printed by the Lua script's `done()` on a `wrk-lua` line.
    pub lua: BTreeMap<String, u64>,
    /// Share (0..1) of the machine's CPU used by processes that are neither this
    /// benchmark, its wrk nor the server it started, while wrk ran.
    pub others_cpu: f64,
}

/// `1.23ms`, `456.78us`, `1.02s`, `2.00m` → milliseconds.
pub fn parse_wrk_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkRun> {
    let mut r = WrkRun::default();
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, val)) = t.split_once('%') {
                let v = parse_wrk_time(val);
                match (pct.trim(), v) {
                    ("50", Some(v)) => r.p50_ms = v,
                    ("75", Some(v)) => r.p75_ms = v,
                    ("90", Some(v)) => r.p90_ms = v,
                    ("99", Some(v)) => r.p99_ms = v,
                    _ => {}
                }
                continue;
            }
            in_dist = false;
        }
        if let Some((n, rest)) = t.split_once(" requests in ") {
            r.requests = n.trim().parse().unwrap_or(0);
            let secs = rest.split(',').next().unwrap_or("");
            r.seconds = parse_wrk_time(secs).unwrap_or(0.0) / 1000.0;
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = t.strip_prefix("wrk-lua") {
            for kv in v.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    if let Ok(n) = v.parse() {
                        r.lua.insert(k.to_string(), n);
                    }
                }
            }
        }
    }
    if r.requests == 0 && r.rps == 0.0 {
        bail!("could not parse wrk output:\n{out}");
    }
    Ok(r)
}

/// What to run wrk with.
pub struct WrkSpec<'a> {
    pub script: &'a Path,
    pub url: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub secs: u32,
    pub args: &'a [String],
}

/// Runs wrk to completion (`-tT -cC -dDs --latency --timeout 30s -s SCRIPT URL -- ARGS`).
/// `server_pid` is excluded from the "others" CPU share.
pub fn run_wrk(spec: &WrkSpec, server_pid: Option<u32>) -> anyhow::Result<WrkRun> {
    let before = CpuWatch::start(server_pid);
    let out = Command::new("wrk")
        .arg(format!("-t{}", spec.threads))
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{}s", spec.secs))
        .args(["--latency", "--timeout", "30s", "-s"])
        .arg(spec.script)
        .arg(spec.url)
        .arg("--")
        .args(spec.args)
        .stdin(Stdio::null())
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let others = before.others_share();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r = parse_wrk(&text)?;
    r.threads = spec.threads;
    r.connections = spec.connections;
    r.duration_secs = spec.secs;
    r.others_cpu = others;
    Ok(r)
}

// ---------------------------------------------------------------------------
// CPU accounting and waiting for a quiet machine
// ---------------------------------------------------------------------------

fn machine_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .unwrap_or("")
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let f = |i: usize| cpu.get(i).copied().unwrap_or(0);
    let busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
    (busy, busy + f(3) + f(4))
}

/// utime + stime + cutime + cstime of a process (clock ticks), 0 if gone.
fn process_ticks(pid: &str) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11..15)
        .map(|v| v.iter().map(|x| x.parse::<u64>().unwrap_or(0)).sum())
        .unwrap_or(0)
}

/// CPU ticks of every user-space process that is neither this one nor one of its
/// descendants (kernel threads, such as the writeback of our own files, are left out).
fn foreign_ticks() -> HashMap<u32, u64> {
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == 2 || parent_of(pid) == Some(2) || descends_from(pid, me) {
            continue;
        }
        out.insert(pid, process_ticks(&pid.to_string()));
    }
    out
}

/// Measures the CPU used by user-space processes that are not ours (not this process,
/// its wrk, its server, nor kernel threads), as a share of the whole machine.
pub struct CpuWatch {
    total: u64,
    foreign: HashMap<u32, u64>,
}

impl CpuWatch {
    /// `_server_pid` is one of our descendants anyway; kept for the call sites.
    pub fn start(_server_pid: Option<u32>) -> CpuWatch {
        CpuWatch {
            total: machine_ticks().1,
            foreign: foreign_ticks(),
        }
    }

    /// Share (0..1) of all CPU time since `start` that others used.
    pub fn others_share(&self) -> f64 {
        let now = foreign_ticks();
        let total = machine_ticks().1.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        let others: u64 = now
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.foreign.get(pid).copied().unwrap_or(0)))
            .sum();
        (others as f64 / total as f64).clamp(0.0, 1.0)
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// Benchmark processes that are not ours: `cairn-bench`, `cairn import`, `cairn serve`
/// (the lead's pattern), any other `*-bench` binary, and `wrk`; with their CPU ticks.
pub fn foreign_benchmarks() -> Vec<(u32, u64, String)> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(argv0) = args.first() else { continue };
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        let sub = args.get(1).map(String::as_str).unwrap_or("");
        let is_bench = base == "cairn-bench"
            || base.ends_with("-bench")
            || base == "wrk"
            || (base == "cairn" && matches!(sub, "import" | "serve" | "index" | "restore"));
        if is_bench && !descends_from(pid, me) {
            found.push((pid, process_ticks(&pid.to_string()), args.join(" ")));
        }
    }
    found
}

/// Waits until no foreign benchmark runs and the machine was less than `busy_limit`
/// busy over two consecutive 3 s windows, for at most `max_wait`. Returns a note of what
/// was waited for.
pub fn wait_quiet(busy_limit: f64, max_wait: Duration) -> String {
    let t0 = Instant::now();
    let mut announced = false;
    let mut quiet_windows = 0;
    loop {
        let before = foreign_benchmarks();
        let (b1, t1) = machine_ticks();
        thread::sleep(Duration::from_secs(3));
        let (b2, t2) = machine_ticks();
        // A benchmark process counts while it runs (an idle, leftover one does not).
        let foreign: Vec<String> = foreign_benchmarks()
            .into_iter()
            .filter(|(pid, ticks, _)| {
                let was = before.iter().find(|(p, _, _)| p == pid).map_or(0, |b| b.1);
                ticks.saturating_sub(was) >= 5
            })
            .map(|(pid, _, cmd)| format!("{pid} {cmd}"))
            .collect();
        let busy = (b2 - b1) as f64 / (t2 - t1).max(1) as f64;
        if foreign.is_empty() && busy < busy_limit {
            quiet_windows += 1;
        } else {
            quiet_windows = 0;
        }
        if quiet_windows >= 2 {
            return format!(
                "quiet after {:.0} s ({:.0}% busy)",
                t0.elapsed().as_secs_f64(),
                busy * 100.0
            );
        }
        if t0.elapsed() > max_wait {
            return format!(
                "NOT quiet after {:.0} s ({:.0}% busy; {})",
                t0.elapsed().as_secs_f64(),
                busy * 100.0,
                foreign.join("; ")
            );
        }
        if !announced {
            eprintln!(
                "waiting for a quiet machine ({:.0}% busy; {})",
                busy * 100.0,
                if foreign.is_empty() {
                    "no other benchmark".to_string()
                } else {
                    foreign.join("; ")
                }
            );
            announced = true;
        }
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/// Runs a command to completion; its output goes to `log`. Returns the wall seconds.
pub fn run_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<f64> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let t0 = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .with_context(|| format!("run {cmd:?}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{cmd:?} failed with {status} (see {})", log.display());
    }
    Ok(secs)
}

/// Flushes dirty pages (`sync`) and waits until the kernel reports less than 32 MiB
/// dirty or under writeback (at most two minutes), so that a copy that fsyncs does not
/// pay for the writeback of earlier ones. Returns the seconds waited.
pub fn settle_writeback() -> f64 {
    let t0 = Instant::now();
    let _ = Command::new("sync").status();
    let pending = || -> u64 {
        fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Dirty:") || l.starts_with("Writeback:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    while pending() > 32 * 1024 && t0.elapsed() < Duration::from_secs(120) {
        thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed().as_secs_f64()
}

/// `cp -a FROM TO` (TO must not exist).
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("cp")?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

pub fn remove_tree(p: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `cairn import --data DATA FILE` unless `DATA/.bench-imported` says it was done for
/// this corpus by this `cairn` binary; returns the import's seconds when it ran.
pub fn ensure_imported(
    cairn: &Path,
    corpus: &Path,
    items: usize,
    data: &Path,
    log: &Path,
    reuse: bool,
) -> anyhow::Result<Option<f64>> {
    let marker = data.join(".bench-imported");
    if reuse {
        if let Ok(by) = fs::read_to_string(&marker) {
            if by.starts_with(&format!("{} {} ", corpus.display(), items)) {
                eprintln!("reusing the import in {} ({by})", data.display());
                return Ok(None);
            }
        }
    }
    // Another `cairn` build may index differently: the marker names the binary too.
    let bin = fs::metadata(cairn)
        .ok()
        .map(|m| format!("{} {:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let want = format!("{} {} {bin}", corpus.display(), items);
    if fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(None);
    }
    remove_tree(data)?;
    let secs = run_logged(
        Command::new(cairn)
            .arg("import")
            .arg("--data")
            .arg(data)
            .arg(corpus),
        log,
    )?;
    fs::write(&marker, want)?;
    Ok(Some(secs))
}

/// The `cairn` binary next to this one (`target/release/cairn`), unless given.
pub fn default_cairn() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cairn")))
        .unwrap_or_else(|| PathBuf::from("cairn"))
}

/// The folder of the Lua scripts (`crates/cairn-bench/scripts`).
pub fn default_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// A short tag unique to this run (seconds since the epoch, base 36).
pub fn run_tag() -> String {
    let mut n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut s = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        s.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// Appends a line to a text file.
pub fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f: File = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/x
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.01s
  12345 requests in 2.00s, 3.00MB read
  Non-2xx or 3xx responses: 7
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   6172.50
Transfer/sec:      1.50MB
wrk-lua created=12000 failed=3
";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 12345);
        assert!((r.seconds - 2.0).abs() < 1e-9);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 2010.0).abs() < 1e-9);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.lua["created"], 12000);
        assert_eq!(r.lua["failed"], 3);
        assert!((r.rps - 6172.5).abs() < 1e-9);
    }

    #[test]
    fn encoding_and_percentiles() {
        assert_eq!(url_encode("a b:'c'*"), "a%20b%3A%27c%27%2A");
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..3], 99.0), 3.0);
    }
}

/// The options both HTTP benchmarks share: which corpus, where its files live, and which
/// binaries and scripts to run.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Corpus lines (folders + articles).
    #[arg(long, default_value_t = 100_000)]
    pub items: usize,
    /// Seed of the corpus generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Work folder, shared by cairn-api-bench and cairn-backup-bench; this size's files go
    /// to DIR/N<items>.
    #[arg(long, default_value = "/tmp/cairn-api-bench")]
    pub dir: PathBuf,
    /// The `cairn` binary (default: next to this one).
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// Folder of the wrk Lua scripts (default: crates/cairn-bench/scripts).
    #[arg(long)]
    pub scripts: Option<PathBuf>,
}

/// What [`BenchArgs`] name once their defaults are applied.
pub struct BenchPaths {
    /// The `cairn` binary (checked to exist).
    pub cairn: PathBuf,
    /// The wrk Lua scripts.
    pub scripts: PathBuf,
    /// `DIR/N<items>`, created.
    pub base: PathBuf,
}

impl BenchArgs {
    /// The binary, the scripts and this size's folder (made if missing).
    pub fn paths(&self) -> anyhow::Result<BenchPaths> {
        let cairn = self.cairn.clone().unwrap_or_else(default_cairn);
        anyhow::ensure!(cairn.exists(), "no cairn binary at {}", cairn.display());
        let base = self.dir.join(format!("N{}", self.items));
        std::fs::create_dir_all(&base)?;
        Ok(BenchPaths {
            cairn,
            scripts: self.scripts.clone().unwrap_or_else(default_scripts),
            base,
        })
    }
}

/// The lowest and highest id of the corpus's articles.
pub fn article_ids(client: &mut Client) -> anyhow::Result<(u64, u64)> {
    let mut id_of = |sort: &str| -> anyhow::Result<u64> {
        let cql = format!(
            "InTree:'{}' AND TypeIs:Article {sort}:Id .TOP:1",
            corpus::ROOT_PATH
        );
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
    Ok((id_of(".SORT")?, id_of(".REVERSESORT")?))
}

/// PATCHes `n` distinct articles (ids spread over `lo..=hi`) over `conns` connections;
/// each PATCH answers once searchable. Returns seconds and successful PATCHes.
pub fn patch_many(
    key: &str,
    addr: std::net::SocketAddr,
    lo: u64,
    hi: u64,
    n: u64,
    tag: &str,
    conns: u64,
) -> anyhow::Result<(f64, u64)> {
    let span = hi - lo + 1;
    let n = n.min(span);
    // A stride coprime with the span visits distinct ids.
    let mut stride = (span as f64 * 0.618_034) as u64 | 1;
    while gcd(stride, span) != 1 {
        stride += 2;
    }
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let (next, ok, errors, tag, key) = (
                next.clone(),
                ok.clone(),
                errors.clone(),
                tag.to_string(),
                key.to_string(),
            );
            thread::spawn(move || {
                let mut c = Client::new(addr, &key);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let id = lo + (i * stride) % span;
                    let body = format!("{{\"Description\":\"{tag} change {i}\"}}");
                    match c.request(
                        "PATCH",
                        &format!("/odata.svc/content({id})?metadata=no"),
                        Some(&body),
                    ) {
                        Ok(a) if (200..300).contains(&a.status) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(a) => errors
                            .lock()
                            .unwrap()
                            .push(format!("{id}: {} {:.200}", a.status, a.body)),
                        Err(e) => errors.lock().unwrap().push(format!("{id}: {e}")),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("patch thread");
    }
    let secs = t0.elapsed().as_secs_f64();
    let errors = errors.lock().unwrap();
    if !errors.is_empty() {
        eprintln!("{} PATCHes failed, e.g. {}", errors.len(), errors[0]);
    }
    Ok((secs, ok.load(Ordering::SeqCst)))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The corpus of `args` imported into `DIR/N<items>/data` (made once, then reused): the
/// paths, the run log `DIR/N<items>/<log_name>`, and that data folder.
pub fn imported(
    args: &BenchArgs,
    log_name: &str,
) -> anyhow::Result<(BenchPaths, PathBuf, PathBuf)> {
    let paths = args.paths()?;
    let log = paths.base.join(log_name);
    let corpus_path = paths.base.join("corpus.jsonl");
    corpus::ensure_jsonl(&corpus_path, args.items, args.seed)?;
    let pristine = paths.base.join("data");
    if let Some(s) = ensure_imported(
        &paths.cairn,
        &corpus_path,
        args.items,
        &pristine,
        &log,
        false,
    )? {
        eprintln!("cairn import: {s:.1} s");
    }
    Ok((paths, log, pristine))
}

/// Runs `f` in the empty folder `work` (made afresh), which is removed afterwards unless
/// `keep`.
pub fn in_work_dir<T>(
    work: &Path,
    keep: bool,
    f: impl FnOnce(&Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    remove_tree(work)?;
    fs::create_dir_all(work)?;
    let result = f(work);
    if !keep {
        remove_tree(work)?;
    }
    result
}

/// Prints `report` as JSON on stdout, and writes it to `json` when given.
pub fn emit<T: Serialize>(report: &T, json: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    println!("{text}");
    if let Some(path) = json {
        fs::write(path, text + "\n")?;
    }
    Ok(())
}

/// wrk `create.lua` against `server` (2 threads, `connections`, `secs` seconds): articles
/// in `folder` (`/odata.svc/Root/...`), named with `tag`, their body `text`.
#[allow(clippy::too_many_arguments)]
pub fn run_creates(
    server: &Server,
    scripts: &Path,
    key: &str,
    folder: &str,
    tag: &str,
    text: &str,
    connections: u32,
    secs: u32,
) -> anyhow::Result<WrkRun> {
    let args = [
        key.to_string(),
        folder.to_string(),
        tag.to_string(),
        text.to_string(),
    ];
    run_wrk(
        &WrkSpec {
            script: &scripts.join("create.lua"),
            url: &server.url("/"),
            threads: 2,
            connections,
            secs,
            args: &args,
        },
        Some(server.pid()),
    )
}
