//! Several web nodes on one PostgreSQL database and one search service, as real processes:
//! sensenet's network-load-balanced setup.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_testkit::wait_until;
use serde_json::{json, Value};

const KEY: &str = "cluster-admin-key-0123";
const SECRET: &str = "cluster-secret-0123";

use common::Running as Proc;

fn spawn(args: &[&str]) -> Proc {
    common::spawn(common::cairn().args(args))
}

fn service(dir: &Path, db: &str, listen: &str) -> Proc {
    spawn(&[
        "search-service",
        "--data",
        dir.to_str().unwrap(),
        "--database",
        db,
        "--listen",
        listen,
        "--search-secret",
        SECRET,
    ])
}

fn node(dir: &Path, db: &str, service: &str) -> Proc {
    spawn(&[
        "serve",
        "--data",
        dir.to_str().unwrap(),
        "--database",
        db,
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        KEY,
        "--search-service",
        service,
        "--search-secret",
        SECRET,
    ])
}

/// One request with the admin key; a node that cannot be reached answers (0, null).
fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    common::try_call(KEY, method, url, body).unwrap_or((0, Value::Null))
}

fn create(node: &Proc, parent: &str, name: &str) -> u16 {
    call(
        "POST",
        &format!("{}/odata.svc{parent}", node.url),
        Some(json!({"__ContentType":"Article","Name":name,"Body":format!("word {name}")})),
    )
    .0
}

fn count(node: &Proc, query: &str) -> Option<u64> {
    let (s, v) = call(
        "GET",
        &format!(
            "{}/odata.svc/Root?query={query}&$inlinecount=allpages&$top=1",
            node.url
        ),
        None,
    );
    (s == 200).then(|| v["d"]["__count"].as_u64()).flatten()
}

fn clean(node: &Proc) -> Value {
    let (s, v) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/CheckIndexIntegrity", node.url),
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

fn database() -> String {
    let cluster = cairn_testkit::shared_cluster().expect("start PostgreSQL");
    cluster
        .create_database(&cairn_testkit::unique_name("cluster"))
        .expect("create database")
}

#[test]
fn two_web_nodes_share_one_index() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("svc"), &db, "127.0.0.1:0");
    let a = node(&dir.path().join("a"), &db, &svc.url);
    let b = node(&dir.path().join("b"), &db, &svc.url);
    assert_eq!(
        call(
            "POST",
            &format!("{}/odata.svc/Root", a.url),
            Some(json!({"__ContentType":"Folder","Name":"Shared"}))
        )
        .0,
        201
    );
    for i in 0..20 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(create(writer, "/Root/Shared", &format!("n{i}")), 201);
        // Read-your-writes across nodes: the write answered once the service indexed it.
        assert_eq!(
            count(reader, &format!("Name:n{i}")),
            Some(1),
            "item {i} not visible from the other node"
        );
    }
    let (s, v) = call(
        "GET",
        &format!("{}/odata.svc/Root/Shared?$inlinecount=allpages", b.url),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(v["d"]["__count"], 20);
    let report = clean(&a);
    assert_eq!(report["Differences"], json!([]), "{report}");
    // A web node going down leaves the other serving.
    drop(a);
    assert_eq!(create(&b, "/Root/Shared", "after-a"), 201);
    assert_eq!(count(&b, "Name:after-a"), Some(1));
}

#[test]
fn search_service_killed_under_writes_loses_nothing() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let svc_dir = dir.path().join("svc");
    let port = cairn_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut svc = service(&svc_dir, &db, &listen);
    let a = node(&dir.path().join("a"), &db, &svc.url);
    assert_eq!(
        call(
            "POST",
            &format!("{}/odata.svc/Root", a.url),
            Some(json!({"__ContentType":"Folder","Name":"W"}))
        )
        .0,
        201
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop) = (a.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut ok = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, _) = call(
                    "POST",
                    &format!("{url}/odata.svc/Root/W"),
                    Some(json!({"__ContentType":"Article","Name":format!("w{i}")})),
                );
                if s == 201 {
                    ok += 1;
                }
                i += 1;
            }
            ok
        })
    };
    wait_until("some writes", Duration::from_secs(30), || {
        (count(&a, "TypeIs:Article").unwrap_or(0) > 20).then_some(())
    });
    svc.child.kill().unwrap(); // SIGKILL
    svc.child.wait().unwrap();
    // While the service is down, writes still succeed and queries answer 503.
    wait_until(
        "a write while the service is down",
        Duration::from_secs(30),
        || (create(&a, "/Root/W", &format!("down-{}", rand_suffix())) == 201).then_some(()),
    );
    let (s, v) = call(
        "GET",
        &format!("{}/odata.svc/Root?query=TypeIs:Article", a.url),
        None,
    );
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"]["value"]
            .as_str()
            .unwrap_or_default()
            .contains("search service"),
        "{v}"
    );
    let svc2 = service(&svc_dir, &db, &listen);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    // It catches up from the log: nothing committed is lost.
    let report = wait_until(
        "the restarted service is clean",
        Duration::from_secs(60),
        || {
            let r = clean(&a);
            (r["Differences"] == json!([])).then_some(r)
        },
    );
    assert_eq!(
        report["LastStoredActivity"],
        report["LastProcessedActivity"]
    );
    drop(svc2);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[test]
