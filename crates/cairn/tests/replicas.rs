//! Search replicas: several `cairn search-service` processes on one PostgreSQL database,
//! web nodes taking them all (`--search-service URL1,URL2`), as real processes killed with
//! SIGKILL and paused with SIGSTOP.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_testkit::wait_until;
use common::Running;
use serde_json::{json, Value};

const KEY: &str = "replicas-admin-key-0123";
const SECRET: &str = "replicas-secret-0123456";

fn database() -> String {
    cairn_testkit::shared_cluster()
        .expect("start PostgreSQL")
        .create_database(&cairn_testkit::unique_name("replicas"))
        .expect("create database")
}

/// A replica on `port` (fixed, so that a restarted one has the same address).
fn replica(dir: &Path, db: &str, port: u16, env: &[(&str, &str)]) -> Running {
    common::spawn(replica_command(dir, db, port).envs(env.iter().copied()))
}

fn replica_command(dir: &Path, db: &str, port: u16) -> Command {
    let mut c = common::cairn();
    c.args(["search-service", "--data"])
        .arg(dir)
        .args(["--database", db, "--search-secret", SECRET])
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    c
}

fn node(dir: &Path, db: &str, replicas: &[&str]) -> Running {
    common::spawn(
        common::cairn()
            .args(["serve", "--data"])
            .arg(dir)
            .args([
                "--database",
                db,
                "--listen",
                "127.0.0.1:0",
                "--admin-key",
                KEY,
            ])
            .args(["--search-service", &replicas.join(",")])
            .args(["--search-secret", SECRET]),
    )
}

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    common::try_call(KEY, method, url, body).unwrap_or((0, Value::Null))
}

/// A call to a replica's own route, with the shared secret.
fn service_get(replica: &str, path: &str) -> (u16, Value) {
    common::try_call(SECRET, "GET", &format!("{replica}{path}"), None).unwrap_or((0, Value::Null))
}

/// A JSON `POST` to a replica's own route, with the shared secret: status and body.
fn service_post(replica: &str, path: &str, body: Value) -> (u16, String) {
    let mut r = common::agent()
        .post(&format!("{replica}{path}"))
        .header("Authorization", &format!("Bearer {SECRET}"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), text)
}

fn create(node: &str, name: &str) -> u16 {
    call(
        "POST",
        &format!("{node}/odata.svc/Root/R"),
        Some(json!({"__ContentType":"Article","Name":name,"Body":format!("word {name}")})),
    )
    .0
}

/// The status and count of a query through `node`.
fn count(node: &str, query: &str) -> (u16, Option<u64>) {
    let (s, v) = call(
        "GET",
        &format!("{node}/odata.svc/Root?query={query}&$inlinecount=allpages&$top=1"),
        None,
    );
    (s, v["d"]["__count"].as_u64())
}

fn folder(node: &str) {
    let (s, v) = call(
        "POST",
        &format!("{node}/odata.svc/Root"),
        Some(json!({"__ContentType":"Folder","Name":"R"})),
    );
    assert_eq!(s, 201, "{v}");
}

