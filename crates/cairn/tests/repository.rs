//! Backup repositories as a user meets them: policies of a running server backing up into
//! S3 (a real moto server started here) under write load, with retention; the S3 server
//! failing in the middle; `cairn backup delete` killed with SIGKILL; encrypted backups;
//! a malformed `cairn.toml`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cairn_testkit::{wait_until, MotoServer};
use common::{cairn, text, Running as Server};
use serde_json::{json, Value};

const KEY: &str = "repository-test-admin-key";

impl Server {
    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) {
        let exit = cairn_testkit::terminate(&mut self.child, Duration::from_secs(60));
        assert!(exit.success(), "{exit:?}");
    }

    fn call(&self, method: &str, action: &str, body: Option<Value>) -> (u16, Value) {
        call(
            method,
            &format!("{}/odata.svc/('Root')/{action}", self.url),
            body,
        )
    }

    fn policies(&self) -> Value {
        let (s, v) = self.call("GET", "GetBackupPolicies", None);
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Waits for the running backup to end; its last state.
    fn wait_backup(&self) -> Value {
        wait_until("the backup ends", Duration::from_secs(120), || {
            let (_, q) = self.call("GET", "QueryIndexBackup", None);
            let running = matches!(
                q["State"].as_str(),
                Some("Started" | "Executing" | "CancelRequested")
            );
            (!running).then_some(q)
        })
    }
}

/// `cairn serve` on `data`, reaching S3 at `moto`, with `env` more.
fn serve(data: &Path, moto: &MotoServer, env: &[(&str, &str)]) -> Server {
    common::spawn(
        common::serve_command(data, KEY)
            .envs(moto.env())
            .envs(env.iter().copied()),
    )
}

fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    common::call(KEY, method, url, body)
}

/// The server's `/metrics`.
fn metrics(server: &Server) -> String {
    common::agent()
        .get(&format!("{}/metrics", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// `cairn ARGS` with S3 at `moto`.
fn run(moto: &MotoServer, args: &[&str]) -> Output {
    cairn().args(args).envs(moto.env()).output().unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

/// The names `backup list REPO --json` shows.
fn listed(moto: &MotoServer, repo: &str) -> Vec<String> {
    let o = run(moto, &["backup", "list", repo, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["Name"].as_str().unwrap().to_string())
        .collect()
}

/// The names of the items in the SQLite database `db`.
fn names_in(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c.prepare("SELECT name FROM nodes").unwrap();
    s.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Restores `backup` into a new data folder under `dir`, checks it with `index check`
/// (0 differences), and gives the folder.
fn restore_checked(moto: &MotoServer, backup: &str, dir: &Path, more: &[&str]) -> PathBuf {
    let to = dir.join(format!("restored-{}", backup.rsplit('/').next().unwrap()));
    let mut args = vec!["restore", "--from", backup, "--data", to.to_str().unwrap()];
    args.extend_from_slice(more);
    ok(run(moto, &args));
    let check = ok(run(
        moto,
        &["index", "check", "--data", to.to_str().unwrap()],
    ));
    assert!(check.contains("0 differences"), "{check}");
    to
}

fn rfc3339(t: &str) -> SystemTime {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .into()
}

/// A policy `every 2s` with `keep_last = 2` backs a server up into S3 while it is written
/// to: after 5 runs exactly 2 backups are listed, each verifies and restores with 0
/// differences, and the newest holds every item committed before it started.
#[test]
fn a_policy_backs_up_into_s3_under_load_and_keeps_two() {
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cairn.toml"),
        "[[backup.policy]]\nname = \"often\"\nschedule = \"every 2s\"\n\
         repository = \"s3://cairn/pol\"\nkind = \"repository\"\nkeep_last = 2\n",
    )
    .unwrap();
    let server = serve(&data, &moto, &[]);
    let written: Arc<Mutex<Vec<(String, SystemTime)>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, written, stop) = (server.url.clone(), written.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{i}");
                let (s, v) = call(
                    "POST",
                    &format!("{url}/odata.svc/Root"),
                    Some(json!({"__ContentType": "Folder", "Name": name})),
                );
                assert_eq!(s, 201, "{v}");
                written.lock().unwrap().push((name, SystemTime::now()));
                i += 1;
            }
        })
    };
    let p = wait_until("5 runs of the policy", Duration::from_secs(180), || {
        let p = server.policies();
        (p["Policies"][0]["Stats"]["Taken"].as_u64() >= Some(5)).then_some(p)
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let policy = &p["Policies"][0];
    assert_eq!(policy["Name"], "often", "{p}");
    assert_eq!(policy["Repository"], "s3://cairn/pol", "{p}");
    assert_eq!(policy["LastFailure"], Value::Null, "{p}");
    let (_, history) = server.call("GET", "QueryIndexBackup", None);
    let metrics = metrics(&server);
    assert!(
        metrics.contains("cairn_backups_total{policy=\"often\",outcome=\"finished\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_backup_last_success_timestamp_seconds{policy=\"often\"}"));
    server.stop();

    let names = listed(&moto, "s3://cairn/pol");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("often-")), "{names:?}");
    for name in &names {
        let backup = format!("s3://cairn/pol/{name}");
        ok(run(&moto, &["backup", "verify", &backup]));
    }
    // The newest: every item committed before it started is in it.
    let newest = &names[0];
    let started = history["History"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["TargetPath"]
                .as_str()
                .is_some_and(|t| t.ends_with(newest.as_str()))
        })
        .and_then(|h| h["StartedAt"].as_str())
        .map(rfc3339)
        .unwrap_or_else(|| panic!("{newest} is not in the history: {history}"));
    let restored = restore_checked(&moto, &format!("s3://cairn/pol/{newest}"), dir.path(), &[]);
    let have = names_in(&restored.join("cairn.db"));
    let before: Vec<_> = written
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!before.is_empty(), "nothing was written before the backup");
    for n in &before {
        assert!(
            have.contains(n),
            "{n} was committed before the backup but is not in it"
        );
    }
    restore_checked(
        &moto,
        &format!("s3://cairn/pol/{}", names[1]),
        dir.path(),
        &[],
    );
}

