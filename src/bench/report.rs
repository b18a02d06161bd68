//! The report of a run, in the order the issue asks for: requests,
//! failures by kind, throughput, latency percentiles, a per-second
//! timeline, and which replica answered how many. One structure serves both
//! the table a person reads and the JSON a script parses, so they never
//! disagree.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::kill::Event;
use super::load::{Failures, Plan, Quotes, Recorder, Target};
use super::plan::{IdRange, Model};
use super::resources::Resources;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub lab: String,
    /// What was called, `{id}` standing for the feed's ids.
    pub url: String,
    pub ids: IdRange,
    pub model: Model,
    pub duration_s: f64,
    pub connections: usize,
    pub timeout_s: f64,
    /// Ctrl-C stopped the run: the numbers are of what ran until then.
    pub interrupted: bool,
    /// Requests settled: answered, failed or timed out.
    pub requests: u64,
    /// Open loop only: how many the schedule held (all of them are settled
    /// unless the run was interrupted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
    pub failures: Failures,
    pub elapsed_s: f64,
    /// Settled requests per second of the run.
    pub throughput_rps: f64,
    /// Of answered requests; absent when nothing answered.
    pub latency_ms: Option<Latency>,
    pub timeline: Vec<SecondRow>,
    pub served_by: Vec<Replica>,
    /// Answers by the quote they carried (none for a lab without quotes).
    pub quotes: Quotes,
    /// The fallback's share of the answers that carried a quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_percent: Option<f64>,
    /// What `--kill` did, and when.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// The seconds from the kill to the heal (or the end of the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<Window>,
    /// CPU and memory of each task and node while the load ran.
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// Seconds of the timeline, `from` included, `to` not.
    pub from_s: u64,
    pub to_s: u64,
    pub requests: u64,
    pub failures: u64,
    pub latency_ms: Option<Latency>,
    /// How long the kill was felt: seconds from the kill's second through
    /// the last one with a failed request or an answer more than twice as
    /// slow as any before the kill (0: none). Twice, because the default
    /// lab's answers already reach the quote call's 500 ms timeout, give
    /// or take a few ms; a SYN resent to a dead holder costs a whole
    /// second. A second is the timeline's grain, so a failover of 300 ms
    /// inside one second counts 1.
    pub disturbed_s: u64,
}

impl Window {
    /// The failover window: from the second a node was killed to the second
    /// it was healed, else to the end of the run.
    fn of(events: &[Event], recorded: &Recorder) -> Option<Window> {
        let killed = events.iter().find(|e| e.what.starts_with("killed "))?;
        let from = killed.at_s as u64;
        let to = events
            .iter()
            .find(|e| e.what.starts_with("healed ") && e.at_s >= killed.at_s)
            .map_or(recorded.seconds.len() as u64, |e| e.at_s as u64 + 1);
        let mut latency = Histogram::<u64>::new_from(&recorded.latency);
        let (mut requests, mut failures) = (0, 0);
        for second in recorded
            .seconds
            .iter()
            .skip(from as usize)
            .take(to.saturating_sub(from) as usize)
        {
            requests += second.requests;
            failures += second.failures;
            let _ = latency.add(&second.latency);
        }
        let slowest_before = recorded
            .seconds
            .iter()
            .take(from as usize)
            .filter(|s| !s.latency.is_empty())
            .map(|s| s.latency.max())
            .max()
            .unwrap_or(0);
        let disturbed_s = recorded
            .seconds
            .iter()
            .enumerate()
            .skip(from as usize)
            .take(to.saturating_sub(from) as usize)
            .filter(|(_, s)| {
                s.failures > 0
                    || (!s.latency.is_empty() && s.latency.max() > slowest_before.saturating_mul(2))
            })
            .map(|(i, _)| i as u64 + 1 - from)
            .max()
            .unwrap_or(0);
        Some(Window {
            from_s: from,
            to_s: to,
            requests,
            failures,
            latency_ms: Latency::of(&latency),
            disturbed_s,
        })
    }
}

