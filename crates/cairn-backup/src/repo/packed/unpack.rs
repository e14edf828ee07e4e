//! Reading a packed backup back: written out as a plain backup (every checksum checked),
//! and its packs checked without the key.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

/// Writes the packed backup `name` (`manifest`) of `objects` into the new folder `into` as
/// a plain backup: its files, then its plain manifest, last; every file's checksum checked.
/// Each pack is read once (decrypted with `identities` when the backup is encrypted), and
/// its chunks are written where the files need them.
pub fn materialize(
    objects: &dyn Objects,
    name: &str,
    manifest: &PackedManifest,
    identities: Option<&Identities>,
    into: &Path,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<Manifest> {
    let content = manifest.open_content(identities)?;
    let plain = manifest.plain(&content);
    let table = read_table(objects, name, manifest)?;
    std::fs::create_dir_all(into)
        .map_err(crate::error::io(format!("create {}", into.display())))?;
    // Every file at its size; then, pack by pack, every chunk where it goes.
    let mut outs = Vec::with_capacity(content.files.len());
    let mut by_pack: BTreeMap<u32, Vec<(usize, u64, ChunkRef)>> = BTreeMap::new();
    for (i, f) in content.files.iter().enumerate() {
        let dst = into.join(&f.entry.path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(crate::error::io(format!("create {}", parent.display())))?;
        }
        let out = std::fs::File::create(&dst)
            .map_err(crate::error::io(format!("create {}", dst.display())))?;
        out.set_len(f.entry.size)
            .map_err(crate::error::io(format!("size {}", dst.display())))?;
        outs.push((dst, out));
        let mut at = 0u64;
        for c in &table[f.first as usize..(f.first + f.count) as usize] {
            by_pack.entry(c.pack).or_default().push((i, at, *c));
            at += u64::from(c.len);
        }
    }
    let total = manifest.bytes;
    let mut done = 0u64;
    for (pack, uses) in by_pack {
        if cancel.is_cancelled() {
            return Err(BackupError::Canceled);
        }
        let bytes = read_pack(objects, manifest, identities, pack)?;
        for (file, at, c) in uses {
            let piece = bytes
                .get(c.offset as usize..(c.offset + c.len) as usize)
                .ok_or_else(|| {
                    BackupError::Invalid(format!(
                        "pack {} is shorter than its chunks",
                        manifest.packs[pack as usize].id
                    ))
                })?;
            let (dst, out) = &outs[file];
            out.write_all_at(piece, at)
                .map_err(crate::error::io(format!("write {}", dst.display())))?;
            done += piece.len() as u64;
            progress(done.min(total), total);
        }
    }
    let paths: Vec<_> = outs.iter().map(|(p, _)| p.clone()).collect();
    drop(outs);
    for (f, path) in content.files.iter().zip(&paths) {
        let (sum, _) = crate::files::sha256_file(path, cancel)?;
        if sum != f.entry.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: checksum mismatch after reading it from {}",
                f.entry.path,
                objects.location()
            )));
        }
    }
    cairn_store::durable::sync_files(&paths)?;
    plain.write(into)?;
    Ok(plain)
}

/// The plaintext of pack `pack` of `manifest`, its stored checksum checked.
fn read_pack(
    objects: &dyn Objects,
    manifest: &PackedManifest,
    identities: Option<&Identities>,
    pack: u32,
) -> Result<Vec<u8>> {
    let p = &manifest.packs[pack as usize];
    let stored = objects.get(&pack_key(&p.id)).map_err(|e| match e {
        BackupError::NotFound(_) => BackupError::Invalid(format!("pack {} is missing", p.id)),
        other => other,
    })?;
    if hex(&Sha256::digest(&stored)) != p.id {
        return Err(BackupError::Invalid(format!(
            "pack {} is damaged (its checksum differs)",
            p.id
        )));
    }
    if manifest.encryption.is_none() {
        return Ok(stored);
    }
    let ids = identities.ok_or_else(|| {
        BackupError::Refused("the backup is encrypted: give --identity FILE".into())
    })?;
    ids.decrypt(&stored, &format!("pack {}", p.id))
}

/// What [`check_stored`] found.
#[derive(Clone, Debug, Default)]
pub struct StoredCheck {
    /// Packs read.
    pub packs: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// The check that needs no key: the chunk table reads back with its checksum, and every
/// pack of `manifest` is there, has its size, and its bytes have its checksum.
pub fn check_stored(
    objects: &dyn Objects,
    name: &str,
    manifest: &PackedManifest,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<StoredCheck> {
    read_table(objects, name, manifest)?;
    let total: u64 = manifest.packs.iter().map(|p| p.size).sum();
    let mut check = StoredCheck::default();
    for pack in &manifest.packs {
        if cancel.is_cancelled() {
            return Err(BackupError::Canceled);
        }
        let stored = objects.get(&pack_key(&pack.id)).map_err(|e| match e {
            BackupError::NotFound(_) => {
                BackupError::Invalid(format!("pack {} is missing", pack.id))
            }
            other => other,
        })?;
        if stored.len() as u64 != pack.size {
            return Err(BackupError::Invalid(format!(
                "pack {} has {} bytes, the manifest says {}",
                pack.id,
                stored.len(),
                pack.size
            )));
        }
        if hex(&Sha256::digest(&stored)) != pack.id {
            return Err(BackupError::Invalid(format!(
                "pack {}: checksum mismatch (damaged)",
                pack.id
            )));
        }
        check.packs += 1;
        check.bytes += pack.size;
        progress(check.bytes, total);
    }
    Ok(check)
}
