//! The lag over time that the admin console charts: this server's own samples of the
//! index's lag behind the database, every [`EVERY`], the last hour kept in memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the lag is sampled.
pub const EVERY: Duration = Duration::from_secs(10);
/// How many samples are kept: an hour's.
const KEPT: usize = 360;

/// Samples of `(unix time in ms, lag in activities)`, oldest first.
#[derive(Debug, Default)]
pub struct LagSamples {
    kept: Mutex<VecDeque<(u64, i64)>>,
}

impl LagSamples {
    /// Adds one sample taken now.
    pub fn add(&self, lag: i64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((now, lag));
    }

    /// The samples of the last hour, oldest first.
    pub fn last_hour(&self) -> Vec<(u64, i64)> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_samples_is_kept_oldest_first() {
        let s = LagSamples::default();
        for lag in 0..(KEPT as i64 + 5) {
            s.add(lag);
        }
        let kept = s.last_hour();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.first().map(|k| k.1), Some(5));
        assert_eq!(kept.last().map(|k| k.1), Some(KEPT as i64 + 4));
    }
}
