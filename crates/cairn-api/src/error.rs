//! The one place where errors become HTTP statuses and sensenet error bodies:
//! `{"error":{"code":"...","exceptiontype":"...","message":{"lang":"en-us","value":"..."}}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_index::IndexError;
use cairn_store::StoreError;
use serde_json::json;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// sensenet's error code (`NotFound`, `InvalidContentQuery`, ...).
    pub code: &'static str,
    /// sensenet's exception type name.
    pub exception: &'static str,
    /// The message shown to the client (no internals for 5xx).
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        exception: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            exception,
            message: message.into(),
        }
    }
    /// 400 for bad input.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "InvalidOperationException",
            message,
        )
    }
    /// 400 for a bad content query or `$filter`.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidContentQuery",
            "InvalidContentQueryException",
            message,
        )
    }
    /// 400 for a backup target that is not a plain folder name.
    pub fn bad_backup_target(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidBackupTarget",
            "ArgumentException",
            message,
        )
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "ContentNotFoundException",
            message,
        )
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "UnauthorizedAccessException",
            "authentication required: send Authorization: Bearer <api key> or Basic credentials",
        )
    }
    /// 401 from the search service, which takes only its shared secret.
    pub fn wrong_secret() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "UnauthorizedAccessException",
            "the search service takes only its shared secret: send Authorization: Bearer \
             <search secret> (the web nodes' --search-secret)",
        )
    }
    /// 401 for credentials that were sent and not accepted. Which part was wrong (key,
    /// login, password, a disabled user) is not said.
    pub fn rejected_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "UnauthorizedAccessException",
            "the credentials were not accepted (API key, or login and password of an enabled user)",
        )
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "SenseNetSecurityException",
            message,
        )
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            "NodeAlreadyExistsException",
            message,
        )
    }
    /// 500: the details go to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "Exception",
            "internal error; see the server log",
        )
    }
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Exception",
            message,
        )
    }
    /// 507: a disk is full. Nothing of the request was written; the message names the
    /// disk (what could not be written) and what to do.
    pub fn insufficient_storage(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            "IOException",
            format!("{detail}; nothing was written: free space on that disk and try again"),
        )
    }
    /// The error for a bare status that arrived without a body (rejections, limits).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ("RequestTooLarge", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT => ("RequestTimeout", "the request took too long"),
            StatusCode::METHOD_NOT_ALLOWED => ("MethodNotAllowed", "method not allowed here"),
            StatusCode::NOT_FOUND => ("NotFound", "no such resource"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("UnsupportedMediaType", "unsupported content type")
            }
            s if s.is_server_error() => ("InternalError", "internal error; see the server log"),
            _ => ("InvalidRequest", "the request is not valid"),
        };
        Self::new(status, code, "Exception", message)
    }
}

/// Gives an error answer that is not already JSON (an extractor's rejection, a limit, a
/// timeout, a missing route) sensenet's error body, so that every error of every Cairn
/// server has one shape. A client error keeps its short text as the message (what was
/// wrong with the request); a server error's text stays in the log.
pub async fn with_error_body(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let mut error = ApiError::from_status(status);
    if status.is_client_error() {
        if let Ok(bytes) = axum::body::to_bytes(body, 4096).await {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if !text.is_empty() {
                error.message = text;
            }
        }
    }
    let mut out = error.into_response();
    // Keep what the handlers attached (the metrics' route label).
    *out.extensions_mut() = parts.extensions;
    out
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "exceptiontype": self.exception,
            "message": {"lang": "en-us", "value": self.message},
        }});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 asks a 401 to name the schemes it takes. Bearer only: a Basic
            // challenge would make browsers pop up a login over a web client's own form.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        if e.is_unavailable() {
            // Not a fault of this server nor of the request: a 503 a client can retry.
            tracing::warn!("the database is not reachable: {msg}");
            return ApiError::unavailable(format!(
                "the database is not reachable ({msg}); try again when it is back"
            ));
        }
        match e {
            _ if e.is_disk_full() => ApiError::insufficient_storage(msg),
            StoreError::Forbidden(_) => ApiError::forbidden(msg),
            StoreError::NotFound(_) => ApiError::not_found(msg),
            StoreError::AlreadyExists(_) => ApiError::conflict(msg),
            StoreError::LoginTaken(_) => ApiError::new(
                StatusCode::CONFLICT,
                "LoginNameExists",
                "InvalidOperationException",
                msg,
            ),
            StoreError::InvalidName { .. } | StoreError::InvalidPath { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidName",
                "InvalidPathException",
                msg,
            ),
            StoreError::UnknownType(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "UnknownContentType",
                "InvalidOperationException",
                msg,
            ),
            StoreError::UnknownField { .. }
            | StoreError::InvalidValue { .. }
            | StoreError::ReadOnlyField(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidField",
                "InvalidContentException",
                msg,
            ),
            StoreError::NotAllowed(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "NotAllowed",
                "InvalidOperationException",
                msg,
            ),
            // S3 unreachable or refusing: retryable, like a storage error of a backup.
            StoreError::BlobStore(_) => ApiError::unavailable(msg),
            other => ApiError::internal(other),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::InvalidSearch(m) => ApiError::bad_query(m),
            IndexError::Store(s) => s.into(),
            IndexError::ShuttingDown => ApiError::unavailable("the server is shutting down"),
            other => ApiError::internal(other),
        }
    }
}

impl From<cairn_backup::BackupError> for ApiError {
    fn from(e: cairn_backup::BackupError) -> Self {
        use cairn_backup::BackupError as B;
        let msg = e.to_string();
        match e {
            B::BadTarget(_) => ApiError::bad_backup_target(msg),
            B::TargetExists(_) | B::Busy(_) => ApiError::conflict(msg),
            B::NotFound(_) => ApiError::not_found(msg),
            B::Invalid(_) | B::OtherRepository { .. } | B::Refused(_) => ApiError::bad_request(msg),
            B::Storage(_) => ApiError::unavailable(msg),
            other => ApiError::internal(other),
        }
    }
}

impl From<cairn_search::SearchError> for ApiError {
    fn from(e: cairn_search::SearchError) -> Self {
        match e {
            cairn_search::SearchError::Query(q) => q.into(),
            cairn_search::SearchError::Index(i) => i.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<cairn_query::QueryError> for ApiError {
    fn from(e: cairn_query::QueryError) -> Self {
        ApiError::bad_query(e.to_string())
    }
}

/// Result alias of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
