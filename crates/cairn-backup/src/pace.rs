//! A backup's pace, set by what the writers feel rather than by a fixed rate.
//!
//! While the repository is being written to, a write is answered once the index's commit
//! that holds it is searchable, so the index's commit cycle (`Indexer::commit_cycle`) is
//! the writers' latency. A backup takes disk bandwidth (every copied byte is written and
//! synced) and CPU (a SHA-256 of every byte); either lengthens that cycle. [`AdaptivePace`]
//! compares the cycle with its value just before the backup began and steers the rate by
//! it: down by 30% while the cycle is more than 15% above it, up by 20% while it is within
//! 8%, never below a floor that keeps the backup moving. A fixed rate cannot be right on
//! every disk: 100 MB/s took 36% of the creates on a disk that wrote 280 MB/s, and would be
//! too slow on a fast one.

use std::time::{Duration, Instant};

/// How often the rate changes at most (the cycle's average needs a few commits to move).
const STEP: Duration = Duration::from_millis(250);
/// Above this ratio of the cycle to its value before the backup, the rate goes down.
const SLOWER: f64 = 1.15;
/// Below this ratio, the rate goes up.
const FASTER: f64 = 1.08;
/// A cycle shorter than this is taken as this (a few milliseconds' jitter of an idle
/// disk must not look like a doubling).
const MIN_BASELINE: Duration = Duration::from_millis(5);

/// The pace of one backup: its rate, and the commit cycle it keeps the writers to.
#[derive(Debug)]
pub struct AdaptivePace {
    /// Where a busy backup starts, in bytes per second; 0: never paced.
    start: f64,
    rate: f64,
    /// The commit cycle before the backup began (`None` until one is known).
    baseline: Option<Duration>,
    /// The cycles counted when the rate last changed: it changes only on news.
    seen: u64,
    last_step: Option<Instant>,
}

impl AdaptivePace {
    /// A pace that starts at `start_rate` bytes per second while writes go on (0: a backup
    /// always runs at full speed).
    pub fn new(start_rate: u64) -> AdaptivePace {
        AdaptivePace {
            start: start_rate as f64,
            rate: start_rate as f64,
            baseline: None,
            seen: 0,
            last_step: None,
        }
    }

    /// A backup begins: `cycle` is the writers' commit cycle now and how many cycles there
    /// were so far (none: not known yet; the first one seen during the backup stands in).
    pub fn begin(&mut self, cycle: (Duration, u64)) {
        self.rate = self.start;
        self.baseline = (cycle.1 > 0).then(|| cycle.0.max(MIN_BASELINE));
        self.seen = cycle.1;
        self.last_step = None;
    }

    /// The rate to keep now, in bytes per second; `None`: full speed (nobody is writing,
    /// or pacing is off). `busy`: an activity was indexed within the last second.
    pub fn rate(&mut self, busy: bool, cycle: (Duration, u64), now: Instant) -> Option<u64> {
        if self.start <= 0.0 || !busy {
            return None;
        }
        let Some(baseline) = self.baseline else {
            if cycle.1 > self.seen {
                self.baseline = Some(cycle.0.max(MIN_BASELINE));
                self.seen = cycle.1;
            }
            return Some(self.rate as u64);
        };
        let due = self.last_step.is_none_or(|t| now.duration_since(t) >= STEP);
        if due && cycle.1 > self.seen {
            let ratio = cycle.0.as_secs_f64() / baseline.as_secs_f64();
            if ratio > SLOWER {
                self.rate = (self.rate * 0.7).max(self.floor());
            } else if ratio < FASTER {
                self.rate = (self.rate * 1.2).min(self.ceiling());
            }
            self.seen = cycle.1;
            self.last_step = Some(now);
        }
        Some(self.rate as u64)
    }

    /// The least rate: a backup under the heaviest writes still finishes.
    fn floor(&self) -> f64 {
        (self.start / 32.0).max(1024.0 * 1024.0)
    }

    /// The most a paced backup takes (as good as unpaced on this project's disks).
    fn ceiling(&self) -> f64 {
        self.start * 16.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nobody_writing_means_full_speed_and_zero_means_never_paced() {
        let mut p = AdaptivePace::new(100 * MB);
        p.begin((ms(40), 10));
        assert_eq!(p.rate(false, (ms(40), 10), Instant::now()), None);
        let mut off = AdaptivePace::new(0);
        off.begin((ms(40), 10));
        assert_eq!(off.rate(true, (ms(400), 20), Instant::now()), None);
    }

    #[test]
    fn slower_commits_lower_the_rate_down_to_its_floor_and_it_recovers() {
        let mut p = AdaptivePace::new(100 * MB);
        let t0 = Instant::now();
        p.begin((ms(40), 10));
        assert_eq!(p.rate(true, (ms(40), 10), t0), Some(100 * MB));
        // The cycle doubles: every step with a new cycle takes 30% off, down to the floor.
        let mut last = 100 * MB;
        for i in 1..40u64 {
            let r = p.rate(true, (ms(80), 10 + i), t0 + ms(300 * i)).unwrap();
            assert!(r <= last, "step {i}: {r} > {last}");
            last = r;
        }
        assert_eq!(last, 100 * MB / 32);
        // No new cycle: the rate stays where it is.
        let t = t0 + ms(300 * 41);
        assert_eq!(p.rate(true, (ms(80), 49), t), Some(last));
        // Back to the baseline: it climbs again, by steps, up to its ceiling.
        let mut prev = last;
        for i in 0..60u64 {
            let r = p
                .rate(true, (ms(41), 50 + i), t + ms(300 * (i + 1)))
                .unwrap();
            assert!(r >= prev);
            prev = r;
        }
        assert_eq!(prev, 1600 * MB);
    }

    #[test]
    fn one_step_per_quarter_second_and_an_unknown_baseline_is_learnt() {
        let mut p = AdaptivePace::new(100 * MB);
        let t0 = Instant::now();
        p.begin((ms(0), 0));
        // No cycle before the backup: the first one is the baseline.
        assert_eq!(p.rate(true, (ms(30), 1), t0), Some(100 * MB));
        let first = p.rate(true, (ms(60), 2), t0 + ms(10)).unwrap();
        assert!(first.abs_diff(70 * MB) <= 1, "{first}");
        // Within 250 ms of that step nothing changes, whatever the cycle.
        assert_eq!(p.rate(true, (ms(90), 3), t0 + ms(100)), Some(first));
        assert!(p.rate(true, (ms(90), 4), t0 + ms(300)).unwrap() < first);
    }
}
