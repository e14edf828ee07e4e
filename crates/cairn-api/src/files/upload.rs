//! sensenet's `Upload` action: `POST .../Root('Folder')/upload` (or `.../Root/Folder/Upload`)
//! with `multipart/form-data`.
//!
//! - **Whole**: the form fields (`FileName`, `Overwrite`, `PropertyName`, `FileLength`,
//!   `ContentType` — the content type's name, `File` by default) and one file part. The
//!   file is streamed to the blob store's staging folder, hashed as it arrives, made a
//!   blob, its text extracted, and the item saved: it appears only then.
//! - **Chunked** (`UseChunk=true`): a first request with `create=1` answers a chunk token
//!   and stores nothing (its file part, the first chunk, is sent again). Then each chunk
//!   with `ChunkToken` (before the file part) and `Content-Range: bytes a-b/total`, in order
//!   from 0: a gap, an overlap, a range past the total or a total other than `FileLength`
//!   is a 400 and leaves the upload where it was. When the last byte is in, the file is
//!   saved as above; an empty chunk at the end (the client sends one when the size is a
//!   multiple of its chunk size) answers the saved item again.
//! - A chunked upload that receives nothing for `upload_timeout` is abandoned: its staged
//!   bytes are removed.
//!
//! The answer is sensenet's: `{"Url", "Thumbnail_url", "Name", "Length", "Type", "Id"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_store::content::validate_name;
use cairn_store::files::{into_binary, StagedFile};
use cairn_store::{NodeId, NodeRef, SaveBinary};
use serde_json::{json, Value};

use super::chunk_writer::{multipart_error, ChunkFailed, ChunkWriter};
use crate::auth::Caller;
use crate::blocking::blocking;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What the published client sends as the chunk token of a request that has none.
const NO_TOKEN: &str = "0*0*False*False";
/// The longest form field other than the file (a name, a number, a token).
const MAX_FIELD: u64 = 64 << 10;

/// A chunked upload in progress, or just finished.
#[derive(Debug)]
struct Session {
    owner: NodeId,
    /// The folder's path, as it was when the upload began.
    parent: String,
    name: String,
    type_name: String,
    property: String,
    overwrite: bool,
    total: u64,
    media_type: Option<String>,
    /// The staged file's writer (taken while a chunk is received).
    writer: Option<ChunkWriter>,
    touched: Instant,
    /// The answer once the last byte was in (kept for the client's empty last chunk).
    done: Option<Value>,
}

/// The chunked uploads of this server.
#[derive(Debug, Default)]
pub struct Uploads {
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
}

impl Uploads {
    fn get(&self, token: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        self.sessions.lock().ok()?.get(token).cloned()
    }

    fn insert(&self, token: String, s: Session) {
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(token, Arc::new(tokio::sync::Mutex::new(s)));
        }
    }

    fn remove(&self, token: &str) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(token);
        }
    }

    /// Drops the uploads that received nothing for `timeout` (their staged bytes are
    /// removed with them); returns how many.
    pub fn sweep(&self, timeout: Duration) -> usize {
        let Ok(mut m) = self.sessions.lock() else {
            return 0;
        };
        let before = m.len();
        m.retain(|_, s| match s.try_lock() {
            Ok(s) => s.touched.elapsed() < timeout,
            Err(_) => true, // receiving a chunk right now
        });
        before - m.len()
    }
}

/// Removes abandoned uploads (see [`Uploads::sweep`]) and staged files left by a crash,
/// now and then, on a thread of its own, for as long as `state` is alive.
pub fn start_sweeper(state: &AppState) {
    let uploads = Arc::downgrade(&state.uploads);
    let store = Arc::downgrade(&state.store);
    let timeout = state.config.upload_timeout;
    let every = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    let spawned = std::thread::Builder::new()
        .name("upload-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let (Some(uploads), Some(store)) = (uploads.upgrade(), store.upgrade()) else {
                return;
            };
            let swept = uploads.sweep(timeout);
            match store.blobs().sweep_staging(timeout) {
                Ok(n) if n + swept > 0 => {
                    tracing::info!(uploads = swept, files = n, "abandoned uploads removed")
                }
                Err(e) => tracing::warn!("removing abandoned uploads: {e}"),
                _ => {}
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no thread to remove abandoned uploads: {e}");
    }
}

