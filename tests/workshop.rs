//! The workshop loop against real labs: `deploy` after a source change while
//! a client hammers $ManagerIP, and the visualizer in a real headless
//! Chromium (Debian's, driven through chromedriver by fantoccini) while the
//! lab is scaled, loaded (each task's request rate) and a node is killed.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use browser::*;
use common::*;

fn manager_ip(lab: &str) -> String {
    lab_env(lab)["ManagerIP"].clone()
}

/// Threads calling `url` on new connections until stopped, like a
/// workshop's curl loops; every answer that is not a 200 is a failure a
/// user would have seen.
struct Hammer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hammer {
    fn start(host: &str, path: &'static str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures, host) =
                    (stop.clone(), ok.clone(), failures.clone(), host.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match http_get(&host, 6767, path) {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, body)) => failures
                                .lock()
                                .unwrap()
                                .push(format!("HTTP {status}: {body}")),
                            Err(err) => failures.lock().unwrap().push(err),
                        }
                        // A pause, so TIME_WAIT does not use up the ephemeral ports.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Hammer {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// The 200s so far.
    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn deploy_after_a_source_change_rolls_out_with_no_failed_request() {
    let lab = "t-deploy";
    let _guard = LabGuard::new(lab);
    let src = service_workspace("deploy-src");
    let spec = src.join("lab/goblog.toml");
    let created = run_sharing_target_dir(&[
        "create",
        "-q",
        "--name",
        lab,
        "--file",
        spec.to_str().unwrap(),
    ]);
    assert!(created.status.success());
    let manager = manager_ip(lab);

    // Nothing changed: it says so and leaves the service alone.
    let unchanged = run_sharing_target_dir(&["deploy", "-q", "--name", lab]);
    assert!(unchanged.status.success());
    assert!(
        stdout(&unchanged).contains("accountservice is up to date"),
        "{}",
        stdout(&unchanged)
    );

    // The one-line change a workshop makes.
    let routes = change_health_answer(&src, "second");

    // The load runs before the update starts and goes on after it ends:
    // the deploy runs once the hammer has had answers, and the hammer stops
    // only after more answers came from the updated service.
    let hammer = Hammer::start(&manager, "/accounts/10000", 4);
    wait_until(
        "the hammer's first answers",
        Duration::from_secs(60),
        || hammer.answered() >= 20,
    );
    let deployed =
        run_sharing_target_dir(&["deploy", "accountservice", "--name", lab, "-o", "json"]);
    let after_deploy = hammer.answered();
    wait_until(
        "answers after the deploy returned",
        Duration::from_secs(60),
        || hammer.answered() >= after_deploy + 20,
    );
    let (ok, failures) = hammer.stop();
    assert!(deployed.status.success());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the update: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "the hammer got through only {ok} requests");

    let report: serde_json::Value = serde_json::from_slice(&deployed.stdout).unwrap();
    let report = &report[0];
    assert_eq!(report["changed"], true);
    assert_eq!(report["replicas"], 3);
    assert_eq!(report["placement"].as_array().unwrap().len(), 3);
    let new_tag = report["to"].as_str().unwrap().to_string();
    let old_tag = report["from"].as_str().unwrap().to_string();
    assert_ne!(new_tag, old_tag);

    // Every replica serves the new build...
    for _ in 0..12 {
        let (status, body) = http_get(&manager, 6767, "/health").unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains(r#""build":"second""#),
            "an old replica answered: {body}"
        );
    }
    // ...and the old tasks are gone: Swarm runs none, and no node has an
    // old container left running.
    let env = lab_env(lab);
    let tasks = lab_docker(
        &env,
        &[
            "service",
            "ps",
            "accountservice",
            "--format",
            "{{.Image}}|{{.CurrentState}}",
        ],
    );
    let tasks = stdout(&tasks);
    let running: Vec<&str> = tasks.lines().filter(|l| l.contains("|Running")).collect();
    assert_eq!(running.len(), 3, "{tasks}");
    assert!(running.iter().all(|l| l.contains(&new_tag)), "{tasks}");
    for node in ["swarm-manager-0", "swarm-worker-0", "swarm-worker-1"] {
        let ps = run(&[
            "exec",
            "--name",
            lab,
            node,
            "--",
            "docker",
            "ps",
            "--format",
            "{{.Image}}",
        ]);
        assert!(ps.status.success());
        assert!(
            !stdout(&ps).contains(&old_tag),
            "{node} still runs {old_tag}"
        );
    }

