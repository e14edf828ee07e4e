//! What the process tests of the binary share: running `cairn` as a new user would, and
//! reading what it said.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

/// A `cairn` command with none of Cairn's settings taken from the test's environment.
pub fn cairn() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for var in [
        "CAIRN_DATA",
        "CAIRN_DATABASE",
        "CAIRN_ADMIN_KEY",
        "CAIRN_LISTEN",
        "CAIRN_LOG",
        // S3 is reached only where a test says so (its moto server).
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
        "AWS_PROFILE",
    ] {
        c.env_remove(var);
    }
    c
}

/// Everything a command printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An HTTP client that answers every status (no error for a 4xx or 5xx).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// One request with the API key `key` (a POST or PATCH sends `body`, `{}` when none): the status
/// and the body as JSON (null if none), or the transport error.
pub fn try_call(
    key: &str,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<(u16, Value), ureq::Error> {
    let a = agent();
    let auth = format!("Bearer {key}");
    let body = body.unwrap_or(json!({})).to_string();
    let mut r = match method {
        "POST" => a
            .post(url)
            .header("Authorization", &auth)
            .send(body.as_bytes()),
        "PATCH" => a
            .patch(url)
            .header("Authorization", &auth)
            .send(body.as_bytes()),
        "DELETE" => a.delete(url).header("Authorization", &auth).call(),
        "GET" => a.get(url).header("Authorization", &auth).call(),
        other => panic!("no {other} in the tests' client"),
    }?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// [`try_call`] that must reach the server.
#[track_caller]
pub fn call(key: &str, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    try_call(key, method, url, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// A process of the binary that announced its address, killed (SIGKILL) when dropped.
pub struct Running {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` (its stderr dropped) and waits until it announces its address.
pub fn spawn(command: &mut Command) -> Running {
    let (child, url) = cairn_testkit::spawn_announcing(
        command.stderr(std::process::Stdio::null()),
        Duration::from_secs(60),
    );
    Running { child, url }
}

/// `cairn serve` on `data` with the administrator's `key`, on a free port of 127.0.0.1.
pub fn serve_command(data: &std::path::Path, key: &str) -> Command {
    let mut c = cairn();
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-key",
        key,
        "--data",
    ])
    .arg(data);
    c
}

/// A repository in `data` with `n` folders `/Root/f0`..., made by `cairn import`.
pub fn repository_with(data: &std::path::Path, n: usize) {
    let file = data.with_extension("jsonl");
    let lines: String = (0..n)
        .map(|i| format!("{{\"Path\":\"/Root/f{i}\",\"Type\":\"Folder\"}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let o = cairn()
        .args(["import", "--data"])
        .arg(data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// Ten `action` calls (`BackupIndex`, `BackupRepository`) with `body` at once, alternating
/// over `nodes`, with the API key `key`: each answer's status and body (a node that cannot
/// be reached answers 0).
pub fn ten_backup_calls(key: &str, nodes: &[&str], action: &str, body: Value) -> Vec<(u16, Value)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|i| {
                let url = format!("{}/odata.svc/('Root')/{action}", nodes[i % nodes.len()]);
                let body = body.clone();
                s.spawn(move || try_call(key, "POST", &url, Some(body)).unwrap_or((0, Value::Null)))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or((0, Value::Null)))
            .collect()
    })
}
