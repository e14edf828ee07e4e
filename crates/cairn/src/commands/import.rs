//! `cairn import`: bulk load of JSON lines, one content item per line.
//!
//! Each line is `{"Path": "/Root/...", "Type": "Article", ...fields}` (`__ContentType` is
//! accepted for `Type`); parents come before their children, in the file or already in the
//! repository. Lines are committed in batches, one transaction each, while the indexer
//! indexes behind them. On a bad line the import stops: every line before it is kept
//! (committed), the bad line and everything after it are not, and the error names the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use cairn_store::{FieldKind, ImportItem, Store};
use serde_json::{Map, Value};

use crate::commands::open_repository;
use crate::data::DataDir;
use crate::progress::Progress;

/// Parses one line into an import item.
pub fn parse_line(line: &str) -> Result<ImportItem, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut fields) = value else {
        return Err("not a JSON object".into());
    };
    let path = match fields.remove("Path") {
        Some(Value::String(p)) => p,
        Some(_) => return Err("Path is not a string".into()),
        None => return Err("Path is missing".into()),
    };
    let type_name = match (fields.remove("Type"), fields.remove("__ContentType")) {
        (Some(Value::String(t)), _) | (None, Some(Value::String(t))) => t,
        (Some(_), _) | (None, Some(_)) => return Err("Type is not a string".into()),
        (None, None) => return Err("Type is missing".into()),
    };
    if fields.contains_key("Password") {
        // As over HTTP: a user's password is kept as its argon2 hash, never as given.
        cairn_api::auth::hash_password_field(&type_name, &mut fields).map_err(|e| e.message)?;
    } else if fields.contains_key("PasswordHash") {
        return Err("PasswordHash cannot be imported; give Password".into());
    }
    if let Some(name) = fields.remove("Name") {
        let last = path.rsplit('/').next().unwrap_or("");
        if name.as_str() != Some(last) {
            return Err(format!("Name {name} differs from the last segment of Path"));
        }
    }
    Ok(ImportItem {
        path,
        type_name,
        fields: Map::from_iter(fields),
        binaries: Vec::new(),
    })
}

/// Stores the files a line names in its binary fields (`"Binary": "files/report.pdf"`, a
/// path relative to the import file's folder) as blobs, and puts their values on `item`.
/// The blobs are durable before the batch that names them commits.
fn attach_binaries(store: &Store, base: &Path, item: &mut ImportItem) -> Result<(), String> {
    let Ok(t) = store.types().get(&item.type_name) else {
        return Ok(()); // the store names the unknown type
    };
    for def in t.fields.iter().filter(|f| f.kind == FieldKind::Binary) {
        let Some(v) = item.fields.remove(def.name) else {
            continue;
        };
        let Value::String(rel) = v else {
            return Err(format!(
                "{} is the path of the file to import (relative to the import file)",
                def.name
            ));
        };
        let src = base.join(&rel);
        let name = item.path.rsplit('/').next().unwrap_or_default().to_string();
        let media = item
            .fields
            .get("MimeType")
            .and_then(Value::as_str)
            .map(str::to_string);
        let blobs = store.blobs();
        let value = cairn_store::files::store_file(&*blobs, &src, &name, media.as_deref())
            .map_err(|e| format!("{}: {e}", def.name))?;
        item.binaries.push((def.name.to_string(), value));
    }
    Ok(())
}