    // Each deploy makes a new image on the host; the one it replaced goes
    // once no lab runs it (the first one may still run in other test labs).
    let code = std::fs::read_to_string(&routes).unwrap();
    std::fs::write(
        &routes,
        code.replace(r#""build":"second""#, r#""build":"third""#),
    )
    .unwrap();
    let third = run_sharing_target_dir(&["deploy", "-q", "--name", lab, "-o", "json"]);
    assert!(third.status.success());
    let third: serde_json::Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(third[0]["from"], new_tag.as_str());
    let host_images = docker(&[
        "images",
        "goblog-lab/accountservice",
        "--format",
        "{{.Tag}}",
    ]);
    let host_tags = stdout(&host_images);
    assert!(
        !host_tags.lines().any(|t| t == new_tag),
        "{new_tag} is left on the host: {host_tags}"
    );
    assert!(
        host_tags.lines().any(|t| t == third[0]["to"]),
        "{host_tags}"
    );

    // Bad input: one line, non-zero.
    assert_one_line_error(
        &run_sharing_target_dir(&["deploy", "-q", "--name", lab, "nosuch"]),
        2,
        "no service 'nosuch'",
    );
    assert_one_line_error(
        &run_sharing_target_dir(&["deploy", "-q", "--name", "t-no-such-lab"]),
        1,
        "t-no-such-lab",
    );
    let too_many = run_sharing_target_dir(&["deploy", "--name", lab, "--replicas", "65"]);
    assert_eq!(too_many.status.code(), Some(2));
}

/// What the page draws, read from the hooks it keeps for tests.
#[derive(Debug, serde::Deserialize, PartialEq)]
struct Drawn {
    nodes: usize,
    down: Vec<String>,
    running: usize,
    summary_running: String,
    /// `data-rate` and the label of each running accountservice task.
    rates: Vec<String>,
    rate_labels: Vec<String>,
    total_rate: String,
}

impl Drawn {
    /// Every running accountservice task shows a rate, and `check` holds
    /// for each (as a number and as the label the audience reads).
    fn every_rate(&self, check: impl Fn(f64, &str) -> bool) -> bool {
        !self.rates.is_empty()
            && self.rates.len() == self.running
            && self
                .rates
                .iter()
                .zip(&self.rate_labels)
                .all(|(rate, label)| rate.parse().is_ok_and(|r| check(r, label)))
    }
}

async fn drawn(page: &fantoccini::Client) -> Drawn {
    let value = page
        .execute(
            r#"const q = s => [...document.querySelectorAll(s)];
            const summary = document.getElementById('summary');
            const running = q('g.task[data-service="accountservice"][data-group="running"]');
            return {
              nodes: q('g.node').length,
              down: q('g.node[data-state="down"]').map(n => n.dataset.hostname),
              running: running.length,
              summary_running: summary ? (summary.dataset.runningTasks || '') : '',
              rates: running.map(t => t.dataset.rate || ''),
              rate_labels: running.map(t => t.querySelector('text.rate').textContent),
              total_rate: summary ? (summary.dataset.totalRate || '') : '',
            };"#,
            vec![],
        )
        .await
        .expect("the page runs the script");
    serde_json::from_value(value).expect("the hooks have the expected shape")
}

async fn wait_for_page(
    page: &fantoccini::Client,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Drawn) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let now = drawn(page).await;
        if check(&now) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "the page did not show {what} within {timeout:?}; it shows {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viz_shows_the_swarm_live_in_a_real_browser() {
    let lab = "vr-viz";
    let _guard = LabGuard::new(lab);
    assert!(run(&["create", "-q", "--name", lab, "--workers", "2"])
        .status
        .success());

    let viz = Viz::start(lab);
    let port = viz.port;

    // A second viz on the same port: one line, non-zero, nothing served.
    assert_one_line_error(
        &run(&["viz", "-q", "--name", lab, "--port", &port.to_string()]),
        1,
        &format!("port {port} on 127.0.0.1 is in use"),
    );

    // The JSON model, for scripts.
    let (status, body) = http_get("127.0.0.1", port, "/api/state").unwrap();
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["lab"], lab);
    assert_eq!(state["nodes"].as_array().unwrap().len(), 3);

    let driver = ChromeDriver::start();
    let page = driver.session("viz-chromium-profile", 1400, 900).await;
    page.goto(&viz.url()).await.unwrap();

    wait_for_page(
        &page,
        "3 nodes and 3 running tasks",
        Duration::from_secs(10),
        |d| d.nodes == 3 && d.running == 3,
    )
    .await;

    // Scaled from the CLI: the page shows the new tasks without a reload.
    // (How soon is printed here; the page polls every second.)
    let scaled = run(&["scale", "-q", "accountservice=5", "--name", lab]);
    assert!(scaled.status.success());
    let took = wait_for_page(&page, "5 running tasks", Duration::from_secs(60), |d| {
        d.running == 5
    })
    .await;
    eprintln!("the page showed 5 tasks {took:?} after scale returned");

    // Under load every running task shows its share of the traffic, read
    // from the edge proxy's stats.
    let hammer = Hammer::start(&manager_ip(lab), "/accounts/10000", 2);
    let took = wait_for_page(
        &page,
        "a non-zero rate on every running task",
        Duration::from_secs(30),
        |d| d.running == 5 && d.every_rate(|r, label| r > 0.0 && label.ends_with(" req/s")),
    )
    .await;
    eprintln!("every task showed a rate {took:?} into the load");
    let (status, body) = http_get("127.0.0.1", port, "/api/state").unwrap();
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["rates"]["available"], true, "{}", state["rates"]);
    let loaded: Vec<f64> = state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["service"] == "accountservice" && t["state"] == "running")
        .map(|t| t["rate_rps"].as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    assert!(loaded.iter().all(|&r| r > 0.0), "{loaded:?}");
    let total: f64 = drawn(&page).await.total_rate.parse().unwrap();
    assert!(total > 0.0, "the header shows no total rate");
    eprintln!("rates under load (req/s): {loaded:?}");

    screenshot_to_docs(&page, "viz.png").await;

    // Once the load stops, every task is idle again.
    let (ok, _) = hammer.stop();
    assert!(ok > 0);
    wait_for_page(
        &page,
        "every rate back to 0",
        Duration::from_secs(15),
        |d| d.every_rate(|r, label| r == 0.0 && label == "0 req/s"),
    )
    .await;

    // A killed node is shown down once the manager notices.
    let killed = docker(&["kill", &format!("{lab}-swarm-worker-1")]);
    assert!(killed.status.success(), "{}", stderr(&killed));
    wait_for_page(&page, "swarm-worker-1 down", Duration::from_secs(60), |d| {
        d.down == ["swarm-worker-1"]
    })
    .await;

    page.close().await.unwrap();
}

