//! Polling with deadlines, instead of blind sleeps.

use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`poll_until`] call their closure.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `f` every [`POLL_INTERVAL`] until it returns `Some`, for at most
/// `deadline`; returns the value, or `None` if the deadline passed first.
///
/// `f` is always called at least once, and once more after the deadline has
/// passed, so a condition that becomes true while sleeping is not missed.
pub fn poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL.min(deadline - elapsed));
        if start.elapsed() >= deadline {
            return f();
        }
    }
}

/// Calls `f` every [`POLL_INTERVAL`] until it returns `Some`, and returns
/// the value.
///
/// # Panics
///
/// Panics, with a message naming `what` and `deadline`, if `f` has not
/// returned `Some` within `deadline`. The panic is reported at the caller's
/// location.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use cairn_testkit::wait_until;
///
/// let ready_at = Instant::now() + Duration::from_millis(50);
/// let waited = wait_until("the clock", Duration::from_secs(5), || {
///     (Instant::now() >= ready_at).then(|| "ready")
/// });
/// assert_eq!(waited, "ready");
/// ```
#[track_caller]
pub fn wait_until<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    match poll_until(deadline, f) {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}
