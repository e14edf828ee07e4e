//! Files over HTTP: sensenet's `Upload` action (whole or in chunks, as
//! `@sensenet/client-core` sends it) and downloads by the item's own path, by
//! `/binaryhandler.ashx`, and by OData's `.../Binary/$value`.

mod chunk_writer;
pub mod download;
pub mod upload;

pub use download::download;
pub use upload::{upload, Uploads};

/// The binary field named when a request names none.
pub const DEFAULT_PROPERTY: &str = "Binary";

use axum::http::{header, HeaderMap, Method, Uri};
use cairn_store::{ContentTypes, FieldKind, NodeId, NodeRef};

use crate::error::ApiError;
use crate::odata::options::Options;
use crate::odata::path::{self, strip_prefix_ci as strip_ci, Resource};

/// A request for a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileRoute {
    /// An upload into this folder.
    Upload(NodeRef),
    /// A download of a binary field (`Binary` when not named).
    Download(NodeRef, Option<String>),
}

fn decoded(s: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request("the path is not UTF-8"))
}

/// Whether the request is for a file, and which; `None` for everything else.
///
/// - `POST /odata.svc/Root('Folder')/upload`, `POST /odata.svc/Root/Folder/Upload` with a
///   `multipart/form-data` body: an upload (a JSON `POST` to a folder named `Upload`
///   creates an item in it, as before).
/// - `GET|HEAD /odata.svc/<item>/Binary/$value`, `/binaryhandler.ashx?nodeid=ID
///   &propertyname=Binary`, and an item's own path `/Root/...` outside `/odata.svc`.
pub fn route(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    types: &ContentTypes,
) -> Option<Result<FileRoute, ApiError>> {
    let raw = uri.path();
    let reading = method == Method::GET || method == Method::HEAD;
    if raw.eq_ignore_ascii_case("/binaryhandler.ashx") {
        if !reading {
            return None;
        }
        let args = match Options::parse(uri.query(), usize::MAX) {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        let property = args.arg("propertyname").map(str::to_string);
        return Some(match args.arg("nodeid").map(|v| v.trim().parse::<i64>()) {
            Some(Ok(id)) if id > 0 => Ok(FileRoute::Download(NodeRef::Id(NodeId(id)), property)),
            Some(_) => Err(ApiError::bad_request("nodeid is not a content id")),
            None => Err(ApiError::bad_request("binaryhandler.ashx needs ?nodeid=ID")),
        });
    }
    if let Some(below) = strip_ci(raw, "/odata.svc") {
        let multipart = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| strip_ci(v.trim_start(), "multipart/form-data").is_some());
        if !(reading || method == Method::POST && multipart) {
            return None;
        }
        let below = match decoded(below) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let target = path::parse(&below).ok();
        if method == Method::POST {
            let parent = match target.map(|t| (t.resource, t.member)) {
                Some((Resource::Item(at), Some(m))) if m.eq_ignore_ascii_case("upload") => Some(at),
                Some((Resource::Collection(p), None)) => p
                    .rsplit_once('/')
                    .filter(|(_, last)| last.eq_ignore_ascii_case("upload"))
                    .map(|(folder, _)| NodeRef::Path(folder.to_string())),
                _ => None,
            };
            return Some(parent.map(FileRoute::Upload).ok_or_else(|| {
                ApiError::bad_request(
                    "a multipart/form-data POST is an upload: POST it to \
                     /odata.svc/Root/Folder/Upload or /odata.svc/Root('Folder')/upload",
                )
            }));
        }
        let target = target?;
        let (Resource::Item(at), Some(member), true) =
            (target.resource, target.member, target.raw_value)
        else {
            return None;
        };
        let binary = types
            .all_fields()
            .into_iter()
            .any(|f| f.kind == FieldKind::Binary && f.name.eq_ignore_ascii_case(&member));
        return binary.then_some(Ok(FileRoute::Download(at, Some(member))));
    }
    if reading && (raw.eq_ignore_ascii_case("/root") || strip_ci(raw, "/root/").is_some()) {
        return Some(decoded(raw).map(|p| FileRoute::Download(NodeRef::Path(p), None)));
    }
    None
}
