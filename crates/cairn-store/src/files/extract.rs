//! The text of a file, for the index: what `query=apple` searches in an uploaded document.
//!
//! Extraction runs once, when the file is saved, and its text is stored with the binary
//! value (as sensenet keeps an item's index document in its database): rebuilding an index,
//! a search service on another machine and a restore need no blob to index the item. It is
//! bounded in bytes read, characters kept and time; a file that fails is saved and indexed
//! without its text, and the value says why.
//!
//! Formats: `text/*` (plain, Markdown, CSV, ...), JSON and XML, read as UTF-8 (invalid
//! bytes replaced). Others are saved without text.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Bounds of one extraction.
#[derive(Clone, Copy, Debug)]
pub struct ExtractLimits {
    /// Bytes of the file read at most.
    pub max_read: u64,
    /// Characters of text kept at most.
    pub max_chars: usize,
    /// Time allowed.
    pub timeout: Duration,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_read: 16 << 20,
            max_chars: 1 << 20,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Extracted text, and why it is missing or partial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The text (may be empty).
    pub text: String,
    /// Why there is no text, or only part of it.
    pub note: Option<String>,
}

/// True when the media type (or, failing that, the file name) is one whose text is read.
fn is_textual(content_type: &str, file_name: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct.starts_with("text/")
        || matches!(
            ct.as_str(),
            "application/json" | "application/xml" | "application/x-ndjson"
        )
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
    {
        return true;
    }
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "txt" | "md" | "markdown" | "csv" | "tsv" | "json" | "xml" | "log" | "html" | "htm"
    )
}

/// The media type for a file name, when the uploader gave none.
pub fn guess_content_type(file_name: &str) -> &'static str {
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The text of the file at `path`, within `limits`. Never fails: a failure is a note.
pub fn extract_text(
    path: &Path,
    content_type: &str,
    file_name: &str,
    limits: ExtractLimits,
) -> Extracted {
    if !is_textual(content_type, file_name) {
        return Extracted::default();
    }
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    // A thread of its own, so that a slow extraction is given up on at the time limit; it
    // reads at most `max_read` bytes, so an abandoned one ends soon after.
    let spawned = std::thread::Builder::new()
        .name("extract".into())
        .spawn(move || {
            let _ = tx.send(read_text(&path, limits));
        });
    if let Err(e) = spawned {
        return Extracted {
            text: String::new(),
            note: Some(format!("no thread for the extraction: {e}")),
        };
    }
    match rx.recv_timeout(limits.timeout) {
        Ok(x) => x,
        Err(_) => Extracted {
            text: String::new(),
            note: Some(format!(
                "text extraction took longer than {:?}; indexed without its text",
                limits.timeout
            )),
        },
    }
}

fn read_text(path: &Path, limits: ExtractLimits) -> Extracted {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| {
        f.take(limits.max_read.saturating_add(1))
            .read_to_end(&mut bytes)
    });
    if let Err(e) = read {
        return Extracted {
            text: String::new(),
            note: Some(format!("the file could not be read for its text: {e}")),
        };
    }
    let mut note = None;
    if bytes.len() as u64 > limits.max_read {
        bytes.truncate(limits.max_read as usize);
        note = Some(format!(
            "only the first {} bytes were read for the text",
            limits.max_read
        ));
    }
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if let Some((cut, _)) = text.char_indices().nth(limits.max_chars) {
        text.truncate(cut);
        note = Some(format!(
            "the text was cut at {} characters",
            limits.max_chars
        ));
    }
    Extracted { text, note }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_read_within_bounds_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.md");
        std::fs::write(&p, "# apple\nbanana é").unwrap();
        let x = extract_text(&p, "", "a.md", ExtractLimits::default());
        assert_eq!(x.text, "# apple\nbanana é");
        assert_eq!(x.note, None);
        let x = extract_text(&p, "image/png", "a.png", ExtractLimits::default());
        assert_eq!(x, Extracted::default());
        let small = ExtractLimits {
            max_read: 4,
            ..ExtractLimits::default()
        };
        let x = extract_text(&p, "text/markdown", "a", small);
        assert_eq!(x.text, "# ap");
        assert!(x.note.unwrap().contains("first 4 bytes"));
        let few = ExtractLimits {
            max_chars: 3,
            ..ExtractLimits::default()
        };
        let x = extract_text(&p, "text/plain", "a", few);
        assert_eq!(x.text, "# a");
        let x = extract_text(&dir.path().join("gone.txt"), "text/plain", "gone.txt", few);
        assert!(x.text.is_empty() && x.note.is_some());
        assert_eq!(guess_content_type("R.PDF"), "application/pdf");
    }
}
