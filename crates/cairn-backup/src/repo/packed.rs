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

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

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

/// Where a chunk is: in a pack of an earlier backup (its position in
/// [`ChunkIndex::earlier_packs`]), or in one of this backup's (its position in the new
/// manifest's pack list).
#[derive(Clone, Copy, Debug)]
enum Loc {
    Earlier(u32),
    Mine(u32),
}

/// Where chunks already stored can be found: id → (pack, offset, length).
#[derive(Default)]
struct ChunkIndex {
    known: HashMap<[u8; ID_BYTES], (Loc, u32, u32)>,
    earlier_packs: Vec<PackRef>,
}

impl ChunkIndex {
    /// The chunks of the newest [`DEDUPE_AGAINST`] of `earlier` (name, manifest) whose
    /// encryption is `key` (`""`: plaintext). A table that cannot be read is skipped: the
    /// new backup then stores those chunks again.
    fn of(objects: &dyn Objects, earlier: &[(String, PackedManifest)], key: &str) -> Self {
        let mut index = ChunkIndex::default();
        let mut at: HashMap<&str, u32> = HashMap::new();
        let mut same: Vec<&(String, PackedManifest)> = earlier
            .iter()
            .filter(|(_, m)| m.dedupe_key() == key)
            .collect();
        same.sort_by(|a, b| b.1.finished_at.cmp(&a.1.finished_at));
        for (name, m) in same.into_iter().take(DEDUPE_AGAINST) {
            match read_table(objects, name, m) {
                Ok(table) => {
                    for c in table {
                        let pack = &m.packs[c.pack as usize];
                        let p = *at.entry(pack.id.as_str()).or_insert_with(|| {
                            index.earlier_packs.push(pack.clone());
                            (index.earlier_packs.len() - 1) as u32
                        });
                        index
                            .known
                            .entry(c.id)
                            .or_insert((Loc::Earlier(p), c.offset, c.len));
                    }
                }
                Err(e) => tracing::warn!("not deduplicating against {name}: {e}"),
            }
        }
        index
    }
}

/// How a file is cut into chunks.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Fixed(usize),
    ContentDefined,
}

/// The page size of the SQLite database at `path` (its header's bytes 16-17; 1 means
/// 65536), or the default.
fn sqlite_page_size(path: &Path) -> usize {
    let mut header = [0u8; 18];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    match read.map(|()| u16::from_be_bytes([header[16], header[17]])) {
        Ok(1) => 65536,
        Ok(n) if n >= 512 && n.is_power_of_two() => n as usize,
        _ => SQLITE_DEFAULT_PAGE,
    }
}

fn cut_of(entry: &FileEntry, database: Option<&DatabaseBackup>, folder: &Path) -> Cut {
    match database {
        Some(db) if entry.path == format!("{}/{}", crate::manifest::DATABASE_DIR, db.file_name) => {
            match db.kind {
                DatabaseKind::Sqlite => Cut::Fixed(sqlite_page_size(&folder.join(&entry.path))),
                DatabaseKind::Postgres => Cut::ContentDefined,
            }
        }
        _ => Cut::Fixed(INDEX_CHUNK),
    }
}

/// What an upload did.
#[derive(Clone, Debug)]
pub struct UploadReport {
    /// The manifest written.
    pub manifest: PackedManifest,
    /// Bytes of the files.
    pub bytes: u64,
    /// Bytes stored anew (packs, the chunk table and the manifest).
    pub stored_bytes: u64,
    /// Packs written.
    pub stored_packs: u64,
}

/// A sealed pack on its way to the repository: its position in the new manifest's list,
/// and its plaintext.
struct Sealed {
    position: u32,
    bytes: Vec<u8>,
}