impl Window {
    /// How long the kill was felt, in one phrase.
    pub fn disturbed_summary(&self) -> String {
        match self.disturbed_s {
            0 => "no second disturbed".to_string(),
            n => format!(
                "disturbed {n} s (failures, or answers twice as slow as any before the kill)"
            ),
        }
    }

    /// The window's latency in one phrase, for the table and the page.
    pub fn latency_summary(&self) -> String {
        self.latency_ms.as_ref().map_or_else(
            || "no answer".to_string(),
            |l| {
                format!(
                    "p50 {} ms, p99 {} ms, max {} ms",
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max)
                )
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Option<Latency> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Latency {
            min: ms(histogram.min()),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondRow {
    /// Seconds from the start, by when the requests were due.
    pub second: u64,
    pub requests: u64,
    pub failures: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    pub replica: String,
    pub requests: u64,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lab: &str,
        plan: &Plan,
        target: &Target,
        recorded: &Recorder,
        elapsed: Duration,
        interrupted: bool,
        events: Vec<Event>,
        resources: Resources,
    ) -> Report {
        let timeline = recorded
            .seconds
            .iter()
            .enumerate()
            .map(|(second, s)| {
                let latency = Latency::of(&s.latency);
                SecondRow {
                    second: second as u64,
                    requests: s.requests,
                    failures: s.failures,
                    p50_ms: latency.as_ref().map(|l| l.p50),
                    p90_ms: latency.as_ref().map(|l| l.p90),
                    p99_ms: latency.as_ref().map(|l| l.p99),
                }
            })
            .collect();
        let mut served_by: Vec<Replica> = recorded
            .served_by
            .iter()
            .map(|(replica, requests)| Replica {
                replica: replica.clone(),
                requests: *requests,
            })
            .collect();
        served_by.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.replica.cmp(&b.replica)));
        let elapsed_s = elapsed.as_secs_f64();
        Report {
            lab: lab.to_string(),
            url: target.url(),
            ids: target.ids,
            model: plan.model.clone(),
            duration_s: plan.duration.as_secs_f64(),
            connections: plan.connections,
            timeout_s: plan.timeout.as_secs_f64(),
            interrupted,
            requests: recorded.completed,
            scheduled: plan.model.scheduled(plan.duration),
            failures: recorded.failures.clone(),
            elapsed_s,
            throughput_rps: if elapsed_s > 0.0 {
                recorded.completed as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency::of(&recorded.latency),
            timeline,
            served_by,
            quotes: recorded.quotes.clone(),
            fallback_percent: recorded.quotes.fallback_percent(),
            failover: Window::of(&events, recorded),
            events,
            resources,
        }
    }

    /// The table for a person, on stdout.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let f = &self.failures;
        let _ = writeln!(
            out,
            "Load test of lab '{}': GET {} (ids {})",
            self.lab, self.url, self.ids
        );
        let _ = writeln!(
            out,
            "{} for {}, {} keep-alive connections, {}s timeout{}",
            self.model,
            humantime::format_duration(Duration::from_secs_f64(self.duration_s)),
            self.connections,
            self.timeout_s,
            if self.interrupted {
                " — interrupted by Ctrl-C: what ran until then"
            } else {
                ""
            }
        );
        let _ = writeln!(out);
        let scheduled = match self.scheduled {
            Some(n) if n != self.requests => format!(" of {n} scheduled"),
            _ => String::new(),
        };
        let _ = writeln!(out, "Requests     {}{scheduled}", self.requests);
        let by_status = f
            .by_status
            .iter()
            .map(|(code, n)| format!("{code}×{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let by_status = if by_status.is_empty() {
            String::new()
        } else {
            format!(": {by_status}")
        };
        let _ = writeln!(
            out,
            "Failures     {} (status {}{by_status}, timeout {}, connect {}, reset {})",
            f.total, f.status, f.timeout, f.connect, f.reset
        );
        let _ = writeln!(
            out,
            "Throughput   {:.1} req/s over {:.1}s",
            self.throughput_rps, self.elapsed_s
        );
        match &self.latency_ms {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "Latency ms   min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    ms(l.min),
                    ms(l.mean),
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p99_9),
                    ms(l.max)
                );
            }
            None => {
                let _ = writeln!(out, "Latency ms   no request was answered");
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:>6}  {:>8}  {:>8}  {:>8}  {:>8}",
            "second", "requests", "failures", "p50 ms", "p99 ms"
        );
        for row in &self.timeline {
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ms);
            let _ = writeln!(
                out,
                "{:>6}  {:>8}  {:>8}  {:>8}  {:>8}",
                row.second,
                row.requests,
                row.failures,
                opt(row.p50_ms),
                opt(row.p99_ms)
            );
        }
        if !self.events.is_empty() {
            let _ = writeln!(out);
            for event in &self.events {
                let _ = writeln!(out, "at {:>6.1}s  {}", event.at_s, event.what);
            }
        }
        if let Some(w) = &self.failover {
            let _ = writeln!(
                out,
                "Failover     seconds {}-{}: {} requests, {} failed, {}; {}",
                w.from_s,
                w.to_s,
                w.requests,
                w.failures,
                w.latency_summary(),
                w.disturbed_summary()
            );
        }
        let _ = writeln!(out);
        if self.served_by.is_empty() {
            let _ = writeln!(out, "Served by    no answer named its replica (servedBy)");
        } else {
            let _ = writeln!(out, "{:<16}  {:>8}", "served by", "requests");
            for replica in &self.served_by {
                let _ = writeln!(out, "{:<16}  {:>8}", replica.replica, replica.requests);
            }
        }
        if let Some(percent) = self.fallback_percent {
            let _ = writeln!(
                out,
                "Quotes       {} live, {} fallback ({percent:.1} % fallback: the quote call failed, was shed or the breaker was open)",
                self.quotes.live, self.quotes.fallback
            );
        }
        self.resources_table(&mut out);
        out
    }

    /// Each task's and node's CPU and memory, with where they were read.
    fn resources_table(&self, out: &mut String) {
        let r = &self.resources;
        if r.tasks.is_empty() && r.nodes.is_empty() {
            return;
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22}  {:<16}  {:>9}  {:>6}  {:>8}  {:>6}  {:>7}  source",
            "task / node", "on", "CPU% peak", "mean", "MiB peak", "mean", "samples"
        );
        let rows = r
            .tasks
            .iter()
            .map(|t| (t.task.as_str(), t.node.as_str(), &t.usage))
            .chain(
                r.nodes
                    .iter()
                    .map(|n| (n.node.as_str(), "(whole node)", &n.usage)),
            );
        for (name, on, u) in rows {
            let _ = writeln!(
                out,
                "{name:<22}  {on:<16}  {:>9.1}  {:>6.1}  {:>8.1}  {:>6.1}  {:>7}  {}",
                u.cpu_percent.peak,
                u.cpu_percent.mean,
                u.memory_mib.peak,
                u.memory_mib.mean,
                u.samples,
                u.source.as_str()
            );
        }
        if r.skipped > 0 {
            let _ = writeln!(out, "({} readings skipped: no answer in time)", r.skipped);
        }
    }
}