fn one_backup_at_a_time_across_nodes_and_restore() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let svc_dir = dir.path().join("svc");
    let svc = service(&svc_dir, &db, "127.0.0.1:0");
    let a = node(&dir.path().join("a"), &db, &svc.url);
    let b = node(&dir.path().join("b"), &db, &svc.url);
    assert_eq!(
        call(
            "POST",
            &format!("{}/odata.svc/Root", a.url),
            Some(json!({"__ContentType":"Folder","Name":"B"}))
        )
        .0,
        201
    );
    for i in 0..30 {
        assert_eq!(create(&b, "/Root/B", &format!("x{i}")), 201);
    }
    // A node answers the service's refusal of a bad target as a single server would.
    let (status, v) = call(
        "POST",
        &format!("{}/odata.svc/('Root')/BackupIndex", a.url),
        Some(json!({"target":".."})),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "InvalidBackupTarget", "{v}");
    // 10 concurrent BackupIndex calls over both nodes start exactly one backup.
    let answers: Vec<Value> = common::ten_backup_calls(
        KEY,
        &[&a.url, &b.url],
        "BackupIndex",
        json!({"target":"idx"}),
    )
    .into_iter()
    .map(|(_, v)| v)
    .collect();
    let started = answers
        .iter()
        .filter(|v| {
            v["Current"]["TargetPath"]
                .as_str()
                .is_some_and(|t| t.ends_with("idx"))
        })
        .count();
    assert_eq!(
        started, 10,
        "every answer names the one running backup: {answers:?}"
    );
    wait_until("the index backup finishes", Duration::from_secs(60), || {
        let (_, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexBackup", b.url),
            None,
        );
        (v["State"] == "Finished").then_some(())
    });
    // The same for repository backups (index, then pg_dump, then the manifest).
    let answers: Vec<Value> =
        common::ten_backup_calls(KEY, &[&a.url, &b.url], "BackupRepository", json!({}))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
    let targets: std::collections::HashSet<String> = answers
        .iter()
        .map(|v| {
            v["Current"]["TargetPath"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(targets.len(), 1, "{answers:?}");
    // Progress is visible from every node; writes go on through node B meanwhile.
    let done = wait_until("the backup finishes", Duration::from_secs(120), || {
        let _ = create(&b, "/Root/B", &format!("during-{}", rand_suffix()));
        let (_, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexBackup", a.url),
            None,
        );
        (v["State"] == "Finished").then_some(v)
    });
    let (_, vb) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/QueryIndexBackup", b.url),
        None,
    );
    assert_eq!(
        vb["History"][0]["TargetPath"],
        done["History"][0]["TargetPath"]
    );
    let entries = std::fs::read_dir(svc_dir.join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(entries, 2, "one index backup and one repository backup");
    // Download it through a web node, then restore it: pg_restore the database, the index
    // into a new service folder, start, catch up.
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "backup",
            "create",
            "--server",
            &a.url,
            "--admin-key",
            KEY,
            "--to",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop((a, b, svc));
    let restored_db = database();
    let new_svc = dir.path().join("svc2");
    let restore = |data: &Path, database: &str| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["restore", "--from"])
            .arg(&out)
            .arg("--data")
            .arg(data)
            .args(["--database", database])
            .output()
            .unwrap()
    };
    // While a Cairn process is connected to the database (a web node left running), a
    // restore into it refuses: that node would go on writing into the restored database.
    // The node names itself in its URL: it is still a Cairn session.
    let sep = if db.contains('?') { '&' } else { '?' };
    let named = format!("{db}{sep}application_name=web-node-4");
    let live = cairn_store::Store::open(&cairn_store::DatabaseUrl::parse(&named).unwrap()).unwrap();
    let refused = dir.path().join("svc-refused");
    let o = restore(&refused, &db);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a restore ran beside a live session");
    assert!(err.contains("Cairn session(s)"), "{err}");
    assert!(
        !refused.exists(),
        "the refused restore left {}",
        refused.display()
    );
    drop(live);
    // A pg_restore that fails (here: a view of someone else's depends on a table it
    // replaces) rolls back, and the restore leaves no staging behind.
    let mut other = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    other
        .batch_execute("CREATE VIEW report AS SELECT id FROM indexing_activities")
        .unwrap();
    let failed = dir.path().join("svc-failed");
    std::fs::create_dir(&failed).unwrap();
    let o = restore(&failed, &db);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The reason is one line, pg_restore's detail included.
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(line.contains("view public.report depends on"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&failed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "cairn.lock")
        .collect();
    assert!(left.is_empty(), "a failed restore left {left:?}");
    other.batch_execute("DROP VIEW report").unwrap();
    let o = restore(&new_svc, &restored_db);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svc = service(&new_svc, &restored_db, "127.0.0.1:0");
    let c = node(&dir.path().join("c"), &restored_db, &svc.url);
    let report = clean(&c);
    assert_eq!(report["Differences"], json!([]), "{report}");
    assert!(count(&c, "Name:x29").unwrap_or(0) == 1);
}

/// PostgreSQL stopped under a running server: requests answer 503 (retryable) and `/health`
/// says so, where they answered 500; once it is back, the very next request is served (the
/// dead pooled sessions are dropped, not used one by one).
#[test]
fn a_database_restart_answers_503_then_serves() {
    let mut pg = cairn_testkit::PgCluster::start().unwrap();
    let db = pg.create_database("restart").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let server = spawn(&[
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--database",
        &db,
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        KEY,
    ]);
    for i in 0..4 {
        assert_eq!(create(&server, "/Root", &format!("before{i}")), 201);
    }
    let health = || call("GET", &format!("{}/health", server.url), None).0;
    assert_eq!(health(), 200);
    pg.stop().unwrap();
    assert_eq!(health(), 503);
    let (status, v) = call(
        "POST",
        &format!("{}/odata.svc/Root", server.url),
        Some(json!({"__ContentType":"Folder","Name":"down"})),
    );
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "ServiceUnavailable", "{v}");
    assert!(
        v["error"]["message"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("database"),
        "{v}"
    );
    pg.start_again().unwrap();
    assert_eq!(create(&server, "/Root", "after"), 201);
    assert_eq!(health(), 200);
    assert_eq!(count(&server, "Name:after"), Some(1));
}

/// A search service that hangs (stopped, not gone) holds a web node's requests no longer
/// than its bounds: a query answers 503 naming the service, a write answers once its
/// read-your-writes wait (10 s) gives up; both used to wait as long as the service did.
#[test]
fn a_hung_search_service_holds_requests_only_so_long() {
    let dir = tempfile::tempdir().unwrap();
    let db = database();
    let svc = service(&dir.path().join("svc"), &db, "127.0.0.1:0");
    let n = node(&dir.path().join("n"), &db, &svc.url);
    assert_eq!(create(&n, "/Root", "before"), 201);
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &svc.child.id().to_string()])
            .status()
            .unwrap()
            .success())
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let (status, v) = call(
        "GET",
        &format!("{}/odata.svc/Root?query=Name:before", n.url),
        None,
    );
    let query_took = started.elapsed();
    let started = std::time::Instant::now();
    let created = create(&n, "/Root", "during");
    let write_took = started.elapsed();
    signal("-CONT");
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"]["value"]
        .as_str()
        .unwrap_or("")
        .contains("search service"));
    assert!(query_took < Duration::from_secs(15), "{query_took:?}");
    assert_eq!(created, 201, "the write is kept");
    assert!(write_took < Duration::from_secs(15), "{write_took:?}");
    // Back, the service indexes the write.
    wait_until("the write is searchable", Duration::from_secs(30), || {
        (count(&n, "Name:during") == Some(1)).then_some(())
    });
}

