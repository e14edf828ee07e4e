//! Cancellation of long work (a backup, a restore, a rebuild): one token, held by whoever
//! may stop the work (a cancel request, Ctrl-C, a server's stop) and checked by the work
//! between its steps, so that it stops at a point where it can leave nothing half-done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Result, StoreError};

/// A shared cancel flag (clones share it).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a cancel was asked.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// [`StoreError::Cancelled`] once a cancel was asked.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(StoreError::Cancelled)
        } else {
            Ok(())
        }
    }
}
