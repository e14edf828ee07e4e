//! Backups and restores of the real `cairn` binary, as an operator runs them: online backups
//! through `cairn serve` while a writer keeps changing content, concurrent and canceled
//! backups, a SIGKILL in the middle of one, refused corrupt backups, incremental hard links,
//! restores of one part only, and offline backups of a stopped repository.
//!
//! Large databases are made large with a padding table (`test_pad`, zero blobs) written while
//! the repository is stopped: the backup copies every page of the file, so it takes as long
//! as a real database of that size, without a slow import.

mod common;

use common::{cairn, text};

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cairn_testkit::wait_until;
use serde_json::{json, Value};

const KEY: &str = "backup-test-key-0123";

// ---------------------------------------------------------------------------------------
// Processes

fn run(args: &[&str]) -> Output {
    cairn().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "the command failed: {}", text(o));
    text(o)
}

/// The one-line summary that ends a backup, verify or restore: bytes, files, seconds,
/// MB/s (progress lines come before it when the output is not a terminal).
fn summary_line(output: &str) -> Option<&str> {
    output.lines().find(|l| {
        l.contains(" MB, ") && l.contains(" files, ") && l.contains(" s, ") && l.contains(" MB/s")
    })
}

/// `cairn index check --data DIR --json`: asserts success and 0 differences; returns the
/// report and the whole output (stderr carries the start-up notes).
#[track_caller]
fn check_clean(data: &Path) -> (Value, String) {
    let o = run(&["index", "check", "--data", s(data), "--json"]);
    let all = text(&o);
    assert!(o.status.success(), "index check failed: {all}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert_eq!(
        v["Differences"].as_array().map(Vec::len),
        Some(0),
        "differences: {v}"
    );
    assert_eq!(v["IndexDocuments"], v["DatabaseItems"], "{v}");
    (v, all)
}

struct Server {
    child: Child,
    addr: String,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        Self::start_with(data, &[])
    }

    /// A server on `data` with more arguments (`--database URL`).
    fn start_with(data: &Path, more: &[&str]) -> Server {
        let (child, url) = cairn_testkit::spawn_announcing(
            cairn()
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-key",
                    KEY,
                    "--data",
                ])
                .arg(data)
                .args(more)
                .stderr(Stdio::null()),
            Duration::from_secs(60),
        );
        Server {
            child,
            addr: url.trim_start_matches("http://").to_string(),
            data: data.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) {
        let exit = cairn_testkit::terminate(&mut self.child, Duration::from_secs(30));
        assert!(exit.success(), "{exit:?}");
    }

    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(&self.addr, method, path, body)
    }

    #[track_caller]
    fn json(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, text) = self.http(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn backup(&self, action: &str, target: Option<&str>) -> (u16, Value) {
        let body = match target {
            Some(t) => json!({ "target": t }).to_string(),
            None => String::new(),
        };
        let (status, text) = self.http(
            "POST",
            &format!("/odata.svc/('Root')/{action}"),
            Some(&body),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn query(&self) -> Value {
        self.json("GET", "/odata.svc/('Root')/QueryIndexBackup", None)
    }

    /// Waits until no backup runs; returns QueryIndexBackup's answer.
    fn wait_backup(&self) -> Value {
        wait_until("the backup ends", Duration::from_secs(60), || {
            let q = self.query();
            let running = matches!(
                q["State"].as_str(),
                Some("Started" | "Executing" | "CancelRequested")
            );
            (!running).then_some(q)
        })
    }

    fn backups_dir(&self) -> PathBuf {
        self.data.join("backups")
    }
}

// ---------------------------------------------------------------------------------------
// HTTP over a plain TCP socket

fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn read_response(mut stream: TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, String::from_utf8_lossy(&body).to_string())
}

fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(&request(addr, method, path, body))
        .unwrap();
    read_response(stream)
}

// ---------------------------------------------------------------------------------------
// Repositories

/// Writes a JSON lines corpus: `/Root/{root}` and `n` articles in folders of 100, each with
/// `DisplayName` `d{i}` and a body of about `body` bytes.
fn corpus(file: &Path, root: &str, n: usize, body: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    writeln!(f, r#"{{"Path":"/Root/{root}","Type":"Folder"}}"#).unwrap();
    let filler = "lorem ipsum dolor sit amet ".repeat(body / 27 + 1);
    for i in 0..n {
        if i % 100 == 0 {
            writeln!(
                f,
                r#"{{"Path":"/Root/{root}/F{}","Type":"Folder"}}"#,
                i / 100
            )
            .unwrap();
        }
        writeln!(
            f,
            r#"{{"Path":"/Root/{root}/F{}/a{i}","Type":"Article","DisplayName":"d{i}","Body":"w{} {}"}}"#,
            i / 100,
            i % 31,
            &filler[..body]
        )
        .unwrap();
    }
}

/// `cairn backup create --data DATA --to TO`, which must succeed; its output.
fn offline_backup(data: &Path, to: &Path) -> String {
    ok(&run(&[
        "backup",
        "create",
        "--data",
        s(data),
        "--to",
        s(to),
    ]))
}

/// Imports `n` articles under `/Root/{root}` into the (stopped) repository `data`.
fn import(data: &Path, root: &str, n: usize, body: usize) {
    let file = data.with_extension(format!("{root}.jsonl"));
    corpus(&file, root, n, body);
    ok(&run(&["import", "--data", s(data), s(&file)]));
}

/// Makes the stopped repository's database file `mb` MB bigger (a table the repository
/// does not know, of zero blobs): a backup copies every page.
fn pad(data: &Path, mb: usize) {
    let conn = rusqlite::Connection::open(data.join("cairn.db")).unwrap();
    // The store switches back to WAL on its next open.
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(&format!(
        "PRAGMA synchronous=OFF;
         CREATE TABLE IF NOT EXISTS test_pad (b BLOB);
         BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {mb})
         INSERT INTO test_pad SELECT zeroblob(1048576) FROM n;
         COMMIT;"
    ))
    .unwrap();
}

