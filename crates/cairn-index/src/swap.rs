//! Replacing a live index without downtime (`RebuildIndex`, `RestoreIndex`).
//!
//! The new index is made beside the live one, in `.index-rebuild` next to the index folder,
//! by a second indexer over the same database: built from it, or opened from a restored
//! copy (repaired when ahead of it, invariant 5), then caught up, while the live index goes
//! on answering queries and indexing writes. Then, under the live writer's lock (no commit
//! can run) and with no snapshot alive (a backup reading the live files), it catches up the
//! last activities, commits, and takes the live one's place by two renames: the live index
//! moves to `.index-old`, the new one to the index folder. The indexer reopens it there and
//! serves it from the next query on; searches already running finish on the old files,
//! which stay readable until the last of them is done. `.index-old` is removed afterwards.
//!
//! A crash anywhere leaves one of three states, each undone or finished by
//! [`recover_interrupted_swap`] before the index is next opened: a half-built
//! `.index-rebuild` (removed), the live index moved aside but not yet replaced (put back),
//! or the new index in place with `.index-old` beside it (removed).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_store::CancelToken;
use tantivy::{Index, IndexWriter, ReloadPolicy};

use crate::completion::CompletionState;
use crate::error::Result;
use crate::indexer::{index_exists, io, lock, Indexer, IndexerOptions, Live, RebuildProgress};
use crate::indexer::{StartupAction, WriterSlot};
use crate::schema::IndexSchema;

/// Where a new index is made, next to the index folder.
pub const BESIDE: &str = ".index-rebuild";
/// Where the replaced index waits to be removed, next to the index folder.
pub const REPLACED: &str = ".index-old";