/// Waits until the replica at `url` has applied everything and its integrity check finds
/// no difference.
fn agrees(url: &str, what: &str) {
    wait_until(what, Duration::from_secs(90), || {
        let (s, h) = service_get(url, "/health");
        if s != 200 || h["Lag"] != json!(0) {
            return None;
        }
        let (s, r) = service_get(url, "/search/check");
        (s == 200 && r["Differences"] == json!([])).then_some(())
    });
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Two replicas and two web nodes on one database.
struct Cluster {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    db: String,
    ports: [u16; 2],
    replicas: [Option<Running>; 2],
    nodes: [Running; 2],
    env: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    fn start() -> Cluster {
        Self::start_with(&[], None)
    }

    /// With `env` for the replicas, and `config` as each one's `cairn.toml`.
    fn start_with(env: &[(&'static str, &'static str)], config: Option<&str>) -> Cluster {
        let db = database();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for i in 0..2 {
            let data = root.join(format!("r{i}"));
            std::fs::create_dir_all(&data).unwrap();
            if let Some(config) = config {
                std::fs::write(data.join("cairn.toml"), config).unwrap();
            }
        }
        let ports = [cairn_testkit::free_port(), cairn_testkit::free_port()];
        let r0 = replica(&root.join("r0"), &db, ports[0], env);
        let r1 = replica(&root.join("r1"), &db, ports[1], env);
        let urls = [r0.url.clone(), r1.url.clone()];
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let a = node(&root.join("a"), &db, &urls);
        let b = node(&root.join("b"), &db, &urls);
        folder(&a.url);
        Cluster {
            _dir: dir,
            root,
            db,
            ports,
            replicas: [Some(r0), Some(r1)],
            nodes: [a, b],
            env: env.to_vec(),
        }
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn restart(&mut self, i: usize) {
        self.replicas[i] = Some(replica(
            &self.root.join(format!("r{i}")),
            &self.db,
            self.ports[i],
            &self.env,
        ));
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut r) = self.replicas[i].take() {
            r.child.kill().unwrap(); // SIGKILL
            r.child.wait().unwrap();
        }
    }
}

/// Writes through alternating nodes, each followed by a query for it through the other
/// node (read-your-writes across nodes and replicas), until stopped: the writes answered,
/// and every failure seen.
fn load(
    nodes: [String; 2],
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            let (w, r) = (&nodes[written % 2], &nodes[(written + 1) % 2]);
            let name = format!("w{written}");
            let s = create(w, &name);
            if s != 201 {
                failures.lock().unwrap().push(format!("create {name}: {s}"));
                continue;
            }
            written += 1;
            let (s, n) = count(r, &format!("Name:{name}"));
            if (s, n) != (200, Some(1)) {
                failures
                    .lock()
                    .unwrap()
                    .push(format!("query {name} on the other node: {s} {n:?}"));
            }
        }
        written
    })
}

/// Two replicas, two web nodes, a writer and a reader: a replica killed with SIGKILL
/// fails no query (the other answers) and no write; restarted, it catches up and both
/// agree with the database.
#[test]
fn a_replica_killed_under_load_fails_no_query_and_catches_up() {
    let mut c = Cluster::start();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let nodes = [c.nodes[0].url.clone(), c.nodes[1].url.clone()];
    let writer = load(nodes.clone(), stop.clone(), failures.clone());
    let seen = |n: u64| {
        wait_until("writes", Duration::from_secs(60), || {
            let (_, got) = count(&nodes[0], "TypeIs:Article");
            got.filter(|g| *g >= n)
        })
    };
    let before = seen(20);
    c.kill(0);
    seen(before + 40);
    c.restart(0);
    let now = seen(0);
    seen(now + 20);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failure(s): {failures:?}",
        failures.len()
    );
    assert!(written >= 80, "{written} writes");
    agrees(&c.url(0), "the restarted replica agrees with the database");
    agrees(&c.url(1), "the other replica agrees with the database");
    // GetIndexProperties shows both, caught up.
    let (s, p) = call(
        "GET",
        &format!("{}/odata.svc/('Root')/GetIndexProperties", nodes[1]),
        None,
    );
    assert_eq!(s, 200, "{p}");
    let replicas = p["Replicas"].as_array().cloned().unwrap_or_default();
    assert_eq!(replicas.len(), 2, "{p}");
    for r in &replicas {
        assert_eq!(r["Healthy"], true, "{p}");
        assert_eq!(r["Lag"], 0, "{p}");
    }
    // /metrics: both used, and (at their next health check) no lag.
    let wanted: Vec<String> = (0..2)
        .flat_map(|i| {
            [
                format!("cairn_search_replica_up{{replica=\"{}\"}} 1", c.url(i)),
                format!("cairn_search_replica_lag{{replica=\"{}\"}} 0", c.url(i)),
            ]
        })
        .collect();
    wait_until(
        "/metrics with both replicas caught up",
        Duration::from_secs(10),
        || {
            let mut m = common::agent()
                .get(&format!("{}/metrics", nodes[0]))
                .call()
                .ok()?;
            let metrics = m.body_mut().read_to_string().ok()?;
            wanted.iter().all(|w| metrics.contains(w)).then_some(())
        },
    );
}

