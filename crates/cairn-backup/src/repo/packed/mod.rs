//! Packed backups: how a backup is kept as objects (in S3, or encrypted in a folder), with
//! deduplication below file level.
//!
//! A backup's files are cut into chunks: index files (write-once segments) into fixed
//! 1 MiB pieces, an SQLite database into its pages (a changed row changes one chunk), a
//! `pg_dump` archive at content-defined boundaries (FastCDC), so that a change moves few
//! chunk borders. Chunks are grouped into packs of about 8 MiB, each pack one object
//! (`.packs/ab/<sha256 of its stored bytes>`), encrypted whole when the backup is.
//! A chunk that the newest earlier backups of the same repository (and the same
//! encryption) already stored is referenced, not stored again.
//!
//! A backup is two objects besides its packs: its chunk table (`NAME/chunks`, binary: for
//! every chunk its id, pack and place, in the order the files use them), and its manifest
//! (`NAME/manifest.json`, format 2), written last with a conditional create: a backup
//! exists once that is there, and an interrupted upload leaves only objects that no
//! manifest names (removed by the next prune). The manifest's clear part lists the packs
//! (what delete, prune and a verify without the key need) and the table's checksum; the
//! files, their paths, sizes and ranges of the table are its content, sealed to the
//! recipient when encrypted.

mod unpack;
mod upload;

pub use unpack::{check_stored, materialize, StoredCheck};
pub use upload::{upload_folder, UploadReport};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crypt::{chunk_id, Identities, Recipient};
use super::objects::Objects;
use crate::error::{BackupError, Result};
use crate::files::hex;
use crate::manifest::{BackupKind, FileEntry, IndexPart, Manifest, MANIFEST_FILE, MANIFEST_FORMAT};
use cairn_store::{CancelToken, DatabaseBackup, DatabaseKind};

/// The format of a packed manifest.
pub const PACKED_FORMAT: u32 = 2;
/// Where packs are kept.
pub const PACKS_PREFIX: &str = ".packs/";
/// Chunks of index files.
const INDEX_CHUNK: usize = 1 << 20;
/// Chunks of an SQLite database when its page size cannot be read.
const SQLITE_DEFAULT_PAGE: usize = 4096;
/// Average size of a `pg_dump` archive's content-defined chunks (a quarter of it at least,
/// four times at most).
const CDC_AVG: u32 = 64 << 10;
/// A pack is sealed once it holds this much.
const PACK_TARGET: usize = 8 << 20;
/// How many of the newest earlier backups a new one deduplicates against.
const DEDUPE_AGAINST: usize = 3;
/// The chunk table's first bytes.
const TABLE_MAGIC: &[u8; 8] = b"CAIRNCT1";
/// Bytes of a chunk id kept in the table (of its SHA-256).
const ID_BYTES: usize = 16;
/// Bytes of one table entry: id, pack (u32), offset (u32), length (u32).
const ENTRY_BYTES: usize = ID_BYTES + 12;

/// One pack of a backup: its object's id (the SHA-256 of its stored bytes) and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// The SHA-256 of the stored bytes (ciphertext when encrypted).
    pub id: String,
    /// The stored size.
    pub size: u64,
}

/// One chunk: its id (the first bytes of [`chunk_id`]), and where it is: the pack (by its
/// index in the manifest's packs) and the byte range in the pack's plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// Its id.
    pub id: [u8; ID_BYTES],
    /// Index into [`PackedManifest::packs`].
    pub pack: u32,
    /// Offset in the pack's plaintext.
    pub offset: u32,
    /// Length.
    pub len: u32,
}

/// A file of a packed backup: the plain manifest's entry and its chunks, a range of the
/// chunk table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedFile {
    /// Path, size and SHA-256 as a plain backup lists them.
    pub entry: FileEntry,
    /// Its first chunk in the table.
    pub first: u64,
    /// How many chunks, in order.
    pub count: u64,
}

