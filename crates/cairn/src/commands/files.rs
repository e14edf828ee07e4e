//! `cairn blob check`: every blob the database names is in the blob store, intact.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::data::DataDir;
use crate::progress::Progress;

/// Checks the blobs of the repository in `data` (read only; a server may run on it).
/// Exits 1 when a named blob is missing or damaged.
pub fn check(data: &DataDir, as_json: bool) -> Result<ExitCode> {
    data.require_existing()?;
    let store = data.open_store()?;
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

/// `cairn blob gc`: removes the blobs the database no longer names (see
/// `cairn_store::files::collect_unreferenced` for what is kept). Offline: it takes the data
/// folder's lock, and on PostgreSQL refuses while any other Cairn process is connected.
pub fn gc(data: &DataDir, dry_run: bool, as_json: bool) -> Result<ExitCode> {
    data.require_existing()?;
    let _lock = data.lock_existing("blob gc")?;
    if let cairn_store::DatabaseUrl::Postgres(url) = &data.database {
        let live = cairn_store::cairn_sessions(url)?;
        if !live.is_empty() {
            anyhow::bail!(
                "{} is in use by {} Cairn session(s): {}; stop every web node and the search \
                 service first (an upload in flight could name a blob being removed)",
                data.database.redacted(),
                live.len(),
                live.join(", ")
            );
        }
    }
    let store = data.open_store()?;
    // With SQLite archiving, only blobs the archive holds may go: a restore to a time when
    // one was named fetches it from there. (PostgreSQL's WAL carries the rows.)
    let shipped = match cairn_backup::policy::read_archive(&data.root)? {
        Some(settings) if matches!(data.database, cairn_store::DatabaseUrl::Sqlite(_)) => {
            let repo = cairn_backup::repo::Repository::open(
                &settings.repository,
                &cairn_backup::repo::s3::S3Settings::default(),
            )
            .with_context(|| {
                format!(
                    "open the archive's repository {} (to keep the blobs it has not shipped)",
                    settings.repository.display()
                )
            })?;
            Some(cairn_backup::archive::blobs::archived(&**repo.objects())?)
        }
        _ => None,
    };
    let c = cairn_store::files::collect_unreferenced(&store, shipped.as_ref(), dry_run)?;
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "Unreferenced": c.unreferenced,
                "Removed": c.removed,
                "Bytes": c.bytes,
                "KeptUnshipped": c.kept_unshipped,
                "DryRun": dry_run,
            })
        );
    } else {
        for h in &c.removed {
            println!("{} {h}", if dry_run { "would remove" } else { "removed" });
        }
        println!(
            "{} unreferenced blob(s): {} {} ({:.1} MB), {} kept (not yet in the continuous archive)",
            c.unreferenced,
            c.removed.len(),
            if dry_run { "would be removed" } else { "removed" },
            c.bytes as f64 / 1e6,
            c.kept_unshipped
        );
    }
    Ok(ExitCode::SUCCESS)
}