/// `(path, display_name)` of every item whose path starts with `prefix`, by name.
fn db_items(db: &Path, prefix: &str) -> HashMap<String, (String, String)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare("SELECT name, path, display_name FROM nodes WHERE path LIKE ?1")
        .unwrap();
    stmt.query_map([format!("{prefix}%")], |r| {
        Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn read_manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Subfolders of `dir` (backups, finished or not).
fn subdirs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file and folder under `dir` with its modification time and contents, except the
/// data folder's lock file (taking the lock is how a command refuses to run beside a server).
fn tree(dir: &Path) -> BTreeMap<String, (SystemTime, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (SystemTime, Option<Vec<u8>>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == "cairn.lock" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, (meta.modified().unwrap(), None));
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    (meta.modified().unwrap(), Some(std::fs::read(&p).unwrap())),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

type Tree = BTreeMap<String, (SystemTime, Option<Vec<u8>>)>;

/// What differs between two [`tree`]s.
fn changes(before: &Tree, after: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("{k}: removed")),
            Some(w) if w.1 != v.1 => out.push(format!("{k}: contents changed")),
            Some(w) if w.0 != v.0 => out.push(format!("{k}: modification time changed")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            out.push(format!("{k}: created"));
        }
    }
    out
}

fn parse_time(v: &Value) -> SystemTime {
    let t = time::OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("not a time: {v}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    SystemTime::from(t)
}

// ---------------------------------------------------------------------------------------
// 1. Round trip under load

/// One item's state: `(path, display name)`, or `None` when it does not exist.
type State = Option<(String, String)>;

struct Op {
    answered: Instant,
    answered_wall: SystemTime,
    state: State,
}

#[derive(Default)]
struct Item {
    initial: State,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Log {
    items: HashMap<String, Item>,
    errors: Vec<String>,
}

/// An item's state as the server answered it.
fn answered(d: &Value) -> State {
    let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    Some((text("Path"), text("DisplayName")))
}

fn odata_item(path: &str) -> String {
    let (parent, name) = path.rsplit_once('/').unwrap();
    format!("/odata.svc{parent}('{name}')")
}

/// One writer: creates, renames (PATCH), moves, deletes its own items under /Root/W, and
/// changes its share of the imported articles, recording what the server answered.
fn writer(
    addr: String,
    t: usize,
    bulk: usize,
    writers: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let mut live: Vec<String> = Vec::new(); // names of own items that exist
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut displays: HashMap<String, String> = HashMap::new();
    let mut seq = 0usize;
    let result = (|| -> Result<(), String> {
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            let call = |method: &str, path: &str, body: Value| -> Result<Value, String> {
                let (status, text) = http(&addr, method, path, Some(&body.to_string()));
                if !(200..300).contains(&status) {
                    return Err(format!("{method} {path} {body}: {status} {text}"));
                }
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
            };
            let (name, state) = match seq % 6 {
                0 | 3 => {
                    let name = format!("t{t}n{seq}");
                    let d = call(
                        "POST",
                        "/odata.svc/Root/W/A",
                        json!({"__ContentType":"Folder","Name":name,"DisplayName":format!("c{seq}")}),
                    )?;
                    live.push(name.clone());
                    (name, answered(&d["d"]))
                }
                1 if !live.is_empty() => {
                    let name = live[(seq * 7) % live.len()].clone();
                    let d = call(
                        "PATCH",
                        &odata_item(&paths[&name]),
                        json!({"DisplayName": format!("p{seq}")}),
                    )?;
                    (name, answered(&d["d"]))
                }
                2 if !live.is_empty() => {
                    let name = live[(seq * 5) % live.len()].clone();
                    let from = &paths[&name];
                    let to = if from.starts_with("/Root/W/A/") {
                        "/Root/W/B"
                    } else {
                        "/Root/W/A"
                    };
                    let d = call(
                        "POST",
                        "/odata.svc/('Root')/MoveBatch",
                        json!({"paths":[from],"targetPath":to}),
                    )?;
                    let r = &d["d"]["results"];
                    if r.as_array().map(Vec::len) != Some(1) {
                        return Err(format!("MoveBatch {from}: {d}"));
                    }
                    let path = r[0]["Path"].as_str().unwrap_or_default().to_string();
                    (name.clone(), Some((path, displays[&name].clone())))
                }
                4 => {
                    let i = t + writers * ((seq * 13) % (bulk / writers));
                    let path = format!("/Root/Bulk/F{}/a{i}", i / 100);
                    let d = call(
                        "PATCH",
                        &odata_item(&path),
                        json!({"DisplayName": format!("b{seq}")}),
                    )?;
                    (format!("a{i}"), answered(&d["d"]))
                }
                5 if live.len() > 3 => {
                    let name = live.swap_remove((seq * 3) % live.len());
                    let d = call(
                        "POST",
                        "/odata.svc/('Root')/DeleteBatch",
                        json!({"paths":[paths[&name]],"permanent":true}),
                    )?;
                    if d["d"]["__count"] != 1 {
                        return Err(format!("DeleteBatch {}: {d}", paths[&name]));
                    }
                    (name, None)
                }
                _ => continue,
            };
            if let Some((p, d)) = &state {
                paths.insert(name.clone(), p.clone());
                displays.insert(name.clone(), d.clone());
            }
            let op = Op {
                answered: Instant::now(),
                answered_wall: SystemTime::now(),
                state,
            };
            let mut log = log.lock().unwrap();
            let item = log.items.entry(name.clone()).or_insert_with(|| Item {
                initial: name.starts_with('a').then(|| {
                    let i: usize = name[1..].parse().unwrap();
                    (format!("/Root/Bulk/F{}/a{i}", i / 100), format!("d{i}"))
                }),
                ops: Vec::new(),
            });
            item.ops.push(op);
        }
        Ok(())
    })();
    if let Err(e) = result {
        log.lock().unwrap().errors.push(e);
        stop.store(true, Ordering::SeqCst);
    }
}

/// Issue "Backup and restore", 1: a repository backup through a server while a writer keeps
/// creating, changing, moving and deleting; restored into a new folder, the index agrees
/// with the database, and everything answered before the backup began is there, with the
/// value last answered.
#[test]
fn round_trip_under_load_keeps_everything_committed_before_the_backup() {
    const BULK: usize = 1500;
    const WRITERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", BULK, 300);
    let file = dir.path().join("w.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"Path\":\"/Root/W\",\"Type\":\"Folder\"}\n",
            "{\"Path\":\"/Root/W/A\",\"Type\":\"Folder\"}\n",
            "{\"Path\":\"/Root/W/B\",\"Type\":\"Folder\"}\n"
        ),
    )
    .unwrap();
    ok(&run(&["import", "--data", s(&data), s(&file)]));
    pad(&data, 160);
    let server = Server::start(&data);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (addr, stop, log) = (server.addr.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || writer(addr, t, BULK, WRITERS, stop, log))
        })
        .collect();
    let ops = |log: &Log, after: Option<Instant>| -> usize {
        log.items
            .values()
            .flat_map(|i| &i.ops)
            .filter(|o| after.is_none_or(|a| o.answered > a))
            .count()
    };
    wait_until("the writers commit", Duration::from_secs(60), || {
        let l = log.lock().unwrap();
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        (ops(&l, None) >= 60).then_some(())
    });

    // The backup, while the writers keep going.
    let out = dir.path().join("out");
    let download = || {
        cairn()
            .args([
                "backup",
                "create",
                "--server",
                &server.url(),
                "--admin-key",
                KEY,
                "--to",
            ])
            .arg(&out)
            .output()
            .unwrap()
    };
    let t0 = Instant::now();
    let o = download();
    let t1 = Instant::now();
    let printed = ok(&o);
    wait_until(
        "the writers go on after the backup",
        Duration::from_secs(60),
        || {
            let l = log.lock().unwrap();
            (!l.errors.is_empty() || ops(&l, Some(t1)) >= 2 * WRITERS).then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    let ops_total = ops(&log, None);
    assert!(log.errors.is_empty(), "writer errors: {:?}", log.errors);
    let q = server.query();
    let cur = &q["Current"];
    assert_eq!(cur["State"], "Finished", "{q}");
    assert_eq!(cur["Kind"], "Repository", "{q}");
    // A second download into the same folder is refused before the server starts one.
    let o = download();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let again = server.query();
    assert_eq!(
        again["History"], q["History"],
        "the server ran another backup"
    );
    // `backup create --server` ends with the summary of the server's backup.
    let line = summary_line(&printed).unwrap_or_else(|| panic!("no summary: {printed}"));
    assert!(
        line.starts_with("backup finished: ")
            && line.contains(&format!(" {} files, ", cur["CopiedFiles"]))
            && line.ends_with(&format!(
                "on the server in {}",
                cur["TargetPath"].as_str().unwrap_or("?")
            )),
        "{line} / {q}"
    );
    let (started, finished) = (
        parse_time(&cur["StartedAt"]),
        parse_time(&cur["FinishedAt"]),
    );
    let during = log
        .items
        .values()
        .flat_map(|i| &i.ops)
        .filter(|o| o.answered_wall > started && o.answered_wall < finished)
        .count();
    assert!(
        during >= 2,
        "the writers must be active during the backup: {during} answers while it ran ({:?})",
        finished.duration_since(started)
    );
    drop(server);

    // Restore into a new folder: the index agrees with the database.
    let new = dir.path().join("new");
    ok(&run(&["restore", "--from", s(&out), "--data", s(&new)]));
    check_clean(&new);

    // Everything answered before the backup began is there, with its last answered value;
    // anything changed later holds its pre-backup value or a later one.
    let mut restored = db_items(&new.join("cairn.db"), "/Root/W/");
    restored.extend(db_items(&new.join("cairn.db"), "/Root/Bulk/"));
    let mut strict = 0;
    for (name, item) in &log.items {
        let before: Vec<&Op> = item.ops.iter().filter(|o| o.answered < t0).collect();
        let last_before = before.last().map_or(&item.initial, |o| &o.state);
        let later: Vec<&State> = item.ops[before.len()..].iter().map(|o| &o.state).collect();
        let found = restored.get(name).cloned();
        if later.is_empty() {
            strict += usize::from(!before.is_empty());
            assert_eq!(
                &found, last_before,
                "{name}: its last change was answered before the backup began"
            );
        } else {
            assert!(
                &found == last_before || later.contains(&&found),
                "{name}: restored {found:?}, but before the backup it was {last_before:?} \
                 and later only {later:?}"
            );
        }
    }
    eprintln!(
        "round trip: {} items, {} ops, {} answered while the server's backup ran ({:?}), \
         {strict} settled before it began, command {:?}",
        log.items.len(),
        ops_total,
        during,
        finished.duration_since(started).unwrap_or_default(),
        t1 - t0
    );
    assert!(
        strict >= 5,
        "only {strict} items were settled before the backup"
    );
    for i in 0..BULK {
        let name = format!("a{i}");
        if !log.items.contains_key(&name) {
            assert_eq!(
                restored.get(&name),
                Some(&(format!("/Root/Bulk/F{}/a{i}", i / 100), format!("d{i}"))),
                "an untouched imported item"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. One backup at a time

/// Issue 2: 20 concurrent BackupIndex calls start exactly one backup.
#[test]
fn twenty_concurrent_backup_calls_start_one_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 3000, 200);
    let server = Server::start(&data);
    let barrier = Arc::new(Barrier::new(20));
    let answers: Vec<(u16, Value)> = (0..20)
        .map(|_| {
            let addr = server.addr.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(&addr).unwrap();
                let req = request(&addr, "POST", "/odata.svc/('Root')/BackupIndex", Some(""));
                barrier.wait();
                stream.write_all(&req).unwrap();
                let (status, text) = read_response(stream);
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let targets: Vec<&Value> = answers
        .iter()
        .map(|(_, v)| &v["Current"]["TargetPath"])
        .collect();
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        assert!(v["Current"]["TargetPath"].is_string(), "{v}");
    }
    assert!(
        targets.iter().all(|t| *t == targets[0]),
        "all answers name one backup: {targets:?}"
    );
    let q = server.wait_backup();
    assert_eq!(q["State"], "Finished", "{q}");
    assert_eq!(q["History"].as_array().unwrap().len(), 1, "{q}");
    assert_eq!(&q["Current"]["TargetPath"], targets[0]);
    assert_eq!(subdirs(&server.backups_dir()).len(), 1);
    // The contract: the call that started it answers Started, the others Executing.
    let states: Vec<&str> = answers
        .iter()
        .map(|(_, v)| v["State"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s != "Executing").count(),
        1,
        "one call started the backup; the others started nothing and must answer \
         Executing (api.md): {states:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Cancel

/// Issue 3: a cancel in the middle of the copy ends Canceled and leaves nothing behind.
#[test]
fn cancel_mid_copy_leaves_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 300, 200);
    let mut mb = 200;
    for attempt in 0.. {
        pad(&data, mb);
        let server = Server::start(&data);
        let (status, started) = server.backup("BackupRepository", None);
        assert_eq!(status, 200, "{started}");
        let target = PathBuf::from(started["Current"]["TargetPath"].as_str().unwrap());
        // Mid-copy: the index is copied, the database is being copied.
        wait_until(
            "the database copy is under way",
            Duration::from_secs(30),
            || {
                let q = server.query();
                let file = q["Current"]["CurrentlyCopiedFile"].as_str().unwrap_or("");
                let ended = !matches!(q["State"].as_str(), Some("Started" | "Executing"));
                (file.starts_with("database/") || ended).then_some(())
            },
        );
        let (status, body) = server.http("POST", "/odata.svc/('Root')/CancelIndexBackup", None);
        assert_eq!(status, 200, "{body}");
        let cancel: Value = serde_json::from_str(&body).unwrap();
        let q = server.wait_backup();
        eprintln!("cancel, attempt {attempt} with {mb} MB: {q}");
        if q["State"] == "Finished" && attempt < 2 {
            // It finished before the cancel landed: more data, and again.
            server.stop();
            std::fs::remove_dir_all(&target).unwrap();
            std::fs::remove_file(data.join("backups/history.json")).unwrap();
            mb *= 2;
            continue;
        }
        assert_eq!(cancel["State"], "CancelRequested", "{cancel}");
        let copied = cancel["Current"]["CopiedBytes"].as_u64().unwrap();
        assert!(copied > 0, "{cancel}");
        assert_eq!(q["State"], "Canceled", "{q}");
        assert_eq!(q["Current"]["TargetPath"], started["Current"]["TargetPath"]);
        assert!(q["Current"]["FinishedAt"].is_string(), "{q}");
        assert!(!target.exists(), "the canceled backup's folder was removed");
        assert_eq!(subdirs(&server.backups_dir()), Vec::<String>::new());
        let o = run(&["backup", "verify", s(&target)]);
        assert!(!o.status.success(), "{}", text(&o));
        // Nothing runs now; a second cancel says so and does not pretend.
        let again = server.json("POST", "/odata.svc/('Root')/CancelIndexBackup", None);
        assert_eq!(again["State"], "Canceled", "{again}");
        assert!(again["Current"]["Message"].is_string(), "{again}");
        break;
    }
}

// ---------------------------------------------------------------------------------------
// 4. History across restarts

/// Starts the repository backup `name` of `data` and hands the server to `interrupt` once
/// the copy is under way. While the backup finished first anyway, it tries again with a
/// bigger database (twice at most). Returns the backup's folder.
fn interrupted_backup(data: &Path, name: &str, interrupt: impl Fn(Server)) -> PathBuf {
    let mut mb = 200;
    for attempt in 0.. {
        pad(data, mb);
        let server = Server::start(data);
        let (status, v) = server.backup("BackupRepository", Some(name));
        assert_eq!(status, 200, "{v}");
        let target = server.backups_dir().join(name);
        wait_until("the copy is under way", Duration::from_secs(30), || {
            let q = server.query();
            (q["State"] != "Started" && q["Current"]["CopiedBytes"].as_u64() > Some(0))
                .then_some(())
        });
        interrupt(server);
        let finished = target.join("manifest.json").exists();
        eprintln!("interrupted, attempt {attempt} with {mb} MB: finished first: {finished}");
        if finished && attempt < 2 {
            std::fs::remove_dir_all(data.join("backups")).unwrap();
            mb *= 2;
            continue;
        }
        return target;
    }
    unreachable!()
}

/// A graceful stop (SIGTERM) during a backup cancels it: recorded Canceled, its folder
/// removed, instead of left looking in progress until the next start.
#[test]
fn sigterm_during_a_backup_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 500, 200);
    let target = interrupted_backup(&data, "stopped", Server::stop);
    assert!(
        !target.join("manifest.json").exists(),
        "it finished every time"
    );
    assert!(!target.exists(), "the canceled backup's folder is left");
    let history: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("backups/history.json")).unwrap())
            .unwrap();
    assert_eq!(history[0]["State"], "Canceled", "{history}");
}

