//! `goblog-lab bench` against a real lab with real HTTP: the open-loop
//! count is exact, failures are counted by kind, the replicas are named,
//! the JSON parses, Ctrl-C still reports, and bad input is one line and
//! exit 2.
//!
//! One lab serves every run of `bench_loads_a_real_lab`: the runs are in
//! one test, one after the other, so they never load the lab at the same
//! time. The HTML report has a lab of its own and is looked at in a real
//! headless Chromium.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use browser::*;
use common::*;

const LAB: &str = "bn-load";

fn bench_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["bench", "-q", "--name", LAB, "-o", "json"];
    args.extend(extra);
    let output = run(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("bench -o json prints one JSON document")
}

fn number(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"))
}

#[test]
fn bench_loads_a_real_lab() {
    let _guard = LabGuard::new(LAB);
    let created = run(&["create", "-q", "--name", LAB, "--workers", "1"]);
    assert!(created.status.success(), "create failed");

    // 200 req/s for 5 s: the open-loop schedule holds exactly 1000
    // requests, however fast the machine is. The long timeout is for a
    // busy machine: this run is about counting, not speed.
    let report = bench_json(&["--rate", "200", "--duration", "5s", "--timeout", "10s"]);
    assert_eq!(report["scheduled"], 1000, "{report:#}");
    assert_eq!(report["requests"], 1000, "{report:#}");
    assert_eq!(report["failures"]["total"], 0, "{report:#}");
    assert_eq!(report["interrupted"], false);
    let latency = &report["latency_ms"];
    let (min, p50, p99, max) = (
        number(&latency["min"]),
        number(&latency["p50"]),
        number(&latency["p99"]),
        number(&latency["max"]),
    );
    assert!(
        0.0 < min && min <= p50 && p50 <= p99 && p99 <= max,
        "{latency}"
    );
    let replicas = report["served_by"].as_array().unwrap();
    assert!(
        replicas.len() >= 2,
        "one replica answered all: {replicas:?}"
    );
    let served: f64 = replicas.iter().map(|r| number(&r["requests"])).sum();
    assert_eq!(served, 1000.0, "{replicas:?}");
    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 5, "{timeline:?}");
    assert!(
        timeline.iter().all(|s| s["requests"] == 200),
        "200 due every second: {timeline:?}"
    );
    resources_of_every_running_task(&report);

    // Ids the accountservice does not have: every answer is a 404, counted
    // as a status failure, and none names a replica.
    let report = bench_json(&["--rate", "50", "--duration", "2s", "--ids", "1..9"]);
    assert_eq!(report["requests"], 100, "{report:#}");
    let failures = &report["failures"];
    assert_eq!(failures["total"], 100, "{report:#}");
    assert_eq!(failures["status"], 100);
    assert_eq!(failures["by_status"]["404"], 100);
    assert_eq!(failures["timeout"], 0);
    assert_eq!(failures["connect"], 0);
    assert_eq!(failures["reset"], 0);
    assert_eq!(report["served_by"], serde_json::json!([]));

    // The blog's users model, as a person reads it: the report on stdout in
    // the issue's order, the log on stderr.
    let output = run(&[
        "bench",
        "--name",
        LAB,
        "--users",
        "20",
        "--pause",
        "100ms",
        "--ramp",
        "1s",
        "--duration",
        "3s",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    let order: Vec<usize> = [
        "Requests ",
        "Failures     0 ",
        "Throughput ",
        "Latency ms ",
        "second",
        "served by",
        "CPU% peak",
    ]
    .iter()
    .map(|needle| {
        table
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {table}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{table}");
    assert!(stderr(&output).contains("20 users"), "{}", stderr(&output));

    // A node the lab does not have.
    let output = run(&["bench", "-q", "--name", LAB, "--node", "swarm-worker-9"]);
    assert_one_line_error(&output, 2, "no node 'swarm-worker-9'");
    let output = run(&["bench", "-q", "--name", LAB, "--kill", "swarm-worker-9@1s"]);
    assert_one_line_error(&output, 2, "no node 'swarm-worker-9'");

    a_service_answering_500_counts_those_failures();

    failover_under_load();

    ctrl_c_still_reports();
}

/// A real service in the lab whose every answer is a 500: the lab's own
/// HAProxy image with a config that says so, deployed with the learner's
/// `docker` CLI and published on the manager, loaded through `--port`.
fn a_service_answering_500_counts_those_failures() {
    const PORT: u16 = 8500;
    let vars = lab_env(LAB);
    let edge_image = lab_docker(
        &vars,
        &[
            "service",
            "inspect",
            "edge",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        ],
    );
    assert!(
        edge_image.status.success(),
        "this lab routes through the edge proxy here: {}",
        stderr(&edge_image)
    );
    let config = std::env::temp_dir().join(format!("{LAB}-fails.cfg"));
    std::fs::write(
        &config,
        format!(
            "defaults\n  mode http\n  timeout client 5s\n  timeout connect 1s\n  timeout server 5s\n\
             frontend fails\n  bind :{PORT}\n  \
             http-request return status 500 content-type text/plain string \"failing on purpose\"\n"
        ),
    )
    .unwrap();
    let created = lab_docker(
        &vars,
        &["config", "create", "fails", config.to_str().unwrap()],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let created = lab_docker(
        &vars,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "fails",
            "--config",
            "src=fails,target=/usr/local/etc/haproxy/haproxy.cfg",
            "--publish",
            &format!("mode=host,target={PORT},published={PORT}"),
            "--constraint",
            "node.role==manager",
            stdout(&edge_image).trim(),
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let manager = &vars["ManagerIP"];
    wait_until(
        "the failing service answers",
        Duration::from_secs(60),
        || matches!(http_get(manager, PORT, "/"), Ok((500, _))),
    );

    let report = bench_json(&["--port", "8500", "--rate", "50", "--duration", "2s"]);
    assert_eq!(report["requests"], 100, "{report:#}");
    let failures = &report["failures"];
    assert_eq!(failures["total"], 100, "{report:#}");
    assert_eq!(failures["status"], 100, "{report:#}");
    assert_eq!(failures["by_status"]["500"], 100, "{report:#}");
    assert_eq!(
        report["throughput_rps"].as_f64().map(|t| t > 0.0),
        Some(true)
    );

    let removed = lab_docker(&vars, &["service", "rm", "fails"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
}

/// Every running accountservice task, as the user's `docker service ps`
/// lists it, has its CPU and memory in the report, read every second.
fn resources_of_every_running_task(report: &serde_json::Value) {
    let ps = lab_docker(
        &lab_env(LAB),
        &[
            "service",
            "ps",
            "accountservice",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.Node}}",
        ],
    );
    assert!(ps.status.success(), "{}", stderr(&ps));
    let running: std::collections::BTreeSet<String> =
        stdout(&ps).lines().map(str::to_string).collect();
    let resources = &report["resources"];
    let rows: Vec<&serde_json::Value> = resources["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["service"] == "accountservice")
        .collect();
    let reported: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["task"].as_str().unwrap(),
                t["node"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(reported, running, "{resources:#}");
    for row in &rows {
        let (cpu, memory) = (&row["cpu_percent"], &row["memory_mib"]);
        assert!(number(&row["samples"]) >= 3.0, "{row}");
        assert!(number(&memory["peak"]) > 0.0, "{row}");
        assert!(number(&memory["peak"]) >= number(&memory["mean"]), "{row}");
        assert!(number(&cpu["peak"]) >= number(&cpu["mean"]), "{row}");
        assert!(number(&cpu["mean"]) >= 0.0, "{row}");
        assert!(
            ["engine", "cgroup"].contains(&row["source"].as_str().unwrap()),
            "{row}"
        );
    }
    assert!(
        rows.iter().any(|t| number(&t["cpu_percent"]["mean"]) > 0.0),
        "200 req/s cost the accountservice no CPU: {resources:#}"
    );
    let nodes = resources["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{resources:#}");
}

/// `--kill` stops the worker mid-run and `--heal-after` brings it back;
/// the report says when, and the load recovers: by the end of the run,
/// every request succeeds again.
fn failover_under_load() {
    let report = bench_json(&[
        "--rate",
        "50",
        "--duration",
        "25s",
        "--kill",
        "swarm-worker-0@3s",
        "--heal-after",
        "5s",
    ]);
    assert_eq!(
        report["requests"], 1250,
        "every request settled: {report:#}"
    );
    let events: Vec<&str> = report["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events in {report:#}"))
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("killed swarm-worker-0"), "{events:?}");
    assert!(events[1].starts_with("healed swarm-worker-0"), "{events:?}");
    let window = &report["failover"];
    assert_eq!(window["from_s"], 3, "{window}");
    assert!(number(&window["requests"]) > 0.0, "{window}");
    // Recovered: the last seconds of the run, long after the heal, are clean.
    let timeline = report["timeline"].as_array().unwrap();
    let tail = &timeline[timeline.len() - 3..];
    assert!(tail.iter().all(|s| s["failures"] == 0), "{timeline:?}");
    let status = run(&["status", "--name", LAB, "-o", "json"]);
    assert!(status.status.success(), "{}", stderr(&status));
}

/// Ctrl-C stops the load and prints the report of what ran.
fn ctrl_c_still_reports() {
    let output = interrupted_run(&[
        "bench",
        "--name",
        LAB,
        "--rate",
        "50",
        "--duration",
        "60s",
        "-o",
        "json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["interrupted"], true, "{report:#}");
    let requests = number(&report["requests"]);
    assert!(
        0.0 < requests && requests < 3000.0,
        "stopped early: {report:#}"
    );
}

/// Runs a long bench and sends it Ctrl-C once it has sent requests; it
/// exits 130.
fn interrupted_run(args: &[&str]) -> std::process::Output {
    let mut child = goblog_lab(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    // Not a terminal: a plain progress line every 5 s, once requests ran.
    wait_until("a progress line", Duration::from_secs(60), || {
        log.lock().unwrap().contains(" requests")
    });
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(output.status.code(), Some(130));
    output
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for (args, needle) in [
        (
            &["--name", "bn-no-such-lab"][..],
            "no lab named 'bn-no-such-lab'",
        ),
        (&["--rate", "0"][..], "the rate must be more than 0"),
        (&["--duration", "-1"][..], "is not a duration"),
        (&["--ids", "10099..10000"][..], "runs backwards"),
        (&["-o", "html"][..], "-o html needs the FILE"),
        (&["-o", "json", "x.html"][..], "only -o html writes a FILE"),
    ] {
        let mut all = vec!["bench", "-q"];
        all.extend(args);
        assert_one_line_error(&run(&all), 2, needle);
    }
}

/// `-o html FILE` during a kill and heal: the table still on stdout, and a
/// page that Chromium draws from the file alone, with the same numbers, one
/// point a second and the events marked. Its screenshot is docs/load-test.md's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_html_report_renders_in_chromium() {
    const LAB: &str = "ht-report";
    let _guard = LabGuard::new(LAB);
    let created = run(&["create", "-q", "--name", LAB, "--workers", "1"]);
    assert!(created.status.success(), "create failed");

    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ht-report.html");
    let _ = std::fs::remove_file(&file);
    let path = file.to_str().unwrap();
    let output = run(&[
        "bench",
        "--name",
        LAB,
        "--rate",
        "100",
        "--duration",
        "8s",
        "--kill",
        "swarm-worker-0@2s",
        "--heal-after",
        "3s",
        "-o",
        "html",
        path,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("wrote {path}")),
        "{}",
        stderr(&output)
    );
    let table = stdout(&output);
    let requests: u64 = table
        .lines()
        .find_map(|l| l.strip_prefix("Requests "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a Requests line in {table}"));
    assert_eq!(requests, 800, "the open-loop schedule is exact: {table}");
    // The timeline's rows, as the table prints them: second, requests,
    // failures, p50, p99 ("-" for a second nothing answered in).
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("second"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 8, "{table}");
    let answered_seconds = rows.iter().filter(|r| r[3] != "-").count();
    let events = table.lines().filter(|l| l.starts_with("at ")).count();
    assert_eq!(events, 2, "a kill and a heal: {table}");

    // Self-contained: nothing the page would fetch, the target's URL only
    // as text.
    let html = std::fs::read_to_string(&file).unwrap();
    for needle in ["src=", "href=", "<script", "<link", "url(", "@import"] {
        assert!(!html.contains(needle), "{needle} in {html}");
    }
    let url = html
        .split("<code id=\"url\">GET ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("the target's URL in {html}"));
    assert!(
        !html.replace(url, "").contains("http://") && !html.replace(url, "").contains("https://"),
        "{html}"
    );

    let driver = ChromeDriver::start();
    let page = driver
        .session("ht-report-chromium-profile", 1280, 800)
        .await;
    page.goto(&format!("file://{path}")).await.unwrap();
    let drawn = page
        .execute(
            r#"const points = (chart, label) =>
                 [...document.querySelectorAll(`#${chart} g.series[data-label="${label}"] polyline`)]
                   .reduce((n, line) => n + line.points.numberOfItems, 0);
               const width = id => document.getElementById(id).getBoundingClientRect().width;
               return {
                 charts: [...document.querySelectorAll('svg.chart')].map(s => s.id),
                 latency_width: width('chart-latency'),
                 throughput_width: width('chart-throughput'),
                 p50: points('chart-latency', 'p50'),
                 p99: points('chart-latency', 'p99'),
                 per_second: points('chart-throughput', 'requests/s'),
                 markers: document.querySelectorAll('svg.chart g.marker').length,
                 cpu_series: document.querySelectorAll('#chart-cpu g.series').length,
                 memory_series: document.querySelectorAll('#chart-memory g.series').length,
                 y_ticks: document.querySelectorAll('#chart-latency text.y-tick').length,
                 requests: document.getElementById('requests').textContent,
                 failover: !!document.getElementById('failover'),
                 fetched: performance.getEntriesByType('resource').map(r => r.name),
               };"#,
            vec![],
        )
        .await
        .expect("the page runs the script");
    eprintln!("drawn: {drawn:#}");
    assert_eq!(
        drawn["charts"],
        serde_json::json!([
            "chart-latency",
            "chart-throughput",
            "chart-cpu",
            "chart-memory"
        ])
    );
    // A series per running task (accountservice, quotes-service, edge).
    assert!(number(&drawn["cpu_series"]) >= 3.0, "{drawn:#}");
    assert_eq!(drawn["memory_series"], drawn["cpu_series"], "{drawn:#}");
    for chart in ["latency_width", "throughput_width"] {
        assert!(number(&drawn[chart]) > 400.0, "{chart}: {drawn:#}");
    }
    assert_eq!(drawn["per_second"], 8, "one point a second: {drawn:#}");
    assert_eq!(drawn["p50"], answered_seconds, "{drawn:#}");
    assert_eq!(drawn["p99"], answered_seconds, "{drawn:#}");
    assert_eq!(
        drawn["markers"], 8,
        "kill and heal on all four charts: {drawn:#}"
    );
    assert!(number(&drawn["y_ticks"]) >= 3.0, "{drawn:#}");
    assert_eq!(drawn["requests"], requests.to_string(), "{drawn:#}");
    assert_eq!(drawn["failover"], true, "{drawn:#}");
    assert_eq!(
        drawn["fetched"],
        serde_json::json!([]),
        "the page loaded nothing else"
    );

    // The kill's and the heal's labels, three seconds apart and each wider
    // than three seconds of the axis, never overlap: in every chart, no two
    // labels' boxes meet (a pixel of room around each), and each is
    // inside its chart.
    let labels = page
        .execute(
            r#"const box = e => { const r = e.getBoundingClientRect();
                 return { left: r.left, top: r.top, right: r.right, bottom: r.bottom }; };
               return [...document.querySelectorAll('svg.chart')].map(svg => ({
                 chart: svg.id,
                 svg: box(svg),
                 labels: [...svg.querySelectorAll('g.marker text')]
                   .map(t => ({ text: t.textContent, ...box(t), bbox_width: t.getBBox().width })),
               }));"#,
            vec![],
        )
        .await
        .expect("the page runs the script");
    eprintln!("labels: {labels:#}");
    let edge = |b: &serde_json::Value, side: &str| number(&b[side]);
    for chart in labels.as_array().expect("one entry a chart") {
        let boxes = chart["labels"].as_array().unwrap();
        assert_eq!(boxes.len(), 2, "a kill and a heal: {chart:#}");
        for (i, a) in boxes.iter().enumerate() {
            assert!(number(&a["bbox_width"]) > 100.0, "drawn: {a:#}");
            let svg = &chart["svg"];
            assert!(
                edge(a, "left") >= edge(svg, "left")
                    && edge(a, "right") <= edge(svg, "right")
                    && edge(a, "top") >= edge(svg, "top")
                    && edge(a, "bottom") <= edge(svg, "bottom"),
                "{a:#} outside its chart: {chart:#}"
            );
            for b in &boxes[i + 1..] {
                let apart = edge(a, "right") + 1.0 <= edge(b, "left") - 1.0
                    || edge(b, "right") + 1.0 <= edge(a, "left") - 1.0
                    || edge(a, "bottom") + 1.0 <= edge(b, "top") - 1.0
                    || edge(b, "bottom") + 1.0 <= edge(a, "top") - 1.0;
                assert!(apart, "{a:#} and {b:#} overlap: {chart:#}");
            }
        }
    }

    screenshot_to_docs(&page, "bench-report.png").await;
    page.close().await.unwrap();

    // Ctrl-C still writes the page, of what ran.
    std::fs::remove_file(&file).unwrap();
    let output = interrupted_run(&[
        "bench",
        "--name",
        LAB,
        "--rate",
        "50",
        "--duration",
        "60s",
        "-o",
        "html",
        path,
    ]);
    assert!(
        stdout(&output).contains("interrupted by Ctrl-C"),
        "{}",
        stdout(&output)
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.contains("id=\"interrupted\""), "{html}");
    assert!(html.contains("id=\"chart-throughput\""), "{html}");

    // A FILE that cannot be written fails before any load: one line, exit 1.
    let output = run(&[
        "bench",
        "-q",
        "--name",
        LAB,
        "-o",
        "html",
        "/nonexistent-dir/report.html",
    ]);
    assert_one_line_error(
        &output,
        1,
        "cannot write the HTML report to /nonexistent-dir/report.html: No such file or directory",
    );
}
