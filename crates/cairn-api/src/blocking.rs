//! Blocking work (the database, the index, files) run off the async threads.

use crate::error::{ApiError, ApiResult};

/// Runs `f` on a blocking thread and gives its result (a panic in it is an internal error).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}
