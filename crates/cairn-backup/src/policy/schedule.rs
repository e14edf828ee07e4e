//! When a policy runs: a 5-field cron pattern in UTC (the `croner` crate reads it), or
//! `every DURATION` (`every 15m`, `every 6h`; `humantime` reads the duration).

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// A policy's schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron pattern (minute hour day-of-month month day-of-week), in UTC.
    Cron(Box<croner::Cron>),
    /// At a fixed interval from the last run.
    Every(Duration),
}

impl Schedule {
    /// Parses `every DURATION` or a 5-field cron pattern; the reason when neither.
    pub fn parse(text: &str) -> std::result::Result<Schedule, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("every ") {
            let every = humantime::parse_duration(rest.trim())
                .map_err(|e| format!("{rest:?} is not a duration such as 15m, 6h or 1d ({e})"))?;
            if every < Duration::from_secs(1) {
                return Err("an interval is at least 1s".into());
            }
            return Ok(Schedule::Every(every));
        }
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "a schedule is a 5-field cron pattern (minute hour day month weekday, UTC) or \
                 \"every 15m\"; this one has {fields} fields"
            ));
        }
        croner::Cron::from_str(text)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("not a cron pattern: {e}"))
    }

    /// The time between two runs around `at` (for a cron schedule, between its next two
    /// occurrences; an hour when it has none).
    pub fn period(&self, at: SystemTime) -> std::time::Duration {
        let next = self.next_after(at);
        let after = next.and_then(|n| self.next_after(n));
        match (next, after) {
            (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
            _ => std::time::Duration::from_secs(3600),
        }
    }

    /// The first run strictly after `after`; `None` if the pattern never matches again.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        match self {
            Schedule::Every(d) => after.checked_add(*d),
            Schedule::Cron(c) => {
                let t: DateTime<Utc> = after.into();
                c.find_next_occurrence(&t, false).ok().map(SystemTime::from)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().into()
    }

    #[test]
    fn cron_and_every_give_the_next_run() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-07T01:59:59Z")),
            Some(at("2026-12-07T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-12-07T02:00:00Z")),
            Some(at("2026-12-08T02:00:00Z"))
        );
        let s = Schedule::parse("every 15m").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-07T02:00:00Z")),
            Some(at("2026-12-07T02:15:00Z"))
        );
        let s = Schedule::parse("*/10 * * * 1-5").unwrap();
        // 2026-12-05 is a Saturday: next is Monday 00:00.
        assert_eq!(
            s.next_after(at("2026-12-05T12:00:00Z")),
            Some(at("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in [
            "",
            "0 25 * * *",
            "* * * *",
            "0 0 * * * *",
            "every",
            "every 0s",
            "every soon",
            "every -5m",
            "61 * * * *",
            "@reboot",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }
}