/// Milliseconds with as many decimals as they need to be read.
pub(crate) fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::load::{Outcome, QuoteKind};
    use super::*;

    /// A two-second run with a kill and a heal, for this module's and the page's tests.
    pub(crate) fn sample() -> Report {
        let mut recorded = Recorder::default();
        for i in 0..100u64 {
            let ip = if i % 2 == 0 { "10.0.1.5" } else { "10.0.1.6" };
            let quote = if i % 4 == 0 {
                QuoteKind::Fallback
            } else {
                QuoteKind::Live
            };
            recorded.record(
                Duration::from_millis(i * 20),
                Duration::from_micros(500 + i * 10),
                Outcome::Answered {
                    status: 200,
                    served_by: Some(ip.into()),
                    quote: Some(quote),
                },
            );
        }
        recorded.record(Duration::from_millis(1990), Duration::ZERO, Outcome::Reset);
        let plan = Plan {
            model: Model::Rate { rate: 50.5 },
            duration: Duration::from_secs(2),
            connections: 4,
            timeout: Duration::from_secs(2),
        };
        let target = Target {
            address: "172.28.1.2:6767".parse().unwrap(),
            path: "/accounts/{id}".into(),
            ids: IdRange {
                first: 10000,
                last: 10099,
            },
        };
        let events = vec![
            Event {
                at_s: 1.2,
                what: "killed swarm-worker-0".into(),
            },
            Event {
                at_s: 1.7,
                what: "healed swarm-worker-0".into(),
            },
        ];
        Report::new(
            "t",
            &plan,
            &target,
            &recorded,
            Duration::from_secs(2),
            false,
            events,
            Resources::default(),
        )
    }

    #[test]
    fn the_failover_window_runs_from_kill_to_heal() {
        let window = sample().failover.unwrap();
        assert_eq!((window.from_s, window.to_s), (1, 2));
        assert_eq!((window.requests, window.failures), (51, 1));
        // Its one second had the failure.
        assert_eq!(window.disturbed_s, 1);
        assert!(window.latency_ms.unwrap().min >= 1.0);
    }

    #[test]
    fn numbers_come_from_the_recording() {
        let report = sample();
        assert_eq!(report.requests, 101);
        assert_eq!(report.scheduled, Some(101));
        assert_eq!(report.failures.reset, 1);
        assert!((report.throughput_rps - 50.5).abs() < 1e-9);
        let l = report.latency_ms.clone().unwrap();
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
        assert!((l.min - 0.5).abs() < 0.01, "{l:?}");
        assert_eq!(report.timeline.len(), 2);
        assert_eq!(report.timeline[1].failures, 1);
        assert_eq!(
            report.served_by,
            [
                Replica {
                    replica: "10.0.1.5".into(),
                    requests: 50
                },
                Replica {
                    replica: "10.0.1.6".into(),
                    requests: 50
                }
            ]
        );
    }

    #[test]
    fn the_table_keeps_the_issue_order() {
        let table = sample().table();
        let at = |needle: &str| {
            table
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in {table}"))
        };
        let order = [
            at("Requests "),
            at("Failures "),
            at("Throughput "),
            at("Latency ms "),
            at("second"),
            at("served by"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{table}");
        assert!(table.contains("reset 1"), "{table}");
    }

    #[test]
    fn resources_follow_served_by_with_their_source() {
        use super::super::resources::{Measure, Source, TaskUsage, Usage};
        let mut report = sample();
        let mut cpu = Measure::default();
        cpu.add(2.0);
        let mut memory = Measure::default();
        memory.add(1.5);
        report.resources.tasks.push(TaskUsage {
            service: "accountservice".into(),
            task: "accountservice.1".into(),
            task_id: "r4d9bhuloqdy".into(),
            node: "swarm-worker-0".into(),
            usage: Usage {
                samples: 3,
                cpu_percent: cpu,
                memory_mib: memory,
                source: Source::Cgroup,
                timeline: Vec::new(),
            },
        });
        report.resources.skipped = 2;
        let table = report.table();
        let row = table
            .lines()
            .find(|l| l.starts_with("accountservice.1"))
            .unwrap_or_else(|| panic!("a task row in {table}"));
        assert!(
            row.contains("swarm-worker-0") && row.ends_with("cgroup"),
            "{row}"
        );
        assert!(table.find("served by") < table.find("CPU% peak"), "{table}");
        assert!(table.contains("2 readings skipped"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        let task = &json["resources"]["tasks"][0];
        assert_eq!(task["source"], "cgroup");
        assert_eq!(task["memory_mib"]["peak"], 1.5);
        assert_eq!(task["samples"], 3);
    }

    #[test]
    fn json_names_every_part() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["model"]["kind"], "rate");
        assert_eq!(json["requests"], 101);
        assert_eq!(json["failures"]["reset"], 1);
        assert!(json["latency_ms"]["p99_9"].is_number());
        assert_eq!(json["served_by"][0]["requests"], 50);
        assert_eq!(json["quotes"]["fallback"], 25);
        assert_eq!(json["fallback_percent"], 25.0);
        assert!(sample()
            .table()
            .contains("Quotes       75 live, 25 fallback (25.0 % fallback"));
    }
}