fn sibling(index_dir: &Path, name: &str) -> PathBuf {
    index_dir
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// The folder a new index for `index_dir` is made in.
pub fn beside_dir(index_dir: &Path) -> PathBuf {
    sibling(index_dir, BESIDE)
}

/// The folder a replaced index waits in to be removed.
pub fn replaced_dir(index_dir: &Path) -> PathBuf {
    sibling(index_dir, REPLACED)
}

fn remove(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Finishes or undoes an index swap (or an offline rebuild) that a crash interrupted, before
/// the index in `index_dir` is opened: returns what it did, if anything.
pub fn recover_interrupted_swap(index_dir: &Path) -> Result<Option<String>> {
    let beside = beside_dir(index_dir);
    let old = replaced_dir(index_dir);
    let mut did = Vec::new();
    if !index_exists(index_dir) && index_exists(&old) {
        // Between the two renames: the live index goes back.
        remove(index_dir)?;
        std::fs::rename(&old, index_dir).map_err(io(format!(
            "put the index {} back to {}",
            old.display(),
            index_dir.display()
        )))?;
        did.push("the index moved aside by an interrupted swap was put back");
    }
    if beside.exists() {
        remove(&beside)?;
        did.push("a half-made new index was removed");
    }
    if old.exists() {
        remove(&old)?;
        did.push("a replaced index was removed");
    }
    if did.is_empty() {
        return Ok(None);
    }
    if let Some(parent) = index_dir.parent() {
        cairn_store::durable::sync_dir(parent)?;
    }
    Ok(Some(did.join("; ")))
}

/// Where a replacement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapStep {
    /// Building (or opening and repairing) the new index: `done` of `total` items.
    Building {
        /// Items indexed so far.
        done: u64,
        /// Items in the database when the build began.
        total: u64,
    },
    /// Catching up what was written meanwhile.
    CatchingUp,
    /// Waiting for a backup that reads the live index to finish.
    WaitingForBackup,
    /// Replacing the live index (the point of no return).
    Swapping,
}

/// What a replacement did.
#[derive(Clone, Debug)]
pub struct Replaced {
    /// How the new index was made: rebuilt, repaired or caught up.
    pub action: StartupAction,
    /// Its documents.
    pub documents: u64,
    /// Its completion state, now the live one.
    pub state: CompletionState,
}

impl Indexer {
    /// Makes a new index in [`beside_dir`] (empty: built from the database; holding a
    /// restored index: opened, repaired if ahead, caught up), then swaps it in for the live
    /// one (see the module's documentation). `cancel` stops it until the swap begins; the
    /// live index is untouched until then, and the new one is removed.
    pub fn replace_with(
        &self,
        cancel: &CancelToken,
        progress: &dyn Fn(SwapStep),
    ) -> Result<Replaced> {
        let beside = beside_dir(&self.dir);
        let result = self.replace_inner(&beside, cancel, progress);
        if result.is_err() {
            if let Err(e) = remove(&beside) {
                tracing::warn!("{e}; the next start removes it");
            }
        }
        result
    }

    fn replace_inner(
        &self,
        beside: &Path,
        cancel: &CancelToken,
        progress: &dyn Fn(SwapStep),
    ) -> Result<Replaced> {
        let options = IndexerOptions {
            cancel: cancel.clone(),
            ..self.options.clone()
        };
        let (fresh, report) = Indexer::open(
            beside,
            self.store.clone(),
            options,
            &|p: RebuildProgress| {
                progress(SwapStep::Building {
                    done: p.done,
                    total: p.total,
                })
            },
        )?;
        progress(SwapStep::CatchingUp);
        cancel.check()?;
        fresh.catch_up()?;
        // No commit of the live index may run from here, and no backup may be reading its
        // files: their names are about to change.
        let mut guard = loop {
            cancel.check()?;
            let guard = self.writer_lock();
            if self.pins.load(Ordering::SeqCst) == 0 {
                break guard;
            }
            drop(guard);
            progress(SwapStep::WaitingForBackup);
            std::thread::sleep(Duration::from_millis(100));
        };
        // The last activities, while no write can be indexed by the live index.
        fresh.catch_up()?;
        fail::fail_point!("index::swap");
        cancel.commit()?;
        progress(SwapStep::Swapping);
        fresh.shutdown(None)?;
        let state = fresh.state();
        let documents = fresh.searcher().num_docs();
        drop(fresh);
        // The live writer goes first (it holds the folder's lock); until the new one is
        // open, its slot is `Lost`, so any failure below reopens a writer at the next use.
        if let WriterSlot::Open(w) = std::mem::replace(&mut *guard, WriterSlot::Lost) {
            if let Err(e) = w.wait_merging_threads() {
                tracing::warn!("the live index's merges ended with an error: {e}");
            }
        }
        let old = replaced_dir(&self.dir);
        remove(&old)?;
        std::fs::rename(&self.dir, &old).map_err(io(format!(
            "move the live index {} aside",
            self.dir.display()
        )))?;
        if let Err(e) = std::fs::rename(beside, &self.dir) {
            let back = std::fs::rename(&old, &self.dir);
            return Err(io(format!(
                "move the new index into {}{}",
                self.dir.display(),
                if back.is_err() {
                    " (and the live one could not be put back: the next start does)"
                } else {
                    ""
                }
            ))(e));
        }
        if let Some(parent) = self.dir.parent() {
            cairn_store::durable::sync_dir(parent)?;
        }
        let (index, reader, writer) = self.open_live()?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Live { index, reader };
        *guard = WriterSlot::Open(Box::new(writer));
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        self.published_cond.notify_all();
        drop(guard);
        tracing::info!(documents, state = %state, "the new index replaced the live one");
        if let Err(e) = remove(&old) {
            tracing::warn!("{e}; the next start removes it");
        }
        Ok(Replaced {
            action: report.action,
            documents,
            state,
        })
    }

    /// Opens the index in the index folder: the index, a reader, the writer.
    fn open_live(&self) -> Result<(Index, tantivy::IndexReader, IndexWriter)> {
        let index = Index::open_in_dir(&self.dir)?;
        IndexSchema::register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let writer = index
            .writer_with_num_threads(self.options.writer_threads, self.options.writer_memory)
            .map_err(|e| lock(e, &self.dir))?;
        Ok((index, reader, writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_swap_is_undone_or_finished() {
        let root = tempfile::tempdir().unwrap();
        let index = root.path().join("index");
        let mark = |d: &Path, text: &str| {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("meta.json"), text).unwrap();
        };
        // Nothing to do.
        mark(&index, "live");
        assert_eq!(recover_interrupted_swap(&index).unwrap(), None);
        // A half-made new index.
        mark(&beside_dir(&index), "new");
        assert!(recover_interrupted_swap(&index).unwrap().is_some());
        assert!(!beside_dir(&index).exists());
        // Between the renames: the live one is put back, the new one removed.
        std::fs::rename(&index, root.path().join(REPLACED)).unwrap();
        mark(&beside_dir(&index), "new");
        assert!(recover_interrupted_swap(&index).unwrap().is_some());
        assert_eq!(
            std::fs::read_to_string(index.join("meta.json")).unwrap(),
            "live"
        );
        assert!(!beside_dir(&index).exists() && !root.path().join(REPLACED).exists());
        // After the renames: the replaced one is removed.
        mark(&root.path().join(REPLACED), "old");
        assert!(recover_interrupted_swap(&index).unwrap().is_some());
        assert_eq!(
            std::fs::read_to_string(index.join("meta.json")).unwrap(),
            "live"
        );
    }
}