/// Both replicas down: queries answer 503 with sensenet's error body, writes still
/// succeed; both back: they catch up, and every write is found.
#[test]
fn with_every_replica_down_queries_are_503_and_writes_go_on() {
    let mut c = Cluster::start();
    let a = c.nodes[0].url.clone();
    assert_eq!(create(&a, "before"), 201);
    c.kill(0);
    c.kill(1);
    let t = Instant::now();
    for i in 0..5 {
        assert_eq!(create(&a, &format!("down{i}")), 201);
    }
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "writes while no replica is up took {:?}",
        t.elapsed()
    );
    let (s, v) = call(
        "GET",
        &format!("{a}/odata.svc/Root?query=TypeIs:Article"),
        None,
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "ServiceUnavailable", "{v}");
    assert!(
        v["error"]["message"]["value"]
            .as_str()
            .is_some_and(|m| m.contains("no search replica could answer")),
        "{v}"
    );
    c.restart(0);
    c.restart(1);
    wait_until("all six found", Duration::from_secs(60), || {
        (count(&c.nodes[1].url, "TypeIs:Article") == (200, Some(6))).then_some(())
    });
    agrees(&c.url(0), "replica 0 caught up");
    agrees(&c.url(1), "replica 1 caught up");
}

/// Read-your-writes with replicas at different lags: one paused (SIGSTOP) while writes
/// go on, then let go (it is behind): every query after an answered write sees it.
#[test]
fn every_query_after_a_write_sees_it_with_a_replica_behind() {
    let c = Cluster::start();
    let r1 = c.replicas[1].as_ref().unwrap();
    let nodes = [c.nodes[0].url.clone(), c.nodes[1].url.clone()];
    signal(&r1.child, "-STOP");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let writer = load(nodes.clone(), stop.clone(), failures.clone());
    wait_until(
        "writes with a replica paused",
        Duration::from_secs(60),
        || {
            let (_, got) = count(&nodes[0], "TypeIs:Article");
            got.filter(|g| *g >= 30)
        },
    );
    // Let it go: it is 30 writes behind and catches up while queries reach it.
    signal(&r1.child, "-CONT");
    let behind = count(&nodes[0], "TypeIs:Article").1.unwrap_or(0);
    wait_until(
        "writes with a replica behind",
        Duration::from_secs(60),
        || {
            let (_, got) = count(&nodes[1], "TypeIs:Article");
            got.filter(|g| *g >= behind + 30)
        },
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failure(s): {failures:?}",
        failures.len()
    );
    agrees(&c.url(1), "the paused replica caught up");
}