/// Issue 4: after SIGTERM and a new start, QueryIndexBackup still shows the history.
#[test]
fn history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 200, 100);
    let server = Server::start(&data);
    let (status, v) = server.backup("BackupIndex", Some("before-restart"));
    assert_eq!(status, 200, "{v}");
    let done = server.wait_backup();
    assert_eq!(done["State"], "Finished", "{done}");
    server.stop();
    let server = Server::start(&data);
    let q = server.query();
    assert_eq!(q["State"], "Finished", "{q}");
    assert_eq!(
        q["Current"]["TargetPath"], done["Current"]["TargetPath"],
        "{q}"
    );
    assert_eq!(
        q["Current"]["FinishedAt"], done["Current"]["FinishedAt"],
        "{q}"
    );
    assert_eq!(q["History"], done["History"], "{q}");
    assert!(q["Current"]["TargetPath"]
        .as_str()
        .unwrap()
        .ends_with("before-restart"));
}

// ---------------------------------------------------------------------------------------
// 5. SIGKILL during a backup

/// Issue 5: kill -9 of the server during a backup: the live index is intact, the partial
/// folder is refused, and the next start shows the backup Faulted and removes its folder.
#[test]
fn sigkill_during_a_backup_is_faulted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 500, 200);
    let target = interrupted_backup(&data, "victim", |mut server| {
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
    });
    // The live index is intact.
    check_clean(&data);
    // The partial folder, if still there, is not a backup.
    if target.exists() {
        let o = run(&["backup", "verify", s(&target)]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("manifest"), "{}", text(&o));
        let other = dir.path().join("other");
        let o = run(&["restore", "--from", s(&target), "--data", s(&other)]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(!other.join("cairn.db").exists());
    }
    // The next start closes it out.
    let server = Server::start(&data);
    let q = server.query();
    assert_eq!(q["State"], "Faulted", "{q}");
    assert!(
        q["Current"]["TargetPath"]
            .as_str()
            .unwrap()
            .ends_with("victim"),
        "{q}"
    );
    assert!(
        q["Current"]["Message"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted"),
        "{q}"
    );
    assert!(!target.exists(), "the partial folder was removed");
    assert_eq!(q["History"].as_array().unwrap().len(), 1, "{q}");
}

// ---------------------------------------------------------------------------------------
// 6. Corrupt backups

/// Issue 6: corruptions of a good backup are refused by `cairn restore` with a clear
/// message, before anything in the target data folder is touched.
#[test]
fn corrupt_backups_are_refused_before_the_target_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    import(&source, "Bulk", 400, 100);
    let good = dir.path().join("good");
    offline_backup(&source, &good);
    ok(&run(&["backup", "verify", s(&good)]));
    let index_only = dir.path().join("index-only");
    ok(&run(&[
        "backup",
        "create",
        "--index-only",
        "--data",
        s(&source),
        "--to",
        s(&index_only),
    ]));
    // The target: a working copy of the same repository, with a later change.
    let target = dir.path().join("target");
    copy_dir(&source, &target);
    import(&target, "Later", 20, 50);
    // Another repository's real backup.
    let stranger = dir.path().join("stranger");
    import(&stranger, "Bulk", 30, 50);
    let strangers = dir.path().join("strangers-backup");
    offline_backup(&stranger, &strangers);

    let manifest = read_manifest(&good);
    let segment = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            let p = f["path"].as_str().unwrap();
            p.starts_with("index/") && p != "index/meta.json"
        })
        .max_by_key(|f| f["size"].as_u64())
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    type Corrupt = Box<dyn Fn(&Path)>;
    let edit_manifest = |f: fn(&mut Value)| -> Corrupt {
        Box::new(move |b: &Path| {
            let mut m = read_manifest(b);
            f(&mut m);
            std::fs::write(
                b.join("manifest.json"),
                serde_json::to_string_pretty(&m).unwrap(),
            )
            .unwrap();
        })
    };
    let seg = segment.clone();
    let seg2 = segment.clone();
    let cases: Vec<(&str, Corrupt, &[&str])> = vec![
        (
            "a flipped byte in an index segment",
            Box::new(move |b: &Path| {
                let p = b.join(&seg);
                let mut bytes = std::fs::read(&p).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
                std::fs::write(&p, bytes).unwrap();
            }),
            &["checksum"],
        ),
        (
            "a missing file",
            Box::new(move |b: &Path| std::fs::remove_file(b.join(&seg2)).unwrap()),
            &["missing"],
        ),
        (
            "a truncated database",
            Box::new(|b: &Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(b.join("database/cairn.db"))
                    .unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len / 2).unwrap();
            }),
            &["database/cairn.db", "truncated"],
        ),
        (
            "a manifest of another repository",
            edit_manifest(|m| {
                m["repository_id"] = json!("00000000-1111-2222-3333-444444444444");
            }),
            &["another repository"],
        ),
        (
            "a manifest with edited positions",
            edit_manifest(|m| {
                let p = &mut m["index"]["completion_state"]["last_activity_id"];
                *p = json!(p.as_i64().unwrap() - 1);
            }),
            &["positions"],
        ),
    ];
    for (i, (what, corrupt, words)) in cases.iter().enumerate() {
        let bad = dir.path().join(format!("bad{i}"));
        copy_dir(&good, &bad);
        corrupt(&bad);
        let before = tree(&target);
        let o = run(&["restore", "--from", s(&bad), "--data", s(&target)]);
        let t = text(&o);
        assert!(!o.status.success(), "{what}: restored: {t}");
        assert_eq!(o.status.code(), Some(2), "{what}: {t}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        let reason = stderr.trim().lines().last().unwrap_or_default();
        assert!(
            reason.starts_with("error: "),
            "{what}: a one-line reason: {t}"
        );
        for w in *words {
            assert!(reason.contains(w), "{what}: the reason names {w:?}: {t}");
        }
        let touched = changes(&before, &tree(&target));
        assert!(
            touched.is_empty(),
            "{what}: the target was touched: {touched:?}"
        );
        let o = run(&["backup", "verify", s(&bad)]);
        assert!(
            !o.status.success(),
            "{what}: verify accepted it: {}",
            text(&o)
        );
    }
    // Refused too, before the target is touched: another repository's backup (without
    // --force), and an index-only backup restored as a whole.
    for (what, from, word) in [
        ("another repository's backup", &strangers, "--force"),
        ("an index-only backup", &index_only, "--index-only"),
    ] {
        let before = tree(&target);
        let o = run(&["restore", "--from", s(from), "--data", s(&target)]);
        let t = text(&o);
        assert!(!o.status.success(), "{what}: restored: {t}");
        assert!(t.contains(word), "{what}: {t}");
        // Reading the target's repository id opens its (WAL mode) database read-only;
        // the side files SQLite makes for that are removed again: nothing changes.
        let after = tree(&target);
        let touched: Vec<String> = changes(&before, &after);
        assert!(
            touched.is_empty(),
            "{what}: the target was touched: {touched:?}"
        );
    }
    // The good backup itself restores into the target.
    ok(&run(&["restore", "--from", s(&good), "--data", s(&target)]));
    check_clean(&target);
    assert!(db_items(&target.join("cairn.db"), "/Root/Later").is_empty());
    assert_eq!(db_items(&target.join("cairn.db"), "/Root/Bulk/").len(), 404);
}

