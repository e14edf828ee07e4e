//! Tests of the kit itself; they start real PostgreSQL servers.

use std::ffi::OsString;
use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sys;
use crate::*;

/// Runs `psql -h 127.0.0.1 -p PORT -U postgres -d DB -c SQL` by hand, as the
/// current user, and returns its trimmed standard output.
fn raw_psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let psql = &sys::host().map_err(|e| e.to_string())?.programs.psql;
    let out = Command::new(psql)
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

#[test]
fn cluster_lifecycle_with_two_databases_and_restart() {
    let started = Instant::now();
    let mut cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("cluster started in {:?}", started.elapsed());
    let port = cluster.port();
    assert!(cluster.is_running());
    assert_eq!(
        cluster.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    let root = cluster.data_dir().parent().unwrap().to_path_buf();
    assert!(root.starts_with("/tmp"));

    let a = cluster.create_database("testkit_a").unwrap();
    let b = cluster.create_database("testkit_b").unwrap();
    assert_eq!(a, format!("postgres://postgres@127.0.0.1:{port}/testkit_a"));
    assert_eq!(b, format!("postgres://postgres@127.0.0.1:{port}/testkit_b"));
    for db in ["testkit_a", "testkit_b"] {
        assert_eq!(raw_psql(port, db, "select 1").unwrap(), "1");
        assert_eq!(raw_psql(port, db, "select current_database()").unwrap(), db);
    }
    // Creating it twice fails, with psql's message in the error.
    let err = cluster
        .create_database("testkit_a")
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");

    // Settings passed on the server command line are in effect.
    assert_eq!(cluster.psql("testkit_a", "show fsync").unwrap(), "off");
    assert_eq!(
        cluster.psql("testkit_a", "show max_connections").unwrap(),
        "200"
    );
    assert_eq!(
        cluster.psql("testkit_a", "show server_encoding").unwrap(),
        "UTF8"
    );
    cluster
        .psql(
            "testkit_a",
            "create table t (x int); insert into t values (42)",
        )
        .unwrap();

    cluster.stop().unwrap();
    assert!(!cluster.is_running());
    assert!(!accepts_connections(port));
    assert!(raw_psql(port, "testkit_a", "select 1").is_err());
    cluster.stop().unwrap(); // stopping twice is fine

    cluster.start_again().unwrap();
    assert!(cluster.is_running());
    assert_eq!(cluster.port(), port);
    assert_eq!(raw_psql(port, "testkit_b", "select 1").unwrap(), "1");
    assert_eq!(cluster.psql("testkit_a", "select x from t").unwrap(), "42");

    // A crash-like stop keeps the committed data too.
    cluster.stop_immediate().unwrap();
    cluster.start_again().unwrap();
    assert_eq!(cluster.psql("testkit_a", "select x from t").unwrap(), "42");
    assert!(cluster.server_log().contains("database system is ready"));

    drop(cluster);
    assert!(!root.exists(), "{} should be removed", root.display());
    assert!(!accepts_connections(port));
}

#[test]
fn shared_cluster_is_started_once_and_hosts_many_databases() {
    let first = shared_cluster().unwrap_or_else(|e| panic!("{e}"));
    let second = shared_cluster().unwrap();
    assert!(std::ptr::eq(first, second));

    let names: Vec<String> = (0..3).map(|_| unique_name("Shared Test")).collect();
    for name in &names {
        assert!(name.starts_with("shared_test_"), "{name}");
        let url = first.create_database(name).unwrap();
        assert_eq!(url, first.database_url(name));
        assert_eq!(raw_psql(first.port(), name, "select 1").unwrap(), "1");
    }
}

#[test]
fn shared_cluster_from_many_threads() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let cluster = shared_cluster().unwrap();
                let name = unique_name("threaded");
                cluster.create_database(&name).unwrap();
                assert_eq!(cluster.psql(&name, "select 2 + 2").unwrap(), "4");
                cluster.port()
            })
        })
        .collect();
    let ports: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ports.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn invalid_database_names_are_rejected() {
    let cluster = shared_cluster().unwrap();
    for name in ["", "a;drop", "x\"y", "sp ace", &"n".repeat(64)] {
        match cluster.create_database(name) {
            Err(TestkitError::InvalidName { .. }) => {}
            other => panic!("{name:?}: {other:?}"),
        }
    }
}

#[test]
fn unique_names_are_unique_and_valid() {
    let a = unique_name("db");
    let b = unique_name("db");
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("db_{}_", std::process::id())));
    let long = unique_name(&"Ü-x".repeat(40));
    assert!(long.len() <= 63, "{long}");
    assert!(long
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    assert!(unique_name("").starts_with("test_"));
}

