//! `RebuildIndex` and `RestoreIndex` on a serving repository, as real processes: the new
//! index is made beside the live one while a writer and a reader go on, then swapped in;
//! no query fails or sees a half-built index, every answered write is searchable after,
//! and a kill -9 in the middle leaves the old index serving and the new one removed.

mod common;

use common::{cairn, repository_with, Running as Server};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_testkit::wait_until;
use serde_json::{json, Value};

const KEY: &str = "index-swap-test-key";
const ITEMS: usize = 1500;

fn serve(data: &Path, failpoints: Option<&str>) -> Server {
    let mut c = common::serve_command(data, KEY);
    if let Some(f) = failpoints {
        c.env("FAILPOINTS", f);
    }
    common::spawn(&mut c)
}

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    common::call(KEY, method, url, body)
}

impl Server {
    fn action(&self, name: &str, body: Option<Value>) -> (u16, Value) {
        call(
            "POST",
            &format!("{}/odata.svc/('Root')/{name}", self.url),
            body,
        )
    }
    fn replacement(&self) -> Value {
        let (s, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexRestore", self.url),
            None,
        );
        assert_eq!(s, 200, "{v}");
        v
    }
    /// Waits until the replacement has ended; its answer.
    fn replaced(&self) -> Value {
        wait_until(
            "the index replacement ends",
            Duration::from_secs(120),
            || {
                let v = self.replacement();
                (!matches!(v["State"].as_str(), Some("Executing" | "CancelRequested"))).then_some(v)
            },
        )
    }
    fn folders(&self) -> Option<u64> {
        folders(&self.url)
    }
    fn differences(&self) -> Value {
        let (s, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/CheckIndexIntegrity", self.url),
            None,
        );
        assert_eq!(s, 200, "{v}");
        v
    }
}

/// Items a query for every folder finds (`None` when the query did not answer 200).
fn folders(url: &str) -> Option<u64> {
    let (s, v) = common::try_call(
        KEY,
        "GET",
        &format!("{url}/odata.svc/Root?query=Type:Folder&$inlinecount=allpages&$top=1"),
        None,
    )
    .ok()?;
    (s == 200).then(|| v["d"]["__count"].as_u64()).flatten()
}

/// A writer creating folders and a reader counting them, until `stop`: the names of the
/// writes that were answered, and what went wrong for the reader (a failed query, or a
/// count below what was there before: a half-built index).
fn load(
    server: &Server,
    floor: u64,
    prefix: &'static str,
    stop: &Arc<AtomicBool>,
) -> (
    std::thread::JoinHandle<Vec<String>>,
    std::thread::JoinHandle<Vec<String>>,
) {
    let url = server.url.clone();
    let s = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut answered = Vec::new();
        let mut i = 0;
        while !s.load(Ordering::SeqCst) {
            let name = format!("{prefix}{i}");
            i += 1;
            let (st, v) = call(
                "POST",
                &format!("{url}/odata.svc/Root"),
                Some(json!({"__ContentType": "Folder", "Name": name})),
            );
            assert_eq!(st, 201, "{v}");
            answered.push(name);
            std::thread::sleep(Duration::from_millis(20));
        }
        answered
    });
    let url = server.url.clone();
    let s = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut wrong = Vec::new();
        let mut last = floor;
        while !s.load(Ordering::SeqCst) {
            match folders(&url) {
                None => wrong.push("a query failed".to_string()),
                Some(n) if n < last => wrong.push(format!("{n} folders found after {last}")),
                Some(n) => last = n,
            }
        }
        wrong
    });
    (writer, reader)
}

