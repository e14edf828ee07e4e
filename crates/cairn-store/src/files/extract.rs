//! The text of a file, for the index: what `query=apple` searches in an uploaded document.
//!
//! Extraction runs once, when the file is saved, and its text is stored with the binary
//! value (as sensenet keeps an item's index document in its database): rebuilding an index,
//! a search service on another machine and a restore need no blob to index the item. It is
//! bounded in bytes read, characters kept and time; a file that fails is saved and indexed
//! without its text, and the value says why.
//!
//! Formats, each by a well-kept crate:
//! - `text/*` (plain, Markdown, CSV, ...), JSON and XML: read as UTF-8 (invalid bytes
//!   replaced);
//! - HTML: its text, without tags, scripts and styles (quick-xml, in its lenient mode);
//! - PDF: pdf-extract;
//! - DOCX: the text runs of `word/document.xml` (zip, quick-xml).
//!
//! Others are saved without text.

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

/// The formats whose text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Html,
    Pdf,
    Docx,
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// The format of a file, by its media type or, failing that, its name.
fn format_of(content_type: &str, file_name: &str) -> Option<Format> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "text/html" | "application/xhtml+xml" => return Some(Format::Html),
        "application/pdf" => return Some(Format::Pdf),
        DOCX => return Some(Format::Docx),
        "application/json" | "application/xml" | "application/x-ndjson" => {
            return Some(Format::Text)
        }
        c if c.starts_with("text/") || c.ends_with("+json") || c.ends_with("+xml") => {
            return Some(Format::Text)
        }
        _ => {}
    }
    let ext = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" | "markdown" | "csv" | "tsv" | "json" | "xml" | "log" => Some(Format::Text),
        "html" | "htm" => Some(Format::Html),
        "pdf" => Some(Format::Pdf),
        "docx" => Some(Format::Docx),
        _ => None,
    }
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
        "docx" => DOCX,
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
    let Some(format) = format_of(content_type, file_name) else {
        return Extracted::default();
    };
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    // A thread of its own, so that a slow extraction is given up on at the time limit; it
    // reads at most `max_read` bytes, so an abandoned one ends soon after.
    let spawned = std::thread::Builder::new()
        .name("extract".into())
        .spawn(move || {
            let _ = tx.send(read_text(&path, format, limits));
        });
    if let Err(e) = spawned {
        return Extracted {
            text: String::new(),
            note: Some(format!("no thread for the extraction: {e}")),
        };
    }
    match rx.recv_timeout(limits.timeout) {
        Ok(x) => x,
        Err(mpsc::RecvTimeoutError::Disconnected) => Extracted {
            text: String::new(),
            note: Some("the text extractor failed on this file; indexed without its text".into()),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => Extracted {
            text: String::new(),
            note: Some(format!(
                "text extraction took longer than {:?}; indexed without its text",
                limits.timeout
            )),
        },
    }
}

fn failed(why: impl std::fmt::Display) -> Extracted {
    Extracted {
        text: String::new(),
        note: Some(format!("no text could be extracted: {why}")),
    }
}

fn read_text(path: &Path, format: Format, limits: ExtractLimits) -> Extracted {
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
        if matches!(format, Format::Pdf | Format::Docx) {
            // Half a PDF or a zip cannot be read at all.
            return failed(format!(
                "the file is larger than the {} bytes read for text",
                limits.max_read
            ));
        }
        bytes.truncate(limits.max_read as usize);
        note = Some(format!(
            "only the first {} bytes were read for the text",
            limits.max_read
        ));
    }
    let text = match format {
        Format::Text => String::from_utf8_lossy(&bytes).into_owned(),
        Format::Html => markup_text(
            &String::from_utf8_lossy(&bytes),
            &HTML_SKIPPED,
            &HTML_BREAKS,
        ),
        Format::Pdf => match pdf_extract::extract_text_from_mem(&bytes) {
            Ok(t) => t,
            Err(e) => return failed(format!("PDF: {e}")),
        },
        Format::Docx => match docx_xml(&bytes, limits.max_read) {
            Ok(xml) => markup_text(&xml, &[], &["w:p", "w:br", "w:tab"]),
            Err(e) => return failed(format!("DOCX: {e}")),
        },
    };
    let mut text = text;
    if let Some((cut, _)) = text.char_indices().nth(limits.max_chars) {
        text.truncate(cut);
        note = Some(format!(
            "the text was cut at {} characters",
            limits.max_chars
        ));
    }
    Extracted { text, note }
}

/// Elements of HTML whose content is not text.
const HTML_SKIPPED: [&str; 4] = ["script", "style", "head", "noscript"];
/// Elements of HTML that end a line of text.
const HTML_BREAKS: [&str; 12] = [
    "p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "title",
];

