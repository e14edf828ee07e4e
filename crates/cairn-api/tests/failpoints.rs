//! The API under races and injected faults (named failure points, compiled in for tests
//! only), through the real router over a real SQLite file and a real index.
//!
//! Failure points are process-wide: every test holds a [`fail::FailScenario`], which runs
//! them one at a time, and this file is a test binary of its own.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use base64::Engine;
use cairn_api::{router, ApiConfig, AppState};
use cairn_index::{Indexer, IndexerOptions};
use cairn_store::{DatabaseUrl, Store};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const KEY: &str = "failpoints-admin-key";

struct Api {
    _dir: tempfile::TempDir,
    app: Router,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&DatabaseUrl::Sqlite(dir.path().join("cairn.db"))).unwrap());
    let options = IndexerOptions {
        writer_memory: 50 << 20,
        writer_threads: 1,
        ..IndexerOptions::default()
    };
    let (indexer, _) =
        Indexer::open(&dir.path().join("index"), store.clone(), options, &|_| {}).unwrap();
    indexer.start();
    let app = router(AppState::new(
        store,
        cairn_api::backend::SearchBackend::Local(indexer),
        ApiConfig::new(KEY.into()),
    ));
    Api { _dir: dir, app }
}

fn admin() -> String {
    format!("Bearer {KEY}")
}

fn basic(login: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
}

/// One request; the status and the body as JSON (null when there is none).
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", auth)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// What a user (not the administrator) does to `/Root/F`, as a request.
fn subtree_requests() -> Vec<(&'static str, &'static str, &'static str, Option<Value>)> {
    vec![
        ("delete", "DELETE", "/odata.svc/Root('F')", None),
        (
            "rename",
            "PATCH",
            "/odata.svc/Root('F')",
            Some(json!({"Name": "G"})),
        ),
        (
            "move",
            "POST",
            "/odata.svc/('Root')/MoveBatch",
            Some(json!({"paths": ["/Root/F"], "targetPath": "/Root/Elsewhere"})),
        ),
        (
            "copy",
            "POST",
            "/odata.svc/('Root')/CopyBatch",
            Some(json!({"paths": ["/Root/F"], "targetPath": "/Root/Elsewhere"})),
        ),
        (
            "delete batch",
            "POST",
            "/odata.svc/('Root')/DeleteBatch",
            Some(json!({"paths": ["/Root/F"], "permanent": true})),
        ),
    ]
}

/// A user's delete, rename, move or copy of a folder, held just before its transaction
/// while the administrator creates a user in that folder: the user's request is refused
/// (403, or an error entry in a batch) and the new user stays. Before the fix the API
/// checked "this folder holds no users" before the transaction, both requests succeeded
/// (201 and 204) and the new user was gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_cannot_take_along_a_user_created_meanwhile() {
    for (what, method, uri, body) in subtree_requests() {
        let scenario = fail::FailScenario::setup();
        let api = api();
        let app = &api.app;
        let (s, v) = call(
            app,
            "POST",
            "/odata.svc/Root/IMS",
            &admin(),
            Some(json!({
            "__ContentType": "User", "Name": "alice", "LoginName": "alice",
            "Password": "alice-password"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        for name in ["F", "Elsewhere"] {
            let (s, v) = call(
                app,
                "POST",
                "/odata.svc/Root",
                &admin(),
                Some(json!({"__ContentType": "Folder", "Name": name})),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let gate = cairn_testkit::Gate::install("store::write");
        let held = {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move {
                call(&app, method, uri, &basic("alice", "alice-password"), body).await
            })
        };
        tokio::task::spawn_blocking({
            let gate = gate.clone();
            move || gate.wait_held()
        })
        .await
        .unwrap();
        let (s, v) = call(
            app,
            "POST",
            "/odata.svc/Root/F",
            &admin(),
            Some(json!({
            "__ContentType": "User", "Name": "newcomer", "LoginName": "newcomer"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{what}: {v}");
        gate.release();
        let (status, answer) = held.await.unwrap();
        let refused = status == StatusCode::FORBIDDEN
            || answer["d"]["errors"][0]["error"]["code"] == "Forbidden";
        assert!(
            refused,
            "{what}: the user's request took a user along: {status} {answer}"
        );
        let (s, v) = call(app, "GET", "/odata.svc/Root/F('newcomer')", &admin(), None).await;
        assert_eq!(s, StatusCode::OK, "{what}: the new user is gone: {v}");
        scenario.teardown();
    }
}

/// A write on a full disk answers 507 with sensenet's error body, naming the database
/// whose disk is full; nothing is written; once there is room the same write works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_full_disk_answers_507() {
    let scenario = fail::FailScenario::setup();
    let api = api();
    let app = &api.app;
    fail::cfg("store::write", "return(enospc)").unwrap();
    let body = json!({"__ContentType": "Folder", "Name": "x"});
    let (s, v) = call(app, "POST", "/odata.svc/Root", &admin(), Some(body.clone())).await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{v}");
    assert_eq!(v["error"]["code"], "InsufficientStorage", "{v}");
    let message = v["error"]["message"]["value"].as_str().unwrap_or_default();
    assert!(
        message.contains("cairn.db") && message.contains("full"),
        "{message}"
    );
    let (s, _) = call(app, "GET", "/odata.svc/Root('x')", &admin(), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    fail::remove("store::write");
    let (s, v) = call(app, "POST", "/odata.svc/Root", &admin(), Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    scenario.teardown();
}
