//! The default lab's second service: quotes-service, built here, feeding the
//! accountservice's quotes through `$ManagerIP`, and the accountservice's
//! circuit breaker when it goes away and comes back (blog parts 5 and 7).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

/// The accountservice's defaults; lab/goblog.toml sets neither.
const BREAKER_THRESHOLD: usize = 3;
const BREAKER_PAUSE: Duration = Duration::from_secs(5);
const FALLBACK_IP: &str = "circuit-breaker";
const FALLBACK_QUOTE: &str = "May the source be with you, always.";
const MAX_IMAGE_BYTES: u64 = 5_000_000;

/// One account answer through `$ManagerIP`: (servedBy, quote.ipAddress,
/// quote.quote), after checking it is a 200. How long a quote may take is
/// the accountservice's own 500 ms timeout, shown by the fallback quote
/// answers carry when it runs out; the latency is `bench`'s to measure.
fn account(manager_ip: &str) -> (String, String, String) {
    let (status, body) = http_get(manager_ip, 6767, "/accounts/10000").unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    (
        text(&json["servedBy"]),
        text(&json["quote"]["ipAddress"]),
        text(&json["quote"]["quote"]),
    )
}

fn status(lab: &str) -> serde_json::Value {
    let output = run(&["status", "--name", lab, "-o", "json"]);
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Calls until every one of `replicas` accountservice replicas has answered
/// at least `each` times, checking every answer with `check`.
fn call_every_replica(
    manager_ip: &str,
    replicas: usize,
    each: usize,
    mut check: impl FnMut(&str, &str),
) -> BTreeMap<String, usize> {
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    wait_until(
        &format!("{each} answers from each of {replicas} accountservice replicas"),
        Duration::from_secs(60),
        || {
            let (served_by, ip, quote) = account(manager_ip);
            check(&ip, &quote);
            *answered.entry(served_by).or_default() += 1;
            answered.len() >= replicas && answered.values().all(|&n| n >= each)
        },
    );
    answered
}

#[test]
fn accounts_carry_live_quotes_and_the_breaker_covers_for_quotes_service() {
    let lab = "qs-breaker";
    let _guard = LabGuard::new(lab);
    let started = Instant::now();
    let created = run(&["create", "--name", lab, "--workers", "1"]);
    assert!(created.status.success());
    eprintln!("create took {:?}", started.elapsed());
    // The summary names both services, and nothing was skipped.
    let summary = stdout(&created);
    assert!(
        summary.contains("service    quotes-service (2 replicas)"),
        "{summary}"
    );
    assert!(!summary.contains("skipped"), "{summary}");

    let state = status(lab);
    let quotes = service(&state, "quotes-service");
    assert_eq!(
        (quotes["running"].as_u64(), quotes["desired"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(quotes["ports"], serde_json::json!([]), "not published");
    let replicas = service(&state, "accountservice")["desired"]
        .as_u64()
        .unwrap() as usize;
    assert!(replicas >= 2, "{state}");

    // The image is one small static binary.
    let tag = quotes["image"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let inspect = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &format!("goblog-lab/quotes-service:{tag}"),
    ]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let size: u64 = stdout(&inspect).trim().parse().unwrap();
    eprintln!("quotes-service image: {size} bytes");
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");

    let manager_ip =
        env_vars(&stdout(&run(&["env", "--name", lab, "--shell", "bash"])))["ManagerIP"].clone();

    // Live quotes, from both quotes-service replicas.
    let mut live_from = BTreeSet::new();
    wait_until(
        "live quotes from 2 quotes-service replicas",
        Duration::from_secs(60),
        || {
            let (_, ip, quote) = account(&manager_ip);
            if ip != FALLBACK_IP {
                assert_ne!(quote, FALLBACK_QUOTE);
                assert!(ip.ends_with(":8080"), "{ip}");
                live_from.insert(ip);
            }
            live_from.len() >= 2
        },
    );
    eprintln!("live quotes from {live_from:?}");

    // quotes-service gone: every account still answers 200 and fast, with
    // the fallback (a failed call answers it too, before the breaker opens).
    let scaled = run(&["scale", "-q", "quotes-service=0", "--name", lab]);
    assert!(scaled.status.success());
    assert_eq!(service(&status(lab), "quotes-service")["running"], 0);
    let answered = call_every_replica(&manager_ip, replicas, BREAKER_THRESHOLD + 1, |ip, quote| {
        assert_eq!((ip, quote), (FALLBACK_IP, FALLBACK_QUOTE));
    });
    eprintln!("fallback from every accountservice replica: {answered:?}");
    // Each replica has now failed `threshold` calls in a row: every breaker
    // is open, whichever replica answers, and the fallback keeps coming.
    for _ in 0..2 * replicas {
        let (status, metrics) = http_get(&manager_ip, 6767, "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(
            metrics.contains("\naccountservice_quote_breaker_open 1\n"),
            "{metrics}"
        );
        let (_, ip, _) = account(&manager_ip);
        assert_eq!(ip, FALLBACK_IP);
    }
    // viz shows every accountservice task's open breaker, as the edge
    // proxy's health checks read it (every 5 s), with no call to the tasks.
    let viz = Viz::start(lab);
    // Every running accountservice task's breaker, as viz shows it (a
    // task's `degraded` is what its health check said it lacks): true when
    // all are as `open` says.
    let breakers_all = |open: bool| {
        let Ok((200, body)) = http_get("127.0.0.1", viz.port, "/api/state") else {
            return false;
        };
        let state: serde_json::Value = serde_json::from_str(&body).unwrap();
        let flags: Vec<bool> = state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["service"] == "accountservice" && t["state"] == "running")
            .map(|t| t["degraded"] == "quote breaker open")
            .collect();
        flags.len() == replicas && flags.iter().all(|&o| o == open)
    };
    wait_until(
        "viz to show every accountservice breaker open",
        Duration::from_secs(60),
        || breakers_all(true),
    );

    // Back to two: `scale` returns once both tasks run (status says so too),
    // and live quotes return once each breaker's pause is over.
    let scaled = run(&["scale", "-q", "quotes-service=2", "--name", lab]);
    assert!(scaled.status.success());
    let running = Instant::now();
    assert_eq!(service(&status(lab), "quotes-service")["running"], 2);
    let mut live_via: BTreeSet<String> = BTreeSet::new();
    wait_until(
        "live quotes through every accountservice replica again",
        BREAKER_PAUSE + Duration::from_secs(10),
        || {
            let (served_by, ip, _) = account(&manager_ip);
            if ip != FALLBACK_IP {
                live_via.insert(served_by);
            }
            live_via.len() >= replicas
        },
    );
    eprintln!(
        "live quotes through all {replicas} accountservice replicas {:?} after the tasks ran",
        running.elapsed()
    );
    // And the picture follows: the breakers closed.
    wait_until(
        "viz to show every accountservice breaker closed",
        Duration::from_secs(60),
        || breakers_all(false),
    );
}