/// `Content-Range: bytes a-b/total`; an empty range is `bytes total-(total-1)/total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChunkRange {
    start: u64,
    /// One past the last byte.
    end: u64,
    total: u64,
}

fn parse_content_range(v: &str) -> Option<ChunkRange> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let last: i128 = b.trim().parse().ok()?;
    let total: u64 = total.trim().parse().ok()?;
    let end = u64::try_from(last + 1).ok()?;
    (end >= start).then_some(ChunkRange { start, end, total })
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// The form's text fields, by lower-cased name.
#[derive(Debug, Default)]
struct Form(HashMap<String, String>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }
    fn length(&self) -> ApiResult<Option<u64>> {
        self.get("FileLength")
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(format!("FileLength {v:?} is not a number of bytes")))
            })
            .transpose()
    }
}

/// The file part as received.
struct Part {
    file_name: Option<String>,
    media_type: Option<String>,
    /// Staged here unless it went straight into a chunked upload.
    staged: Option<StagedFile>,
    len: u64,
}

/// `POST` of an upload into the folder at `parent`.
pub async fn upload(
    state: AppState,
    caller: Caller,
    parent: NodeRef,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let timeout = state.config.upload_timeout;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        bad("an upload is multipart/form-data (fields FileName, FileLength, ... and the file)")
    })?;
    let range = match headers.get(header::CONTENT_RANGE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(parse_content_range)
                .ok_or_else(|| bad("Content-Range is not `bytes first-last/total`"))?,
        ),
    };
    // A chunk is bounded as any request body; a whole file by its own limit.
    let limit = if range.is_some() {
        state.config.max_body_bytes as u64
    } else {
        state.config.max_upload_bytes
    };
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit.saturating_add(MAX_FIELD * 16))
            .per_field(limit),
    );
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let blobs = state.store.blobs();
    let mut form = Form::default();
    let mut part: Option<Part> = None;
    let mut session: Option<(String, Arc<tokio::sync::Mutex<Session>>)> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let file_name = field.file_name().map(str::to_string);
        let Some(file_name) = file_name else {
            let name = field.name().unwrap_or("").to_ascii_lowercase();
            let mut value = Vec::new();
            while let Some(b) = field.chunk().await.map_err(multipart_error)? {
                value.extend_from_slice(&b);
                if value.len() as u64 > MAX_FIELD {
                    return Err(bad(format!("the form field {name:?} is too long")));
                }
            }
            let value = String::from_utf8(value)
                .map_err(|_| bad(format!("the form field {name:?} is not UTF-8")))?;
            if name == "chunktoken" && value != NO_TOKEN && session.is_none() {
                let s = state.uploads.get(&value).ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no chunked upload with token {value:?} (finished, abandoned after \
                         {timeout:?} without a chunk, or begun on another server)"
                    ))
                })?;
                session = Some((value.clone(), s));
            }
            form.0.insert(name, value);
            continue;
        };
        if part.is_some() {
            return Err(bad("an upload holds one file part"));
        }
        let media_type = field.content_type().map(|m| m.essence_str().to_string());
        let staged = match &session {
            Some((_, s)) => {
                // A chunk goes straight into its upload, checked first.
                let mut s = s.clone().lock_owned().await;
                if s.owner != caller.user {
                    return Err(ApiError::forbidden("this chunked upload is another user's"));
                }
                let Some(range) = range else {
                    return Err(bad("a chunk needs Content-Range: bytes first-last/total"));
                };
                s.touched = Instant::now();
                if s.done.is_some() {
                    if range.start == s.total && range.end == s.total {
                        part = Some(Part {
                            file_name: Some(file_name),
                            media_type,
                            staged: None,
                            len: 0,
                        });
                        continue;
                    }
                    return Err(bad("this upload is complete; it takes no more bytes"));
                }
                check_chunk(&s, range, form.length()?)?;
                let Some(writer) = s.writer.as_mut() else {
                    return Err(ApiError::conflict("the upload is receiving another chunk"));
                };
                let len = match writer.receive(&mut field, range.end - range.start).await {
                    Ok(len) => len,
                    Err(ChunkFailed::Refused(e)) => return Err(e),
                    Err(ChunkFailed::Lost(e)) => {
                        // The staged file went with the failed writer: the upload is lost.
                        state.uploads.remove(&session_token(&session));
                        return Err(e);
                    }
                };
                part = Some(Part {
                    file_name: Some(file_name),
                    media_type,
                    staged: None,
                    len,
                });
                continue;
            }
            None => StagedFile::create(&*blobs)?,
        };
        let (staged, len) = ChunkWriter::receive_whole(&mut field, staged, limit).await?;
        part = Some(Part {
            file_name: Some(file_name),
            media_type,
            staged: Some(staged),
            len,
        });
    }
    let caller_id = caller.user;
    if let Some((token, s)) = session {
        let part = part.ok_or_else(|| bad("the chunk has no file part"))?;
        if part.staged.is_some() {
            return Err(bad("ChunkToken comes before the file part of a chunk"));
        }
        let mut s = s.lock_owned().await;
        if let Some(done) = &s.done {
            return Ok(Json(done.clone()).into_response());
        }
        let written = s.writer.as_ref().map_or(0, ChunkWriter::received);
        if written < s.total {
            return Ok(Json(progress(&s, written, part.len)).into_response());
        }
        let writer = s
            .writer
            .take()
            .ok_or_else(|| ApiError::internal("a complete upload without its file"))?;
        let staged = match writer.finish().await {
            Ok(staged) => staged,
            Err(e) => {
                drop(s);
                state.uploads.remove(&token);
                return Err(e);
            }
        };
        let pending = Pending {
            parent: NodeRef::Path(s.parent.clone()),
            name: s.name.clone(),
            type_name: s.type_name.clone(),
            property: s.property.clone(),
            media_type: s.media_type.clone(),
            overwrite: s.overwrite,
        };
        match finish(&state, staged, pending, caller_id).await {
            Ok(answer) => {
                s.done = Some(answer.clone());
                Ok(Json(answer).into_response())
            }
            Err(e) => {
                drop(s);
                state.uploads.remove(&token);
                Err(e)
            }
        }
    } else {
        let part = part.ok_or_else(|| bad("the upload has no file part"))?;
        let name = form
            .get("FileName")
            .map(str::to_string)
            .or(part.file_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("the upload names no file (FileName)"))?;
        validate_name(&name).map_err(ApiError::from)?;
        let type_name = form.get("ContentType").unwrap_or("File").to_string();
        let property = form
            .get("PropertyName")
            .filter(|p| !p.is_empty())
            .unwrap_or(super::DEFAULT_PROPERTY)
            .to_string();
        let declared = form.length()?;
        if form.flag("UseChunk") && form.get("create").is_some_and(|c| c == "1") {
            // The first request of a chunked upload: checked, remembered, nothing stored.
            let total = declared
                .or(range.map(|r| r.total))
                .ok_or_else(|| bad("a chunked upload declares its FileLength"))?;
            if let Some(r) = range {
                if r.total != total {
                    return Err(bad(format!(
                        "Content-Range says {} bytes in all, FileLength {total}",
                        r.total
                    )));
                }
            }
            let st = state.clone();
            let (staged, parent) = blocking(move || {
                let folder = st
                    .store
                    .node(&parent)?
                    .ok_or_else(|| ApiError::not_found(format!("content not found: {parent}")))?;
                let t = st.store.types().get(&folder.type_name)?;
                if !t.is("Folder") {
                    return Err(bad(format!(
                        "files are uploaded into folders; {} is a {}",
                        folder.path, folder.type_name
                    )));
                }
                Ok((StagedFile::create(&*st.store.blobs())?, folder.path))
            })
            .await?;
            let token = uuid::Uuid::new_v4().simple().to_string();
            state.uploads.insert(
                token.clone(),
                Session {
                    owner: caller_id,
                    parent,
                    name,
                    type_name,
                    property,
                    overwrite: form.flag("Overwrite"),
                    total,
                    media_type: part.media_type,
                    writer: Some(ChunkWriter::start(staged)),
                    touched: Instant::now(),
                    done: None,
                },
            );
            return Ok(token.into_response());
        }
        let staged = part
            .staged
            .ok_or_else(|| ApiError::internal("a whole upload without its file"))?;
        if let Some(d) = declared {
            if d != part.len {
                return Err(bad(format!(
                    "FileLength says {d} bytes; the file part held {}; nothing was stored",
                    part.len
                )));
            }
        }
        let pending = Pending {
            parent,
            name,
            type_name,
            property,
            media_type: part.media_type,
            overwrite: form.flag("Overwrite"),
        };
        Ok(Json(finish(&state, staged, pending, caller_id).await?).into_response())
    }
}