/// The part of a packed manifest that may be sealed: everything about the content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedContent {
    /// The repository's identity.
    pub repository_id: String,
    /// The index position and content.
    pub index: IndexPart,
    /// The database position and file (repository backups).
    pub database: Option<DatabaseBackup>,
    /// Every file.
    pub files: Vec<PackedFile>,
}

/// Encryption of a packed backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The age recipient the packs and the content are encrypted to.
    pub recipient: String,
}

/// The chunk table of a backup: where it is, how many entries, its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRef {
    /// Chunks in it.
    pub chunks: u64,
    /// The SHA-256 of its bytes.
    pub sha256: String,
}

/// A packed backup's manifest (format 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedManifest {
    /// [`PACKED_FORMAT`].
    pub format: u32,
    /// Index alone, or index and database.
    pub kind: BackupKind,
    /// The version of Cairn that wrote it.
    pub cairn_version: String,
    /// When the backup began (RFC 3339).
    pub started_at: String,
    /// When it was finished (RFC 3339).
    pub finished_at: String,
    /// The bytes of its files (plaintext).
    pub bytes: u64,
    /// The repository it is a backup of (in the clear, encrypted or not: an id, no
    /// content), so that a server can tell its own backups in a shared repository.
    #[serde(default)]
    pub repository_id: String,
    /// The index's last applied activity (in the clear): the activity retention keeps the
    /// activities an index restored from this backup needs to catch up.
    #[serde(default)]
    pub index_activity: i64,
    /// `None`: stored in plaintext.
    pub encryption: Option<Encryption>,
    /// Every pack it reads.
    pub packs: Vec<PackRef>,
    /// Its chunk table (`NAME/chunks`).
    pub table: TableRef,
    /// The content, in plaintext (when not encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<PackedContent>,
    /// The content sealed to the recipient (base64 of an age file), when encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// The key of pack `id`.
pub fn pack_key(id: &str) -> String {
    format!("{PACKS_PREFIX}{}/{id}", &id[..2.min(id.len())])
}

/// The key of backup `name`'s manifest.
pub fn manifest_key(name: &str) -> String {
    format!("{name}/{MANIFEST_FILE}")
}

/// The key of backup `name`'s chunk table.
pub fn table_key(name: &str) -> String {
    format!("{name}/chunks")
}