/// Builds `goblog-lab-test/quotes-service:1` on the host engine: HAProxy
/// from the lab's node image answering `/api/quote` as the blog's
/// quotes-service does, so the optional service has an image to deploy.
fn build_fake_quotes_service() -> String {
    let images = docker(&[
        "images",
        "goblog-lab/node",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    if stdout(&images).trim().is_empty() {
        // The node image is built by the first create; make it now.
        let lab = "t-quotes-prep";
        let _guard = LabGuard::new(lab);
        assert!(create_bare(lab, "0").status.success());
    }
    let images = docker(&[
        "images",
        "goblog-lab/node",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    let node_image = stdout(&images)
        .lines()
        .next()
        .expect("the node image")
        .to_string();
    let context = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-quotes");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("haproxy.cfg"),
        r#"defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend quotes
    bind :8080
    http-request return status 200 content-type application/json string "{\"quote\":\"Do or do not, there is no try.\",\"ipAddress\":\"fake-quotes\",\"language\":\"en\"}" if { path /api/quote }
    http-request return status 404
"#,
    )
    .unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {node_image}\nCOPY haproxy.cfg /etc/quotes.cfg\nENTRYPOINT [\"/usr/sbin/haproxy\", \"-db\", \"-f\", \"/etc/quotes.cfg\"]\n"
        ),
    )
    .unwrap();
    let tag = "goblog-lab-test/quotes-service:1";
    let built = docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    assert!(built.status.success(), "{}", stderr(&built));
    tag.to_string()
}

#[test]
fn optional_services_deploy_when_their_image_is_here_and_are_skipped_when_not() {
    let lab = "t-quotes";
    let _guard = LabGuard::new(lab);
    let fake = build_fake_quotes_service();
    let src = service_workspace("quotes-src");
    let spec = src.join("lab/goblog.toml");
    // The lab file's own example of running the blog's upstream image
    // instead of building quotes-service, with the fake standing in for it.
    let text = std::fs::read_to_string(&spec).unwrap();
    let build = r#"build = { package = "quotes-service", context = "images/quotes-service" }"#;
    let upstream = "# image = \"eriklupander/quotes-service\"\n# optional = true\n";
    assert!(text.contains(build) && text.contains(upstream), "{text}");
    let text = text
        .replace(build, "")
        .replace(upstream, &format!("image = \"{fake}\"\noptional = true\n"))
        + r#"
[[services]]
name = "absent-service"
image = "goblog-lab-test/absent-service:never"
optional = true
"#;
    std::fs::write(&spec, text).unwrap();

    let created = run_sharing_target_dir(&[
        "create",
        "--name",
        lab,
        "--workers",
        "1",
        "--file",
        spec.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(created.status.success());
    // The absent one: one line saying why, and the lab goes on without it.
    let skip_lines: Vec<String> = stderr(&created)
        .lines()
        .filter(|l| l.contains("skipping the optional absent-service"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        skip_lines,
        [" ! skipping the optional absent-service: goblog-lab-test/absent-service:never is not on this machine's engine and could not be pulled (`create -v` says why)"],
        "{}",
        stderr(&created)
    );
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(summary["skipped"][0]["name"], "absent-service");
    let deployed: Vec<&str> = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(deployed, ["accountservice", "quotes-service"]);

    // The present one runs on my_network, and the accountservice's quote
    // comes from it rather than the fallback.
    let manager = manager_ip(lab);
    let mut body = String::new();
    wait_until("a live quote", Duration::from_secs(30), || {
        body = http_get(&manager, 6767, "/accounts/10000")
            .map(|(_, b)| b)
            .unwrap_or_default();
        body.contains("Do or do not")
    });
    let account: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(account["quote"]["ipAddress"], "fake-quotes");
    let _ = docker(&["rmi", &fake]);
}