/// Every server process type on PostgreSQL stops cleanly on SIGTERM (exit 0): a web node,
/// a server with its own index, and the search service, each after serving writes (so
/// that its pool holds database sessions to close). Dropping a pooled session on an async
/// thread once panicked ("Cannot start a runtime from within a runtime", exit 101).
#[test]
fn every_process_on_postgres_exits_0_on_sigterm() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let mut svc = service(&dir.path().join("svc"), &db, "127.0.0.1:0");
    let mut web = node(&dir.path().join("web"), &db, &svc.url);
    assert_eq!(create(&web, "/Root", "via-web"), 201);
    assert_eq!(count(&web, "Name:via-web"), Some(1));
    let exit = cairn_testkit::terminate(&mut web.child, Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "web node: {exit:?}");
    let exit = cairn_testkit::terminate(&mut svc.child, Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "search service: {exit:?}");
    // The same database served by one process with its own index.
    let mut alone = spawn(&[
        "serve",
        "--data",
        dir.path().join("alone").to_str().unwrap(),
        "--database",
        &db,
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        KEY,
    ]);
    assert_eq!(create(&alone, "/Root", "alone"), 201);
    assert_eq!(count(&alone, "Name:alone"), Some(1));
    let exit = cairn_testkit::terminate(&mut alone.child, Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "server with a local index: {exit:?}");
}

