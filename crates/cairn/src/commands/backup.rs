//! `cairn backup create|verify` and `cairn restore` (of a folder, or of a repository's
//! backup: see `repository.rs` for `list`, `delete` and `prune`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_backup::repo::create::{upload_existing, Destination};
use cairn_backup::repo::crypt::{Identities, Recipient};
use cairn_backup::repo::read::{restore_backup, verify_backup};
use cairn_backup::repo::s3::S3Settings;
use cairn_backup::repo::BackupAddress;
use cairn_backup::{
    backup_stopped_into, restore, verify, BackupError, BackupInfo, BackupKind, BackupResponse,
    BackupState, BackupStep, RestoreMode, RestoreTarget,
};

use crate::commands::repository::reason;

use crate::commands::Remote;
use crate::data::DataDir;
use crate::progress::Progress;

/// `bytes, files, seconds, MB/s` on one line.
fn summary(what: &str, bytes: u64, files: u64, seconds: f64) -> String {
    format!(
        "{what}: {:.1} MB, {files} files, {seconds:.1} s, {:.1} MB/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / seconds.max(1e-9)
    )
}

/// `cairn backup create --data DIR --to OUT|REPO/NAME [--encrypt-to R]`: a backup of a
/// stopped repository (the checks are `cairn_backup::backup_stopped`'s): a plain folder,
/// or packed into S3 or encrypted. Ctrl-C stops it and leaves nothing listed.
pub fn create_offline(
    data: &DataDir,
    to: &str,
    index_only: bool,
    encrypt_to: Option<&str>,
) -> Result<ExitCode> {
    if !to.contains("://") {
        // Where the folder lies is what is wrong with it, before whether its name is plain.
        cairn_backup::check_backup_folder(&data.root, Path::new(to)).map_err(reason)?;
    }
    let dest = destination(to, encrypt_to)?;
    let _lock = data.lock_existing("backup create")?;
    let store = Arc::new(data.open_store()?);
    let kind = if index_only {
        BackupKind::Index
    } else {
        BackupKind::Repository
    };
    let info = Mutex::new(BackupInfo::started_at(kind, dest.display()));
    let cancel = crate::commands::cancel_on_signal("backup");
    let started = Instant::now();
    let progress = Progress::new("backup", "bytes");
    let done = AtomicBool::new(false);
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let i = info.lock().unwrap_or_else(|p| p.into_inner()).clone();
                progress.step(i.step.map(step_name));
                progress.set(i.copied_bytes, i.total_bytes.max(i.copied_bytes));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = backup_stopped_into(&data.root, store, &dest, kind, &info, &cancel);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })
    .map_err(|e| match e {
        BackupError::Canceled => anyhow!("canceled: no backup was written"),
        other => anyhow!("{other}"),
    })?;
    progress.finish();
    let manifest = &made.manifest;
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    println!(
        "{}; index at {}{}{}",
        summary(
            "backup written",
            bytes,
            manifest.files.len() as u64,
            started.elapsed().as_secs_f64()
        ),
        manifest.index.completion_state,
        manifest
            .database
            .as_ref()
            .map(|d| format!(", database at {}", d.last_activity_id))
            .unwrap_or_default(),
        stored_note(&dest, made.stored_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `--to` (with `--encrypt-to`) puts a new backup.
fn destination(to: &str, encrypt_to: Option<&str>) -> Result<Destination> {
    let address = BackupAddress::parse(to).map_err(reason)?;
    let recipient = encrypt_to
        .map(|r| Recipient::parse(r.trim()))
        .transpose()
        .map_err(|e| anyhow!("--encrypt-to: {e}"))?;
    Destination::open(&address, &S3Settings::default(), recipient).map_err(reason)
}

/// For a packed backup, what it added to its repository.
fn stored_note(dest: &Destination, stored: u64) -> String {
    if dest.is_plain() {
        return String::new();
    }
    format!(
        "; into {} ({:.1} MB new{})",
        dest.display(),
        stored as f64 / 1e6,
        if dest.recipient.is_some() {
            ", encrypted"
        } else {
            ""
        }
    )
}

/// How a backup's step reads in a progress line.
fn step_name(step: BackupStep) -> &'static str {
    match step {
        BackupStep::IndexFiles => "index files",
        BackupStep::Database => "database",
        BackupStep::Blobs => "files (blobs)",
        BackupStep::Manifest => "manifest",
        BackupStep::Upload => "upload",
    }
}

/// `cairn backup create --server URL [--to DIR]`: a backup by a running server, followed
/// with a progress bar, optionally downloaded and checked.
pub fn create_remote(
    remote: &Remote,
    target: Option<&str>,
    to: Option<&str>,
    index_only: bool,
    encrypt_to: Option<&str>,
) -> Result<ExitCode> {
    // Into S3: the server uploads (the data does not pass through this command).
    let to_s3 = to.filter(|t| t.starts_with("s3://"));
    if to_s3.is_some() && target.is_some() {
        bail!("--target names a folder in the server's backup folder; --to s3://... names the backup in S3: give one");
    }
    // A local --to is a download, checked (and, with --encrypt-to, packed encrypted
    // into the folder's repository once downloaded).
    let local = to.filter(|_| to_s3.is_none()).map(PathBuf::from);
    let encrypted_local = match (&local, encrypt_to) {
        (Some(local), Some(r)) => Some(destination(&local.display().to_string(), Some(r))?),
        _ => None,
    };
    let to = local.as_deref();
    if let Some(to) = to.filter(|to| to.exists()) {
        // Checked before the server starts a backup that could not be downloaded.
        bail!(
            "{} exists already: --to names a new folder for the download{}",
            to.display(),
            if to.join(cairn_backup::MANIFEST_FILE).exists() {
                " (it holds a backup)"
            } else {
                " (a leftover of an interrupted download? remove it)"
            }
        );
    }
    let action = if index_only {
        "BackupIndex"
    } else {
        "BackupRepository"
    };
    let body = match to_s3 {
        Some(s3) => serde_json::json!({ "to": s3, "encryptTo": encrypt_to }),
        None if encrypted_local.is_none() => {
            serde_json::json!({ "target": target, "encryptTo": encrypt_to })
        }
        None => serde_json::json!({ "target": target }),
    }
    .to_string();
    let started = Instant::now();
    let first: BackupResponse = serde_json::from_value(remote.json(
        "POST",
        &format!("/odata.svc/('Root')/{action}"),
        Some(&body),
    )?)
    .context("read the server's answer")?;
    let mine = first
        .current
        .clone()
        .ok_or_else(|| anyhow!("the server started no backup"))?;
    if first.state != BackupState::Started {
        bail!(
            "another backup ({}) is running; try again when it has finished",
            mine.target_path
        );
    }
    let progress = Progress::new("backup", "bytes");
    let last = loop {
        let q: BackupResponse = serde_json::from_value(remote.json(
            "GET",
            "/odata.svc/('Root')/QueryIndexBackup",
            None,
        )?)?;
        let Some(cur) = q.current.clone() else {
            bail!("the server lost the backup")
        };
        progress.step(cur.step.map(step_name));
        progress.set(cur.copied_bytes, cur.total_bytes.max(cur.copied_bytes));
        match cur.state {
            BackupState::Started | BackupState::Executing | BackupState::CancelRequested => {
                std::thread::sleep(Duration::from_millis(250))
            }
            _ => break cur,
        }
    };
    progress.finish();
    if last.target_path != mine.target_path {
        bail!(
            "another backup ({}) was running; try again when it has finished",
            last.target_path
        );
    }
    if last.state != BackupState::Finished {
        bail!(
            "the backup ended {:?}: {}",
            last.state,
            last.message.unwrap_or_default()
        );
    }
    let name = last
        .target_path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the server named no backup folder"))?;
    println!(
        "{}; on the server in {}",
        summary(
            "backup finished",
            last.copied_bytes,
            last.copied_files,
            started.elapsed().as_secs_f64()
        ),
        last.target_path
    );
    match (to, encrypted_local) {
        (Some(to), Some(dest)) => {
            // Downloaded beside the repository as a plain backup, checked, packed and
            // encrypted into it, and the plain copy removed.
            let plain = to.with_file_name(format!(".{}.cairn-plain", dest.name));
            if plain.exists() {
                std::fs::remove_dir_all(&plain)
                    .with_context(|| format!("remove the leftover {}", plain.display()))?;
            }
            let packed = download(remote, &name, &plain).and_then(|()| {
                let info = Mutex::new(BackupInfo::started_at(
                    BackupKind::Repository,
                    dest.display(),
                ));
                let cancel = crate::commands::cancel_on_signal("encryption");
                upload_existing(&dest, &plain, &info, &cancel).map_err(reason)
            });
            let _ = std::fs::remove_dir_all(&plain);
            let stored = packed?;
            println!(
                "encrypted into {}{}",
                dest.display(),
                stored_note(&dest, stored)
            );
        }
        (Some(to), None) => download(remote, &name, to)?,
        (None, _) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// A finished backup served at `/backups/NAME` by a server.
struct Served<'r> {
    remote: &'r Remote,
    name: &'r str,
}

impl cairn_backup::BackupSourceFiles for Served<'_> {
    fn manifest(&self) -> cairn_backup::Result<String> {
        let v = self
            .remote
            .json(
                "GET",
                &cairn_api::client::manifest_url_path(self.name),
                None,
            )
            .map_err(|e| cairn_backup::BackupError::Invalid(format!("read the manifest: {e:#}")))?;
        Ok(v.to_string())
    }

    fn open(&self, path: &str) -> cairn_backup::Result<Box<dyn std::io::Read + '_>> {
        let url = cairn_api::client::file_url_path(self.name, path);
        let reader = self
            .remote
            .open(&url)
            .map_err(|e| cairn_backup::BackupError::Io {
                context: format!("download {path}"),
                cause: std::io::Error::other(format!("{e:#}")),
            })?;
        Ok(reader)
    }
}