impl PackedManifest {
    /// Parses a packed manifest (`format` 2) and checks what can be checked without the
    /// key: its pack ids, and that its content is in plaintext or sealed.
    pub fn parse(text: &[u8]) -> Result<PackedManifest> {
        let m: PackedManifest = serde_json::from_slice(text)
            .map_err(|e| BackupError::Invalid(format!("{MANIFEST_FILE} (format 2): {e}")))?;
        if m.format != PACKED_FORMAT {
            return Err(BackupError::Invalid(format!(
                "{MANIFEST_FILE} has format {}, not {PACKED_FORMAT}",
                m.format
            )));
        }
        for p in &m.packs {
            if p.id.len() != 64 || !p.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BackupError::Invalid(format!("{:?} is not a pack id", p.id)));
            }
        }
        match (&m.encryption, &m.content, &m.sealed) {
            (None, Some(content), None) => m.check_content(content)?,
            (Some(_), None, Some(_)) => {}
            _ => {
                return Err(BackupError::Invalid(
                    "a packed manifest holds its content in plaintext or sealed, one of them"
                        .into(),
                ))
            }
        }
        Ok(m)
    }

    /// The content, opened with `identities` when it is sealed.
    pub fn open_content(&self, identities: Option<&Identities>) -> Result<PackedContent> {
        if let Some(c) = &self.content {
            return Ok(c.clone());
        }
        let (Some(sealed), Some(enc)) = (&self.sealed, &self.encryption) else {
            return Err(BackupError::Invalid("the manifest has no content".into()));
        };
        let Some(ids) = identities else {
            return Err(BackupError::Refused(format!(
                "the backup is encrypted to {}: give --identity FILE with its key",
                enc.recipient
            )));
        };
        if !ids.opens(&enc.recipient) {
            return Err(BackupError::Refused(format!(
                "the backup is encrypted to {}, and the given identity is not its key",
                enc.recipient
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|e| BackupError::Invalid(format!("the sealed content is not base64: {e}")))?;
        let plain = ids.decrypt(&bytes, "the manifest's content")?;
        let content: PackedContent = serde_json::from_slice(&plain)
            .map_err(|e| BackupError::Invalid(format!("the sealed content: {e}")))?;
        self.check_content(&content)?;
        Ok(content)
    }

    /// The content's files lie in the table and follow the plain manifest's layout.
    fn check_content(&self, content: &PackedContent) -> Result<()> {
        for f in &content.files {
            if f.first
                .checked_add(f.count)
                .is_none_or(|end| end > self.table.chunks)
            {
                return Err(BackupError::Invalid(format!(
                    "{} names chunks beyond the table's {}",
                    f.entry.path, self.table.chunks
                )));
            }
        }
        self.plain(content).check_layout()
    }

    /// The plain manifest of this backup's content (what a restore writes beside the files
    /// it materializes).
    pub fn plain(&self, content: &PackedContent) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            kind: self.kind,
            repository_id: content.repository_id.clone(),
            cairn_version: self.cairn_version.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            index: content.index.clone(),
            database: content.database.clone(),
            files: content.files.iter().map(|f| f.entry.clone()).collect(),
        }
    }

    /// The key under which chunks are deduplicated: the recipient, or none.
    pub fn dedupe_key(&self) -> &str {
        self.encryption
            .as_ref()
            .map_or("", |e| e.recipient.as_str())
    }
}

/// Encodes a chunk table.
fn encode_table(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TABLE_MAGIC.len() + chunks.len() * ENTRY_BYTES);
    out.extend_from_slice(TABLE_MAGIC);
    for c in chunks {
        out.extend_from_slice(&c.id);
        out.extend_from_slice(&c.pack.to_le_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&c.len.to_le_bytes());
    }
    out
}

/// Reads backup `name`'s chunk table, checked against `manifest` (its checksum, and that
/// every chunk names one of its packs).
pub fn read_table(
    objects: &dyn Objects,
    name: &str,
    manifest: &PackedManifest,
) -> Result<Vec<ChunkRef>> {
    let bytes = objects.get(&table_key(name)).map_err(|e| match e {
        BackupError::NotFound(_) => {
            BackupError::Invalid(format!("{name}: its chunk table is missing"))
        }
        other => other,
    })?;
    if hex(&Sha256::digest(&bytes)) != manifest.table.sha256 {
        return Err(BackupError::Invalid(format!(
            "{name}: its chunk table is damaged (checksum mismatch)"
        )));
    }
    let body = bytes
        .strip_prefix(TABLE_MAGIC.as_slice())
        .filter(|b| {
            b.len() % ENTRY_BYTES == 0 && (b.len() / ENTRY_BYTES) as u64 == manifest.table.chunks
        })
        .ok_or_else(|| BackupError::Invalid(format!("{name}: its chunk table is not one")))?;
    let u32_at = |e: &[u8], at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
    let mut out = Vec::with_capacity(body.len() / ENTRY_BYTES);
    for e in body.chunks_exact(ENTRY_BYTES) {
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&e[..ID_BYTES]);
        let c = ChunkRef {
            id,
            pack: u32_at(e, ID_BYTES),
            offset: u32_at(e, ID_BYTES + 4),
            len: u32_at(e, ID_BYTES + 8),
        };
        if c.pack as usize >= manifest.packs.len() {
            return Err(BackupError::Invalid(format!(
                "{name}: a chunk names pack {} of {}",
                c.pack,
                manifest.packs.len()
            )));
        }
        out.push(c);
    }
    Ok(out)
}
