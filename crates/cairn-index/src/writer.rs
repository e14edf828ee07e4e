//! The only writer of an index: every write goes through [`Indexer::with_writer`], which
//! rolls the writer back on any error, and [`Indexer::commit`], which publishes a
//! completion state only once its commit succeeded (invariant 2).

use std::sync::MutexGuard;

use tantivy::IndexWriter;

use crate::completion::CompletionState;
use crate::error::{IndexError, Result};
use crate::indexer::{lock, Indexer, WriterSlot};

impl Indexer {
    /// Holds the writer (no commit can run) until the guard is dropped.
    pub(crate) fn writer_lock(&self) -> MutexGuard<'_, WriterSlot> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` with the writer, the only way anything is written to the index.
    ///
    /// An error leaves nothing of `work` behind: the writer is rolled back to its last
    /// commit, so no document queued before the error can slip into a later commit, and no
    /// delete can be committed without the documents that replace it. (A Tantivy indexing
    /// thread that fails, on a full disk say, is not replaced; without the rollback the
    /// writer went on with fewer threads or none, and committed deletes whose additions were
    /// lost.) When even the rollback fails, the writer is dropped and opened again at the
    /// next use. The completion state is published only by a commit that succeeded, so
    /// whatever failed stays pending and is applied again.
    pub(crate) fn with_writer<T>(
        &self,
        work: impl FnOnce(&mut IndexWriter) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*guard, WriterSlot::Lost) {
            let writer = self
                .index()
                .writer_with_num_threads(self.options.writer_threads, self.options.writer_memory)
                .map_err(|e| self.failed(lock(e, &self.dir)))?;
            tracing::warn!("the index writer was opened again after a fault");
            *guard = WriterSlot::Open(Box::new(writer));
        }
        let WriterSlot::Open(writer) = &mut *guard else {
            return Err(IndexError::ShuttingDown);
        };
        match work(writer) {
            Ok(value) => {
                *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(value)
            }
            Err(IndexError::ShuttingDown) => Err(IndexError::ShuttingDown),
            Err(e) => {
                if let Err(rollback) = writer.rollback() {
                    tracing::error!(
                        "the index writer could not roll back ({rollback}); it is dropped and \
                         opened again"
                    );
                    *guard = WriterSlot::Lost;
                }
                Err(self.failed(e))
            }
        }
    }

    /// Records `e` as the indexer's current fault.
    pub(crate) fn failed(&self, e: IndexError) -> IndexError {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        e
    }

    pub(crate) fn commit(&self, writer: &mut IndexWriter, state: &CompletionState) -> Result<()> {
        fail::fail_point!("indexer::commit", |m| Err(IndexError::Io {
            context: "commit the index".into(),
            cause: cairn_store::fault::injected("indexer::commit", m),
        }));
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&state.to_payload());
        prepared.commit()?;
        self.live().reader.reload()?;
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        self.published_cond.notify_all();
        Ok(())
    }
}