/// Downloads the finished backup `name` into `to`: checked file by file in a staging
/// folder, which becomes `to` only when every checksum matched (`cairn_backup::download`).
fn download(remote: &Remote, name: &str, to: &Path) -> Result<()> {
    let started = Instant::now();
    let progress = Progress::new("download", "bytes");
    let report = cairn_backup::download(&Served { remote, name }, to, &|d, t| progress.set(d, t))
        .map_err(|e| anyhow!("download into {}: {e}", to.display()))?;
    progress.finish();
    println!(
        "{}; into {}",
        summary(
            "downloaded",
            report.bytes,
            report.files,
            started.elapsed().as_secs_f64()
        ),
        to.display()
    );
    Ok(())
}

/// Whether `dir` holds a packed backup (format 2: encrypted, in a local repository).
fn is_packed(dir: &Path) -> bool {
    std::fs::read(dir.join(cairn_backup::MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64))
        == Some(2)
}

/// Whether `text` names a backup the repository code reads (S3, or packed), rather than
/// a plain folder.
fn in_repository(text: &str) -> bool {
    text.starts_with("s3://") || is_packed(Path::new(text.strip_prefix("file://").unwrap_or(text)))
}

/// The identities of `--identity FILE`.
fn identities(file: Option<&Path>) -> Result<Option<Identities>> {
    file.map(Identities::read)
        .transpose()
        .map_err(|e| anyhow!("--identity: {e}"))
}

