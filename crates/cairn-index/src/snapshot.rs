//! Consistent snapshots of a live index (design invariant 6).
//!
//! A snapshot is one committed state: its `IndexMeta` (read while no commit can run) and
//! the segment files it names. Holding the `IndexMeta` keeps its segments alive in the
//! index's inventory, so the writer's garbage collection does not delete their files while
//! they are copied, even as the writer keeps committing and merging. Segment files are
//! write-once; `meta.json` is not, so a backup never copies it from disk: it writes the
//! snapshot's own `IndexMeta` instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tantivy::{Index, IndexMeta};

use crate::completion::CompletionState;
use crate::error::{IndexError, Result};
use crate::indexer::Indexer;

/// One committed state of an index, protected from garbage collection while alive.
pub struct IndexSnapshot {
    meta: IndexMeta,
    dir: PathBuf,
    /// The completion state committed with this state.
    pub state: CompletionState,
    /// Live documents.
    pub documents: u64,
    /// The segment files (relative names) that exist on disk, sorted.
    pub files: Vec<PathBuf>,
    /// Keeps a live index from being swapped away while its files are read.
    _pin: Option<Pin>,
}

/// One alive snapshot of a live index, counted (see [`Indexer::replace_with`]).
struct Pin(Arc<AtomicU64>);

impl Drop for Pin {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for IndexSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexSnapshot")
            .field("state", &self.state)
            .field("files", &self.files.len())
            .finish()
    }
}

/// The format of the index files this build writes and reads, as a backup's manifest
/// records it.
pub const INDEX_FORMAT: &str = "tantivy-0.27";

/// What a stopped index folder (a backup's copy) holds, read without a writer and without
/// Tantivy's meta lock, so that a copy on read-only storage can be checked.
#[derive(Clone, Debug)]
pub struct IndexCopy {
    /// The completion state of its commit (the default when it has none).
    pub state: CompletionState,
    /// Live documents, as its `meta.json` counts them.
    pub documents: u64,
    /// Live documents, as its segments, each opened, count them.
    pub opened_documents: u64,
    /// Every file the commit needs (its segments' files and `meta.json`), sorted.
    pub needed_files: Vec<PathBuf>,
}

impl IndexCopy {
    /// Opens the index in `dir` and every one of its segments.
    pub fn open(dir: &Path) -> Result<IndexCopy> {
        let index = Index::open_in_dir(dir)?;
        let meta = index.load_metas()?;
        let mut needed_files: Vec<PathBuf> = meta.list_segment_files().into_iter().collect();
        needed_files.push(PathBuf::from("meta.json"));
        needed_files.sort();
        let documents = meta.segments.iter().map(|s| s.num_docs() as u64).sum();
        // Segment by segment, not through an `IndexReader`: that takes the meta lock, a
        // file written into the folder.
        let mut opened_documents = 0u64;
        for segment in &meta.segments {
            let reader = tantivy::SegmentReader::open(&index.segment(segment.clone()))?;
            opened_documents += u64::from(reader.num_docs());
        }
        Ok(IndexCopy {
            state: crate::completion::completion_state(&meta)?.unwrap_or_default(),
            documents,
            opened_documents,
            needed_files,
        })
    }
}

impl IndexSnapshot {
    fn from_meta(dir: &Path, meta: IndexMeta) -> Result<Self> {
        let state = crate::completion::completion_state(&meta)?.unwrap_or_default();
        let documents = meta.segments.iter().map(|s| s.num_docs() as u64).sum();
        let mut files: Vec<PathBuf> = meta
            .list_segment_files()
            .into_iter()
            .filter(|f| dir.join(f).is_file())
            .collect();
        files.sort();
        Ok(IndexSnapshot {
            meta,
            dir: dir.to_path_buf(),
            state,
            documents,
            files,
            _pin: None,
        })
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `meta.json` of this state, to write into a copy (never the one on disk).
    pub fn meta_json(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.meta).map_err(|e| IndexError::BadPayload(e.to_string()))
    }

    /// Takes a snapshot of a stopped index (no writer runs: the files cannot change).
    pub fn of_stopped(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir)?;
        let meta = index.load_metas()?;
        Self::from_meta(dir, meta)
    }
}

impl Indexer {
    /// A snapshot of the last commit, taken while no commit can run, so that the segments
    /// and the completion state belong to one committed state.
    /// Until it is dropped, the index is not swapped ([`Indexer::replace_with`] waits).
    pub fn snapshot(&self) -> Result<IndexSnapshot> {
        let guard = self.writer_lock();
        self.pins.fetch_add(1, Ordering::SeqCst);
        let pin = Pin(self.pins.clone());
        let meta = self.index().load_metas()?;
        drop(guard);
        let mut snapshot = IndexSnapshot::from_meta(self.dir(), meta)?;
        snapshot._pin = Some(pin);
        Ok(snapshot)
    }
}
