//! `cairn backup create|verify|list` and `cairn restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_backup::{
    backup_stopped, list_backups, restore, verify, BackupError, BackupInfo, BackupKind,
    BackupResponse, BackupState, BackupStep, OfflineBackup, RestoreMode, RestoreTarget,
};
use cairn_store::Store;

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

/// `cairn backup create --data DIR --to OUT`: a backup of a stopped repository (the checks
/// are `cairn_backup::backup_stopped`'s). Ctrl-C stops it and leaves no folder.
pub fn create_offline(data: &DataDir, to: &Path, index_only: bool) -> Result<ExitCode> {
    let _lock = data.lock_existing("backup create")?;
    let store = Arc::new(Store::open(&data.database).context("open the database")?);
    let kind = if index_only {
        BackupKind::Index
    } else {
        BackupKind::Repository
    };
    let backup = OfflineBackup {
        data_dir: &data.root,
        store,
        to,
        kind,
    };
    let info = Mutex::new(BackupInfo::started(kind, to));
    let cancel = crate::commands::cancel_on_signal("backup");
    let started = Instant::now();
    let progress = Progress::new("backup", "bytes");
    let done = AtomicBool::new(false);
    let manifest = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let i = info.lock().unwrap_or_else(|p| p.into_inner()).clone();
                progress.step(i.step.map(step_name));
                progress.set(i.copied_bytes, i.total_bytes.max(i.copied_bytes));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = backup_stopped(&backup, &info, &cancel);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })
    .map_err(|e| match e {
        BackupError::Canceled => anyhow!("canceled: no backup was written"),
        other => anyhow!("{other}"),
    })?;
    progress.finish();
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    println!(
        "{}; index at {}{}",
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
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// How a backup's step reads in a progress line.
fn step_name(step: BackupStep) -> &'static str {
    match step {
        BackupStep::IndexFiles => "index files",
        BackupStep::Database => "database",
        BackupStep::Manifest => "manifest",
        BackupStep::Upload => "upload",
    }
}

/// `cairn backup create --server URL [--to DIR]`: a backup by a running server, followed
/// with a progress bar, optionally downloaded and checked.
pub fn create_remote(
    remote: &Remote,
    target: Option<&str>,
    to: Option<&Path>,
    index_only: bool,
) -> Result<ExitCode> {
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
    let body = serde_json::json!({ "target": target }).to_string();
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
    let name = Path::new(&last.target_path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
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
    if let Some(to) = to {
        download(remote, &name, to)?;
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

/// `cairn backup verify DIR`.
pub fn verify_cmd(dir: &Path) -> Result<ExitCode> {
    let progress = Progress::new("verify", "bytes");
    let report = verify(dir, &|d, t| progress.set(d, t)).map_err(|e| anyhow!("{e}"))?;
    progress.finish();
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

/// `cairn backup list [DIR]`.
pub fn list(dir: &Path) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!(
            "{} {} (give the folder that holds the backups, such as DIR/backups, or --data DIR)",
            dir.display(),
            if dir.exists() {
                "is not a folder"
            } else {
                "does not exist"
            }
        );
    }
    let backups = list_backups(dir);
    if backups.is_empty() {
        println!(
            "no finished backups in {}{}",
            dir.display(),
            if dir.join("backups").is_dir() {
                format!(
                    " (a data folder? its backups are in {})",
                    default_dir(dir).display()
                )
            } else {
                String::new()
            }
        );
    }
    for (name, m) in backups {
        let bytes: u64 = m.files.iter().map(|f| f.size).sum();
        println!(
            "{name}\t{:?}\t{}\t{:.1} MB\tindex {}\tdatabase {}",
            m.kind,
            m.finished_at,
            bytes as f64 / 1e6,
            m.index.completion_state,
            m.database
                .as_ref()
                .map(|d| d.last_activity_id.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn restore`.
pub fn restore_cmd(
    from: &Path,
    data: &DataDir,
    mode: RestoreMode,
    force: bool,
) -> Result<ExitCode> {
    // Before the lock: taking it writes into the data folder, which may lie in the backup.
    cairn_backup::refuse_overlap(from, &data.root, &data.database).map_err(|e| anyhow!("{e}"))?;
    let created = !data.root.exists();
    let lock = data.lock("restore")?;
    let progress = Progress::new("restore", "bytes");
    let target = RestoreTarget {
        data_dir: data.root.clone(),
        database: data.database.clone(),
    };
    let cancel = crate::commands::cancel_on_signal("restore");
    let report = match restore(
        from,
        &target,
        mode,
        force,
        &|d, t| {
            progress.set(d, t);
            if d >= t {
                progress.step(Some("swapping in"));
            }
        },
        &cancel,
    ) {
        Ok(r) => r,
        Err(e) => {
            // A refused or failed restore leaves no trace: a data folder made for it
            // (holding only the lock and any staging) goes again.
            drop(lock);
            if created {
                let _ = std::fs::remove_dir_all(&data.root);
            }
            return Err(match e {
                BackupError::Canceled | BackupError::Store(cairn_store::StoreError::Cancelled) => {
                    anyhow!("canceled before anything was swapped in: the repository is as it was")
                }
                other => anyhow!("{other}"),
            });
        }
    };
    progress.finish();
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

/// The default backup folder of a data folder.
pub fn default_dir(data: &Path) -> PathBuf {
    data.join("backups")
}
