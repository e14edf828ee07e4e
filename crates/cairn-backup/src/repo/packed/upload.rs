//! Uploading a plain backup as a packed one: files read in blocks and cut into chunks
//! (fixed pieces, SQLite pages, content-defined for `pg_dump`), chunks the newest earlier
//! backups hold referenced, the rest packed, sealed (compressed, encrypted) and written by
//! sealer threads while the next pack fills; the chunk table and the manifest last.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::*;

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

/// The page size of the SQLite database at `path`, or the default.
fn sqlite_page_size(path: &Path) -> usize {
    cairn_store::sqlite_page_size(path).unwrap_or(SQLITE_DEFAULT_PAGE)
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