/// A new replica seeded from a backup made before many writes: it restores the index,
/// catches up from the activity log (saying so on /health until then) and agrees with
/// the database; a backup of another repository is refused.
#[test]
fn a_replica_seeded_from_a_backup_catches_up_and_one_of_another_repository_is_refused() {
    let db = database();
    let dir = tempfile::tempdir().unwrap();
    let r0 = replica(&dir.path().join("r0"), &db, cairn_testkit::free_port(), &[]);
    let a = node(&dir.path().join("a"), &db, &[&r0.url]);
    folder(&a.url);
    for i in 0..20 {
        assert_eq!(create(&a.url, &format!("early{i}")), 201);
    }
    let (s, v) = call(
        "POST",
        &format!("{}/odata.svc/('Root')/BackupIndex", a.url),
        Some(json!({"target": "seed"})),
    );
    assert_eq!(s, 200, "{v}");
    wait_until("the backup", Duration::from_secs(60), || {
        let (_, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexBackup", a.url),
            None,
        );
        (v["State"] == "Finished").then_some(())
    });
    // Writes after the backup, many at once: what the new replica catches up.
    let lines: String = (0..3000)
        .map(|i| {
            format!("{{\"Path\":\"/Root/R/late{i}\",\"Type\":\"Article\",\"Body\":\"late {i}\"}}\n")
        })
        .collect();
    let file = dir.path().join("late.jsonl");
    std::fs::write(&file, lines).unwrap();
    let o = common::cairn()
        .args(["import", "--database", &db, "--data"])
        .arg(dir.path().join("importer"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));

    let seed = dir.path().join("r0/backups/seed");
    let log = dir.path().join("r1.log");
    let port = cairn_testkit::free_port();
    let mut cmd = replica_command(&dir.path().join("r1"), &db, port);
    cmd.arg("--seed-from")
        .arg(&seed)
        // Its first commit of the catch-up takes 3 s more: long enough to see it catching up.
        .env("FAILPOINTS", "indexer::commit=1*sleep(3000)")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let (child, url) = cairn_testkit::spawn_announcing(&mut cmd, Duration::from_secs(120));
    let r1 = Running { child, url };
    // Serving while it catches up: /health says so with its lag, and it takes no query.
    let (s, h) = service_get(&r1.url, "/health");
    assert_eq!((s, h["Status"].as_str()), (503, Some("catching up")), "{h}");
    assert!(h["Lag"].as_i64().is_some_and(|l| l > 0), "{h}");
    let (s, v) = service_post(
        &r1.url,
        "/search/list",
        json!({"container": "/Root", "query": "TypeIs:Article", "max_top": 10}),
    );
    assert_eq!(s, 503, "{v}");
    agrees(&r1.url, "the seeded replica agrees with the database");
    let (s, h) = service_get(&r1.url, "/health");
    assert_eq!((s, h["Status"].as_str()), (200, Some("ok")), "{h}");
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("seeding this replica's index from"), "{said}");
    assert!(said.contains("taking queries"), "{said}");
    // The replica's admin console: logged into with the shared secret.
    let mut r = common::agent()
        .post(&format!("{}/admin/login", r1.url))
        .header("Content-Type", "application/json")
        .send(json!({"key": SECRET}).to_string().as_bytes())
        .unwrap();
    let answer = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 200, "{answer}");
    assert!(r.headers().get("set-cookie").is_some());
    // Through a node that has both: 3020 articles.
    let b = node(&dir.path().join("b"), &db, &[&r0.url, &r1.url]);
    assert_eq!(count(&b.url, "TypeIs:Article"), (200, Some(3020)));

    // Another repository's backup: refused, nothing served.
    let other = database();
    let one = dir.path().join("other.jsonl");
    std::fs::write(&one, "{\"Path\":\"/Root/O\",\"Type\":\"Folder\"}\n").unwrap();
    let o = common::cairn()
        .args(["import", "--database", &other, "--data"])
        .arg(dir.path().join("other-importer"))
        .arg(&one)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    let mut refused = replica_command(&dir.path().join("r2"), &other, cairn_testkit::free_port());
    refused.arg("--seed-from").arg(&seed);
    let o = finished_within(refused, Duration::from_secs(60));
    assert!(!o.status.success(), "{}", common::text(&o));
    assert!(
        common::text(&o).contains("belongs to repository"),
        "{}",
        common::text(&o)
    );
}

/// Runs `cmd` to its end, which must come within `limit`.
fn finished_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < limit {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        })
    };
    let o = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    o
}

