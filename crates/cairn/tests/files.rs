//! Files end to end, over real HTTP against a real `cairn serve`: uploads as sensenet's
//! client sends them (whole, and in chunks), bad uploads refused with nothing stored,
//! abandoned uploads removed, a kill -9 among uploads, and files in repository backups and
//! their restore. (The published JS client's own uploads are in compat/test/files.test.mjs.)

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_testkit::wait_until;
use common::{agent, cairn, call, serve_command, spawn, text, Running};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KEY: &str = "files-test-key-0123456789";

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` bytes that differ with `seed` (SHA-256 in counter mode).
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(&Sha256::digest(
            [seed.to_le_bytes(), i.to_le_bytes()].concat(),
        ));
        i += 1;
    }
    out.truncate(n);
    out
}

/// A multipart/form-data body: the text fields, then the file part (if any).
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----cairn-test-boundary-7d1f";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, data)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs `body` to `url`: (status, answer text).
fn post(url: &str, content_type: &str, body: &[u8], range: Option<&str>) -> (u16, String) {
    let mut req = agent()
        .post(url)
        .header("Authorization", &format!("Bearer {KEY}"))
        .header("Content-Type", content_type);
    if let Some(r) = range {
        req = req.header("Content-Range", r);
    }
    let mut r = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A whole upload of `data` as `name` into `folder` (`/Root/x`): (status, answer).
fn upload_whole(
    base: &str,
    folder: &str,
    name: &str,
    data: &[u8],
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let len = data.len().to_string();
    let mut fields = vec![
        ("ChunkToken", "0*0*False*False"),
        ("FileName", name),
        ("Overwrite", "true"),
        ("PropertyName", "Binary"),
        ("FileLength", len.as_str()),
    ];
    fields.extend_from_slice(extra);
    let (ct, body) = multipart(&fields, Some((name, data)));
    let (status, text) = post(
        &format!("{base}/odata.svc{folder}/Upload"),
        &ct,
        &body,
        None,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The first request of a chunked upload: the token.
fn begin_chunked(base: &str, folder: &str, name: &str, total: usize, first: &[u8]) -> String {
    let len = total.to_string();
    let (ct, body) = multipart(
        &[
            ("ChunkToken", "0*0*False*False"),
            ("FileName", name),
            ("Overwrite", "true"),
            ("PropertyName", "Binary"),
            ("FileLength", &len),
            ("UseChunk", "true"),
            ("create", "1"),
        ],
        Some((name, first)),
    );
    let range = format!("bytes 0-{}/{total}", first.len().max(1) - 1);
    let (status, token) = post(
        &format!("{base}/odata.svc{folder}/Upload"),
        &ct,
        &body,
        Some(&range),
    );
    assert_eq!(status, 200, "{token}");
    assert!(
        !token.is_empty() && !token.contains('{'),
        "a bare token: {token}"
    );
    token
}

/// One chunk: (status, answer).
fn chunk(
    base: &str,
    folder: &str,
    token: &str,
    total: usize,
    start: usize,
    data: &[u8],
) -> (u16, String) {
    let len = total.to_string();
    let (ct, body) = multipart(
        &[
            ("FileLength", &len),
            ("ChunkToken", token),
            ("PropertyName", "Binary"),
        ],
        Some(("f", data)),
    );
    let range = format!("bytes {start}-{}/{total}", (start + data.len()) as i64 - 1);
    post(
        &format!("{base}/odata.svc{folder}/Upload"),
        &ct,
        &body,
        Some(&range),
    )
}

/// GET `path` with extra headers: (status, bytes).
fn download(base: &str, path: &str) -> (u16, Vec<u8>) {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {KEY}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut r.body_mut().as_reader(), &mut out).unwrap();
    (status, out)
}

fn folder(base: &str, name: &str) {
    let (s, v) = call(
        KEY,
        "POST",
        &format!("{base}/odata.svc/Root"),
        Some(json!({"__ContentType": "Folder", "Name": name})),
    );
    assert_eq!(s, 201, "{v}");
}

/// The names of the children of `folder`.
fn children(base: &str, folder: &str) -> Vec<String> {
    let (s, v) = call(
        KEY,
        "GET",
        &format!("{base}/odata.svc{folder}?$select=Name"),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let mut names: Vec<String> = v["d"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn staged_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("blobs/.staging")).map_or(0, |d| d.count())
}

/// Runs `c`, which must succeed; what it printed.
#[track_caller]
fn succeeds(c: &mut std::process::Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn blob_check(data: &Path) -> (bool, String) {
    let o = cairn()
        .args(["blob", "check", "--data"])
        .arg(data)
        .output()
        .unwrap();
    (o.status.success(), text(&o))
}

#[test]
fn bad_uploads_are_clear_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(&mut serve_command(&data, KEY));
    let base = server.url.as_str();
    folder(base, "up");
    let (s, v) = call(
        KEY,
        "POST",
        &format!("{base}/odata.svc/Root/up"),
        Some(json!({"__ContentType": "Article", "Name": "art"})),
    );
    assert_eq!(s, 201, "{v}");

    // A lying FileLength, names that are not names, an upload into an article.
    let (s, v) = upload_whole(base, "/Root/up", "a.txt", b"12345", &[("FileLength", "6")]);
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("FileLength"), "{v}");
    for bad in ["..", "a/b", "x\\y"] {
        let (s, v) = upload_whole(base, "/Root/up", bad, b"x", &[]);
        assert!(s == 400, "{bad}: {s} {v}");
    }
    let (s, v) = upload_whole(base, "/Root/up/art", "a.txt", b"x", &[]);
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("folder"), "{v}");
    // Not multipart at all; multipart without a file; a JSON POST to .../upload.
    let (s, t) = post(
        &format!("{base}/odata.svc/Root('up')/upload"),
        "multipart/form-data",
        b"junk",
        None,
    );
    assert_eq!(s, 400, "{t}");
    let (ct, body) = multipart(&[("FileName", "n.txt")], None);
    let (s, t) = post(
        &format!("{base}/odata.svc/Root/up/Upload"),
        &ct,
        &body,
        None,
    );
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("no file part"), "{t}");
    let (s, t) = post(
        &format!("{base}/odata.svc/Root('up')/upload"),
        "application/json",
        b"{}",
        None,
    );
    assert!((400..500).contains(&s), "{s} {t}");

    // Chunks: a gap, a range past the declared length, another total: refused, and the
    // upload stays where it was; then the right chunks finish it.
    let whole = bytes(1, 30);
    let token = begin_chunked(base, "/Root/up", "c.bin", 30, &whole[..10]);
    let (s, t) = chunk(base, "/Root/up", &token, 30, 0, &whole[..10]);
    assert_eq!(s, 200, "{t}");
    let (s, t) = chunk(base, "/Root/up", &token, 30, 20, &whole[20..]);
    assert_eq!(s, 400, "a gap: {t}");
    assert!(t.contains("gap"), "{t}");
    let (s, t) = chunk(base, "/Root/up", &token, 30, 10, &bytes(2, 25));
    assert_eq!(s, 400, "past the end: {t}");
    let (s, t) = chunk(base, "/Root/up", &token, 31, 10, &whole[10..20]);
    assert_eq!(s, 400, "another total: {t}");
    // A chunk that holds other than its Content-Range says (bytes 10-19).
    let mislabeled = |data: &[u8]| {
        let (ct, body) = multipart(&[("ChunkToken", &token)], Some(("f", data)));
        let url = format!("{base}/odata.svc/Root/up/Upload");
        post(&url, &ct, &body, Some("bytes 10-19/30"))
    };
    let (s, t) = mislabeled(&whole[10..15]);
    assert_eq!(s, 400, "a short chunk: {t}");
    // One that holds more than it says: refused as it arrives, its bytes forgotten.
    let (s, t) = mislabeled(&bytes(3, 15));
    assert_eq!(s, 413, "a long chunk: {t}");
    assert!(t.contains("stays at byte 10"), "{t}");
    let (s, t) = chunk(base, "/Root/up", &token, 30, 10, &whole[10..20]);
    assert_eq!(s, 200, "{t}");
    assert!(
        children(base, "/Root/up") == ["art"],
        "no item before the last chunk"
    );
    let (s, t) = chunk(base, "/Root/up", &token, 30, 20, &whole[20..]);
    assert_eq!(s, 200, "{t}");
    let done: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(done["Length"], 30);
    let (s, got) = download(base, "/Root/up/c.bin");
    assert_eq!((s, sha(&got)), (200, sha(&whole)));
    // An unknown token.
    let (s, t) = chunk(base, "/Root/up", "nosuchtoken", 30, 0, &whole[..10]);
    assert_eq!(s, 404, "{t}");

    // Downloads of what has no bytes.
    assert_eq!(download(base, "/Root/up/art").0, 404);
    assert_eq!(download(base, "/Root/up/nothing.txt").0, 404);
    assert_eq!(download(base, "/binaryhandler.ashx?nodeid=abc").0, 400);
    assert_eq!(download(base, "/binaryhandler.ashx?nodeid=999999").0, 404);
    // Without credentials: 401, as the API.
    let r = agent()
        .get(&format!("{base}/Root/up/c.bin"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    assert_eq!(
        children(base, "/Root/up"),
        ["art", "c.bin"],
        "nothing else was stored"
    );
    assert_eq!(staged_files(&data), 0, "no staged bytes left");
    drop(server);
    let (ok, out) = blob_check(&data);
    assert!(ok, "{out}");
    assert!(
        out.contains("1 blob(s) named by the database: 0 missing, 0 damaged"),
        "{out}"
    );
}

#[test]
fn an_abandoned_chunked_upload_is_removed_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(serve_command(&data, KEY).args(["--upload-timeout", "1"]));
    let base = server.url.as_str();
    folder(base, "up");
    let whole = bytes(3, 100);
    let token = begin_chunked(base, "/Root/up", "left.bin", 100, &whole[..50]);
    let (s, t) = chunk(base, "/Root/up", &token, 100, 0, &whole[..50]);
    assert_eq!(s, 200, "{t}");
    assert_eq!(staged_files(&data), 1, "the first chunk is staged");
    wait_until(
        "the abandoned upload's bytes removed",
        Duration::from_secs(30),
        || (staged_files(&data) == 0).then_some(()),
    );
    let (s, t) = chunk(base, "/Root/up", &token, 100, 50, &whole[50..]);
    assert_eq!(s, 404, "{t}");
    assert!(t.contains("abandoned"), "{t}");
    assert!(children(base, "/Root/up").is_empty());
}

/// Uploads files of varied sizes (whole, and in chunks) into `/Root/up` until `stop`,
/// recording (name, SHA-256, when answered) of every upload that was answered.
fn uploader(
    base: String,
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<(String, String, std::time::Instant)>>>,
    seed: u64,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("f{seed}-{i}.bin");
        let data = bytes(seed * 1_000_000 + i, 1000 + (i as usize * 7919) % 150_000);
        let ok = if i.is_multiple_of(3) {
            // In chunks of 40 kB.
            let token = begin_chunked(
                &base,
                "/Root/up",
                &name,
                data.len(),
                &data[..40_000.min(data.len())],
            );
            let mut ok = true;
            for start in (0..data.len()).step_by(40_000) {
                let end = (start + 40_000).min(data.len());
                match chunk(
                    &base,
                    "/Root/up",
                    &token,
                    data.len(),
                    start,
                    &data[start..end],
                ) {
                    (200, _) => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            ok
        } else {
            upload_whole(&base, "/Root/up", &name, &data, &[]).0 == 200
        };
        if ok {
            answered
                .lock()
                .unwrap()
                .push((name, sha(&data), std::time::Instant::now()));
        }
    }
}

#[test]
fn a_backup_under_upload_load_restores_every_answered_file_and_verify_refuses_a_bad_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(&mut serve_command(&data, KEY));
    let base = server.url.clone();
    folder(&base, "up");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (1..=2)
        .map(|seed| {
            let (b, s, a) = (base.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || uploader(b, s, a, seed))
        })
        .collect();
    wait_until("uploads under way", Duration::from_secs(60), || {
        (answered.lock().unwrap().len() >= 10).then_some(())
    });
    let began = std::time::Instant::now();
    succeeds(cairn().args([
        "backup",
        "create",
        "--server",
        &base,
        "--admin-key",
        KEY,
        "--target",
        "b1",
    ]));
    // A few more while nothing is backed up, then a second, incremental backup.
    let after_first = answered.lock().unwrap().len();
    wait_until("more uploads", Duration::from_secs(60), || {
        (answered.lock().unwrap().len() >= after_first + 3).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    drop(server);
    let backup = data.join("backups/b1");
    let before: Vec<(String, String)> = answered
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at < began)
        .map(|(n, h, _)| (n.clone(), h.clone()))
        .collect();
    assert!(before.len() >= 10);
    succeeds(cairn().args(["backup", "verify"]).arg(&backup));

    // Restored into a new folder: every file answered before the backup began.
    let restored = dir.path().join("restored");
    succeeds(
        cairn()
            .args(["restore", "--from"])
            .arg(&backup)
            .arg("--data")
            .arg(&restored),
    );
    let (ok, out) = blob_check(&restored);
    assert!(ok, "{out}");
    let again = spawn(&mut serve_command(&restored, KEY));
    for (name, hash) in &before {
        let (s, got) = download(&again.url, &format!("/Root/up/{name}"));
        assert_eq!(s, 200, "{name}");
        assert_eq!(&sha(&got), hash, "{name}");
    }
    drop(again);
    succeeds(cairn().args(["index", "check", "--data"]).arg(&restored));

    // The backup holds exactly the blobs its database names; an altered one and a missing
    // one are refused by verify.
    let blobs: Vec<PathBuf> = walk(&backup.join("blobs"));
    assert!(
        blobs.len() >= before.len(),
        "{} blobs for {} files",
        blobs.len(),
        before.len()
    );
    let victim = &blobs[0];
    let mut b = std::fs::read(victim).unwrap();
    b[0] ^= 1;
    std::fs::write(victim, &b).unwrap();
    let o = cairn()
        .args(["backup", "verify"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("blobs/"), "{}", text(&o));
    std::fs::remove_file(victim).unwrap();
    let o = cairn()
        .args(["backup", "verify"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("missing"), "{}", text(&o));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn a_kill_among_uploads_leaves_no_reference_to_missing_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server: Running = spawn(&mut serve_command(&data, KEY));
    let base = server.url.clone();
    folder(&base, "up");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let (b, s, a) = (base.clone(), stop.clone(), answered.clone());
        // Requests fail once the server is gone: the uploader panics on a transport
        // error, which ends it.
        std::thread::spawn(move || std::panic::catch_unwind(|| uploader(b, s, a, 7)))
    };
    wait_until("uploads under way", Duration::from_secs(60), || {
        (answered.lock().unwrap().len() >= 15).then_some(())
    });
    server.child.kill().unwrap(); // SIGKILL, in the middle of an upload
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let _ = worker.join();
    let (ok, out) = blob_check(&data);
    assert!(ok, "no row names bytes that are not there: {out}");
    let again = spawn(&mut serve_command(&data, KEY));
    for (name, hash, _) in answered.lock().unwrap().iter() {
        let (s, got) = download(&again.url, &format!("/Root/up/{name}"));
        assert_eq!(s, 200, "{name}");
        assert_eq!(&sha(&got), hash, "{name}");
    }
}

#[test]
fn import_takes_a_binary_from_a_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(
        dir.path().join("files/notes.md"),
        "# Notes\nthe quokkaword is here",
    )
    .unwrap();
    let lines = dir.path().join("import.jsonl");
    std::fs::write(
        &lines,
        concat!(
            "{\"Path\":\"/Root/Docs\",\"Type\":\"Folder\"}\n",
            "{\"Path\":\"/Root/Docs/notes.md\",\"Type\":\"File\",\"Binary\":\"files/notes.md\"}\n",
            "{\"Path\":\"/Root/Docs/gone.txt\",\"Type\":\"File\",\"Binary\":\"files/gone.txt\"}\n",
        ),
    )
    .unwrap();
    let o = cairn()
        .args(["import", "--data"])
        .arg(&data)
        .arg(&lines)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("line 3") && out.contains("gone.txt"), "{out}");
    let server = spawn(&mut serve_command(&data, KEY));
    let (s, got) = download(&server.url, "/Root/Docs/notes.md");
    assert_eq!(s, 200);
    assert_eq!(got, b"# Notes\nthe quokkaword is here");
    let (s, v) = call(
        KEY,
        "GET",
        &format!(
            "{}/odata.svc/Root?query=quokkaword&$select=Name,MimeType,Size",
            server.url
        ),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["d"]["results"][0]["Name"], "notes.md", "{v}");
    assert_eq!(v["d"]["results"][0]["MimeType"], "text/markdown", "{v}");
    assert_eq!(v["d"]["results"][0]["Size"], 30, "{v}");
}

/// GET `path` with a `Range`: (status, Content-Range, bytes).
fn download_range(base: &str, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {KEY}"))
        .header("Range", range)
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let cr = r
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut r.body_mut().as_reader(), &mut out).unwrap();
    (status, cr, out)
}

/// The same files on PostgreSQL, whose blobs are rows of the database itself: uploads,
/// ranges across the rows' boundaries, then a repository backup (its dump carries the
/// blobs) restored into another database, file for file.
#[test]
fn files_on_postgresql_are_rows_of_the_database_and_come_back_with_its_backup() {
    let cluster = cairn_testkit::shared_cluster().expect("start PostgreSQL");
    let url = cluster
        .create_database(&cairn_testkit::unique_name("files"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(serve_command(&data, KEY).args(["--database", &url]));
    let base = server.url.as_str();
    folder(base, "up");
    let big = bytes(11, 2_500_000); // three rows of 1 MiB
    let (s, v) = upload_whole(base, "/Root/up", "big.bin", &big, &[]);
    assert_eq!(s, 200, "{v}");
    let chunked = bytes(12, 90_000);
    let token = begin_chunked(base, "/Root/up", "c.bin", chunked.len(), &chunked[..40_000]);
    for start in (0..chunked.len()).step_by(40_000) {
        let end = (start + 40_000).min(chunked.len());
        let (s, t) = chunk(
            base,
            "/Root/up",
            &token,
            chunked.len(),
            start,
            &chunked[start..end],
        );
        assert_eq!(s, 200, "{t}");
    }
    let (s, got) = download(base, "/Root/up/big.bin");
    assert_eq!((s, sha(&got)), (200, sha(&big)));
    let (s, cr, got) = download_range(base, "/Root/up/big.bin", "bytes=1048570-1048589");
    assert_eq!((s, cr.as_str()), (206, "bytes 1048570-1048589/2500000"));
    assert_eq!(got, &big[1_048_570..1_048_590]);
    assert_eq!(download(base, "/Root/up/c.bin").1, chunked);
    assert!(
        !data.join("blobs").exists(),
        "no blob folder: the blobs are in PostgreSQL"
    );
    succeeds(cairn().args([
        "backup",
        "create",
        "--server",
        base,
        "--admin-key",
        KEY,
        "--target",
        "b",
    ]));
    drop(server);

    let data2 = dir.path().join("restored");
    let url2 = restore_into_new_database(&data.join("backups/b"), &data2, &[]);
    let out = succeeds(
        cairn()
            .args(["blob", "check", "--database", &url2, "--data"])
            .arg(&data2),
    );
    assert!(
        out.contains("2 blob(s) named by the database: 0 missing"),
        "{out}"
    );
    let again = spawn(serve_command(&data2, KEY).args(["--database", &url2]));
    assert_eq!(sha(&download(&again.url, "/Root/up/big.bin").1), sha(&big));
    assert_eq!(download(&again.url, "/Root/up/c.bin").1, chunked);
}

/// Restores the backup folder `from` into a new PostgreSQL database (of the tests' shared
/// server) and the data folder `data`, with `env`; the database's URL.
fn restore_into_new_database(from: &Path, data: &Path, env: &[(&str, String)]) -> String {
    let url = cairn_testkit::shared_cluster()
        .expect("start PostgreSQL")
        .create_database(&cairn_testkit::unique_name("files_restored"))
        .unwrap();
    succeeds(
        cairn()
            .args(["restore", "--from"])
            .arg(from)
            .arg("--data")
            .arg(data)
            .args(["--database", &url])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    url
}

/// `cairn backup timeline --json REPO`'s `To` (null before the first base).
fn archived_to(repo: &Path) -> Option<std::time::SystemTime> {
    let o = cairn()
        .args(["backup", "timeline", "--json"])
        .arg(repo)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    let to = time::OffsetDateTime::parse(
        v["To"].as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some(to.into())
}

/// A server archiving continuously (SQLite) into `dir/archive`, its data in `dir/data`,
/// with a folder `/Root/up`, once the first base backup is in the archive.
fn archiving_server(dir: &Path) -> (PathBuf, PathBuf, Running) {
    let data = dir.join("data");
    let repo = dir.join("archive");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cairn.toml"),
        format!(
            "[backup.archive]\nrepository = \"{}\"\nbase_every = \"1h\"\nindex_every = \"1h\"\n",
            repo.display()
        ),
    )
    .unwrap();
    let server = spawn(&mut serve_command(&data, KEY));
    folder(&server.url, "up");
    wait_until("the first base", Duration::from_secs(60), || {
        archived_to(&repo)
    });
    (data, repo, server)
}

/// Files under continuous archiving (SQLite): a restore to a time between two uploads
/// brings the file answered before it, byte for byte, and not the one after; `latest`
/// brings both. The second file's blob exists only in the archive's shipped blobs (no base
/// was taken after it).
#[test]
fn a_restore_to_a_time_brings_exactly_the_files_uploaded_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_data, repo, server) = archiving_server(dir.path());
    let base = server.url.as_str();
    let first = bytes(21, 300_000);
    assert_eq!(
        upload_whole(base, "/Root/up", "first.bin", &first, &[]).0,
        200
    );
    let t = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    let second = bytes(22, 9_000_000); // more than one archived part
    let began = std::time::SystemTime::now();
    assert_eq!(
        upload_whole(base, "/Root/up", "second.bin", &second, &[]).0,
        200
    );
    wait_until(
        "the archive reaches the second upload",
        Duration::from_secs(60),
        // Its commit came after it began.
        || archived_to(&repo).filter(|to| *to >= began),
    );
    drop(server);
    let restore = |at: &str, out: &Path| {
        succeeds(
            cairn()
                .args(["restore", "--from"])
                .arg(&repo)
                .args(["--at", at, "--data"])
                .arg(out),
        );
        let (ok, report) = blob_check(out);
        assert!(ok, "{report}");
    };
    let at = time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let then = dir.path().join("then");
    restore(&at, &then);
    let s = spawn(&mut serve_command(&then, KEY));
    assert_eq!(sha(&download(&s.url, "/Root/up/first.bin").1), sha(&first));
    assert_eq!(download(&s.url, "/Root/up/second.bin").0, 404);
    drop(s);
    let latest = dir.path().join("latest");
    restore("latest", &latest);
    let s = spawn(&mut serve_command(&latest, KEY));
    assert_eq!(sha(&download(&s.url, "/Root/up/first.bin").1), sha(&first));
    assert_eq!(
        sha(&download(&s.url, "/Root/up/second.bin").1),
        sha(&second)
    );
}

/// Puts a blob straight into the blob store of `data`, as an upload cut short between its
/// blob and its item leaves one; returns its hash.
fn orphan(data: &Path, content: &[u8]) -> String {
    let h = sha(content);
    let dir = data.join("blobs").join(&h[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&h), content).unwrap();
    h
}

fn blob_exists(data: &Path, hash: &str) -> bool {
    data.join("blobs").join(&hash[..2]).join(hash).exists()
}

/// `cairn blob gc` removes the blobs nothing names (an overwritten version, an orphan), only
/// offline, and keeps every named one; with continuous archiving it keeps a blob the
/// archive has not shipped.
#[test]
fn blob_gc_removes_what_nothing_names_and_keeps_what_the_archive_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let (data, repo, server) = archiving_server(dir.path());
    let base = server.url.as_str();
    assert_eq!(
        upload_whole(base, "/Root/up", "doc.txt", b"version one", &[]).0,
        200
    );
    let began = std::time::SystemTime::now();
    assert_eq!(
        upload_whole(base, "/Root/up", "doc.txt", b"version two", &[]).0,
        200
    );
    assert_eq!(
        upload_whole(base, "/Root/up", "keep.txt", b"kept", &[]).0,
        200
    );
    wait_until(
        "the archive has the uploads",
        Duration::from_secs(60),
        || archived_to(&repo).filter(|to| *to >= began),
    );
    let o = cairn()
        .args(["blob", "gc", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success(), "refused beside the server");
    assert!(text(&o).contains("in use"), "{}", text(&o));
    drop(server);
    let old = sha(b"version one");
    let cut_short = orphan(&data, b"an upload cut short");

    let gc = |dry: bool| {
        let mut c = cairn();
        c.args(["blob", "gc", "--json", "--data"]).arg(&data);
        if dry {
            c.arg("--dry-run");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let v = gc(true);
    assert_eq!(v["Unreferenced"], 2, "{v}");
    assert_eq!(v["Removed"], json!([old]), "{v}");
    assert_eq!(v["KeptUnshipped"], 1, "the orphan was never shipped: {v}");
    assert!(blob_exists(&data, &old), "a dry run removes nothing");
    let v = gc(false);
    assert_eq!(v["Removed"], json!([old]), "{v}");
    assert!(!blob_exists(&data, &old));
    assert!(blob_exists(&data, &cut_short), "kept: the archive lacks it");

    // Without the archive, the orphan goes too; every named blob stays.
    std::fs::remove_file(data.join("cairn.toml")).unwrap();
    let v = gc(false);
    assert_eq!(v["Removed"], json!([cut_short]), "{v}");
    let (ok, out) = blob_check(&data);
    assert!(ok, "{out}");
    assert!(
        out.contains("2 blob(s) named by the database: 0 missing, 0 damaged; 0 unreferenced"),
        "{out}"
    );
    let again = spawn(&mut serve_command(&data, KEY));
    assert_eq!(download(&again.url, "/Root/up/doc.txt").1, b"version two");
    assert_eq!(download(&again.url, "/Root/up/keep.txt").1, b"kept");
}

/// Files in S3, encrypted: a server's backup into S3 with `--encrypt-to` carries the blobs
/// (packed and encrypted with the rest; a second backup stores only what is new), and a
/// restore with the identity brings every file back byte for byte.
#[test]
fn files_in_an_encrypted_s3_backup_come_back_with_it() {
    let moto = cairn_testkit::MotoServer::start().unwrap();
    moto.create_bucket("files").unwrap();
    let env = moto.env();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    let printed = succeeds(cairn().args(["backup", "keygen"]).arg(&key));
    let recipient = printed.lines().next().unwrap().trim().to_string();
    let data = dir.path().join("data");
    let server = spawn(serve_command(&data, KEY).envs(env.iter().map(|(k, v)| (*k, v.as_str()))));
    let base = server.url.clone();
    folder(&base, "up");
    let a = bytes(31, 700_000);
    let b = b"plain words: kiwimarker inside".to_vec();
    assert_eq!(upload_whole(&base, "/Root/up", "a.bin", &a, &[]).0, 200);
    assert_eq!(upload_whole(&base, "/Root/up", "b.txt", &b, &[]).0, 200);
    let backup = |to: &str| {
        succeeds(
            cairn()
                .args([
                    "backup",
                    "create",
                    "--server",
                    &base,
                    "--admin-key",
                    KEY,
                    "--to",
                    to,
                ])
                .args(["--encrypt-to", &recipient])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        );
    };
    backup("s3://files/r/b1");
    let c = bytes(32, 400_000);
    assert_eq!(upload_whole(&base, "/Root/up", "c.bin", &c, &[]).0, 200);
    backup("s3://files/r/b2");
    drop(server);
    let out = dir.path().join("restored");
    succeeds(
        cairn()
            .args(["restore", "--from", "s3://files/r/b2", "--identity"])
            .arg(&key)
            .arg("--data")
            .arg(&out)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    );
    let (ok, report) = blob_check(&out);
    assert!(ok, "{report}");
    let again = spawn(&mut serve_command(&out, KEY));
    assert_eq!(sha(&download(&again.url, "/Root/up/a.bin").1), sha(&a));
    assert_eq!(download(&again.url, "/Root/up/b.txt").1, b);
    assert_eq!(sha(&download(&again.url, "/Root/up/c.bin").1), sha(&c));
}

#[test]
fn a_whole_upload_over_its_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(serve_command(&data, KEY).args(["--max-upload", "100000"]));
    let base = server.url.as_str();
    folder(base, "up");
    let (s, v) = upload_whole(base, "/Root/up", "big.bin", &bytes(41, 200_000), &[]);
    assert_eq!(s, 413, "{v}");
    assert_eq!(
        upload_whole(base, "/Root/up", "small.bin", &bytes(42, 90_000), &[]).0,
        200
    );
    assert_eq!(children(base, "/Root/up"), ["small.bin"]);
}

/// Files in an S3 bucket chosen with `--blob-store` (PostgreSQL, as several web nodes
/// would run): nothing in the database's blob tables nor beside it; a node started later
/// without the setting finds them (the database names the bucket); another bucket, or one
/// that does not exist, is refused with a clear error; a backup restored into another
/// database brings files that download byte for byte.
#[test]
fn files_in_an_s3_blob_store_are_found_by_every_node_and_come_back_with_a_backup() {
    let moto = cairn_testkit::MotoServer::start().unwrap();
    moto.create_bucket("files").unwrap();
    let env = moto.env();
    let env = || env.iter().map(|(k, v)| (*k, v.as_str()));
    let cluster = cairn_testkit::shared_cluster().expect("start PostgreSQL");
    let url = cluster
        .create_database(&cairn_testkit::unique_name("s3files"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nothing = dir.path().join("nothing.jsonl");
    std::fs::write(&nothing, "").unwrap();
    let import = |data: &Path, url: &str, blob_store: &str| {
        cairn()
            .args([
                "import",
                "--database",
                url,
                "--blob-store",
                blob_store,
                "--data",
            ])
            .arg(data)
            .arg(&nothing)
            .envs(env())
            .output()
            .unwrap()
    };
    // A bucket that does not exist is said before anything is recorded.
    let o = import(&dir.path().join("n0"), &url, "s3://no-such-bucket/blobs");
    assert!(!o.status.success());
    assert!(text(&o).contains("bucket does not exist"), "{}", text(&o));

    let data = dir.path().join("node1");
    let node1 = spawn(
        serve_command(&data, KEY)
            .args(["--database", &url, "--blob-store", "s3://files/live"])
            .envs(env()),
    );
    folder(&node1.url, "up");
    // Over one S3 part (a multipart upload) and over one ranged read of a download.
    let big = bytes(41, 9_500_000);
    let (s, v) = upload_whole(&node1.url, "/Root/up", "big.bin", &big, &[]);
    assert_eq!(s, 200, "{v}");
    let chunked = bytes(42, 90_000);
    let token = begin_chunked(
        &node1.url,
        "/Root/up",
        "c.bin",
        chunked.len(),
        &chunked[..40_000],
    );
    for start in (0..chunked.len()).step_by(40_000) {
        let end = (start + 40_000).min(chunked.len());
        let piece = &chunked[start..end];
        let (s, t) = chunk(&node1.url, "/Root/up", &token, chunked.len(), start, piece);
        assert_eq!(s, 200, "{t}");
    }
    assert_eq!(sha(&download(&node1.url, "/Root/up/big.bin").1), sha(&big));
    drop(node1);
    let in_bucket = cairn_backup::blob_stores::S3Blobs::open_with(
        "s3://files/live",
        &cairn_backup::repo::s3::S3Settings::static_keys(&moto.endpoint(), "testing", "testing"),
    )
    .unwrap();
    let mut want = vec![sha(&big), sha(&chunked)];
    want.sort();
    use cairn_store::files::BlobStore;
    assert_eq!(
        in_bucket.list().unwrap(),
        want,
        "both blobs are in the bucket"
    );
    assert!(
        !data.join("blobs").exists(),
        "no blob folder beside the data"
    );
    let check = |data: &Path, url: &str| {
        succeeds(
            cairn()
                .args(["blob", "check", "--database", url, "--data"])
                .arg(data)
                .envs(env()),
        )
    };
    assert!(
        check(&data, &url).contains("2 blob(s) named by the database: 0 missing"),
        "blob check"
    );
    // No blob in PostgreSQL's own blob tables: `blob gc` on them would find nothing, and
    // the bucket is what gc sees (it removes nothing that is named).
    let gc = succeeds(
        cairn()
            .args(["blob", "gc", "--dry-run", "--database", &url, "--data"])
            .arg(&data)
            .envs(env()),
    );
    assert!(gc.contains("0 unreferenced"), "{gc}");

    // Another bucket for a database that keeps its blobs in one: refused, saying where.
    let o = import(&dir.path().join("n1"), &url, "s3://files/elsewhere");
    assert!(!o.status.success());
    assert!(
        text(&o).contains("keeps its blobs in s3://files/live"),
        "{}",
        text(&o)
    );

    // A second node, without the setting: the database names the bucket.
    let node2 = spawn(
        serve_command(&dir.path().join("node2"), KEY)
            .args(["--database", &url])
            .envs(env()),
    );
    let (s, cr, got) = download_range(&node2.url, "/Root/up/big.bin", "bytes=4194300-4194309");
    assert_eq!((s, cr.as_str()), (206, "bytes 4194300-4194309/9500000"));
    assert_eq!(got, &big[4_194_300..4_194_310]);
    assert_eq!(download(&node2.url, "/Root/up/c.bin").1, chunked);
    succeeds(
        cairn()
            .args([
                "backup",
                "create",
                "--server",
                &node2.url,
                "--admin-key",
                KEY,
            ])
            .args(["--target", "b"])
            .envs(env()),
    );
    drop(node2);

    let data2 = dir.path().join("restored");
    let url2 = restore_into_new_database(&dir.path().join("node2/backups/b"), &data2, &moto.env());
    assert!(
        check(&data2, &url2).contains("2 blob(s) named by the database: 0 missing"),
        "blob check after the restore"
    );
    let again = spawn(
        serve_command(&data2, KEY)
            .args(["--database", &url2])
            .envs(env()),
    );
    assert_eq!(sha(&download(&again.url, "/Root/up/big.bin").1), sha(&big));
    assert_eq!(download(&again.url, "/Root/up/c.bin").1, chunked);
}