fn session_token(s: &Option<(String, Arc<tokio::sync::Mutex<Session>>)>) -> String {
    s.as_ref().map(|(t, _)| t.clone()).unwrap_or_default()
}

/// A chunk must continue the upload exactly: from the next byte, within the total.
fn check_chunk(s: &Session, r: ChunkRange, declared: Option<u64>) -> ApiResult<()> {
    let written = s.writer.as_ref().map_or(0, ChunkWriter::received);
    if r.total != s.total || declared.is_some_and(|d| d != s.total) {
        return Err(bad(format!(
            "the upload was declared {} bytes long; this chunk says {}",
            s.total,
            declared.filter(|d| *d != s.total).unwrap_or(r.total)
        )));
    }
    if r.end > s.total {
        return Err(bad(format!(
            "Content-Range ends at byte {} past the declared length {}",
            r.end, s.total
        )));
    }
    if r.start != written {
        return Err(bad(format!(
            "the next chunk starts at byte {written}; this one at {} (a gap or an overlap)",
            r.start
        )));
    }
    Ok(())
}

fn progress(s: &Session, written: u64, chunk: u64) -> Value {
    json!({
        "Url": format!("{}/{}", s.parent, s.name),
        "Name": s.name,
        "Length": written,
        "ChunkLength": chunk,
        "Type": s.type_name,
        "Id": Value::Null,
        "Finished": false,
    })
}

