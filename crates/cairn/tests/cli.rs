//! The `cairn` binary as a user runs it: import, index status/check/rebuild, refusals
//! beside a live process, and a SIGKILL in the middle of an import.

mod common;

use common::{cairn, text};

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use cairn_testkit::wait_until;

fn run(args: &[&str]) -> Output {
    cairn().args(args).output().unwrap()
}

/// A corpus of `n` articles in folders of 100, parents first.
fn corpus(path: &Path, n: usize) -> Vec<String> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut paths = Vec::new();
    let mut line = |p: String, t: &str, extra: &str| {
        writeln!(f, r#"{{"Path":"{p}","Type":"{t}"{extra}}}"#).unwrap();
        paths.push(p);
    };
    line("/Root/Import".into(), "Folder", "");
    for i in 0..n {
        if i % 100 == 0 {
            line(format!("/Root/Import/F{}", i / 100), "Folder", "");
        }
        line(
            format!("/Root/Import/F{}/item{i}", i / 100),
            "Article",
            &format!(r#","Body":"word{} common text","ReadCount":{i}"#, i % 17),
        );
    }
    paths
}

fn try_db_paths(db: &Path) -> rusqlite::Result<Vec<String>> {
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt = conn.prepare(
        "SELECT path FROM nodes WHERE path_key >= '/root/import' AND path_key < '/root/import0' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn db_paths(db: &Path) -> Vec<String> {
    try_db_paths(db).unwrap()
}

#[test]
fn import_then_status_check_and_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("c.jsonl");
    let paths = corpus(&file, 500);
    let d = data.to_str().unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("imported {} items", paths.len())),
        "{}",
        text(&o)
    );
    assert_eq!(db_paths(&data.join("cairn.db")), paths);

    let o = run(&["index", "status", "--data", d, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Lag"], 0);
    assert_eq!(v["LastActivityId"], v["DatabaseLastActivityId"]);

    let o = run(&["index", "check", "--data", d, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Differences"].as_array().unwrap().len(), 0);
    assert_eq!(v["IndexDocuments"], v["DatabaseItems"]);

    // A second import into the same folders: no item has two documents or none.
    let more = dir.path().join("more.jsonl");
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "{{\"Path\":\"/Root/Import/F{}/more{i}\",\"Type\":\"Article\"}}\n",
                i % 5
            )
        })
        .collect();
    std::fs::write(&more, lines).unwrap();
    let o = run(&["import", "--data", d, more.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["index", "check", "--data", d, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Differences"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["IndexDocuments"], v["DatabaseItems"]);
    assert_eq!(
        v["DatabaseItems"].as_u64().unwrap(),
        paths.len() as u64 + 300 + 3,
        "{v}"
    );

    let o = run(&["index", "rebuild", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rebuilt:"), "{}", text(&o));
    // What an interrupted restore left is pointed out.
    std::fs::create_dir(data.join(".restore-staging")).unwrap();
    let o = run(&["index", "check", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 differences"));
    assert!(
        text(&o).contains(".restore-staging is left from an interrupted restore"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_bad_line_is_named_and_the_lines_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A file that is not there is named, and no repository is made for it.
    let o = cairn()
        .args(["import", "--data"])
        .arg(&data)
        .arg(dir.path().join("missing.jsonl"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.jsonl"));
    assert!(!data.exists(), "a failed import left a data folder");
    let file = dir.path().join("c.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"Path\":\"/Root/A\",\"Type\":\"Folder\"}\n",
            "{\"Path\":\"/Root/A/x\",\"Type\":\"Article\",\"Rating\":1.5}\n",
            "{\"Path\":\"/Root/A/y\",\"Type\":\"Article\",\"Rating\":\"high\"}\n",
            "{\"Path\":\"/Root/A/z\",\"Type\":\"Article\"}\n",
        ),
    )
    .unwrap();
    let d = data.to_str().unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("line 3") && t.contains("Rating"), "{t}");
    let conn = rusqlite::Connection::open(data.join("cairn.db")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM nodes WHERE path LIKE '/Root/A%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2, "the two lines before the bad one are kept");
    // Malformed JSON is named too.
    std::fs::write(&file, "{\"Path\":\"/Root/B\",\"Type\":\"Folder\"}\n{oops\n").unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("line 2: not JSON"), "{}", text(&o));
    // A file that starts with a byte-order mark imports.
    std::fs::write(
        &file,
        "\u{feff}{\"Path\":\"/Root/C\",\"Type\":\"Folder\"}\n",
    )
    .unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["index", "check", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sigkill_mid_import_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("c.jsonl");
    let paths = corpus(&file, 60_000);
    let d = data.to_str().unwrap();
    let db = data.join("cairn.db");
    /// Kills the import even when an assertion fails first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        cairn()
            .args([
                "import",
                "--batch",
                "500",
                "--data",
                d,
                file.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        "the import commits its first batches",
        Duration::from_secs(60),
        // Until its schema is committed the file exists without tables: not an error.
        || (db.exists() && try_db_paths(&db).is_ok_and(|p| p.len() > 3_000)).then_some(()),
    );
    // Beside a live import, offline commands refuse and say why.
    let o = run(&["index", "rebuild", "--data", d]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("in use by `cairn import`"),
        "{}",
        text(&o)
    );
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let committed = db_paths(&db);
    assert!(
        committed.len() < paths.len(),
        "the import finished before the kill"
    );
    // What was committed is exactly a prefix of the file, batch by batch.
    assert_eq!(committed[..], paths[..committed.len()]);

    // Restart: the index catches up with everything committed.
    let o = run(&["index", "check", "--data", d, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Differences"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(db_paths(&db), committed, "nothing committed was lost");
}

/// Commands that inspect or copy a repository refuse a folder that holds none, naming it,
/// instead of making a new empty repository to report on; a refused restore leaves no
/// folder behind.
#[test]
fn a_mistyped_data_folder_is_an_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-repository");
    let m = missing.to_str().unwrap();
    let out = dir.path().join("backup");
    for args in [
        vec!["index", "status", "--data", m],
        vec!["index", "check", "--data", m],
        vec!["index", "rebuild", "--data", m],
        vec![
            "backup",
            "create",
            "--data",
            m,
            "--to",
            out.to_str().unwrap(),
        ],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o));
        assert!(
            text(&o).contains("there is no repository at"),
            "{args:?}: {}",
            text(&o)
        );
        assert!(!missing.exists(), "{args:?} created {m}");
        assert!(!out.exists(), "{args:?} created the backup folder");
    }
    // A restore from a folder that is not a finished backup: refused, and the data folder
    // it would have made is not left behind.
    std::fs::create_dir(&out).unwrap();
    let o = run(&["restore", "--from", out.to_str().unwrap(), "--data", m]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not a finished backup"), "{}", text(&o));
    assert!(!missing.exists(), "the refused restore left {m}");
    // --target belongs to a server's backups; with --data it is an error, not ignored.
    let o = run(&[
        "backup",
        "create",
        "--data",
        m,
        "--to",
        out.to_str().unwrap(),
        "--target",
        "x",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--target names a folder"), "{}", text(&o));
    // A mistyped backup folder is named as such, not as an unfinished backup.
    let o = run(&["backup", "verify", m]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    let o = run(&["backup", "list", m]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("does not exist"), "{}", text(&o));
    let o = run(&["backup", "list", "--data", m]);
    assert!(
        text(&o).contains("no-such-repository/backups"),
        "{}",
        text(&o)
    );
    assert!(!missing.exists());
}

/// A damaged index stops the commands that open it, with the way out in the message; that
/// way out works.
#[test]
fn a_damaged_index_names_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("c.jsonl");
    std::fs::write(&file, "{\"Path\":\"/Root/A\",\"Type\":\"Folder\"}\n").unwrap();
    let d = data.to_str().unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(data.join("index/meta.json"), "{ not json").unwrap();
    let o = run(&["index", "check", "--data", d]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cairn index rebuild --data"),
        "{}",
        text(&o)
    );
    let o = run(&["index", "rebuild", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["index", "check", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 differences"), "{}", text(&o));
    // An index ahead of its database (a database put back older) is named by status.
    let o = run(&["index", "status", "--data", d]);
    assert!(!text(&o).contains("AHEAD"), "{}", text(&o));
    // status only reads: it migrates nothing (an older server may still use the database).
    let version = |set: Option<&str>| {
        let c = rusqlite::Connection::open(data.join("cairn.db")).unwrap();
        if let Some(v) = set {
            c.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                [v],
            )
            .unwrap();
        }
        c.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap()
    };
    let current = version(None);
    version(Some("1"));
    let o = run(&["index", "status", "--data", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(version(None), "1", "index status migrated the database");
    version(Some(&current));
    let keep = |from: &str, to: &str| {
        for suffix in ["", "-wal", "-shm"] {
            let (a, b) = (
                data.join(format!("{from}{suffix}")),
                data.join(format!("{to}{suffix}")),
            );
            let _ = std::fs::remove_file(&b);
            if a.exists() {
                std::fs::copy(&a, &b).unwrap();
            }
        }
    };
    keep("cairn.db", "old.db");
    std::fs::write(&file, "{\"Path\":\"/Root/B\",\"Type\":\"Folder\"}\n").unwrap();
    let o = run(&["import", "--data", d, file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    keep("old.db", "cairn.db");
    let o = run(&["index", "status", "--data", d]);
    assert!(
        text(&o).contains("AHEAD of the database by 1 activities"),
        "{}",
        text(&o)
    );
}