/// RebuildIndex, then RestoreIndex from a backup, each under a writer and a reader; a
/// second call while one runs answers the running one; a cancel leaves the live index;
/// bad calls are refused before anything starts.
#[test]
fn rebuild_and_restore_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    repository_with(&data, ITEMS);
    // Each page of a build is slowed, so that the writer and the reader run during it.
    let server = serve(&data, Some("index::rebuild_page=sleep(1500)"));
    let base = server.folders().unwrap();
    assert!(base >= ITEMS as u64, "{base}");
    assert_eq!(server.replacement()["State"], "Initial");

    // Refused: not an admin, a GET, a bad parameter, no such backup.
    let (s, _) = common::call(
        "wrong-key-wrong-key",
        "POST",
        &format!("{}/odata.svc/('Root')/RebuildIndex", server.url),
        None,
    );
    assert_eq!(s, 401);
    let (s, v) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/RebuildIndex", server.url),
        None,
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = server.action("RestoreIndex", Some(json!({"from": "x"})));
    assert_eq!(s, 400, "{v}");
    let missing = dir.path().join("nowhere/b");
    let (s, v) = server.action(
        "RestoreIndex",
        Some(json!({"backup": missing.to_str().unwrap()})),
    );
    assert!(s == 404 || s == 400, "{s} {v}");
    // Another repository's backup is refused before anything starts.
    let other = dir.path().join("other");
    repository_with(&other, 3);
    let b = dir.path().join("others/b");
    let o = cairn()
        .args(["backup", "create", "--data"])
        .arg(&other)
        .arg("--to")
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let (s, v) = server.action("RestoreIndex", Some(json!({"backup": b.to_str().unwrap()})));
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("not of this one"), "{v}");
    assert_eq!(server.replacement()["State"], "Initial");

    for round in ["rebuild", "restore"] {
        let stop = Arc::new(AtomicBool::new(false));
        let (writer, reader) = load(&server, base, round, &stop);
        let (s, v) = if round == "rebuild" {
            server.action("RebuildIndex", None)
        } else {
            // A backup of the index taken now, restored while the writes go on: it is
            // behind the database by the time it is swapped in, and catches up.
            let (s, v) = server.action("BackupIndex", Some(json!({"target": "b1"})));
            assert_eq!(s, 200, "{v}");
            wait_until("the backup", Duration::from_secs(60), || {
                let (_, q) = call(
                    "GET",
                    &format!("{}/odata.svc/('Root')/QueryIndexBackup", server.url),
                    None,
                );
                (q["State"] == "Finished").then_some(())
            });
            let b = data.join("backups/b1");
            server.action("RestoreIndex", Some(json!({"backup": b.to_str().unwrap()})))
        };
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["State"], "Executing", "{v}");
        // One at a time: a second call answers the running one.
        let (s, again) = server.action("RebuildIndex", None);
        assert_eq!(s, 200, "{again}");
        assert_eq!(again["Current"]["StartedAt"], v["Current"]["StartedAt"]);
        let done = server.replaced();
        assert_eq!(done["State"], "Finished", "{round}: {done}");
        // Rebuilt from the database; restored from the backup's index and caught up.
        let how = if round == "rebuild" {
            "built (the index is empty)"
        } else {
            "caught up"
        };
        assert_eq!(done["Current"]["Message"], how, "{round}: {done}");
        assert!(!data.join(".index-rebuild").exists());
        assert!(!data.join(".index-old").exists());
        // A few writes after the swap, then stop.
        let before = server.folders().unwrap();
        wait_until("writes after the swap", Duration::from_secs(30), || {
            (server.folders().unwrap_or(0) >= before + 3).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        let answered = writer.join().unwrap();
        let wrong = reader.join().unwrap();
        assert!(wrong.is_empty(), "{round}: {wrong:?}");
        assert!(answered.len() > 3, "{round}: {}", answered.len());
        let report = server.differences();
        assert_eq!(report["Differences"], json!([]), "{round}: {report}");
        // Every answered write is searchable (read-your-writes makes it so at once).
        let all = server.folders().unwrap();
        assert!(all >= base + answered.len() as u64, "{round}: {all}");
        let base_now = all;
        let (s, v) = call(
            "GET",
            &format!(
                "{}/odata.svc/Root?query=Name:{}&$inlinecount=allpages",
                server.url,
                answered.last().unwrap()
            ),
            None,
        );
        assert_eq!((s, v["d"]["__count"].as_u64()), (200, Some(1)), "{v}");
        assert!(base_now >= base);
    }
    // A cancel while building: the live index serves on, nothing is left beside it.
    let (s, v) = server.action("RebuildIndex", None);
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.action("CancelIndexRestore", None);
    assert_eq!(s, 200, "{v}");
    let done = server.replaced();
    assert_eq!(done["State"], "Canceled", "{done}");
    assert!(!data.join(".index-rebuild").exists());
    assert!(server.folders().unwrap() >= base);
    assert_eq!(server.differences()["Differences"], json!([]));

    // From the command line: follows the server's replacement to its end.
    let cli = |args: &[&str]| {
        cairn()
            .args(args)
            .args(["--server", &server.url, "--admin-key", KEY])
            .output()
            .unwrap()
    };
    let o = cli(&["index", "rebuild"]);
    assert!(o.status.success(), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("index replaced on the server"),
        "{}",
        common::text(&o)
    );
    let o = cli(&["index", "restore", "--from", missing.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", common::text(&o));
    assert!(common::text(&o).contains("nowhere"), "{}", common::text(&o));
    let o = cairn()
        .args(["index", "restore", "--from", "x/y"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        common::text(&o).contains("--server"),
        "{}",
        common::text(&o)
    );
    assert_eq!(server.differences()["Differences"], json!([]));
}

/// A kill -9 while the new index is built, and one at the swap: each next start serves the
/// old index, complete, and removes the new one.
#[test]
fn a_kill_during_a_rebuild_leaves_the_old_index_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    repository_with(&data, ITEMS);
    for failpoint in [
        "index::rebuild_page=sleep(60000)",
        "index::swap=sleep(60000)",
    ] {
        let mut server = serve(&data, Some(failpoint));
        let before = server.folders().unwrap();
        let (s, v) = server.action("RebuildIndex", None);
        assert_eq!(s, 200, "{v}");
        let beside = data.join(".index-rebuild");
        let step = if failpoint.starts_with("index::swap") {
            "catch up"
        } else {
            "build"
        };
        wait_until(
            "the new index is being made",
            Duration::from_secs(60),
            || {
                let v = server.replacement();
                (beside.exists() && v["Current"]["Step"] == step).then_some(())
            },
        );
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        assert!(beside.exists());
        let server = serve(&data, None);
        assert!(!beside.exists(), "{failpoint}");
        assert_eq!(server.folders(), Some(before), "{failpoint}");
        assert_eq!(
            server.differences()["Differences"],
            json!([]),
            "{failpoint}"
        );
    }
}

/// A backup reading the live index holds the swap back until it is done (its files must
/// not change names under it); the backup verifies, the new index serves. A server stopped
/// during a replacement cancels it, exits 0, and the next start serves the old index.
#[test]
fn a_running_backup_holds_the_swap_and_a_stop_cancels_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    repository_with(&data, ITEMS);
    // Every index file of a backup takes 400 ms.
    let server = serve(&data, Some("backup::index_file=sleep(400)"));
    let (s, v) = server.action("BackupRepository", Some(json!({"target": "held"})));
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.action("RebuildIndex", None);
    assert_eq!(s, 200, "{v}");
    wait_until(
        "the swap waits for the backup",
        Duration::from_secs(60),
        || (server.replacement()["Current"]["Step"] == "waiting for a backup").then_some(()),
    );
    let (_, q) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/QueryIndexBackup", server.url),
        None,
    );
    assert_eq!(
        q["State"], "Executing",
        "the backup ended before the wait: {q}"
    );
    let done = server.replaced();
    assert_eq!(done["State"], "Finished", "{done}");
    let (_, q) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/QueryIndexBackup", server.url),
        None,
    );
    assert_eq!(q["State"], "Finished", "{q}");
    let o = cairn()
        .args(["backup", "verify"])
        .arg(data.join("backups/held"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    assert_eq!(server.differences()["Differences"], json!([]));
    drop(server);

    // Each page of the build takes 5 s: the stop comes during one (a cancel is seen
    // between pages).
    let mut server = serve(&data, Some("index::rebuild_page=sleep(5000)"));
    let before = server.folders().unwrap();
    let (s, v) = server.action("RebuildIndex", None);
    assert_eq!(s, 200, "{v}");
    wait_until("the build runs", Duration::from_secs(60), || {
        (server.replacement()["Current"]["Step"] == "build").then_some(())
    });
    let exit = cairn_testkit::terminate(&mut server.child, Duration::from_secs(90));
    assert!(exit.success(), "{exit:?}");
    assert!(!data.join(".index-rebuild").exists());
    let server = serve(&data, None);
    assert_eq!(server.folders(), Some(before));
    assert_eq!(server.differences()["Differences"], json!([]));
}