#[test]
fn wait_until_returns_the_value() {
    let mut calls = 0;
    let value = wait_until("the third call", Duration::from_secs(5), || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!(value, 30);
}

#[test]
#[should_panic(expected = "timed out after 100ms waiting for the impossible")]
fn wait_until_panics_after_the_deadline() {
    wait_until("the impossible", Duration::from_millis(100), || None::<()>);
}

#[test]
fn poll_until_gives_up_in_time() {
    let start = Instant::now();
    assert_eq!(poll_until(Duration::from_millis(60), || None::<()>), None);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(60), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(poll_until(Duration::ZERO, || Some(1)), Some(1));
}

#[test]
fn free_port_is_bindable() {
    // Nothing reserves the port (see `try_free_port`): another test of this binary may
    // take it first. A port that could never be bound fails every attempt.
    let attempts: Vec<_> = (0..5)
        .map(|_| {
            let port = free_port();
            assert_ne!(port, 0);
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map(|_| port)
        })
        .collect();
    assert!(attempts.iter().any(Result::is_ok), "{attempts:?}");
}

#[test]
fn newest_version_directory_wins() {
    let root = tempfile::tempdir().unwrap();
    for (version, has_initdb) in [("9.6", true), ("15", true), ("16", false), ("12", true)] {
        let bin = root.path().join(version).join("bin");
        fs::create_dir_all(&bin).unwrap();
        if has_initdb {
            let exe = bin.join("initdb");
            fs::write(&exe, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    fs::create_dir_all(root.path().join("not-a-version/bin")).unwrap();
    assert_eq!(
        sys::find_in_newest_version(root.path(), "initdb").unwrap(),
        root.path().join("15/bin/initdb")
    );
    assert_eq!(sys::find_in_newest_version(root.path(), "pg_ctl"), None);
    assert_eq!(
        sys::find_in_newest_version(Path::new("/nonexistent"), "x"),
        None
    );
}

#[test]
fn shell_quoting() {
    let q = |s: &str| sys::shell_quote(s.as_ref());
    assert_eq!(q("/tmp/a-b_c.d"), "/tmp/a-b_c.d");
    assert_eq!(q(""), "''");
    assert_eq!(q("a b"), "'a b'");
    assert_eq!(q("it's"), r"'it'\''s'");
    let argv: Vec<OsString> = vec!["echo".into(), "x y".into()];
    assert_eq!(sys::shell_join(&argv), "echo 'x y'");
}

#[test]
fn error_messages_carry_details() {
    let err = TestkitError::CommandFailed {
        command: "pg_ctl start".into(),
        status: "exit status: 1".into(),
        stdout_tail: String::new(),
        stderr_tail: "pg_ctl: could not start server".into(),
        log_tail: Some("FATAL:  could not bind".into()),
    };
    let text = err.to_string();
    for needle in [
        "pg_ctl start",
        "exit status: 1",
        "could not start server",
        "FATAL:  could not bind",
    ] {
        assert!(text.contains(needle), "{text}");
    }
    let missing = TestkitError::MissingBinaries {
        missing: vec!["initdb".into()],
    }
    .to_string();
    assert!(missing.contains("PostgreSQL server binaries are missing"));
    assert!(missing.contains("apt-get install postgresql"));
}

#[test]
fn uid_is_detected() {
    let out = Command::new("id").arg("-u").output().unwrap();
    let expected: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(sys::effective_uid(), Some(expected));
}

/// Set in the child process of [`watchdog_cleans_up_after_a_killed_process`].
const HELPER_ENV: &str = "CAIRN_TESTKIT_WATCHDOG_HELPER";

/// Not a test: the child process of
/// [`watchdog_cleans_up_after_a_killed_process`]. Starts a cluster, reports
/// its directory and port on stdout and waits to be killed.
// Ignored so that a plain `cargo test` does not run it as a test of its own (it would
// return at once without HELPER_ENV); CI runs it on every run as the child process that
// `watchdog_cleans_up_after_a_killed_process` starts with `--ignored --exact` and kills.
#[test]
#[ignore = "helper process, run by watchdog_cleans_up_after_a_killed_process"]
fn watchdog_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "CLUSTER {} {}",
        cluster.data_dir().parent().unwrap().display(),
        cluster.port()
    );
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn watchdog_cleans_up_after_a_killed_process() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::watchdog_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Kills the helper if this test fails before it does.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    let (dir, port) = loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let status = child.0.wait().unwrap();
            panic!("helper exited ({status}) without starting a cluster");
        }
        // libtest may print "test NAME ... " on the same line first.
        if let Some((_, rest)) = line.trim().split_once("CLUSTER ") {
            let (dir, port) = rest.rsplit_once(' ').unwrap();
            break (std::path::PathBuf::from(dir), port.parse::<u16>().unwrap());
        }
    };
    assert!(dir.exists());
    assert!(accepts_connections(port));

    child.0.kill().unwrap(); // SIGKILL: no unwinding, no Drop
    child.0.wait().unwrap();

    wait_until(
        "the watchdog to remove the cluster",
        Duration::from_secs(20),
        || (!dir.exists() && !accepts_connections(port)).then_some(()),
    );
    // The watchdog did not hold the helper's stdout open.
    line.clear();
    assert_eq!(stdout.read_line(&mut line).unwrap(), 0);
}

#[test]
fn server_user_commands_run_as_postgres_when_root() {
    let host = sys::host().unwrap();
    let run = |run_as: &sys::RunAs| {
        let argv = run_as.argv(Path::new("/bin/sh"), &["-c".into(), "id -un".into()]);
        let out = sys::run_checked(&argv, Path::new("/")).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    match &host.run_as {
        sys::RunAs::CurrentUser => {
            assert_ne!(sys::effective_uid(), Some(0));
        }
        sys::RunAs::Runuser { user, uid, gid, .. } | sys::RunAs::Su { user, uid, gid, .. } => {
            assert_eq!(run(&host.run_as), "postgres");
            // The `su` fallback works too, with arguments that need quoting.
            if let Some(su) = sys::find_on_path("su") {
                let su = sys::RunAs::Su {
                    su,
                    user: user.clone(),
                    uid: *uid,
                    gid: *gid,
                };
                assert_eq!(run(&su), "postgres");
                let argv = su.argv(Path::new("/bin/echo"), &["it's a test".into()]);
                let out = sys::run_checked(&argv, Path::new("/")).unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a test\n");
            }
        }
    }
}
