//! The one HTTP client of a Cairn server: what a web node uses to call the search service
//! and what the command line uses to call a server (`--server URL`). JSON in and out with a
//! bearer credential, sensenet's error body read once ([`ClientError`]), streamed file
//! downloads, and the URL paths of the backup routes, so that every client builds them
//! alike.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

/// What a segment of a URL path keeps as it is: RFC 3986's unreserved characters.
/// Everything else (`#`, `?`, `%`, spaces, non-ASCII) is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// The URL path of backup `name`'s manifest: any name a backup may have reaches the
/// server whole.
pub fn manifest_url_path(name: &str) -> String {
    format!("/backups/{}/manifest.json", segment(name))
}

/// The URL path of the file `path` (`index/abc.idx`, as the manifest names it) of backup
/// `name`: each segment percent-encoded, the separators kept.
pub fn file_url_path(name: &str, path: &str) -> String {
    let mut url = format!("/backups/{}/files", segment(name));
    for part in path.split('/') {
        url.push('/');
        url.extend(segment(part));
    }
    url
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub struct ClientError {
    /// `METHOD URL` of the call.
    pub call: String,
    /// The answer's status; `None` when the server was not reached (or its answer not read).
    pub status: Option<u16>,
    /// The error code of sensenet's error body, when the answer had one.
    pub code: Option<String>,
    /// The error body's message, or what went wrong.
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "{}: {s}: {}", self.call, self.message),
            None => write!(f, "{}: {}", self.call, self.message),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    bearer: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// The most an answer's JSON body may hold.
const MAX_JSON: u64 = 64 << 20;

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8090`) presenting `bearer`. No
    /// limit on a whole call unless a call sets one (a backup file's download may rightly
    /// take hours): a server that stops answering is caught by a minute without a byte.
    pub fn new(base: &str, bearer: &str) -> Self {
        Self::with_read_limit(base, bearer, Some(Duration::from_secs(60)))
    }

    /// [`Client::new`] waiting at most `read_limit` for each read (`None`: as long as the
    /// server takes, for a person who can press Ctrl-C: an integrity check of a large
    /// repository sends nothing for minutes).
    pub fn with_read_limit(base: &str, bearer: &str, read_limit: Option<Duration>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(read_limit)
            .build()
            .new_agent();
        Client {
            base: base.trim_end_matches('/').to_string(),
            bearer: bearer.to_string(),
            agent,
        }
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, its JSON answer; the whole call bounded by `limit` when given.
    pub fn get_json(&self, path: &str, limit: Option<Duration>) -> Result<Value, ClientError> {
        self.call_json("GET", path, None, limit)
    }

    /// `POST path` with the JSON `body`, its JSON answer; bounded by `limit` when given.
    pub fn post_json(
        &self,
        path: &str,
        body: &str,
        limit: Option<Duration>,
    ) -> Result<Value, ClientError> {
        self.call_json("POST", path, Some(body), limit)
    }

    fn call_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        limit: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.bearer);
        let r = match body {
            Some(body) => self
                .agent
                .post(&url)
                .config()
                .timeout_global(limit)
                .build()
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.as_bytes()),
            None => self
                .agent
                .get(&url)
                .config()
                .timeout_global(limit)
                .build()
                .header("Authorization", &auth)
                .call(),
        };
        Self::answer(format!("{method} {url}"), r)
    }

    /// `GET path` as a stream: its declared size (0 when none) and a reader.
    pub fn open(&self, path: &str) -> Result<(u64, Box<dyn Read + Send>), ClientError> {
        let url = self.url(path);
        let call = format!("GET {url}");
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.bearer))
            .call()
            .map_err(|e| unreached(&call, e))?;
        if !resp.status().is_success() {
            // An error answer: its body says why (`answer` gives Ok only for a success).
            let why = Self::answer(call.clone(), Ok(resp));
            return Err(why.err().unwrap_or_else(|| unreached(&call, "no answer")));
        }
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        Ok((size, Box::new(reader)))
    }

    /// The JSON of a successful answer, or the error its body describes.
    fn answer(
        call: String,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut resp = resp.map_err(|e| unreached(&call, e))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_string()
            .map_err(|e| unreached(&call, e))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]["value"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    status.canonical_reason().unwrap_or("failed").to_string()
                } else {
                    t.chars().take(500).collect()
                }
            });
        Err(ClientError {
            call,
            status: Some(status.as_u16()),
            code: value["error"]["code"].as_str().map(str::to_string),
            message,
        })
    }
}

fn unreached(call: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError {
        call: call.to_string(),
        status: None,
        code: None,
        message: e.to_string(),
    }
}