/// `cairn backup verify DIR|REPO/NAME [--identity FILE]`.
pub fn verify_cmd(text: &str, identity: Option<&Path>) -> Result<ExitCode> {
    let identities = identities(identity)?;
    let progress = Progress::new("verify", "bytes");
    let started = Instant::now();
    let report = if in_repository(text) {
        let (address, repo) = crate::commands::repository::open_backup(text)?;
        let cancel = crate::commands::cancel_on_signal("verify");
        let r = verify_backup(
            &repo,
            &address.name,
            identities.as_ref(),
            &|d, t| progress.set(d, t),
            &cancel,
        )
        .map_err(reason)?;
        progress.finish();
        match r.full {
            Some(full) => full,
            None => {
                println!(
                    "checked {} packs, {:.1} MB, in {:.1} s; {}",
                    r.packs,
                    r.pack_bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64(),
                    r.partial.unwrap_or_default()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
    } else {
        let r = verify(Path::new(text), &|d, t| progress.set(d, t)).map_err(|e| anyhow!("{e}"))?;
        progress.finish();
        r
    };
    println!(
        "{}; backup of repository {}, index at {}{}",
        summary("verified", report.bytes, report.files, report.seconds),
        report.manifest.repository_id,
        report.manifest.index.completion_state,
        report
            .manifest
            .database
            .as_ref()
            .map(|d| format!(", database at {}", d.last_activity_id))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn restore`.
pub fn restore_cmd(
    from_text: &str,
    data: &DataDir,
    mode: RestoreMode,
    force: bool,
    identity: Option<&Path>,
) -> Result<ExitCode> {
    let identities = identities(identity)?;
    let packed = if in_repository(from_text) {
        Some(crate::commands::repository::open_backup(from_text)?)
    } else {
        None
    };
    let from = Path::new(from_text.strip_prefix("file://").unwrap_or(from_text));
    // Before the lock: taking it writes into the data folder, which may lie in the backup.
    if packed
        .as_ref()
        .is_none_or(|(a, _)| !matches!(a.repo, cairn_backup::repo::RepoUrl::S3 { .. }))
    {
        cairn_backup::refuse_overlap(from, &data.root, &data.database)
            .map_err(|e| anyhow!("{e}"))?;
    }
    let report = restoring(
        data,
        || {},
        |target, progress, cancel| {
            let on_progress = |d: u64, t: u64| {
                progress.set(d, t);
                if d >= t {
                    progress.step(Some("swapping in"));
                }
            };
            let restored = match &packed {
                Some((address, repo)) => restore_backup(
                    address,
                    repo,
                    target,
                    mode,
                    force,
                    identities.as_ref(),
                    &on_progress,
                    cancel,
                ),
                None => restore(from, target, mode, force, &on_progress, cancel),
            };
            restored.map_err(|e| match e {
                BackupError::Canceled | BackupError::Store(cairn_store::StoreError::Cancelled) => {
                    anyhow!("canceled before anything was swapped in: the repository is as it was")
                }
                other => anyhow!("{other}"),
            })
        },
    )?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let database = match mode {
        RestoreMode::IndexOnly => String::new(),
        _ => format!("; database {}", data.database.redacted()),
    };
    println!(
        "{}{database}; the next start catches the index up{}",
        summary("restored", report.bytes, report.files, report.seconds),
        if mode == RestoreMode::DatabaseOnly {
            " (it rebuilds it: no index was restored)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `cairn restore --from REPO --at T --data DIR [--identity FILE]`: the archive's newest
/// base at or before `T`, then every change committed at or before it.
pub fn restore_at_cmd(
    from: &str,
    at: &str,
    data: &DataDir,
    pg_data: Option<&Path>,
    identity: Option<&Path>,
) -> Result<ExitCode> {
    let at = cairn_backup::archive::RestoreAt::parse(at).map_err(|e| anyhow!("{e}"))?;
    let identities = identities(identity)?;
    let repo = crate::commands::repository::open_existing(from)?;
    if let cairn_store::DatabaseUrl::Postgres(_) = &data.database {
        let pg_data = pg_data.ok_or_else(|| {
            anyhow!(
                "a restore to a time on PostgreSQL makes a new cluster: give --pg-data DIR \
                 (absent or empty) for PostgreSQL's data folder"
            )
        })?;
        return restore_at_postgres(&repo, at, data, pg_data, identities.as_ref());
    }
    if pg_data.is_some() {
        anyhow::bail!("--pg-data is for a PostgreSQL --database; this data folder's is SQLite");
    }
    let r = restoring(
        data,
        || {},
        |target, progress, cancel| {
            cairn_backup::archive::restore_at(
                &repo,
                at,
                target,
                identities.as_ref(),
                &|d, t| progress.set(d, t),
                cancel,
            )
            .map_err(|e| anyhow!("{e}"))
        },
    )?;
    println!(
        "restored to {}: base {}, {} changes applied (database at change {}), index from {}; \
         the next start catches the index up",
        r.at, r.base, r.changes, r.seq, r.index_from
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a restore into `data`: its lock held, progress shown, Ctrl-C to cancel. A refused
/// or failed restore leaves no trace: a data folder made for it (holding only the lock and
/// any staging) goes again, and `undo` runs.
fn restoring<T>(
    data: &DataDir,
    undo: impl FnOnce(),
    restore: impl FnOnce(&RestoreTarget, &Progress, &cairn_store::CancelToken) -> Result<T>,
) -> Result<T> {
    let created = !data.root.exists();
    let lock = data.lock("restore")?;
    let progress = Progress::new("restore", "bytes");
    let target = RestoreTarget {
        data_dir: data.root.clone(),
        database: data.database.clone(),
    };
    let cancel = crate::commands::cancel_on_signal("restore");
    let restored = restore(&target, &progress, &cancel);
    progress.finish();
    restored.inspect_err(|_| {
        drop(lock);
        if created {
            let _ = std::fs::remove_dir_all(&data.root);
        }
        undo();
    })
}

/// `restore --at` on PostgreSQL: a new cluster in `pg_data` recovered to the time, and the
/// index of the data folder.
fn restore_at_postgres(
    repo: &cairn_backup::repo::Repository,
    at: cairn_backup::archive::RestoreAt,
    data: &DataDir,
    pg_data: &Path,
    identities: Option<&cairn_backup::repo::crypt::Identities>,
) -> Result<ExitCode> {
    let pg_created = !pg_data.exists();
    // Never written into, nor cleaned after a failure, unless it was empty: a cluster's
    // folder given by mistake is left exactly as it is.
    if !pg_created {
        let mut entries =
            std::fs::read_dir(pg_data).with_context(|| format!("read {}", pg_data.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty: a restore to a time makes a new PostgreSQL cluster in an \
                 empty folder (or one it creates); nothing was changed",
                pg_data.display()
            );
        }
    }
    // What was written of the new cluster goes after a failure: it was absent or empty.
    let undo = || {
        if pg_created {
            let _ = std::fs::remove_dir_all(pg_data);
        } else if let Ok(entries) = std::fs::read_dir(pg_data) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    };
    let r = restoring(data, undo, |target, progress, cancel| {
        cairn_backup::archive::postgres::restore_at_postgres(
            repo,
            at,
            target,
            pg_data,
            identities,
            &|d, t| progress.set(d, t),
            cancel,
        )
        .map_err(|e| anyhow!("{e}"))
    })?;
    println!(
        "restored to {}{}: base {}, {} MB of WAL replayed by PostgreSQL (now on timeline {}; \
         database at activity {}), index from {}; start PostgreSQL on {} (pg_ctl -D {} start) \
         and the next start of Cairn catches the index up",
        r.at,
        if r.replayed_all {
            " (after the last commit archived: all of the WAL replayed)"
        } else {
            ""
        },
        r.base,
        r.wal_bytes >> 20,
        r.timeline,
        r.last_activity_id,
        r.index_from
            .as_deref()
            .unwrap_or("none (not one was behind the database: the next start rebuilds it)"),
        pg_data.display(),
        pg_data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The default backup folder of a data folder.
pub fn default_dir(data: &Path) -> PathBuf {
    data.join("backups")
}
