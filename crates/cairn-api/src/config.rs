//! Settings of the HTTP API, each with a sane default.

use std::time::Duration;

/// Limits and behaviour of the API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The administrator's API key (`Authorization: Bearer <key>`).
    pub admin_key: String,
    /// The most items one collection or query answer holds; a larger `$top` is clamped.
    pub max_top: usize,
    /// The largest request body, in bytes (413 above); also the largest chunk of a
    /// chunked upload.
    pub max_body_bytes: usize,
    /// The largest file uploaded whole (in one request, not in chunks), in bytes.
    pub max_upload_bytes: u64,
    /// How long a chunked upload may wait for its next chunk before it is abandoned and
    /// its bytes removed.
    pub upload_timeout: Duration,
    /// The longest `query` / `$filter` text, in bytes (400 above).
    pub max_query_bytes: usize,
    /// How long a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// How long a write waits for its change to be searchable before it answers anyway.
    pub searchable_timeout: Duration,
    /// Whether `/metrics` asks for the administrator's key (it is open by default, as
    /// Prometheus expects).
    pub metrics_need_key: bool,
    /// How long an admin console session lasts without a request.
    pub admin_session_idle: Duration,
    /// Whether the server sits behind TLS (a proxy that terminates it): the admin
    /// console's cookie is then `Secure`.
    pub behind_tls: bool,
}

impl ApiConfig {
    /// Defaults with the given administrator key.
    pub fn new(admin_key: String) -> Self {
        ApiConfig {
            admin_key,
            max_top: 10_000,
            max_body_bytes: 10 << 20,
            max_upload_bytes: 1 << 30,
            upload_timeout: Duration::from_secs(3600),
            max_query_bytes: 16 << 10,
            request_timeout: Duration::from_secs(60),
            searchable_timeout: Duration::from_secs(10),
            metrics_need_key: false,
            admin_session_idle: Duration::from_secs(30 * 60),
            behind_tls: false,
        }
    }
}
