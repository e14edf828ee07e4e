//! `cairn blob check`: every blob the database names is in the blob store, intact.

use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_store::Store;

use crate::data::DataDir;
use crate::progress::Progress;

/// Checks the blobs of the repository in `data` (read only; a server may run on it).
/// Exits 1 when a named blob is missing or damaged.
pub fn check(data: &DataDir, as_json: bool) -> Result<ExitCode> {
    data.require_existing()?;
    let store = Store::open(&data.database)
        .with_context(|| format!("open the database {}", data.database.redacted()))?;
    let progress = Progress::new("checking blobs", "bytes");
    let report = cairn_store::files::check_blobs(&store, &|done, total| progress.set(done, total))?;
    progress.finish();
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "Named": report.named,
                "Missing": report.missing,
                "Damaged": report.damaged,
                "Unreferenced": report.unreferenced,
                "Bytes": report.bytes,
            })
        );
    } else {
        for h in &report.missing {
            println!("missing: {h}");
        }
        for h in &report.damaged {
            println!("damaged: {h}");
        }
        println!(
            "{} blob(s) named by the database: {} missing, {} damaged; {} unreferenced in the \
             store ({:.1} MB read)",
            report.named,
            report.missing.len(),
            report.damaged.len(),
            report.unreferenced,
            report.bytes as f64 / 1e6
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
