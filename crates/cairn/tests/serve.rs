//! `cairn serve` as a real process: first start, admin key, health, graceful shutdown on
//! SIGTERM, the lock, and the published sensenet JS client against it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, key: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("CAIRN_ADMIN_KEY")
        .env_remove("CAIRN_DATA")
        .stderr(Stdio::null());
    if let Some(k) = key {
        cmd.args(["--admin-key", k]);
    }
    let (child, url) = cairn_testkit::spawn_announcing(&mut cmd, Duration::from_secs(60));
    Server { child, url }
}

/// A minimal HTTP/1.1 GET over a TCP socket: returns (status, body).
fn http_get(url: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn first_start_generates_a_private_key_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data, None);
    let key_file = data.join("admin.key");
    assert!(key_file.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&key_file).unwrap();
    let (status, _) = http_get(&server.url, "/health", None);
    assert_eq!(status, 200);
    let (status, _) = http_get(&server.url, "/odata.svc/('Root')", None);
    assert_eq!(status, 401);
    let (status, body) = http_get(
        &server.url,
        "/odata.svc/('Root')",
        Some(&format!("Bearer {}", key.trim())),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"Path\":\"/Root\""), "{body}");
    // While it runs, offline commands refuse.
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["index", "rebuild", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by `cairn serve`"), "{err}");
    assert!(!err.contains("--server"), "rebuild has no --server: {err}");
    // `index check` says it can ask the server, and it can.
    let cairn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(args)
            .env_remove("CAIRN_ADMIN_KEY")
            .output()
            .unwrap()
    };
    let data_arg = data.to_str().unwrap();
    let o = cairn(&["index", "check", "--data", data_arg]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("index check --server URL"));
    let key = key.trim();
    for (args, want) in [
        (vec!["index", "check"], "0 differences"),
        (vec!["index", "status"], "lag: 0 activities"),
    ] {
        let mut args = args.clone();
        args.extend(["--server", &server.url, "--admin-key", key]);
        let o = cairn(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(want), "{args:?}: {out}");
        args.push("--json");
        let o = cairn(&args);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v.is_object(), "{v}");
    }
    // `index status --json` has one shape, asked of the server or of the folder beside it.
    let keys = |args: &[&str]| {
        let o = cairn(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&[
            "index",
            "status",
            "--json",
            "--server",
            &server.url,
            "--admin-key",
            key
        ]),
        keys(&["index", "status", "--json", "--data", data_arg])
    );
    let o = cairn(&[
        "index",
        "check",
        "--server",
        &server.url,
        "--admin-key",
        "wrong",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused the administrator's key"), "{err}");
    let o = cairn(&["index", "status", "--server", &server.url]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("administrator's key"));
    // A second server on the taken port fails before it makes a repository.
    let other = dir.path().join("other");
    let o = cairn(&[
        "serve",
        "--listen",
        server.url.trim_start_matches("http://"),
        "--data",
        other.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("listen on"));
    assert!(
        !other.exists(),
        "a server that could not listen made {other:?}"
    );
}

#[test]
fn sigterm_finishes_with_a_final_commit_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data, Some("k1-0123456789abcdef"));
    let (status, _) = http_get(&server.url, "/health", None);
    assert_eq!(status, 200);
    let exit = cairn_testkit::terminate(&mut server.child, Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["index", "check", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 differences"));
    // A SIGTERM sent the moment the server announces itself is a graceful stop too (the
    // handler used to be installed only once the server first polled it).
    for _ in 0..5 {
        let mut server = start(&data, Some("k1-0123456789abcdef"));
        let exit = cairn_testkit::terminate(&mut server.child, Duration::from_secs(30));
        assert!(exit.success(), "{exit:?}");
    }
}

/// The published `@sensenet/client-core` 4.2.0 and `@sensenet/query` drive a real server.
#[test]
fn sensenet_js_client_works_against_cairn() {
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat");
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), Some("compat-key-0123456789"));
    let out = Command::new("bash")
        .arg(compat.join("run-tests.sh"))
        .current_dir(&compat)
        .env("CAIRN_URL", &server.url)
        .env("CAIRN_ADMIN_KEY", "compat-key-0123456789")
        .output()
        .expect("run compat/run-tests.sh (needs node and npm)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the sensenet client suite failed:\n{text}"
    );
    assert!(text.contains("# fail 0"), "{text}");
}
