//! The admin console (`GET /admin`): its security over real HTTP, and the page as a person
//! uses it in a real browser (Debian's chromium driven by playwright-core:
//! compat/admin/console.test.mjs).

mod common;

use std::path::Path;
use std::process::Command;

use common::{agent, call, serve_command, spawn};
use serde_json::{json, Value};

const KEY: &str = "admin-console-key-0123456789";

/// A request with the session `cookie` (and `csrf`, `origin` when given): status, body.
fn with_session(
    method: &str,
    url: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let a = agent();
    let mut req = match method {
        "GET" => a.get(url).force_send_body(),
        _ => a.post(url),
    };
    req = req.header("Content-Type", "application/json");
    if let Some(c) = cookie {
        req = req.header("Cookie", &format!("cairn_admin={c}"));
    }
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let mut r = req
        .send(body.unwrap_or(json!({})).to_string().as_bytes())
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// Logs in with `body`: status, the session cookie's token, the answer.
fn log_in(base: &str, body: Value) -> (u16, Option<String>, Value) {
    let mut r = agent()
        .post(&format!("{base}/admin/login"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = cookie.as_deref().and_then(|c| {
        c.split(';')
            .next()?
            .strip_prefix("cairn_admin=")
            .map(str::to_string)
    });
    if let Some(c) = &cookie {
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/admin"),
            "{c}"
        );
    }
    let status = r.status().as_u16();
    let v = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or(Value::Null);
    (status, token, v)
}

/// Without a session every console route is 401; a wrong key, 401; a user who is not
/// the administrator, 403; a POST without the session's CSRF token, or from another
/// origin, 403; logged out, 401 again. The page and its assets carry a strict policy.
#[test]
fn console_routes_need_a_session_and_state_changes_a_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(&mut serve_command(&dir.path().join("data"), KEY));
    let base = server.url.as_str();

    let mut page = agent().get(&format!("{base}/admin")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains("<main") && html.contains("<nav") && !html.contains(KEY));

    for (method, path) in [
        ("GET", "/admin/api/session"),
        ("GET", "/admin/api/overview"),
        ("GET", "/admin/api/backups"),
        ("GET", "/admin/api/policies"),
        ("POST", "/admin/api/backups/start"),
        ("POST", "/admin/api/backups/cancel"),
        ("POST", "/admin/api/backups/verify"),
        ("POST", "/admin/api/policies/run"),
        ("POST", "/admin/api/integrity"),
        ("POST", "/admin/logout"),
        ("GET", "/admin/backups/x/manifest.json"),
        ("GET", "/admin/api/anything-else"),
    ] {
        let (s, body) = with_session(method, &format!("{base}{path}"), None, None, None, None);
        assert_eq!(s, 401, "{method} {path} without a session: {body}");
        let (s, _) = with_session(
            method,
            &format!("{base}{path}"),
            Some("forged"),
            None,
            None,
            None,
        );
        assert_eq!(s, 401, "{method} {path} with a made-up session");
    }

    let (s, token, v) = log_in(base, json!({"key": "not-the-key-at-all"}));
    assert_eq!((s, token), (401, None), "{v}");
    // A user who is not the administrator cannot log in.
    let (s, v) = call(
        KEY,
        "POST",
        &format!("{base}/odata.svc/Root/IMS"),
        Some(
            json!({"__ContentType":"User","Name":"jane","LoginName":"jane","Password":"jane-password-1"}),
        ),
    );
    assert_eq!(s, 201, "{v}");
    let (s, token, v) = log_in(
        base,
        json!({"login": "jane", "password": "jane-password-1"}),
    );
    assert_eq!((s, token), (403, None), "{v}");

    let (s, token, v) = log_in(base, json!({"key": KEY}));
    assert_eq!(s, 200, "{v}");
    let token = token.expect("a session cookie");
    let csrf = v["Csrf"].as_str().expect("a CSRF token").to_string();
    assert_ne!(token, csrf);
    let url = |p: &str| format!("{base}{p}");
    let (s, body) = with_session(
        "GET",
        &url("/admin/api/overview"),
        Some(&token),
        None,
        None,
        None,
    );
    assert_eq!(s, 200, "{body}");
    let overview: Value = serde_json::from_str(&body).unwrap();
    assert!(overview["LagSamples"].is_array(), "{overview}");
    // A cross-site POST: the cookie alone (no token), a wrong token, another origin.
    let start = url("/admin/api/backups/start");
    let kind = Some(json!({"kind": "Index"}));
    let (s, body) = with_session("POST", &start, Some(&token), None, None, kind.clone());
    assert_eq!(s, 403, "{body}");
    let (s, _) = with_session(
        "POST",
        &start,
        Some(&token),
        Some("0000"),
        None,
        kind.clone(),
    );
    assert_eq!(s, 403);
    let evil = Some("http://evil.example");
    let (s, body) = with_session(
        "POST",
        &start,
        Some(&token),
        Some(&csrf),
        evil,
        kind.clone(),
    );
    assert_eq!(s, 403, "{body}");
    let (s, _) = with_session(
        "POST",
        &url("/admin/login"),
        None,
        None,
        evil,
        Some(json!({"key": KEY})),
    );
    assert_eq!(s, 403, "a login posted from another site");
    // With the token, from this origin: the backup starts.
    let here = format!("http://{}", base.trim_start_matches("http://"));
    let (s, body) = with_session("POST", &start, Some(&token), Some(&csrf), Some(&here), kind);
    assert_eq!(s, 200, "{body}");
    // Logged out: the session is gone.
    let (s, _) = with_session(
        "POST",
        &url("/admin/logout"),
        Some(&token),
        Some(&csrf),
        None,
        None,
    );
    assert_eq!(s, 200);
    let (s, _) = with_session(
        "GET",
        &url("/admin/api/session"),
        Some(&token),
        None,
        None,
        None,
    );
    assert_eq!(s, 401);
}

/// The page in a real headless Chromium: log in (a wrong key refused with a message),
/// the overview against GetIndexProperties, a repository backup's progress bar to
/// Finished, verify, a slow backup canceled, the policies, the integrity check with 0
/// differences, log out. With CAIRN_ADMIN_SCREENSHOTS=DIR it saves each page at 1280 and
/// 375 px there (docs/admin holds the committed ones).
#[test]
fn the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cairn.toml"),
        format!(
            "[[backup.policy]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nrepository = \"{}\"\nkind = \"repository\"\nkeep_last = 7\n",
            dir.path().join("repo").display()
        ),
    )
    .unwrap();
    // Every index file of a backup takes 400 ms more: a backup lasts seconds, to watch and
    // to cancel.
    let server =
        spawn(serve_command(&data, KEY).env("FAILPOINTS", "backup::index_file=sleep(400)"));
    for i in 0..5 {
        let (s, v) = call(
            KEY,
            "POST",
            &format!("{}/odata.svc/Root", server.url),
            Some(json!({"__ContentType":"Folder","Name":format!("f{i}")})),
        );
        assert_eq!(s, 201, "{v}");
    }
    let compat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat");
    if !compat.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&compat)
            .status()
            .expect("npm (node) is needed for the browser test")
            .success();
        assert!(ok, "npm ci in compat/");
    }
    let mut node = Command::new("node");
    node.args(["--test", "--test-timeout=240000", "admin/console.test.mjs"])
        .current_dir(&compat)
        .env("CAIRN_URL", &server.url)
        .env("CAIRN_ADMIN_KEY", KEY);
    if let Ok(shots) = std::env::var("CAIRN_ADMIN_SCREENSHOTS") {
        node.env("SCREENSHOTS", shots);
    }
    let out = node.output().expect("run node (the browser test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{text}");
    assert!(
        text.contains("# pass 1") && text.contains("# fail 0"),
        "{text}"
    );
}