/// Reads `file` and imports it into `data`.
pub fn run(data: &DataDir, file: &Path, batch: usize) -> Result<ExitCode> {
    // The file first: a mistyped one must not leave a new, empty data folder behind.
    let f = File::open(file).with_context(|| format!("open {}", file.display()))?;
    let mut lock = data.lock("import")?;
    let total_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (store, indexer, _) = open_repository(data)?;
    lock.hold_database_file(data)?;
    let background = indexer.start();
    let progress = Progress::new("importing", "bytes");
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let (mut line_no, mut bytes, mut imported) = (0usize, 0u64, 0u64);
    // The batch's items and the line of each (apart: the store takes the items as they
    // are, without a copy).
    let mut pending: Vec<ImportItem> = Vec::with_capacity(batch);
    let mut lines: Vec<usize> = Vec::with_capacity(batch);
    let mut failure: Option<String> = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("read {}", file.display()))?;
        let at_end = n == 0;
        if !at_end {
            line_no += 1;
            bytes += n as u64;
            let parsed = std::str::from_utf8(&buf)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|s| {
                    // A byte-order mark that some editors write at the start of a file.
                    let s = if line_no == 1 {
                        s.trim_start_matches('\u{feff}')
                    } else {
                        s
                    };
                    let s = s.trim();
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        parse_line(s).map(Some)
                    }
                });
            let base = file.parent().unwrap_or(Path::new("."));
            let parsed = parsed.and_then(|item| match item {
                Some(mut item) => attach_binaries(&store, base, &mut item).map(|()| Some(item)),
                None => Ok(None),
            });
            match parsed {
                Ok(Some(item)) => {
                    pending.push(item);
                    lines.push(line_no);
                }
                Ok(None) => {}
                Err(e) => failure = Some(format!("line {line_no}: {e}")),
            }
        }
        if pending.len() >= batch || at_end || failure.is_some() {
            let (done, err) = commit_batch(&store, &pending, &lines)?;
            imported += done as u64;
            if let Some(e) = err {
                failure.get_or_insert(e);
            }
            pending.clear();
            lines.clear();
            progress.set(bytes, total_bytes.max(bytes));
        }
        if at_end || failure.is_some() {
            break;
        }
    }
    let target = store.last_activity_id()?;
    let indexed = indexer.wait_for(target, Duration::from_secs(24 * 3600));
    indexer.shutdown(Some(background))?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {imported} items in {secs:.1} s ({:.0} items/s); index {}{}",
        imported as f64 / secs.max(1e-9),
        indexer.state(),
        if indexed { "" } else { " (still catching up)" }
    );
    match failure {
        Some(e) => Err(anyhow!(
            "{e} ({imported} items before it were imported and kept; fix the line and import the rest)"
        )),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Commits `items` (read from `lines`); returns how many were created and, on a bad item,
/// the error naming its line.
fn commit_batch(
    store: &Store,
    items: &[ImportItem],
    lines: &[usize],
) -> Result<(usize, Option<String>)> {
    if items.is_empty() {
        return Ok((0, None));
    }
    let outcome = store.import(items, store.admin_id())?;
    let err = outcome.error.map(|(i, e)| {
        let line = lines.get(i).copied().unwrap_or(0);
        let path = items.get(i).map_or("?", |it| it.path.as_str());
        format!("line {line}: {path}: {e}")
    });
    Ok((outcome.created, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let item = parse_line(r#"{"Path":"/Root/a","Type":"Folder","DisplayName":"A"}"#).unwrap();
        assert_eq!(item.path, "/Root/a");
        assert_eq!(item.type_name, "Folder");
        assert_eq!(item.fields.len(), 1);
        assert!(parse_line(r#"{"Type":"Folder"}"#)
            .unwrap_err()
            .contains("Path"));
        assert!(parse_line(r#"{"Path":"/Root/a"}"#)
            .unwrap_err()
            .contains("Type"));
        assert!(parse_line("[1]").is_err());
        assert!(parse_line("{").is_err());
        assert!(parse_line(r#"{"Path":"/Root/a","Type":"Folder","Name":"b"}"#).is_err());
        let user = parse_line(r#"{"Path":"/Root/IMS/u","Type":"User","Password":"pw"}"#).unwrap();
        let hash = user.fields["PasswordHash"].as_str().unwrap();
        assert!(cairn_api::auth::verify_password("pw", hash));
        assert!(!user.fields.contains_key("Password"));
        assert!(parse_line(r#"{"Path":"/Root/a","Type":"Folder","Password":"pw"}"#).is_err());
        assert!(parse_line(r#"{"Path":"/Root/IMS/u","Type":"User","PasswordHash":"x"}"#).is_err());
    }
}
