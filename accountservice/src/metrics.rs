//! Prometheus metrics kept in plain atomics.
//!
//! Every request touches these counters, so they must never take a lock: one
//! relaxed `fetch_add` per counter, and the text format is only assembled when
//! someone scrapes `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The routes of the service, as labels. `Unmatched` keeps unknown paths from
/// creating unbounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Account,
    Health,
    Testability,
    Metrics,
    Unmatched,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Account,
        Route::Health,
        Route::Testability,
        Route::Metrics,
        Route::Unmatched,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::Account => "/accounts/{accountId}",
            Route::Health => "/health",
            Route::Testability => "/testability/healthy/{state}",
            Route::Metrics => "/metrics",
            Route::Unmatched => "unmatched",
        }
    }
}

/// Status codes the service produces; anything else lands in the last slot.
const STATUSES: [u16; 7] = [200, 400, 404, 405, 500, 503, 0];

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

#[derive(Default)]
struct Histogram {
    /// Per-bucket (non-cumulative) counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        let slot = BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }
}

/// Outcome of one attempt to add a quote to an account.
#[derive(Debug, Clone, Copy)]
pub enum QuoteOutcome {
    Ok,
    Failed,
    ShortCircuited,
    /// The bulkhead was full: answered the fallback without calling.
    Shed,
}

#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; Route::ALL.len()],
    latency: [Histogram; Route::ALL.len()],
    quotes: [AtomicU64; 4],
}

impl Metrics {
    pub fn record(&self, route: Route, status: u16, elapsed: Duration) {
        let r = route as usize;
        self.requests[r][status_slot(status)].fetch_add(1, Relaxed);
        self.latency[r].observe(elapsed);
    }

    pub fn record_quote(&self, outcome: QuoteOutcome) {
        self.quotes[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Renders the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, breaker_open: Option<bool>) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str(
            "# HELP accountservice_http_requests_total HTTP requests by route and status.\n",
        );
        out.push_str("# TYPE accountservice_http_requests_total counter\n");
        for route in Route::ALL {
            for (slot, &status) in STATUSES.iter().enumerate() {
                let n = self.requests[route as usize][slot].load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = if status == 0 {
                    "other".to_owned()
                } else {
                    status.to_string()
                };
                let _ = writeln!(
                    out,
                    "accountservice_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.label()
                );
            }
        }

        out.push_str(
            "# HELP accountservice_http_request_duration_seconds Time to answer a request.\n",
        );
        out.push_str("# TYPE accountservice_http_request_duration_seconds histogram\n");
        for route in Route::ALL {
            let h = &self.latency[route as usize];
            let mut cumulative = 0;
            for (slot, bucket) in h.buckets.iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let le = match BUCKETS_US.get(slot) {
                    Some(&us) => format!("{}", us as f64 / 1e6),
                    None => "+Inf".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "accountservice_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                    route.label()
                );
            }
            let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "accountservice_http_request_duration_seconds_sum{{route=\"{}\"}} {sum}",
                route.label()
            );
            let _ = writeln!(
                out,
                "accountservice_http_request_duration_seconds_count{{route=\"{}\"}} {cumulative}",
                route.label()
            );
        }

        if let Some(open) = breaker_open {
            out.push_str("# HELP accountservice_quote_requests_total Quote lookups by outcome.\n");
            out.push_str("# TYPE accountservice_quote_requests_total counter\n");
            for (outcome, label) in [
                (QuoteOutcome::Ok, "ok"),
                (QuoteOutcome::Failed, "failed"),
                (QuoteOutcome::ShortCircuited, "short_circuited"),
                (QuoteOutcome::Shed, "shed"),
            ] {
                let n = self.quotes[outcome as usize].load(Relaxed);
                let _ = writeln!(
                    out,
                    "accountservice_quote_requests_total{{outcome=\"{label}\"}} {n}"
                );
            }
            out.push_str("# HELP accountservice_quote_breaker_open 1 while the quote circuit breaker is open.\n");
            out.push_str("# TYPE accountservice_quote_breaker_open gauge\n");
            let _ = writeln!(out, "accountservice_quote_breaker_open {}", u8::from(open));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record(Route::Account, 200, Duration::from_micros(30));
        m.record(Route::Account, 200, Duration::from_micros(700));
        m.record(Route::Account, 404, Duration::from_secs(3));
        let text = m.render(None);
        assert!(text.contains(
            "accountservice_http_requests_total{route=\"/accounts/{accountId}\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "accountservice_http_requests_total{route=\"/accounts/{accountId}\",status=\"404\"} 1\n"
        ));
        assert!(text.contains(
            "accountservice_http_request_duration_seconds_bucket{route=\"/accounts/{accountId}\",le=\"0.00005\"} 1\n"
        ));
        assert!(text.contains(
            "accountservice_http_request_duration_seconds_bucket{route=\"/accounts/{accountId}\",le=\"0.001\"} 2\n"
        ));
        assert!(text.contains(
            "accountservice_http_request_duration_seconds_bucket{route=\"/accounts/{accountId}\",le=\"+Inf\"} 3\n"
        ));
        assert!(!text.contains("quote"));
    }
}
