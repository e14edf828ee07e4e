//! `cairn backup list|delete|prune`: the backups of a repository (a local folder, or
//! `s3://bucket/prefix` reached with the standard `AWS_*` variables).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use cairn_backup::repo::s3::S3Settings;
use cairn_backup::repo::{BackupAddress, RepoUrl, Repository, Retention};

/// A library error as the command's one-line reason.
pub fn reason(e: cairn_backup::BackupError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Opens the repository `text` (a folder, `file://PATH` or `s3://BUCKET/PREFIX`).
pub fn open(text: &str) -> Result<Repository> {
    let url = RepoUrl::parse(text).map_err(reason)?;
    Repository::open(&url, &S3Settings::default()).map_err(reason)
}

/// Parses `REPO/NAME` and opens its repository.
pub fn open_backup(text: &str) -> Result<(BackupAddress, Repository)> {
    let address = BackupAddress::parse(text).map_err(reason)?;
    let repo = Repository::open(&address.repo, &S3Settings::default()).map_err(reason)?;
    Ok((address, repo))
}

/// Opens the repository `text` to read it: a local one must be an existing folder.
pub fn open_existing(text: &str) -> Result<Repository> {
    let repo = open(text)?;
    if let Some(dir) = repo.local_dir() {
        // One look: a folder made between two looks was said to be "not a folder".
        let what = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some("is not a folder"),
            Err(_) => Some("does not exist"),
        };
        if let Some(what) = what {
            bail!(
                "{} {what} (give the folder that holds the backups, such as DIR/backups, or --data DIR)",
                dir.display()
            );
        }
    }
    Ok(repo)
}

/// `cairn backup list [REPO] [--json]`.
pub fn list(text: &str, as_json: bool) -> Result<ExitCode> {
    let repo = open_existing(text)?;
    let backups = repo.list().map_err(reason)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(ExitCode::SUCCESS);
    }
    if backups.is_empty() {
        let hint = match repo.local_dir() {
            Some(dir) if dir.join("backups").is_dir() => format!(
                " (a data folder? its backups are in {})",
                dir.join("backups").display()
            ),
            _ => String::new(),
        };
        println!("no finished backups in {}{hint}", repo.url().display());
        return Ok(ExitCode::SUCCESS);
    }
    let width = backups
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:10}  {:20}  {:>10}  {:6}  ENCRYPTED",
        "NAME", "KIND", "FINISHED", "SIZE", "STORED"
    );
    for b in &backups {
        println!(
            "{:width$}  {:10}  {:20}  {:>10}  {:6}  {}",
            b.name,
            format!("{:?}", b.kind),
            b.finished_at
                .get(..19)
                .unwrap_or(&b.finished_at)
                .replace('T', " "),
            format!("{:.1} MB", b.bytes as f64 / 1e6),
            if b.packed { "packed" } else { "plain" },
            b.encrypted_to.as_deref().unwrap_or("no"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn backup delete REPO/NAME`.
pub fn delete(text: &str) -> Result<ExitCode> {
    let (address, repo) = open_backup(text)?;
    let freed = repo.delete(&address.name).map_err(reason)?;
    println!(
        "deleted {}; {:.1} MB freed (what other backups share stays)",
        address.display(),
        freed as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn backup prune REPO [--keep-last N] [--keep-within AGE] [--min-count N] [--dry-run]`.
pub fn prune(
    text: &str,
    keep_last: Option<u32>,
    keep_within: Option<&str>,
    min_count: Option<u32>,
    dry_run: bool,
) -> Result<ExitCode> {
    let keep = Retention {
        keep_last: keep_last.map(|n| n as usize),
        keep_within: keep_within
            .map(cairn_backup::policy::config::parse_age)
            .transpose()
            .map_err(|why| anyhow!("--keep-within {why}"))?,
        min_count: min_count.map(|n| n as usize),
    };
    let repo = open(text)?;
    if let Some(dir) = repo.local_dir().filter(|d| !d.is_dir()) {
        bail!("{} does not exist", dir.display());
    }
    // Without a limit a prune keeps every backup: it only collects what nothing needs.
    let report = repo.prune(&keep, dry_run).map_err(reason)?;
    // Then the continuous archive's history that no kept base needs.
    let archive = cairn_backup::archive::prune::prune(&repo, &keep, dry_run).map_err(reason)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    for name in report.deleted.iter().chain(&archive.bases_deleted) {
        println!("{verb} {name}");
    }
    if archive.objects_deleted > 0 {
        println!(
            "archive: {verb} {} objects of history no kept base needs ({:.1} MB)",
            archive.objects_deleted,
            archive.freed as f64 / 1e6
        );
    }
    println!(
        "{} kept, {} {verb}{}",
        report.kept.len(),
        report.deleted.len() + archive.bases_deleted.len(),
        if dry_run {
            String::new()
        } else {
            format!(
                ", {:.1} MB freed",
                (report.freed + archive.freed) as f64 / 1e6
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn backup timeline REPO [--identity FILE] [--json]`.
pub fn timeline(text: &str, identity: Option<&std::path::Path>, as_json: bool) -> Result<ExitCode> {
    let repo = open_existing(text)?;
    let identities = identity
        .map(cairn_backup::repo::crypt::Identities::read)
        .transpose()
        .map_err(reason)?;
    let t = cairn_backup::archive::timeline(&repo, identities.as_ref()).map_err(reason)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(ExitCode::SUCCESS);
    }
    match (&t.from, &t.to) {
        (Some(from), Some(to)) if t.change_objects > 0 => println!(
            "restorable from {from} to {to} ({:.1} s ago); {} objects of changes, the last \
             change {}",
            t.lag_seconds.unwrap_or(0.0),
            t.change_objects,
            t.last_seq.unwrap_or(0)
        ),
        (Some(from), Some(to)) => println!(
            "restorable from {from} to {to} ({:.1} s ago)",
            t.lag_seconds.unwrap_or(0.0)
        ),
        _ => println!("nothing restorable to a time: {text} has no base backup"),
    }
    for b in &t.bases {
        if b.engine == "postgres" {
            println!(
                "  {}: {} .. {} (PostgreSQL, its WAL)",
                b.name, b.at, b.reaches
            );
        } else {
            println!(
                "  {}: {} .. {} (changes {} to {})",
                b.name,
                b.at,
                b.reaches,
                b.seq + 1,
                b.reaches_seq
            );
        }
    }
    for name in &t.unreadable {
        println!("  {name}: encrypted; give --identity to read it");
    }
    Ok(ExitCode::SUCCESS)
}
