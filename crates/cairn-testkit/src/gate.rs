//! [`Gate`]: holds the first thread that reaches a named failure point until the test
//! releases it, so that a race between "checked" and "acted" can be played out in a fixed
//! order instead of hoped for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A gate on a failure point (see the module docs). Only the first hit is held; later hits
/// (the other side of the race) pass. The failure point must be compiled in (the `fail`
/// crate's `failpoints` feature) and the test must hold a `fail::FailScenario`.
pub struct Gate {
    point: String,
    /// (a thread is held, the gate was released)
    state: Mutex<(bool, bool)>,
    cond: Condvar,
    hits: AtomicUsize,
}

/// How long a gate waits for the other side before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

impl Gate {
    /// Installs a gate on the failure point `point`.
    ///
    /// # Panics
    ///
    /// When the point cannot be configured.
    pub fn install(point: &str) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            point: point.to_string(),
            state: Mutex::new((false, false)),
            cond: Condvar::new(),
            hits: AtomicUsize::new(0),
        });
        let g = gate.clone();
        fail::cfg_callback(point, move || {
            if g.hits.fetch_add(1, Ordering::SeqCst) > 0 {
                return;
            }
            let mut st = g.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = true;
            g.cond.notify_all();
            let _ = g
                .cond
                .wait_timeout_while(st, PATIENCE, |s| !s.1)
                .unwrap_or_else(|p| p.into_inner());
        })
        .unwrap_or_else(|e| panic!("configure the failure point {point}: {e}"));
        gate
    }

    /// Waits until a thread is held at the gate.
    ///
    /// # Panics
    ///
    /// When none arrives within 20 s.
    pub fn wait_held(&self) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (_st, waited) = self
            .cond
            .wait_timeout_while(st, PATIENCE, |s| !s.0)
            .unwrap_or_else(|p| p.into_inner());
        assert!(!waited.timed_out(), "nothing reached {}", self.point);
    }

    /// Lets the held thread go on, and removes the gate.
    pub fn release(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cond.notify_all();
        fail::remove(&self.point);
    }
}
