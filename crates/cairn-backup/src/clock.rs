//! Times as the backup crate writes and reads them: RFC 3339 text (manifests, histories,
//! policy state, the archive's timeline) and milliseconds since the epoch (archived
//! changes).

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in RFC 3339.
pub fn now() -> String {
    format(SystemTime::now())
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `t` in RFC 3339.
pub fn format(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// `ms` since the epoch in RFC 3339.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The last microsecond of the millisecond `ms`, in RFC 3339: a time given to the
/// millisecond means every moment of it (what a commit later in that millisecond needs).
pub fn format_end_of_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000 + 999_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// An RFC 3339 time.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// An RFC 3339 time in milliseconds since the epoch (finer fractions are dropped).
pub fn parse_ms(text: &str) -> Option<i64> {
    parse(text).map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ms = 1_796_633_344_859;
        assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        assert_eq!(
            parse_ms("2026-12-07T10:15:03.250Z"),
            Some(1_796_638_503_250)
        );
        assert_eq!(
            format_end_of_ms(1_796_638_503_250),
            "2026-12-07T10:15:03.250999Z"
        );
        assert_eq!(parse_ms(&format_end_of_ms(ms)), Some(ms));
        assert_eq!(parse("yesterday"), None);
        assert!(parse(&now()).is_some());
    }
}
