//! Reading a backup of a repository: verify it, restore it. A plain backup is read where it
//! is; a packed one is checked object by object and, to verify its content or restore it,
//! materialized as a plain backup in a local folder first (every checksum checked on the
//! way), which the plain verify and restore then read.

use std::path::{Path, PathBuf};

use cairn_store::CancelToken;

use super::crypt::Identities;
use super::packed::{check_stored, materialize, PackedManifest};
use super::{BackupAddress, Found, Repository};
use crate::error::{BackupError, Result};
use crate::restore::{restore, RestoreMode, RestoreReport, RestoreTarget};
use crate::verify::{verify_parts, VerifyReport};

/// What verifying a backup of a repository checked.
#[derive(Debug)]
pub struct RepoVerify {
    /// The full check (files, index, database), when the content could be read: always
    /// for a plain or unencrypted backup, with the identity for an encrypted one.
    pub full: Option<VerifyReport>,
    /// Packs checked without the key (a packed backup): present, sizes, checksums.
    pub packs: u64,
    /// Bytes of those packs.
    pub pack_bytes: u64,
    /// Why only the packs were checked, when so.
    pub partial: Option<String>,
}

/// A folder in the system's temp for materializing `name` to check it.
fn scratch(what: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(".cairn-{what}-{}-{name}", std::process::id()))
}

/// Verifies the backup at `address` (see [`RepoVerify`]).
pub fn verify_backup(
    repo: &Repository,
    name: &str,
    identities: Option<&Identities>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<RepoVerify> {
    match repo.find(name)? {
        Found::Plain(folder, _) => Ok(RepoVerify {
            full: Some(verify_parts(&folder, true, progress, cancel)?),
            packs: 0,
            pack_bytes: 0,
            partial: None,
        }),
        Found::Packed(m) => {
            let stored = check_stored(repo.objects().as_ref(), name, &m, progress, cancel)?;
            let readable = m.encryption.is_none() || identities.is_some();
            if !readable {
                return Ok(RepoVerify {
                    full: None,
                    packs: stored.packs,
                    pack_bytes: stored.bytes,
                    partial: Some(format!(
                        "encrypted to {}: without --identity only its packs were checked \
                         (present, sizes, ciphertext checksums), not its content",
                        m.encryption.as_ref().map_or("", |e| e.recipient.as_str())
                    )),
                });
            }
            let dir = scratch("verify", name);
            let full = with_materialized(repo, name, &m, identities, &dir, cancel, |folder| {
                verify_parts(folder, true, progress, cancel)
            })?;
            Ok(RepoVerify {
                full: Some(full),
                packs: stored.packs,
                pack_bytes: stored.bytes,
                partial: None,
            })
        }
    }
}

/// Materializes `m` into `dir` (which must not exist), runs `f` on it, and removes it.
fn with_materialized<T>(
    repo: &Repository,
    name: &str,
    m: &PackedManifest,
    identities: Option<&Identities>,
    dir: &Path,
    cancel: &CancelToken,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    // Refused before anything is written: the content must open.
    m.open_content(identities)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(crate::error::io(format!("remove {}", dir.display())))?;
    }
    let result = materialize(
        repo.objects().as_ref(),
        name,
        m,
        identities,
        dir,
        &|_, _| {},
        cancel,
    )
    .and_then(|_| f(dir));
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// Restores the backup `address` into `target`: a plain one as [`restore`] does; a packed
/// one downloaded first into `DIR/.restore-download` (every checksum checked), then
/// restored from there. An encrypted one without the identity, or with another, is refused
/// before the target is touched.
#[allow(clippy::too_many_arguments)]
pub fn restore_backup(
    address: &BackupAddress,
    repo: &Repository,
    target: &RestoreTarget,
    mode: RestoreMode,
    force: bool,
    identities: Option<&Identities>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<RestoreReport> {
    match repo.find(&address.name)? {
        Found::Plain(folder, _) => restore(&folder, target, mode, force, progress, cancel),
        Found::Packed(m) => {
            if let Err(e) = m.open_content(identities) {
                return Err(match e {
                    BackupError::Refused(why) => BackupError::Refused(format!(
                        "{}: {why}; nothing was changed",
                        address.display()
                    )),
                    other => other,
                });
            }
            let dir = target.data_dir.join(".restore-download");
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(crate::error::io(format!("remove {}", dir.display())))?;
            }
            let result = materialize(
                repo.objects().as_ref(),
                &address.name,
                &m,
                identities,
                &dir,
                progress,
                cancel,
            )
            .and_then(|_| restore(&dir, target, mode, force, progress, cancel));
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
    }
}
