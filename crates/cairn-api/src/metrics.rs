//! Prometheus metrics: request counts and latencies by route and status, indexing lag and
//! document count.
//!
//! Written by hand: the text format is a few lines per series, and the exporter crates bring
//! their own HTTP server and registry machinery that this API does not need.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The API's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), Series>>,
}

/// The route label of a response, set by the handler that answered it.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub &'static str);

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry((route.to_string(), status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition, with the index gauges given.
    pub fn render(
        &self,
        lag: i64,
        documents: u64,
        last_activity: i64,
        db_last_activity: i64,
    ) -> String {
        let mut out = String::new();
        let map = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP cairn_http_requests_total HTTP requests answered."
        );
        let _ = writeln!(out, "# TYPE cairn_http_requests_total counter");
        for ((route, status), s) in &map {
            let _ = writeln!(
                out,
                "cairn_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(out, "# TYPE cairn_http_request_duration_seconds histogram");
        for ((route, status), s) in &map {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cairn_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "cairn_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        for (name, help, value) in [
            (
                "cairn_index_lag_activities",
                "Database last activity id minus the index's LastActivityId.",
                lag,
            ),
            (
                "cairn_index_documents",
                "Documents in the index.",
                documents as i64,
            ),
            (
                "cairn_index_last_activity_id",
                "The index's LastActivityId.",
                last_activity,
            ),
            (
                "cairn_database_last_activity_id",
                "The database's last activity id.",
                db_last_activity,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("item", 200, Duration::from_millis(3));
        m.observe("item", 200, Duration::from_millis(30));
        let text = m.render(5, 10, 7, 12);
        assert!(text.contains("cairn_http_requests_total{route=\"item\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("cairn_index_lag_activities 5"));
    }
}