// ---------------------------------------------------------------------------------------
// 7. Targets

/// Issue 7: a target that climbs out of the backup folder is refused with 400; an
/// existing backup's name with 409.
#[test]
fn targets_outside_the_backup_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let (status, v) = server.backup("BackupIndex", Some("taken"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.wait_backup()["State"], "Finished");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, server.backups_dir().join("link")).unwrap();
    let abs = dir.path().join("abs");
    for (target, want) in [
        ("../x", 400),
        ("/tmp/x", 400),
        (s(&abs), 400),
        ("..", 400),
        ("a/../../x", 400),
        ("link", 400),
        ("taken", 409),
    ] {
        for action in ["BackupIndex", "BackupRepository"] {
            let (status, v) = server.backup(action, Some(target));
            assert_eq!(status, want, "{action} {target:?}: {v}");
            assert!(v["error"]["message"]["value"].is_string(), "{v}");
        }
    }
    assert!(!data.join("x").exists() && !abs.exists());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
    // A download serves the files a manifest lists, and never through a link out of the
    // backup (someone with write access to the backups folder could plant one).
    let m = read_manifest(&server.backups_dir().join("taken"));
    let listed = m["files"][0]["path"].as_str().unwrap().to_string();
    let (status, _) = server.http("GET", &format!("/backups/taken/files/{listed}"), None);
    assert_eq!(status, 200);
    copy_dir(
        &server.backups_dir().join("taken"),
        &server.backups_dir().join("linked"),
    );
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "do not serve").unwrap();
    let planted = server.backups_dir().join("linked").join(&listed);
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink(&secret, &planted).unwrap();
    let (status, body) = server.http("GET", &format!("/backups/linked/files/{listed}"), None);
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("do not serve"));
    // A misspelt parameter is an error, not a backup under a made-up name.
    let (status, text) = server.http(
        "POST",
        "/odata.svc/('Root')/BackupIndex",
        Some(r#"{"targt":"x"}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no parameter 'targt'"), "{text}");
    let q = server.query();
    assert_eq!(
        q["History"].as_array().unwrap().len(),
        1,
        "nothing started: {q}"
    );
    // The parameter's name is read in any case.
    let (status, text) = server.http(
        "POST",
        "/odata.svc/('Root')/BackupIndex",
        Some(r#"{"Target":"capital"}"#),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(server.wait_backup()["State"], "Finished");
    assert!(server.backups_dir().join("capital/manifest.json").is_file());
}

// ---------------------------------------------------------------------------------------
// 8. Database only

/// Issue 8: a restore without the index; the next start rebuilds it.
#[test]
fn database_only_restore_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    import(&source, "Bulk", 300, 100);
    let backup = dir.path().join("backup");
    offline_backup(&source, &backup);
    let new = dir.path().join("new");
    let out = ok(&run(&[
        "restore",
        "--database-only",
        "--from",
        s(&backup),
        "--data",
        s(&new),
    ]));
    assert!(out.contains("rebuilds"), "{out}");
    assert!(
        !new.join("index/meta.json").exists(),
        "no index was restored"
    );
    let (_, all) = check_clean(&new);
    assert!(all.contains("index rebuilt"), "{all}");
    assert_eq!(db_items(&new.join("cairn.db"), "/Root/Bulk/").len(), 303);
}

// ---------------------------------------------------------------------------------------
// 9. Incremental backups

/// Issue 9: the second of two index backups hard-links the files the first already has,
/// and stays complete on its own.
#[test]
fn incremental_backups_share_unchanged_files_and_stand_alone() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 500, 100);
    let server = Server::start(&data);
    assert_eq!(server.backup("BackupIndex", Some("one")).0, 200);
    assert_eq!(server.wait_backup()["State"], "Finished");
    let (status, body) = server.http(
        "POST",
        "/odata.svc/Root",
        Some(r#"{"__ContentType":"Folder","Name":"small-change"}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.backup("BackupIndex", Some("two")).0, 200);
    assert_eq!(server.wait_backup()["State"], "Finished");
    let (one, two) = (
        server.backups_dir().join("one"),
        server.backups_dir().join("two"),
    );
    let files = |dir: &Path| -> BTreeMap<String, String> {
        read_manifest(dir)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (f1, f2) = (files(&one), files(&two));
    let (mut shared, mut new) = (0, 0);
    for (path, sum) in &f2 {
        if path == "index/meta.json" {
            continue;
        }
        match f1.get(path) {
            Some(s1) => {
                assert_eq!(s1, sum, "{path}");
                let (i1, i2) = (
                    std::fs::metadata(one.join(path)).unwrap().ino(),
                    std::fs::metadata(two.join(path)).unwrap().ino(),
                );
                assert_eq!(i1, i2, "{path} is a hard link to the first backup's file");
                shared += 1;
            }
            None => new += 1,
        }
    }
    assert!(shared > 0, "nothing was shared: {f1:?} {f2:?}");
    assert!(new > 0, "the change made new files");
    std::fs::remove_dir_all(&one).unwrap();
    ok(&run(&["backup", "verify", s(&two)]));
    // And the second restores on its own.
    drop(server);
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    std::fs::remove_dir_all(copy.join("backups")).unwrap();
    ok(&run(&[
        "restore",
        "--index-only",
        "--from",
        s(&two),
        "--data",
        s(&copy),
    ]));
    check_clean(&copy);
}

// ---------------------------------------------------------------------------------------
// 10. Wrong order

/// Issue 10: a database older than the index (restored in the wrong order) is detected and
/// repaired at the next start: 0 differences, and a warning says what happened. Also when
/// the older database has since reused the index's activity ids (diverged, not just behind).
#[test]
fn a_database_older_than_the_index_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    import(&source, "Bulk", 200, 100);
    let a = dir.path().join("a");
    offline_backup(&source, &a);
    import(&source, "Later", 100, 50);
    let b = dir.path().join("b");
    offline_backup(&source, &b);

    // Behind: database A, then index B.
    let new = dir.path().join("behind");
    ok(&run(&[
        "restore",
        "--database-only",
        "--from",
        s(&a),
        "--data",
        s(&new),
    ]));
    ok(&run(&[
        "restore",
        "--index-only",
        "--from",
        s(&b),
        "--data",
        s(&new),
    ]));
    let (_, all) = check_clean(&new);
    assert!(all.contains("ahead of or diverged"), "{all}");
    assert!(db_items(&new.join("cairn.db"), "/Root/Later").is_empty());

    // Diverged: database A, new writes (which reuse B's activity ids), then index B.
    let new = dir.path().join("diverged");
    ok(&run(&[
        "restore",
        "--database-only",
        "--from",
        s(&a),
        "--data",
        s(&new),
    ]));
    import(&new, "Other", 150, 50);
    ok(&run(&[
        "restore",
        "--index-only",
        "--from",
        s(&b),
        "--data",
        s(&new),
    ]));
    let (_, all) = check_clean(&new);
    assert!(all.contains("ahead of or diverged"), "{all}");
    assert_eq!(db_items(&new.join("cairn.db"), "/Root/Other/").len(), 152);
}

// ---------------------------------------------------------------------------------------
// 11. Offline

/// Issue 11: `cairn backup create --data` backs up a stopped repository, and refuses while
/// a server holds it.
#[test]
fn offline_backup_of_a_stopped_repository() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 200, 100);
    // Folders on the way to the target are made (`DIR/backups` before any online backup).
    let out = dir.path().join("nested/deeper/out");
    let t = offline_backup(&data, &out);
    assert!(t.contains("backup written"), "{t}");
    // Backup, verify and restore each end with a one-line summary.
    assert!(summary_line(&t).is_some(), "{t}");
    let t = ok(&run(&["backup", "verify", s(&out)]));
    assert!(summary_line(&t).is_some(), "{t}");
    assert_eq!(read_manifest(&out)["kind"], "Repository");
    let restored = dir.path().join("restored");
    let t = ok(&run(&[
        "restore",
        "--from",
        s(&out),
        "--data",
        s(&restored),
    ]));
    assert!(summary_line(&t).is_some(), "{t}");
    check_clean(&restored);
    assert_eq!(
        db_items(&restored.join("cairn.db"), "/Root/Bulk/").len(),
        202
    );

    let server = Server::start(&data);
    let out2 = dir.path().join("out2");
    let o = run(&["backup", "create", "--data", s(&data), "--to", s(&out2)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("in use by"), "{}", text(&o));
    assert!(!out2.exists(), "nothing was written");
    // Nor does a restore run beside it.
    let o = run(&["restore", "--from", s(&out), "--data", s(&data)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("in use by"), "{}", text(&o));
    server.stop();
}

/// A command that names a running server's SQLite database through another data folder is
/// refused: a restore there would replace the file under the server, whose later writes
/// would go to the deleted file and be lost at its next start.
#[test]
fn a_database_in_use_is_locked_whichever_folder_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 50, 50);
    let out = dir.path().join("out");
    offline_backup(&data, &out);
    let server = Server::start(&data);
    let other = dir.path().join("other");
    let url = format!("sqlite://{}", data.join("cairn.db").display());
    let o = run(&[
        "restore",
        "--from",
        s(&out),
        "--data",
        s(&other),
        "--database",
        &url,
        "--force",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("the database") && text(&o).contains("in use by `cairn serve`"),
        "{}",
        text(&o)
    );
    assert!(!other.exists(), "a refused restore leaves nothing");
    server.stop();

    // A database outside any data folder is locked by a file beside it.
    let ext = dir.path().join("ext.db");
    let url = format!("sqlite://{}", ext.display());
    let server = Server::start_with(&dir.path().join("d1"), &["--database", &url]);
    let d2 = dir.path().join("d2");
    let o = run(&["index", "rebuild", "--data", s(&d2), "--database", &url]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("in use by `cairn serve`"), "{}", text(&o));
    assert!(!d2.exists(), "the refusal left a new data folder");
    server.stop();
    ok(&run(&[
        "index",
        "rebuild",
        "--data",
        s(&d2),
        "--database",
        &url,
    ]));
}

/// `backup create --data` refuses an index the next start would repair (here one restored
/// ahead of its database): the backup would bind them, and its verify and restore refuse it.
#[test]
fn offline_backup_refuses_an_index_ahead_of_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 50, 50);
    let old = dir.path().join("old");
    offline_backup(&data, &old);
    import(&data, "More", 50, 50);
    let new = dir.path().join("new");
    ok(&run(&[
        "backup",
        "create",
        "--data",
        s(&data),
        "--to",
        s(&new),
        "--index-only",
    ]));
    let x = dir.path().join("x");
    ok(&run(&["restore", "--from", s(&old), "--data", s(&x)]));
    ok(&run(&[
        "restore",
        "--from",
        s(&new),
        "--data",
        s(&x),
        "--index-only",
    ]));
    let out = dir.path().join("out");
    let o = run(&["backup", "create", "--data", s(&x), "--to", s(&out)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("cannot be trusted") && text(&o).contains("older than the index"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "nothing was written");
    let v: Value =
        serde_json::from_str(&ok(&run(&["index", "status", "--data", s(&x), "--json"]))).unwrap();
    assert!(
        v["Diverged"]
            .as_str()
            .unwrap_or("")
            .contains("older than the index"),
        "an index ahead is one the start repairs: {v}"
    );
    // A start repairs the index; then it backs up, and the backup verifies.
    Server::start(&x).stop();
    offline_backup(&x, &out);
    ok(&run(&["backup", "verify", s(&out)]));

    // Not ahead but diverged: the database went on from the old backup with other writes,
    // up to the same activity id, and the newer index was put beside it.
    let y = dir.path().join("y");
    ok(&run(&["restore", "--from", s(&old), "--data", s(&y)]));
    import(&y, "Other", 50, 50);
    ok(&run(&[
        "restore",
        "--from",
        s(&new),
        "--data",
        s(&y),
        "--index-only",
    ]));
    let t = ok(&run(&["index", "status", "--data", s(&y)]));
    assert!(
        t.contains("DIVERGED") && t.contains("is not the one the index applied"),
        "{t}"
    );
    let v: Value =
        serde_json::from_str(&ok(&run(&["index", "status", "--data", s(&y), "--json"]))).unwrap();
    assert!(v["Diverged"].is_string(), "{v}");
    assert_eq!(v["Lag"], 0, "{v}");
    let o = run(&[
        "backup",
        "create",
        "--data",
        s(&y),
        "--to",
        s(&dir.path().join("out2")),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("is not the one the index applied"),
        "{}",
        text(&o)
    );
    Server::start(&y).stop();
    let v: Value =
        serde_json::from_str(&ok(&run(&["index", "status", "--data", s(&y), "--json"]))).unwrap();
    assert_eq!(v["Diverged"], Value::Null, "repaired: {v}");
}

/// A backup is never written into the index it copies, and a restore never writes into
/// the backup it restores nor replaces an index holding it.
#[test]
fn backups_and_restores_refuse_overlapping_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 20, 20);
    let inside = data.join("index").join("bk");
    let o = run(&["backup", "create", "--data", s(&data), "--to", s(&inside)]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("lies inside the index"), "{}", text(&o));
    assert!(!inside.exists());

    let b = dir.path().join("b");
    offline_backup(&data, &b);
    for target in [b.clone(), b.join("index"), b.join("new")] {
        let o = run(&["restore", "--from", s(&b), "--data", s(&target), "--force"]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("lies inside the backup"), "{}", text(&o));
    }
    assert!(!b.join("new").exists());
    assert!(
        !b.join("cairn.lock").exists(),
        "the refusal wrote nothing into the backup"
    );
    // Nor may the database named by --database lie in the backup, or in the index the
    // restore replaces (it would be swapped out with the old index).
    let fresh = dir.path().join("fresh");
    for db in [b.join("database/cairn.db"), fresh.join("index/my.db")] {
        let url = format!("sqlite://{}", db.display());
        let o = run(&[
            "restore",
            "--from",
            s(&b),
            "--data",
            s(&fresh),
            "--database",
            &url,
        ]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("would lie inside"), "{}", text(&o));
        assert!(!fresh.exists());
    }
    ok(&run(&["backup", "verify", s(&b)]));
    // A backup inside the data folder goes to its backups folder, under a plain name.
    for to in [
        data.join(".restore-staging"),
        data.join("backups/history.json"),
        data.clone(),
    ] {
        let o = run(&["backup", "create", "--data", s(&data), "--to", s(&to)]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("inside the data folder"), "{}", text(&o));
    }
    offline_backup(&data, &data.join("backups/plain"));

    // A backup put inside the index by hand is not restored over that index.
    copy_dir(&b, &inside);
    let o = run(&[
        "restore",
        "--from",
        s(&inside),
        "--data",
        s(&data),
        "--force",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("inside the index it would replace"),
        "{}",
        text(&o)
    );
    ok(&run(&["backup", "verify", s(&inside)]));
}

// ---------------------------------------------------------------------------------------
// A backup asked for while another runs

/// `cairn backup create --server` while another backup runs: the server starts nothing, so
/// the command must not pass the other backup off as the one it was asked for.
#[test]
fn backup_create_while_another_runs_does_not_take_the_other_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import(&data, "Bulk", 300, 100);
    pad(&data, 250);
    let server = Server::start(&data);
    let (status, v) = server.backup("BackupRepository", Some("first"));
    assert_eq!(status, 200, "{v}");
    let out = dir.path().join("out");
    let o = cairn()
        .args([
            "backup",
            "create",
            "--index-only",
            "--server",
            &server.url(),
            "--admin-key",
            KEY,
            "--target",
            "mine",
            "--to",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let first_done = server.wait_backup();
    let history = first_done["History"].as_array().unwrap();
    let first = history
        .iter()
        .find(|h| h["TargetPath"].as_str().unwrap().ends_with("first"))
        .unwrap();
    assert!(
        first["FinishedAt"].is_string() && first["State"] == "Finished",
        "{first_done}"
    );
    if o.status.success() {
        let mine = server.backups_dir().join("mine");
        assert!(
            mine.join("manifest.json").exists(),
            "`backup create --target mine` succeeded, but no backup `mine` was made; it \
             downloaded another one: {}",
            text(&o)
        );
        assert_eq!(read_manifest(&out), read_manifest(&mine));
        assert_eq!(read_manifest(&out)["kind"], "Index");
    } else {
        assert!(text(&o).contains("another backup"), "{}", text(&o));
        assert!(!out.join("manifest.json").exists());
    }
}
