//! Cancellation of long work (a backup, a restore, a rebuild): one token, held by whoever
//! may stop the work (a cancel request, Ctrl-C, a server's stop) and checked by the work
//! between its steps, so that it stops at a point where it can leave nothing half-done.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{Result, StoreError};

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const COMMITTED: u8 = 2;

/// A shared cancel flag (clones share it). Work that reaches its point of no return (a
/// restore's swap, a rebuild's rename) [commits](CancelToken::commit): from then on a cancel
/// is refused, and whoever asked is told so instead of being told "stopping".
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicU8>);

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop at its next check. False when the work has already committed
    /// (it will run to its end).
    pub fn cancel(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == CANCELLED,
        }
    }

    /// Whether a cancel was asked (and taken).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CANCELLED
    }

    /// [`StoreError::Cancelled`] once a cancel was asked.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(StoreError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The point of no return: [`StoreError::Cancelled`] if a cancel came first, else from
    /// now on every cancel is refused.
    pub fn commit(&self) -> Result<()> {
        match self
            .0
            .compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Ok(()),
            Err(COMMITTED) => Ok(()),
            Err(_) => Err(StoreError::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_before_the_commit_wins_and_after_it_is_refused() {
        let t = CancelToken::new();
        assert!(t.clone().cancel());
        assert!(t.is_cancelled());
        assert!(t.commit().is_err());

        let t = CancelToken::new();
        t.commit().unwrap();
        assert!(!t.cancel());
        assert!(!t.is_cancelled());
        t.check().unwrap();
        t.commit().unwrap();
    }
}