/// Packs being filled; full ones are handed to the sealers (encrypt, checksum, write), which
/// run beside the reading and chunking.
struct Packer {
    key: String,
    index: ChunkIndex,
    /// The packs this backup names (its manifest's), by position: earlier backups' packs
    /// as they are met, and its own once written.
    packs: Vec<Option<PackRef>>,
    /// Positions of earlier packs already in `packs`.
    earlier_at: HashMap<u32, u32>,
    /// The chunk table, in the order the files use the chunks.
    table: Vec<ChunkRef>,
    /// The pack being filled, and its position.
    open: Vec<u8>,
    open_at: Option<u32>,
    to_seal: Option<std::sync::mpsc::SyncSender<Sealed>>,
    sealed: std::sync::mpsc::Receiver<Result<(u32, PackRef)>>,
    in_flight: usize,
    stored_bytes: u64,
    stored_packs: u64,
}

impl Packer {
    /// Appends `chunk` to the table, storing it unless it is stored already.
    fn add(&mut self, chunk: &[u8]) -> Result<()> {
        let full = chunk_id(&self.key, chunk);
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&full[..ID_BYTES]);
        if let Some(&(loc, offset, len)) = self.index.known.get(&id) {
            let pack = match loc {
                Loc::Mine(p) => p,
                Loc::Earlier(e) => *self.earlier_at.entry(e).or_insert_with(|| {
                    self.packs
                        .push(Some(self.index.earlier_packs[e as usize].clone()));
                    (self.packs.len() - 1) as u32
                }),
            };
            self.table.push(ChunkRef {
                id,
                pack,
                offset,
                len,
            });
            return Ok(());
        }
        let pack = match self.open_at {
            Some(p) => p,
            None => {
                self.packs.push(None);
                let p = (self.packs.len() - 1) as u32;
                self.open_at = Some(p);
                p
            }
        };
        let offset = self.open.len() as u32;
        self.open.extend_from_slice(chunk);
        let len = chunk.len() as u32;
        self.table.push(ChunkRef {
            id,
            pack,
            offset,
            len,
        });
        // Known from now on: a repeat within this backup is referenced too.
        self.index.known.insert(id, (Loc::Mine(pack), offset, len));
        if self.open.len() >= PACK_TARGET {
            self.seal()?;
        }
        Ok(())
    }

    /// Hands the open pack to the sealers; takes what they finished meanwhile.
    fn seal(&mut self) -> Result<()> {
        self.collect(false)?;
        let Some(position) = self.open_at.take() else {
            return Ok(());
        };
        let bytes = std::mem::replace(&mut self.open, Vec::with_capacity(PACK_TARGET + (1 << 20)));
        let sent = self
            .to_seal
            .as_ref()
            .is_some_and(|tx| tx.send(Sealed { position, bytes }).is_ok());
        if !sent {
            // A sealer ended early: its error says why.
            self.collect(true)?;
            return Err(BackupError::Invalid("the pack writers stopped".into()));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Takes the sealers' results: what is ready, or (`all`) everything still in flight.
    fn collect(&mut self, all: bool) -> Result<()> {
        while self.in_flight > 0 {
            let next = if all {
                self.sealed.recv().ok()
            } else {
                self.sealed.try_recv().ok()
            };
            let Some(result) = next else {
                if all {
                    return Err(BackupError::Invalid("the pack writers stopped".into()));
                }
                return Ok(());
            };
            self.in_flight -= 1;
            let (position, pack) = result?;
            self.stored_bytes += pack.size;
            self.stored_packs += 1;
            self.packs[position as usize] = Some(pack);
        }
        Ok(())
    }

    /// Seals the last pack, waits for every write, and gives the packs in order.
    fn finish(mut self) -> Result<(Vec<PackRef>, Vec<ChunkRef>, u64, u64)> {
        self.seal()?;
        self.to_seal = None;
        self.collect(true)?;
        let packs = self
            .packs
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| BackupError::Invalid("a pack was not written".into()))?;
        Ok((packs, self.table, self.stored_bytes, self.stored_packs))
    }
}

/// How many packs are encrypted and written at once, beside the reading.
const SEALERS: usize = 2;