/// The text of XML or HTML (read leniently: unclosed and stray tags are taken as they
/// come), without the content of `skipped` elements, a line break after each of `breaks`.
fn markup_text(markup: &str, skipped: &[&str], breaks: &[&str]) -> String {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(markup);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.expand_empty_elements = false;
    let mut out = String::new();
    let mut skipping: Option<Vec<u8>> = None;
    let name_is =
        |n: &[u8], list: &[&str]| list.iter().any(|l| l.as_bytes().eq_ignore_ascii_case(n));
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let n = e.name().as_ref().to_vec();
                if skipping.is_none() && name_is(&n, skipped) {
                    skipping = Some(n);
                }
            }
            Ok(Event::End(e)) => {
                let n = e.name();
                if skipping
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(n.as_ref()))
                {
                    skipping = None;
                } else if name_is(n.as_ref(), breaks) {
                    out.push('\n');
                }
            }
            Ok(Event::Empty(e)) => {
                if skipping.is_none() && name_is(e.name().as_ref(), breaks) {
                    out.push(if e.name().as_ref() == b"w:tab" {
                        '\t'
                    } else {
                        '\n'
                    });
                }
            }
            Ok(Event::Text(t)) if skipping.is_none() => {
                if let Ok(s) = t.decode() {
                    out.push_str(&s);
                }
            }
            Ok(Event::CData(t)) if skipping.is_none() => {
                out.push_str(&String::from_utf8_lossy(&t));
            }
            Ok(Event::GeneralRef(r)) if skipping.is_none() => {
                let named = r.decode().unwrap_or_default();
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match named.as_ref() {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => Some(' '),
                    },
                };
                out.extend(c);
            }
            Ok(Event::Eof) => break,
            // Past what cannot be read, the rest is left out: the text so far is kept.
            Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// `word/document.xml` of the DOCX file `bytes`, read at most `max` bytes of it.
fn docx_xml(bytes: &[u8], max: u64) -> Result<String, String> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let doc = archive
        .by_name("word/document.xml")
        .map_err(|e| format!("no word/document.xml: {e}"))?;
    let mut xml = Vec::new();
    doc.take(max)
        .read_to_end(&mut xml)
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&xml).into_owned())
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

    #[test]
    fn html_pdf_and_docx_give_their_text() {
        let dir = tempfile::tempdir().unwrap();
        let html = dir.path().join("a.html");
        std::fs::write(
            &html,
            "<!DOCTYPE html><html><head><title>T</title><style>p{x:1}</style></head>\
             <body><p>Fish &amp; chips<br>caf&#233; <b>zanzibar</b><script>var no=1;</script>\
             <p>unclosed <img src=x> end</body></html>",
        )
        .unwrap();
        let x = extract_text(&html, "text/html", "a.html", ExtractLimits::default());
        assert!(x.text.contains("Fish & chips"), "{:?}", x.text);
        assert!(x.text.contains("café zanzibar"), "{:?}", x.text);
        assert!(x.text.contains("unclosed"), "{:?}", x.text);
        assert!(
            !x.text.contains("var no") && !x.text.contains("x:1"),
            "{:?}",
            x.text
        );

        let pdf = dir.path().join("r.pdf");
        std::fs::write(
            &pdf,
            include_bytes!("../../../../compat/fixtures/quokkafruit.pdf"),
        )
        .unwrap();
        let x = extract_text(&pdf, "", "r.pdf", ExtractLimits::default());
        assert!(x.text.contains("quokkafruit"), "{:?} {:?}", x.text, x.note);

        let docx = dir.path().join("d.docx");
        {
            use std::io::Write;
            let mut z = zip::ZipWriter::new(std::fs::File::create(&docx).unwrap());
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            z.start_file("word/document.xml", o).unwrap();
            z.write_all(
                br#"<?xml version="1.0"?><w:document xmlns:w="x"><w:body><w:p><w:r><w:t>Hello</w:t></w:r><w:r><w:tab/><w:t xml:space="preserve"> wombatword</w:t></w:r></w:p><w:p><w:r><w:t>Second</w:t></w:r></w:p></w:body></w:document>"#,
            )
            .unwrap();
            z.finish().unwrap();
        }
        let x = extract_text(&docx, DOCX, "d.docx", ExtractLimits::default());
        assert_eq!(x.text, "Hello\t wombatword\nSecond\n", "{:?}", x.note);

        // Broken files: saved without text, with a note, never a panic.
        for (name, bytes) in [
            ("bad.pdf", &b"%PDF-1.4 garbage"[..]),
            ("bad.docx", b"PK not a zip"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let x = extract_text(&p, "", name, ExtractLimits::default());
            assert!(x.text.is_empty() && x.note.is_some(), "{name}: {x:?}");
        }
    }
}