/// Makes the staged file a blob (its text extracted) and saves the item; answers when
/// the item is searchable, in sensenet's shape.
async fn finish(
    state: &AppState,
    staged: StagedFile,
    upload: Pending,
    by: NodeId,
) -> ApiResult<Value> {
    let st = state.clone();
    let (written, length) = blocking(move || {
        let blobs = st.store.blobs();
        let value = into_binary(&*blobs, staged, &upload.name, upload.media_type.as_deref())?;
        let size = value.size;
        let save = SaveBinary {
            parent: upload.parent,
            name: upload.name,
            type_name: upload.type_name,
            property: upload.property,
            value,
            overwrite: upload.overwrite,
        };
        Ok((st.store.save_binary(&save, by)?, size))
    })
    .await?;
    let s = state.clone();
    let activity = written.activity;
    blocking(move || {
        crate::odata::handlers::searchable(&s, activity);
        Ok(())
    })
    .await?;
    let node = written.value;
    Ok(json!({
        "Url": node.path,
        "Thumbnail_url": node.path,
        "Name": node.name,
        "Length": length,
        "Type": node.type_name,
        "Id": node.id.0,
    }))
}

/// What is known of an upload before its bytes are a blob.
struct Pending {
    parent: NodeRef,
    name: String,
    type_name: String,
    property: String,
    media_type: Option<String>,
    overwrite: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_as_the_client_sends_them() {
        let r = parse_content_range("bytes 0-999999/2500000").unwrap();
        assert_eq!((r.start, r.end, r.total), (0, 1_000_000, 2_500_000));
        // The empty last chunk of a file whose size is a multiple of the chunk size.
        let r = parse_content_range("bytes 1000000-999999/1000000").unwrap();
        assert_eq!((r.start, r.end), (1_000_000, 1_000_000));
        for bad in [
            "",
            "bytes",
            "bytes 5-3/10",
            "bytes a-b/c",
            "items 0-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