/// A sealer: encrypts (when the backup is), checksums and writes each pack it is handed.
fn sealer(
    objects: &dyn Objects,
    recipient: Option<&Recipient>,
    work: &std::sync::Mutex<std::sync::mpsc::Receiver<Sealed>>,
    done: &std::sync::mpsc::Sender<Result<(u32, PackRef)>>,
) {
    loop {
        let next = work.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Sealed { position, bytes }) = next else {
            return;
        };
        let result = (|| -> Result<(u32, PackRef)> {
            crate::error::failure_point("backup::pack", "write a pack")?;
            let stored = match recipient {
                Some(r) => r.encrypt(&bytes)?,
                None => bytes,
            };
            let id = hex(&Sha256::digest(&stored));
            objects.put(&pack_key(&id), &stored)?;
            Ok((
                position,
                PackRef {
                    id,
                    size: stored.len() as u64,
                },
            ))
        })();
        let failed = result.is_err();
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// Uploads the plain backup in `folder` (as [`crate::run_backup`] writes one, with its
/// manifest) as the packed backup `name` of `objects`, deduplicated against `earlier`
/// (the repository's other packed backups, by name), encrypted to `recipient` when given.
/// The manifest is written last, with a conditional create: a name taken meanwhile is
/// refused. `progress(done, total)` in bytes of the files; `cancel` stops it between
/// chunks, leaving only objects no manifest names.
pub fn upload_folder(
    objects: &dyn Objects,
    name: &str,
    folder: &Path,
    earlier: &[(String, PackedManifest)],
    recipient: Option<&Recipient>,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<UploadReport> {
    let plain = Manifest::read(folder)?;
    let key = recipient.map_or(String::new(), |r| r.as_str().to_string());
    let index = ChunkIndex::of(objects, earlier, &key);
    let (to_seal, work) = std::sync::mpsc::sync_channel::<Sealed>(SEALERS);
    let (done_tx, sealed) = std::sync::mpsc::channel();
    let work = std::sync::Mutex::new(work);
    let (packs, table, stored_bytes, stored_packs, files) = std::thread::scope(|scope| {
        for _ in 0..SEALERS {
            let (work, done) = (&work, done_tx.clone());
            scope.spawn(move || sealer(objects, recipient, work, &done));
        }
        drop(done_tx);
        let packer = Packer {
            key,
            index,
            packs: Vec::new(),
            earlier_at: HashMap::new(),
            table: Vec::new(),
            open: Vec::with_capacity(PACK_TARGET + (1 << 20)),
            open_at: None,
            to_seal: Some(to_seal),
            sealed,
            in_flight: 0,
            stored_bytes: 0,
            stored_packs: 0,
        };
        pack_files(packer, &plain, folder, progress, cancel)
    })?;
    if cancel.is_cancelled() {
        return Err(BackupError::Canceled);
    }
    let total: u64 = plain.files.iter().map(|f| f.size).sum();
    let table_len = table.len() as u64;
    let table = encode_table(&table);
    let table_ref = TableRef {
        chunks: table_len,
        sha256: hex(&Sha256::digest(&table)),
    };
    objects.put(&table_key(name), &table)?;
    let content = PackedContent {
        repository_id: plain.repository_id.clone(),
        index: plain.index.clone(),
        database: plain.database.clone(),
        files,
    };
    let (content, sealed, encryption) = match recipient {
        None => (Some(content), None, None),
        Some(r) => {
            let text =
                serde_json::to_vec(&content).map_err(|e| BackupError::Invalid(e.to_string()))?;
            let sealed = base64::engine::general_purpose::STANDARD.encode(r.encrypt(&text)?);
            (
                None,
                Some(sealed),
                Some(Encryption {
                    recipient: r.as_str().to_string(),
                }),
            )
        }
    };
    let manifest = PackedManifest {
        format: PACKED_FORMAT,
        kind: plain.kind,
        cairn_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: plain.started_at.clone(),
        finished_at: crate::run::now(),
        bytes: total,
        repository_id: plain.repository_id.clone(),
        index_activity: plain.index.completion_state.last_activity_id.0,
        encryption,
        packs,
        table: table_ref,
        content,
        sealed,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    crate::error::failure_point("backup::manifest", "write the manifest")?;
    if !objects.put_new(&manifest_key(name), &text)? {
        return Err(BackupError::TargetExists(format!(
            "{}/{name}",
            objects.location()
        )));
    }
    Ok(UploadReport {
        bytes: total,
        stored_bytes: stored_bytes + table.len() as u64 + text.len() as u64,
        stored_packs,
        manifest,
    })
}

/// Reads into `buf` until it is full or the input ends; how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

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

/// Reads, chunks and packs every file of the plain backup in `folder` (its manifest
/// `plain`); the packs, the chunk table, the bytes and packs stored, and the files.
#[allow(clippy::type_complexity)]
fn pack_files(
    mut packer: Packer,
    plain: &Manifest,
    folder: &Path,
    progress: &dyn Fn(u64, u64),
    cancel: &CancelToken,
) -> Result<(Vec<PackRef>, Vec<ChunkRef>, u64, u64, Vec<PackedFile>)> {
    let total: u64 = plain.files.iter().map(|f| f.size).sum();
    let mut done = 0u64;
    let mut files = Vec::with_capacity(plain.files.len());
    for entry in &plain.files {
        let path = folder.join(&entry.path);
        let first = packer.table.len() as u64;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut each = |chunk: &[u8], packer: &mut Packer| -> Result<()> {
            if cancel.is_cancelled() {
                return Err(BackupError::Canceled);
            }
            hasher.update(chunk);
            size += chunk.len() as u64;
            packer.add(chunk)?;
            done += chunk.len() as u64;
            if done % (1 << 20) < chunk.len() as u64 {
                progress(done, total);
            }
            Ok(())
        };
        match cut_of(entry, plain.database.as_ref(), folder) {
            Cut::Fixed(n) => {
                let mut f = std::fs::File::open(&path)
                    .map_err(crate::error::io(format!("open {}", path.display())))?;
                // Read in large blocks (a whole number of chunks), cut in memory: a SQLite
                // page is 4 KiB, and a read per page would cost more than its hash.
                let mut buf = vec![0u8; n * (INDEX_CHUNK / n).max(1)];
                loop {
                    let got = read_full(&mut f, &mut buf)
                        .map_err(crate::error::io(format!("read {}", path.display())))?;
                    if got == 0 {
                        break;
                    }
                    for chunk in buf[..got].chunks(n) {
                        each(chunk, &mut packer)?;
                    }
                }
            }
            Cut::ContentDefined => {
                let f = std::fs::File::open(&path)
                    .map_err(crate::error::io(format!("open {}", path.display())))?;
                let chunker = fastcdc::v2020::StreamCDC::new(f, CDC_AVG / 4, CDC_AVG, CDC_AVG * 4);
                for piece in chunker {
                    let piece = piece.map_err(|e| BackupError::Io {
                        context: format!("read {}", path.display()),
                        cause: std::io::Error::other(e.to_string()),
                    })?;
                    each(&piece.data, &mut packer)?;
                }
            }
        }
        // The file read now is the file the plain manifest checked.
        let sum = hex(&hasher.finalize());
        if size != entry.size || sum != entry.sha256 {
            return Err(BackupError::Invalid(format!(
                "{}: changed while it was uploaded",
                entry.path
            )));
        }
        files.push(PackedFile {
            entry: entry.clone(),
            first,
            count: packer.table.len() as u64 - first,
        });
    }
    progress(done, total);
    let (packs, table, stored_bytes, stored_packs) = packer.finish()?;
    Ok((packs, table, stored_bytes, stored_packs, files))
}