/// The keys under `prefix` in `bucket`, as the S3 server holds them.
fn keys(moto: &MotoServer, bucket: &str, prefix: &str) -> Vec<String> {
    moto.objects(bucket, prefix)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// An upload whose manifest cannot be written leaves packs but nothing listed, and the
/// next prune removes them; the S3 server killed in the middle of an upload makes the run
/// Faulted (with the reason) and, started again, the next run succeeds with nothing left
/// over. Failure points (test builds only) hold the upload at the right moment.
#[test]
fn s3_failing_mid_upload_leaves_nothing_visible() {
    let mut moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let items: String = (0..200)
        .map(|i| format!("{{\"Path\":\"/Root/f{i}\",\"Type\":\"Folder\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    ok(run(
        &moto,
        &[
            "import",
            "--data",
            data.to_str().unwrap(),
            dir.path().join("items.jsonl").to_str().unwrap(),
        ],
    ));
    // The second manifest written (the packed one, after the staging's) fails once; each
    // pack waits a moment, so that the S3 server can be killed during the upload.
    let server = serve(
        &data,
        &moto,
        &[(
            "FAILPOINTS",
            "backup::manifest=1*off->1*return(enospc);backup::pack=sleep(400)",
        )],
    );
    let start = |to: &str| {
        let (s, v) = server.call("POST", "BackupRepository", Some(json!({"to": to})));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["State"], "Started", "{v}");
    };
    start("s3://cairn/f/x1");
    let ended = server.wait_backup();
    assert_eq!(ended["Current"]["State"], "Faulted", "{ended}");
    assert!(listed(&moto, "s3://cairn/f").is_empty());
    let left = keys(&moto, "cairn", "f/");
    assert!(left.iter().any(|k| k.contains(".packs/")), "{left:?}");
    let o = ok(run(&moto, &["backup", "prune", "s3://cairn/f"]));
    assert!(o.contains("0 kept"), "{o}");
    assert_eq!(keys(&moto, "cairn", "f/"), Vec::<String>::new());

    start("s3://cairn/f/x2");
    assert_eq!(server.wait_backup()["Current"]["State"], "Finished");
    // Killed while its packs go up.
    start("s3://cairn/f/x3");
    wait_until("the upload", Duration::from_secs(60), || {
        let (_, q) = server.call("GET", "QueryIndexBackup", None);
        (q["Current"]["Step"] == "Upload").then_some(())
    });
    moto.kill();
    let ended = server.wait_backup();
    assert_eq!(ended["Current"]["State"], "Faulted", "{ended}");
    let why = ended["Current"]["Message"].as_str().unwrap_or_default();
    assert!(why.contains("not reachable"), "{why}");
    moto.restart().unwrap();
    moto.create_bucket("cairn").unwrap();
    start("s3://cairn/f/x4");
    assert_eq!(server.wait_backup()["Current"]["State"], "Finished");
    server.stop();
    assert_eq!(listed(&moto, "s3://cairn/f"), vec!["x4".to_string()]);
    ok(run(&moto, &["backup", "prune", "s3://cairn/f"]));
    // Nothing but x4's own objects and the packs it names.
    for k in keys(&moto, "cairn", "f/") {
        assert!(
            k.starts_with("f/x4/") || k.starts_with("f/.packs/"),
            "left over: {k}"
        );
    }
    ok(run(&moto, &["backup", "verify", "s3://cairn/f/x4"]));
    restore_checked(&moto, "s3://cairn/f/x4", dir.path(), &[]);
}