/// The search service's errors have the web API's body: a bad body (once a plain-text
/// 422), a missing route, a missing secret.
#[test]
fn the_search_service_answers_errors_in_the_web_apis_shape() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&dir.path().join("svc"), &db, "127.0.0.1:0");
    let a = common::agent();
    let auth = format!("Bearer {SECRET}");
    let cases = [
        (
            a.post(&format!("{}/search/list", svc.url))
                .header("Authorization", &auth)
                .send("{not json"),
            "bad body",
        ),
        (
            a.post(&format!("{}/search/wait", svc.url))
                .header("Authorization", &auth)
                .send("{\"activity\":\"x\"}"),
            "wrong type",
        ),
        (
            a.get(&format!("{}/no/such/route", svc.url))
                .header("Authorization", &auth)
                .call(),
            "no route",
        ),
        (
            a.get(&format!("{}/search/properties", svc.url)).call(),
            "no secret",
        ),
    ];
    for (resp, what) in cases {
        let mut r = resp.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap();
        assert!((400..500).contains(&status), "{what}: {status} {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
        assert!(
            v["error"]["message"]["value"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }
}

/// RebuildIndex and RestoreIndex through a web node are the search service's: it swaps its
/// index while the node goes on writing and querying through it.
#[test]
fn index_swaps_through_a_web_node() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let svc_dir = dir.path().join("svc");
    let svc = service(&svc_dir, &db, "127.0.0.1:0");
    let a = node(&dir.path().join("a"), &db, &svc.url);
    let action = |name: &str, body: Value| {
        call(
            "POST",
            &format!("{}/odata.svc/('Root')/{name}", a.url),
            Some(body),
        )
    };
    let replaced = || {
        wait_until("the index replacement", Duration::from_secs(60), || {
            let (s, v) = call(
                "GET",
                &format!("{}/odata.svc/('Root')/QueryIndexRestore", a.url),
                None,
            );
            assert_eq!(s, 200, "{v}");
            (v["State"] != "Executing").then_some(v)
        })
    };
    assert_eq!(
        call(
            "POST",
            &format!("{}/odata.svc/Root", a.url),
            Some(json!({"__ContentType":"Folder","Name":"S"}))
        )
        .0,
        201
    );
    for i in 0..20 {
        assert_eq!(create(&a, "/Root/S", &format!("s{i}")), 201);
    }
    // A reader through a second web node all along: every query answers, and never from a
    // half-built index (it finds at least every create answered before it began).
    let b = node(&dir.path().join("b"), &db, &svc.url);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(20));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (answered, stop, url) = (answered.clone(), stop.clone(), b.url.clone());
        std::thread::spawn(move || {
            let mut queries = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let before = answered.load(std::sync::atomic::Ordering::SeqCst);
                let (s, v) = call(
                    "GET",
                    &format!(
                        "{url}/odata.svc/Root?query=Type:Article&$inlinecount=allpages&$top=1"
                    ),
                    None,
                );
                assert_eq!(s, 200, "a query during a swap: {v}");
                let n = v["d"]["__count"].as_u64().unwrap_or(0);
                assert!(
                    n >= before,
                    "a query found {n} articles, {before} were answered"
                );
                queries += 1;
            }
            queries
        })
    };
    let (s, v) = action("RebuildIndex", json!({}));
    assert_eq!((s, v["State"].as_str()), (200, Some("Executing")), "{v}");
    for i in 20..30 {
        assert_eq!(create(&a, "/Root/S", &format!("s{i}")), 201);
        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let done = replaced();
    assert_eq!(done["State"], "Finished", "{done}");
    let (s, v) = action("BackupIndex", json!({"target": "i1"}));
    assert_eq!(s, 200, "{v}");
    wait_until("the index backup", Duration::from_secs(60), || {
        let (_, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexBackup", a.url),
            None,
        );
        (v["State"] == "Finished").then_some(())
    });
    for i in 30..40 {
        assert_eq!(create(&a, "/Root/S", &format!("s{i}")), 201);
        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let backup = svc_dir.join("backups/i1");
    let (s, v) = action("RestoreIndex", json!({"backup": backup.to_str().unwrap()}));
    assert_eq!(s, 200, "{v}");
    let done = replaced();
    assert_eq!(done["State"], "Finished", "{done}");
    assert_eq!(done["Current"]["Message"], "caught up", "{done}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let queries = reader.join().unwrap();
    assert!(queries > 10, "only {queries} queries during the swaps");
    assert_eq!(count(&a, "Type:Article"), Some(40));
    assert_eq!(clean(&a)["Differences"], json!([]));
}