/// Ten concurrent BackupIndex calls over both nodes start exactly one backup across the
/// cluster (each answers it); while it runs, a backup asked of the other replica directly
/// is refused (the database's advisory lock), and QueryIndexBackup on either node shows it.
#[test]
fn ten_backup_calls_over_both_nodes_start_one_backup_cluster_wide() {
    // Each backup holds its manifest back for 3 s: long enough to overlap.
    let c = Cluster::start_with(&[("FAILPOINTS", "backup::manifest=sleep(3000)")], None);
    let nodes = [c.nodes[0].url.clone(), c.nodes[1].url.clone()];
    for i in 0..10 {
        assert_eq!(create(&nodes[i % 2], &format!("x{i}")), 201);
    }
    let answers = common::ten_backup_calls(
        KEY,
        &[&nodes[0], &nodes[1]],
        "BackupIndex",
        json!({"target":"idx"}),
    );
    for (s, v) in &answers {
        assert_eq!(*s, 200, "{v}");
        assert!(
            v["Current"]["TargetPath"]
                .as_str()
                .is_some_and(|t| t.ends_with("idx")),
            "every answer names the one running backup: {v}"
        );
    }
    // The other replica, asked directly while it runs: refused, not a second backup.
    let (s, body) = service_post(
        &c.url(1),
        "/backup/start",
        json!({"kind":"Index","target":"second"}),
    );
    assert_eq!(s, 409, "{body}");
    assert!(body.contains("another search replica"), "{body}");
    for n in &nodes {
        let (_, v) = call(
            "GET",
            &format!("{n}/odata.svc/('Root')/QueryIndexBackup"),
            None,
        );
        assert!(
            matches!(v["State"].as_str(), Some("Started" | "Executing")),
            "{v}"
        );
    }
    wait_until("the backup finishes", Duration::from_secs(60), || {
        let (_, v) = call(
            "GET",
            &format!("{}/odata.svc/('Root')/QueryIndexBackup", nodes[1]),
            None,
        );
        (v["State"] == "Finished").then_some(v)
    });
    let made: Vec<usize> = (0..2)
        .filter(|i| {
            c.root
                .join(format!("r{i}/backups/idx/manifest.json"))
                .exists()
        })
        .collect();
    assert_eq!(made, [0], "one backup, by the first replica");
    assert!(!c.root.join("r1/backups/second").exists());
}

/// A backup policy in both replicas' cairn.toml runs once per slot across the cluster,
/// not once per replica.
#[test]
fn a_policy_on_both_replicas_runs_once_per_slot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let config = format!(
        "[[backup.policy]]\nname = \"often\"\nschedule = \"every 2s\"\nrepository = \"{}\"\nkind = \"index\"\n",
        repo.display()
    );
    let _c = Cluster::start_with(&[], Some(&config));
    let names = || -> Vec<String> {
        let o = common::cairn()
            .args(["backup", "list", "--json"])
            .arg(&repo)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&o.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|b| b["Name"].as_str().map(str::to_string))
            .collect()
    };
    let names = wait_until("four policy backups", Duration::from_secs(60), || {
        let n = names();
        (n.len() >= 4).then_some(n)
    });
    // `often-YYYYMMDD-HHMMSS-mmm`: when each run began, in ms of the day.
    let mut at: Vec<i64> = names
        .iter()
        .map(|n| {
            let t: String = n.chars().filter(char::is_ascii_digit).collect();
            let t = &t[t.len() - 9..];
            let ms = |a: usize, b: usize| t[a..b].parse::<i64>().unwrap();
            ((ms(0, 2) * 60 + ms(2, 4)) * 60 + ms(4, 6)) * 1000 + ms(6, 9)
        })
        .collect();
    at.sort();
    // Each replica has a slot every 2 s, the two less than 2 s apart: both running would
    // put two runs within a second of each other. Claimed, runs are at least 1.8 s apart.
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= 1500,
            "two runs {} ms apart: {names:?}",
            w[1] - w[0]
        );
    }
}
