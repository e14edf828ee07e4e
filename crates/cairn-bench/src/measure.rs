//! Measurement helpers: wall-clock timer, process memory (from `/proc/self/status`),
//! on-disk size of a directory, and the result record printed as a table and
//! optionally appended as JSON lines.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Wall-clock timer.
#[derive(Debug, Clone, Copy)]
pub struct Timer {
    start: Instant,
}

impl Timer {
    pub fn start() -> Timer {
        Timer {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Runs `f` and returns its result with the elapsed wall-clock seconds.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Timer::start();
    let r = f();
    (r, t.secs())
}

fn status_kib(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Peak resident set size of this process in bytes (`VmHWM`), 0 if unknown.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM").map_or(0, |k| k * 1024)
}

/// Current resident set size of this process in bytes (`VmRSS`), 0 if unknown.
pub fn current_rss() -> u64 {
    status_kib("VmRSS").map_or(0, |k| k * 1024)
}

/// Returns memory freed by this process to the operating system where the allocator
/// keeps it (glibc's `malloc_trim`), so that a later [`reset_peak_rss`] starts from
/// what is really in use. Returns whether the allocator supports it.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel; it takes
        // the allocator's own locks and is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// CPU time counters (in clock ticks) of the whole machine and of this process, to
/// tell how much of the machine other processes used while a step ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// All CPU time of the machine, busy or idle.
    pub total: u64,
    /// Busy time of the machine (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// User and system time of this process and of its children it waited for.
    pub own: u64,
}

/// Reads `/proc/stat` and `/proc/self/stat`; `None` if unavailable.
pub fn cpu_sample() -> Option<CpuSample> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is part of user).
    let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let total = busy + field(3) + field(4);
    let me = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is field 3,
    // utime/stime/cutime/cstime are fields 14-17.
    let rest: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
    let own = rest
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum();
    Some(CpuSample { total, busy, own })
}

/// Clock ticks per second of `/proc/stat` and `/proc/PID/stat` (`USER_HZ`, part of
/// Linux's ABI: 100 on every mainstream architecture).
pub const USER_HZ: f64 = 100.0;

impl CpuSample {
    /// CPU seconds used by this process and its waited-for children between `self` and
    /// the later sample `then`.
    pub fn own_secs(&self, then: &CpuSample) -> f64 {
        then.own.saturating_sub(self.own) as f64 / USER_HZ
    }

    /// Share (0..1) of the machine's CPU time between `self` and the later sample `then`
    /// that was busy outside this process and its waited-for children.
    pub fn others_share(&self, then: &CpuSample) -> f64 {
        let total = then.total.saturating_sub(self.total);
        let others = then
            .busy
            .saturating_sub(self.busy)
            .saturating_sub(then.own.saturating_sub(self.own));
        if total == 0 {
            0.0
        } else {
            others as f64 / total as f64
        }
    }
}

/// Resets the peak RSS (`VmHWM`) to the current RSS by writing `5` to
/// `/proc/self/clear_refs` (Linux ≥ 4.0). Returns whether it worked; if not,
/// [`peak_rss`] keeps reporting the whole-process peak.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Total apparent size (sum of file lengths) of all files below `path`,
/// or the length of `path` itself if it is a file. Symlinks are not followed.
pub fn dir_size(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(if meta.is_file() { meta.len() } else { 0 });
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// What an engine run reports: rows handled, wall-clock seconds and bytes on disk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub items: u64,
    pub seconds: f64,
    pub bytes: u64,
}

impl Stats {
    pub fn items_per_sec(&self) -> f64 {
        per_sec(self.items, self.seconds)
    }

    /// The record for this run, with the given name and peak RSS.
    pub fn record(&self, name: impl Into<String>, peak_rss: u64) -> Record {
        Record::new(name, self.items, self.seconds, self.bytes, peak_rss)
    }
}

fn per_sec(items: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        items as f64 / seconds
    } else {
        0.0
    }
}

/// One benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub items: u64,
    pub seconds: f64,
    pub items_per_sec: f64,
    /// Bytes on disk (or processed, for non-storage steps).
    pub bytes: u64,
    /// Peak RSS in bytes observed for this step.
    pub peak_rss: u64,
}

impl Record {
    pub fn new(
        name: impl Into<String>,
        items: u64,
        seconds: f64,
        bytes: u64,
        peak_rss: u64,
    ) -> Record {
        Record {
            name: name.into(),
            items,
            seconds,
            items_per_sec: per_sec(items, seconds),
            bytes,
            peak_rss,
        }
    }
}

/// Appends `record` as one JSON line to `path` (created if missing).
pub fn append_json(path: &Path, record: &Record) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

/// Writes `records` as an aligned text table.
pub fn write_table(records: &[Record], mut out: impl Write) -> io::Result<()> {
    let header = [
        "name",
        "items",
        "seconds",
        "items/s",
        "size MiB",
        "peak RSS MiB",
    ];
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                thousands(r.items),
                format!("{:.3}", r.seconds),
                thousands(r.items_per_sec.round() as u64),
                mib(r.bytes),
                mib(r.peak_rss),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("  {cell:>w$}"));
            }
        }
        s
    };
    writeln!(out, "{}", line(&header))?;
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    writeln!(out, "{}", "-".repeat(total))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    Ok(())
}

/// Collects records, appending each to the JSON-lines file (if any) as it arrives.
#[derive(Debug, Default)]
pub struct Report {
    pub records: Vec<Record>,
    json: Option<PathBuf>,
}

impl Report {
    pub fn new(json: Option<PathBuf>) -> Report {
        Report {
            records: Vec::new(),
            json,
        }
    }

    pub fn push(&mut self, record: Record) -> io::Result<()> {
        if let Some(path) = &self.json {
            append_json(path, &record)?;
        }
        self.records.push(record);
        Ok(())
    }

    /// Prints the table to stdout.
    pub fn print(&self) -> io::Result<()> {
        write_table(&self.records, io::stdout().lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_values() {
        let a = cpu_sample().unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu_sample().unwrap();
        assert!(b.total >= a.total && b.busy >= a.busy && b.own >= a.own);
        assert!((0.0..=1.0).contains(&a.others_share(&b)));
        assert!(peak_rss() > 0);
        assert!(current_rss() > 0);
        assert!(peak_rss() >= current_rss() / 2);
    }

    #[test]
    fn table_is_aligned() {
        let recs = vec![
            Record::new("a", 1_234_567, 2.0, 10 << 20, 5 << 20),
            Record::new("longer-name", 5, 0.5, 0, 0),
        ];
        let mut out = Vec::new();
        write_table(&recs, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lens: Vec<usize> = text.lines().map(str::len).collect();
        assert!(lens.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.contains("1,234,567") && text.contains("617,284"));
    }

    #[test]
    fn sizes() {
        let dir = std::env::temp_dir().join(format!("cairn-bench-measure-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("a"), [0u8; 100]).unwrap();
        fs::write(dir.join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_size(&dir).unwrap(), 123);
        assert_eq!(dir_size(&dir.join("a")).unwrap(), 100);
        let json = dir.join("out.jsonl");
        let r = Record::new("x", 10, 1.0, 3, 4);
        append_json(&json, &r).unwrap();
        append_json(&json, &r).unwrap();
        let text = fs::read_to_string(&json).unwrap();
        let back: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, vec![r.clone(), r]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
