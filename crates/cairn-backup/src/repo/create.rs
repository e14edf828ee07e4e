//! Making a backup into a repository: a plain folder as before, or a packed backup (S3, or
//! encrypted). A packed backup is first made as a plain one in a local staging folder
//! (the index snapshot's files and the database's online backup need files to write),
//! then uploaded, deduplicated, holding the repository's lease, and the staging folder is
//! removed. The manifest that makes it count is written last either way.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::CancelToken;

use super::crypt::Recipient;
use super::packed::upload_folder;
use super::{BackupAddress, RepoUrl, Repository};
use crate::error::{BackupError, Result};
use crate::manifest::{BackupKind, Manifest};
use crate::run::{run_backup, BackupInfo, BackupSource, BackupStep};

/// Where a new backup goes, and how.
pub struct Destination {
    /// The repository.
    pub repo: Repository,
    /// The backup's name in it.
    pub name: String,
    /// Encrypted to this recipient, when given.
    pub recipient: Option<Recipient>,
}

impl Destination {
    /// `address`, opened (`s3` settings for S3), encrypted to `recipient` when given.
    pub fn open(
        address: &BackupAddress,
        s3: &super::s3::S3Settings,
        recipient: Option<Recipient>,
    ) -> Result<Destination> {
        Ok(Destination {
            repo: Repository::open(&address.repo, s3)?,
            name: address.name.clone(),
            recipient,
        })
    }

    /// `REPO/NAME`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.repo.url().display(), self.name)
    }

    /// Whether the backup is kept as plain files (a local folder, not encrypted).
    pub fn is_plain(&self) -> bool {
        matches!(self.repo.url(), RepoUrl::Local(_)) && self.recipient.is_none()
    }
}

/// What a backup into a repository made.
#[derive(Clone, Debug)]
pub struct Made {
    /// The plain manifest of what was backed up.
    pub manifest: Manifest,
    /// Bytes written into the repository (new packs; a plain backup's copied files).
    pub stored_bytes: u64,
}

/// Makes a backup of `source` into `dest`. A packed one is staged in `staging` (a folder
/// that must not exist; removed afterwards). `info` carries the progress and the named
/// steps; `cancel` stops it, leaving nothing listed.
pub fn backup_into(
    source: &dyn BackupSource,
    kind: BackupKind,
    dest: &Destination,
    staging: &Path,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<Made> {
    crate::name::check_name(&dest.name)?;
    if let (true, Some(dir)) = (dest.is_plain(), dest.repo.local_dir()) {
        std::fs::create_dir_all(dir)
            .map_err(crate::error::io(format!("create {}", dir.display())))?;
        let manifest = run_backup(source, kind, &dir.join(&dest.name), info, cancel)?;
        let stored_bytes = manifest.files.iter().map(|f| f.size).sum();
        return Ok(Made {
            manifest,
            stored_bytes,
        });
    }
    // Refused at once, before the copy: a name the repository holds already.
    if dest.repo.find(&dest.name).is_ok() {
        return Err(BackupError::TargetExists(dest.display()));
    }
    let lease = dest.repo.lease(&format!("backup {}", dest.name))?;
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent)
            .map_err(crate::error::io(format!("create {}", parent.display())))?;
    }
    let result = (|| {
        let manifest = run_backup(source, kind, staging, info, cancel)?;
        upload(dest, staging, info, cancel).map(|stored_bytes| Made {
            manifest,
            stored_bytes,
        })
    })();
    drop(lease);
    let _ = std::fs::remove_dir_all(staging);
    result
}

/// Uploads the plain backup in `folder` to `dest` (the caller holds the lease); the bytes
/// stored anew.
fn upload(
    dest: &Destination,
    folder: &Path,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<u64> {
    let set = |f: &dyn Fn(&mut BackupInfo)| f(&mut info.lock().unwrap_or_else(|p| p.into_inner()));
    set(&|i| {
        i.step = Some(BackupStep::Upload);
        i.copied_bytes = 0;
        i.currently_copied_file = None;
    });
    let earlier = dest.repo.packed_manifests()?;
    let report = upload_folder(
        dest.repo.objects().as_ref(),
        &dest.name,
        folder,
        &earlier,
        dest.recipient.as_ref(),
        &|done, total| {
            set(&|i| {
                i.copied_bytes = done;
                i.total_bytes = total;
            })
        },
        cancel,
    )?;
    tracing::info!(
        backup = %dest.display(),
        bytes = report.bytes,
        stored = report.stored_bytes,
        packs = report.stored_packs,
        "backup uploaded"
    );
    set(&|i| i.step = None);
    Ok(report.stored_bytes)
}

/// Uploads the plain backup in `folder` (one already made: a download, or an offline
/// backup's staging) as `dest`, holding the lease.
pub fn upload_existing(
    dest: &Destination,
    folder: &Path,
    info: &Mutex<BackupInfo>,
    cancel: &CancelToken,
) -> Result<u64> {
    let _lease = dest.repo.lease(&format!("backup {}", dest.name))?;
    upload(dest, folder, info, cancel)
}

/// The staging folder of a packed backup `name` made beside `root` (a server's backups
/// folder): hidden, so never listed as a backup, and removed at the next start when a
/// crash left it.
pub fn staging_in(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".upload-{name}"))
}
