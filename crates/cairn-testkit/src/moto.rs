//! [`MotoServer`]: a real S3-compatible server (moto in server mode) on a free port of
//! 127.0.0.1, for the tests of backup repositories in object storage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::error::TestkitError;

/// The environment variable naming the `moto_server` program to use.
pub const MOTO_ENV: &str = "CAIRN_TESTKIT_MOTO";

/// A moto server, stopped (killed) when dropped. Its credentials are moto's defaults: any
/// key is accepted.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("port", &self.port)
            .finish()
    }
}

/// `moto_server`: `$CAIRN_TESTKIT_MOTO`, else on `PATH`, else in the workspace's `.venv`
/// (what `.ci/run` makes).
fn find_moto() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(MOTO_ENV) {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("moto_server");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    venv.is_file().then_some(venv)
}

/// Whether an HTTP server answers on `port` of 127.0.0.1 (any status).
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl MotoServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> Result<MotoServer, TestkitError> {
        Self::start_with(false)
    }

    /// Starts a server that checks credentials as S3 does: it knows no access key, so
    /// every request is refused (403, `InvalidAccessKeyId`), as with wrong credentials.
    pub fn start_refusing_every_key() -> Result<MotoServer, TestkitError> {
        Self::start_with(true)
    }

    fn start_with(check_keys: bool) -> Result<MotoServer, TestkitError> {
        let moto = find_moto().ok_or_else(missing)?;
        // The free port may be taken meanwhile by another test's listener (tests of one
        // process pick ports at once): moto then exits, and it is tried on another port.
        let mut last = None;
        for _ in 0..3 {
            let port =
                crate::try_free_port().map_err(|e| TestkitError::io("find a free port", e))?;
            let child = spawn(&moto, port, check_keys)?;
            let mut server = MotoServer { child, port };
            // Up once it answers HTTP (a bare connect could reach another listener) and
            // is still running.
            let up = crate::poll_until(Duration::from_secs(60), || {
                if server.child.try_wait().ok().flatten().is_some() {
                    return Some(false);
                }
                answers_http(port).then_some(true)
            });
            if up == Some(true) && server.child.try_wait().ok().flatten().is_none() {
                return Ok(server);
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
            last = Some(timeout(format!("moto_server on port {port} to answer")));
        }
        Err(last.unwrap_or_else(|| timeout("moto_server to answer".into())))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a process needs to reach this server as S3 (the standard `AWS_*`
    /// variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates the bucket `name` (S3's `CreateBucket`).
    pub fn create_bucket(&self, name: &str) -> Result<(), TestkitError> {
        let answer = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
            write!(
                s,
                "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.port
            )?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })()
        .map_err(|e| TestkitError::io(format!("create the bucket {name}"), e))?;
        if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(TestkitError::Setup {
                message: format!(
                    "create the bucket {name}: {}",
                    answer.lines().next().unwrap_or("no answer")
                ),
            })
        }
    }

    /// The keys and sizes of every object under `prefix` in `bucket` (S3's ListObjectsV2,
    /// read without an S3 client: the test's own view of what the server holds).
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, TestkitError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&prefix={}", encode(prefix));
            if let Some(t) = &token {
                query.push_str(&format!("&continuation-token={}", encode(t)));
            }
            let body = self.get(&format!("/{bucket}?{query}"))?;
            for item in body.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>").unwrap_or_default();
                let size = between(item, "<Size>", "</Size>")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((unescape(&key), size));
            }
            token = between(&body, "<NextContinuationToken>", "</NextContinuationToken>");
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    fn get(&self, path: &str) -> Result<String, TestkitError> {
        let bytes = self
            .get_bytes(path)
            .map_err(|e| TestkitError::io(format!("GET {path}"), e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn get_bytes(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let at = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
        let body = raw[at..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            return Ok(unchunk(&body));
        }
        Ok(body)
    }

    /// Freezes the server (SIGSTOP): connections are accepted and never answered, as an
    /// object store that hangs. [`MotoServer::resume`] lets it answer again, its objects
    /// kept.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`MotoServer::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let _ = std::process::Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status();
    }

    /// Stops the server at once (SIGKILL), as a crashed object store would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed server again on the same port (its objects are gone: moto keeps
    /// them in memory).
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let moto = find_moto().ok_or_else(missing)?;
        self.child = spawn(&moto, self.port, false)?;
        let port = self.port;
        crate::poll_until(Duration::from_secs(60), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .map(|_| ())
        .ok_or_else(|| timeout(format!("moto_server on port {port} to come back")))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn missing() -> TestkitError {
    TestkitError::MissingBinaries {
        missing: vec![
            "moto_server (pip install 'moto[server]' into .venv, as .ci/run does, or set \
             CAIRN_TESTKIT_MOTO)"
                .into(),
        ],
    }
}

fn timeout(what: String) -> TestkitError {
    TestkitError::Timeout {
        what,
        deadline: Duration::from_secs(60),
        log_tail: None,
    }
}

fn spawn(moto: &Path, port: u16, check_keys: bool) -> Result<Child, TestkitError> {
    let mut c = Command::new(moto);
    if check_keys {
        // moto's own switch: authenticate every request from the first one on.
        c.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
    }
    c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| TestkitError::io(format!("start {}", moto.display()), e))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn between(s: &str, open: &str, close: &str) -> Option<String> {
    let a = s.find(open)? + open.len();
    let b = s[a..].find(close)? + a;
    Some(s[a..b].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The body of an HTTP/1.1 chunked transfer.
fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
}
