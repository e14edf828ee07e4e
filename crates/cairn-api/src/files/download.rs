//! Downloads of a binary field: streamed from the blob store with `Content-Type`,
//! `Content-Length`, `ETag` (the blob's hash; `If-None-Match` answers 304),
//! `Content-Disposition`, and one `Range` (206; 416 when it is past the end).

use std::io::{Read, Seek, SeekFrom};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use cairn_store::{FieldKind, FieldValue, NodeRef};

use crate::auth::Caller;
use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use crate::metrics::RouteLabel;
use crate::state::AppState;

/// Bytes read from the blob store at a time.
const PIECE: usize = 256 << 10;

/// The byte range asked for, within a blob of `len` bytes: `Ok(None)` for the whole,
/// `Err(())` when it cannot be served (416). Only one range is served; a list of several
/// is answered whole, as RFC 9110 allows.
fn wanted(range: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len
        } else {
            let last: u64 = b.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            last.saturating_add(1).min(len)
        };
        (start, end)
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// What RFC 8187 leaves unencoded in `filename*` (its attr-char).
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `filename="ascii"; filename*=UTF-8''percent-encoded`.
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, ATTR_CHAR);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Answers the binary field `property` (`Binary` when `None`) of the item `at`.
pub async fn download(
    state: AppState,
    _caller: Caller,
    at: NodeRef,
    property: Option<String>,
    method: Method,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let st = state.clone();
    let (value, reader, len) = blocking(move || {
        let node = st
            .store
            .node(&at)?
            .ok_or_else(|| ApiError::not_found(format!("content not found: {at}")))?;
        let property = property.unwrap_or_else(|| super::DEFAULT_PROPERTY.to_string());
        let t = st.store.types().get(&node.type_name)?;
        let def = t
            .fields
            .iter()
            .find(|f| f.kind == FieldKind::Binary && f.name.eq_ignore_ascii_case(&property))
            .ok_or_else(|| {
                ApiError::not_found(format!("{} has no binary field {property:?}", node.path))
            })?;
        let Some(FieldValue::Binary(value)) = node.fields.get(def.name).cloned() else {
            return Err(ApiError::not_found(format!(
                "{} has no {} uploaded",
                node.path, def.name
            )));
        };
        let (reader, len) = st.store.blobs().open(&value.hash)?.ok_or_else(|| {
            ApiError::internal(format!(
                "the blob {} of {} is missing from the blob store",
                value.hash, node.path
            ))
        })?;
        Ok((value, reader, len))
    })
    .await?;
    let etag = format!("\"{}\"", value.hash);
    let mut b = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, no-cache");
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return finish(b.status(StatusCode::NOT_MODIFIED).body(Body::empty()));
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match wanted(range, len) {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((s, e))) => {
            b = b.header(
                header::CONTENT_RANGE,
                format!("bytes {s}-{}/{len}", e.saturating_sub(1)),
            );
            (StatusCode::PARTIAL_CONTENT, s, e)
        }
        Err(()) => {
            return finish(
                b.status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty()),
            )
        }
    };
    let content_type = HeaderValue::from_str(&value.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    b = b
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::CONTENT_DISPOSITION, disposition(&value.file_name));
    if method == Method::HEAD {
        return finish(b.body(Body::empty()));
    }
    finish(b.body(stream(reader, start, end)))
}

fn finish(r: Result<Response, axum::http::Error>) -> ApiResult<Response> {
    let mut r = r.map_err(ApiError::internal)?;
    r.extensions_mut().insert(RouteLabel("download"));
    Ok(r)
}

/// The bytes `start..end` of `reader`, read on a blocking thread a piece at a time while
/// the client takes them (at most a few pieces are buffered).
fn stream(mut reader: Box<dyn cairn_store::files::BlobReader>, start: u64, end: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = reader.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = end - start;
        while left > 0 {
            let mut buf = vec![0u8; PIECE.min(left as usize)];
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the blob ended early",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(bytes::Bytes::from(buf))).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(wanted(None, 10), Ok(None));
        assert_eq!(wanted(Some("bytes=0-3"), 10), Ok(Some((0, 4))));
        assert_eq!(wanted(Some("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(wanted(Some("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(wanted(Some("bytes=8-100"), 10), Ok(Some((8, 10))));
        assert_eq!(wanted(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(wanted(Some("bytes=10-"), 10), Err(()));
        assert_eq!(wanted(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(wanted(Some("bytes=-0"), 10), Err(()));
        assert_eq!(wanted(Some("bytes=x-"), 10), Err(()));
        assert_eq!(wanted(Some("bytes=0-"), 0), Err(()));
        assert_eq!(wanted(Some("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn dispositions_name_the_file_safely() {
        assert_eq!(
            disposition("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        assert!(disposition("é\"x.pdf").starts_with("attachment; filename=\"__x.pdf\""));
    }
}