/// kill -9 of `cairn backup delete` after the backup's manifest is gone and before what
/// only it needed is: the backup is not listed, the next prune removes the rest (its
/// lease, left by a process that is gone, is taken over at once), and the backup that
/// shares its packs still verifies.
#[test]
fn a_delete_killed_midway_is_finished_by_the_next_prune() {
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("items.jsonl");
    let batch = |from: usize, to: usize| {
        let items: String = (from..to)
            .map(|i| format!("{{\"Path\":\"/Root/f{i}\",\"Type\":\"Folder\"}}\n"))
            .collect();
        std::fs::write(&file, items).unwrap();
        ok(run(
            &moto,
            &[
                "import",
                "--data",
                data.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        ));
    };
    batch(0, 300);
    let d = data.to_str().unwrap();
    ok(run(
        &moto,
        &["backup", "create", "--data", d, "--to", "s3://cairn/k/b1"],
    ));
    batch(300, 3000);
    ok(run(
        &moto,
        &["backup", "create", "--data", d, "--to", "s3://cairn/k/b2"],
    ));
    let before = keys(&moto, "cairn", "k/");
    let mut delete = cairn()
        .args(["backup", "delete", "s3://cairn/k/b2"])
        .envs(moto.env())
        .env("FAILPOINTS", "repo::collect=sleep(60000)")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("b2's manifest is deleted", Duration::from_secs(60), || {
        (!keys(&moto, "cairn", "k/").contains(&"k/b2/manifest.json".to_string())).then_some(())
    });
    delete.kill().unwrap(); // SIGKILL
    delete.wait().unwrap();
    assert_eq!(listed(&moto, "s3://cairn/k"), vec!["b1".to_string()]);
    let o = ok(run(&moto, &["backup", "prune", "s3://cairn/k"]));
    assert!(o.contains("1 kept"), "{o}");
    let after = keys(&moto, "cairn", "k/");
    assert!(after.len() < before.len(), "{before:?}\n{after:?}");
    assert!(
        !after
            .iter()
            .any(|k| k.starts_with("k/b2/") || k == "k/.lease"),
        "{after:?}"
    );
    ok(run(&moto, &["backup", "verify", "s3://cairn/k/b1"]));
    restore_checked(&moto, "s3://cairn/k/b1", dir.path(), &[]);
}

/// A server's backup into S3 encrypted to a recipient: no stored object holds a marker
/// written into the repository; verify without the key says what it could not check;
/// restore without the identity, or with another one, is refused and touches nothing;
/// with it, 0 differences.
#[test]
fn an_encrypted_backup_in_s3_needs_its_identity() {
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let recipient = ok(run(&moto, &["backup", "keygen", key.to_str().unwrap()]));
    let recipient = recipient.lines().next().unwrap().trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let other = dir.path().join("other.txt");
    ok(run(&moto, &["backup", "keygen", other.to_str().unwrap()]));
    let data = dir.path().join("data");
    let server = serve(&data, &moto, &[]);
    let marker = "MARKER-4f1c2b9e-plaintext";
    for i in 0..50 {
        let (s, v) = call(
            "POST",
            &format!("{}/odata.svc/Root", server.url),
            Some(json!({"__ContentType": "Article", "Name": format!("a{i}"),
                        "Body": format!("{marker} {i}")})),
        );
        assert_eq!(s, 201, "{v}");
    }
    let o = ok(cairn()
        .args([
            "backup",
            "create",
            "--server",
            &server.url,
            "--admin-key",
            KEY,
        ])
        .args(["--to", "s3://cairn/enc/e1", "--encrypt-to", &recipient])
        .envs(moto.env())
        .output()
        .unwrap());
    assert!(o.contains("s3://cairn/enc/e1"), "{o}");
    server.stop();
    // Read the objects with the S3 API, as anyone holding the bucket could.
    let objects = moto.objects("cairn", "enc/").unwrap();
    assert!(!objects.is_empty());
    let o = run(&moto, &["backup", "list", "s3://cairn/enc"]);
    assert!(ok(o).contains(&recipient));
    let repo = cairn_backup::repo::Repository::open(
        &cairn_backup::repo::RepoUrl::parse("s3://cairn/enc").unwrap(),
        &cairn_backup::repo::s3::S3Settings::static_keys(&moto.endpoint(), "testing", "testing"),
    )
    .unwrap();
    for (k, _) in &objects {
        let bytes = repo.objects().get(k.strip_prefix("enc/").unwrap()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{k} holds the marker in plaintext"
        );
    }
    let partial = ok(run(&moto, &["backup", "verify", "s3://cairn/enc/e1"]));
    assert!(partial.contains("without --identity"), "{partial}");
    let target = dir.path().join("restored");
    for more in [vec![], vec!["--identity", other.to_str().unwrap()]] {
        let mut args = vec![
            "restore",
            "--from",
            "s3://cairn/enc/e1",
            "--data",
            target.to_str().unwrap(),
        ];
        args.extend(more);
        let o = run(&moto, &args);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("nothing was changed"), "{}", text(&o));
        assert!(
            !target.exists(),
            "a refused restore left {}",
            target.display()
        );
    }
    ok(run(
        &moto,
        &[
            "backup",
            "verify",
            "s3://cairn/enc/e1",
            "--identity",
            key.to_str().unwrap(),
        ],
    ));
    let restored = restore_checked(
        &moto,
        "s3://cairn/enc/e1",
        dir.path(),
        &["--identity", key.to_str().unwrap()],
    );
    assert!(names_in(&restored.join("cairn.db")).contains(&"a49".to_string()));

    // Its index into a serving repository (RestoreIndex), which has more since: refused
    // without the identity, taken and caught up with it.
    let server = serve(&data, &moto, &[]);
    for i in 50..60 {
        let (s, v) = call(
            "POST",
            &format!("{}/odata.svc/Root", server.url),
            Some(json!({"__ContentType": "Article", "Name": format!("a{i}")})),
        );
        assert_eq!(s, 201, "{v}");
    }
    let index_restore = |more: &[&str]| {
        cairn()
            .args(["index", "restore", "--from", "s3://cairn/enc/e1"])
            .args(["--server", &server.url, "--admin-key", KEY])
            .args(more)
            .envs(moto.env())
            .output()
            .unwrap()
    };
    let o = index_restore(&[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("identity"), "{}", text(&o));
    let o = ok(index_restore(&["--identity", key.to_str().unwrap()]));
    assert!(o.contains("caught up"), "{o}");
    assert!(!data.join(".index-restore-download").exists());
    let (s, v) = server.call("GET", "CheckIndexIntegrity", None);
    assert_eq!((s, &v["Differences"]), (200, &json!([])), "{v}");
    let (s, v) = call(
        "GET",
        &format!(
            "{}/odata.svc/Root?query=Type:Article&$inlinecount=allpages&$top=1",
            server.url
        ),
        None,
    );
    assert_eq!((s, v["d"]["__count"].as_u64()), (200, Some(60)), "{v}");
}

/// Credentials S3 does not accept (moto checking every key, and knowing none): a backup and
/// a list each say access is denied and name the variables to check;
/// the refused backup leaves nothing behind in the data folder.
#[test]
fn credentials_s3_refuses_say_so() {
    let moto = MotoServer::start_refusing_every_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::repository_with(&data, 3);
    let before: Vec<_> = std::fs::read_dir(data.join("backups"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for args in [
        vec![
            "backup",
            "create",
            "--data",
            data.to_str().unwrap(),
            "--to",
            "s3://b/p/n1",
        ],
        vec!["backup", "list", "s3://b/p"],
    ] {
        let o = run(&moto, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
            "{args:?}: {}",
            text(&o)
        );
    }
    let after: Vec<_> = std::fs::read_dir(data.join("backups"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(before, after, "a refused backup left something");
}

/// A malformed `cairn.toml` is refused at start, naming the line and why; bad S3
/// addresses and an unreachable or missing bucket are one clear error each (exit 2).
#[test]
fn bad_settings_and_bad_repositories_say_what_is_wrong() {
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let good = "[[backup.policy]]\nname = \"n\"\nschedule = \"0 2 * * *\"\n\
                repository = \"s3://cairn/p\"\nkeep_last = 3\n";
    for (bad, line, why) in [
        (good.replace("0 2 * * *", "0 2 * *"), "line 3", "5-field"),
        (
            good.replace("keep_last = 3", "keep_lst = 3"),
            "line 5",
            "keep_lst",
        ),
        (
            good.replace("s3://cairn/p", "ftp://x/p"),
            "line 4",
            "repository",
        ),
        (
            good.replace("keep_last = 3", "keep_last = -3"),
            "line 5",
            "at least 1",
        ),
    ] {
        std::fs::write(data.join("cairn.toml"), &bad).unwrap();
        let o = cairn()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-key",
                KEY,
                "--data",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains(line) && text(&o).contains(why),
            "{bad}\n{}",
            text(&o)
        );
        assert!(text(&o).contains("cairn.toml"), "{}", text(&o));
        assert!(
            !data.join("cairn.db").exists(),
            "a refused start made a database"
        );
    }
    for (args, says) in [
        (vec!["backup", "list", "s3://"], "bucket"),
        (
            vec!["backup", "list", "s3://no-such-bucket/x"],
            "does not exist",
        ),
        (
            vec!["backup", "verify", "s3://cairn/x/none"],
            "no finished backup",
        ),
        (
            vec!["backup", "delete", "s3://cairn"],
            "s3://BUCKET/[PREFIX/]NAME",
        ),
        (
            vec!["backup", "prune", "s3://cairn/x", "--keep-within", "soon"],
            "keep-within",
        ),
    ] {
        let o = run(&moto, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert_eq!(
            text(&o)
                .trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1
        );
    }
    let unreachable = cairn()
        .args(["backup", "list", "s3://cairn/x"])
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2), "{}", text(&unreachable));
    assert!(
        text(&unreachable).contains("not reachable"),
        "{}",
        text(&unreachable)
    );
}

/// A run missed while the server was down runs once at the start, not once per missed
/// slot; a run that finds another backup running is skipped and counted; an unknown
/// policy is 404.
#[test]
fn a_missed_run_runs_once_and_a_busy_one_is_skipped() {
    let moto = MotoServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(data.join("backups")).unwrap();
    std::fs::write(
        data.join("cairn.toml"),
        format!(
            "[[backup.policy]]\nname = \"hourly\"\nschedule = \"every 1h\"\n\
             repository = \"{}\"\nkind = \"index\"\n\n\
             [[backup.policy]]\nname = \"broken\"\nschedule = \"0 0 1 1 *\"\n\
             repository = \"s3://no-such-bucket/x\"\n",
            repo.display()
        ),
    )
    .unwrap();
    // Last run five hours ago: five slots were missed.
    let five_hours_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(5);
    std::fs::write(
        data.join("backups/policies.json"),
        json!({"hourly": {"LastRunAt": five_hours_ago
            .format(&time::format_description::well_known::Rfc3339).unwrap()}})
        .to_string(),
    )
    .unwrap();
    let server = serve(
        &data,
        &moto,
        &[("FAILPOINTS", "backup::index_file=sleep(300)")],
    );
    let p = wait_until("the missed run", Duration::from_secs(60), || {
        let p = server.policies();
        (p["Policies"][0]["Stats"]["Taken"] == 1).then_some(p)
    });
    let next = rfc3339(p["Policies"][0]["NextRunAt"].as_str().unwrap());
    assert!(
        next > SystemTime::now() + Duration::from_secs(50 * 60),
        "the next run is not an hour away: {p}"
    );
    assert_eq!(listed(&moto, repo.to_str().unwrap()).len(), 1);
    // Busy: a backup of its own is running.
    let (s, v) = server.call("POST", "BackupIndex", Some(json!({"target": "manual"})));
    assert_eq!(s, 200, "{v}");
    let (s, v) = server.call(
        "POST",
        "ExecuteBackupPolicy",
        Some(json!({"name": "hourly"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["State"], "Executing", "{v}");
    let p = server.policies();
    assert_eq!(p["Policies"][0]["Stats"]["Skipped"], 1, "{p}");
    assert_eq!(server.wait_backup()["Current"]["State"], "Finished");
    let (s, v) = server.call("POST", "ExecuteBackupPolicy", Some(json!({"name": "nope"})));
    assert_eq!(s, 404, "{v}");
    // Runs now when asked, and counts it.
    let (s, v) = server.call(
        "POST",
        "ExecuteBackupPolicy",
        Some(json!({"name": "hourly"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["State"], "Started", "{v}");
    wait_until("the second run", Duration::from_secs(60), || {
        (server.policies()["Policies"][0]["Stats"]["Taken"] == 2).then_some(())
    });
    // A run that fails (its bucket does not exist) is Faulted, with the reason, counted.
    // (The second run is counted while its end is still being recorded: a run asked for
    // in that moment is skipped, as a busy one is; so ask until one starts.)
    wait_until("the broken run starts", Duration::from_secs(60), || {
        let (s, v) = server.call(
            "POST",
            "ExecuteBackupPolicy",
            Some(json!({"name": "broken"})),
        );
        assert_eq!(s, 200, "{v}");
        (v["State"] != "Executing").then_some(())
    });
    let p = wait_until("the broken run fails", Duration::from_secs(60), || {
        let p = server.policies();
        (p["Policies"][1]["Stats"]["Failed"] == 1).then_some(p)
    });
    let failure = p["Policies"][1]["LastFailure"]["Message"]
        .as_str()
        .unwrap_or_default();
    assert!(failure.contains("does not exist"), "{p}");
    assert_eq!(p["Policies"][1]["LastSuccess"], Value::Null, "{p}");
    let metrics = metrics(&server);
    assert!(
        metrics.contains("cairn_backups_total{policy=\"broken\",outcome=\"faulted\"} 1"),
        "{metrics}"
    );
    server.stop();
    assert_eq!(listed(&moto, repo.to_str().unwrap()).len(), 2);
}

/// Two processes backing up into one S3 repository at once: each succeeds, or is refused
/// naming the other; whatever is listed verifies.
#[test]
fn two_writers_into_one_repository() {
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("cairn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let items: String = (0..500)
        .map(|i| format!("{{\"Path\":\"/Root/f{i}\",\"Type\":\"Folder\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();
    let datas: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("d{i}"))).collect();
    for d in &datas {
        ok(run(
            &moto,
            &[
                "import",
                "--data",
                d.to_str().unwrap(),
                dir.path().join("items.jsonl").to_str().unwrap(),
            ],
        ));
    }
    for round in 0..3 {
        let children: Vec<_> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                cairn()
                    .args(["backup", "create", "--data"])
                    .arg(d)
                    .args(["--to", &format!("s3://cairn/two/r{round}-{i}")])
                    .envs(moto.env())
                    .env("FAILPOINTS", "backup::pack=sleep(200)")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            if !o.status.success() {
                assert!(text(&o).contains("is in use by backup"), "{}", text(&o));
            }
        }
    }
    let names = listed(&moto, "s3://cairn/two");
    assert!(!names.is_empty());
    for n in &names {
        ok(run(
            &moto,
            &["backup", "verify", &format!("s3://cairn/two/{n}")],
        ));
    }
}
