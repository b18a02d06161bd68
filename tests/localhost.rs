//! `--publish localhost`: a lab made as on Docker Desktop, where this host
//! cannot route to container addresses, and used only through 127.0.0.1:
//! the user's `docker` and `curl $ManagerIP:6767` through `env`, a redeploy
//! through the registry's published port, the visualizer, stop and start
//! (which may move the ports Docker picked), and destroy.
//!
//! This machine could route to the nodes, so the test also checks that
//! nothing it calls goes to a lab address: every endpoint in the state is
//! on 127.0.0.1, and every published port is bound to 127.0.0.1 only.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

const LAB: &str = "lh-desktop";
const NODES: [&str; 2] = ["lh-desktop-swarm-manager-0", "lh-desktop-swarm-worker-0"];

fn json(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// Every endpoint this host calls is on 127.0.0.1: each node's Docker API,
/// the service behind $ManagerIP and the registry. Returns the service's.
fn assert_all_on_loopback(report: &Value) -> u16 {
    assert_eq!(report["publish"], "localhost", "{report:#}");
    assert_eq!(report["manager_ip"], "127.0.0.1", "{report:#}");
    let endpoints = report["endpoints"].as_array().unwrap();
    let seen: BTreeSet<(String, String)> = endpoints
        .iter()
        .map(|e| {
            let reached = e["reached_at"].as_str().unwrap();
            assert!(reached.starts_with("127.0.0.1:"), "{e}");
            (
                e["node"].as_str().unwrap().to_string(),
                e["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("swarm-manager-0", "docker"),
        ("swarm-worker-0", "docker"),
        ("swarm-manager-0", "accountservice"),
        ("swarm-manager-0", "registry"),
    ]
    .iter()
    .map(|(n, w)| (n.to_string(), w.to_string()))
    .collect();
    assert_eq!(seen, expected);
    let service = endpoints
        .iter()
        .find(|e| e["what"] == "accountservice")
        .unwrap();
    service["reached_at"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The node containers publish what they publish on 127.0.0.1 only.
fn assert_bound_to_loopback_only() {
    for node in NODES {
        let out = docker(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Ports}}",
            node,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let ports: Value = serde_json::from_slice(&out.stdout).unwrap();
        let bindings: Vec<&Value> = ports
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .collect();
        assert!(
            ports.get("2376/tcp").is_some(),
            "{node} publishes its Docker API: {ports}"
        );
        assert!(!bindings.is_empty(), "{node}: {ports}");
        for binding in bindings {
            assert_eq!(binding["HostIp"], "127.0.0.1", "{node}: {ports}");
        }
    }
}

/// `env`, then the user's `docker` and `curl $ManagerIP:PORT` through it.
fn assert_usable_through_env(service_port: u16) {
    let env = run(&["env", "--name", LAB, "--shell", "bash"]);
    assert!(env.status.success());
    let vars = env_vars(&stdout(&env));
    assert_eq!(vars["ManagerIP"], "127.0.0.1");
    assert!(
        vars["DOCKER_HOST"].starts_with("tcp://127.0.0.1:"),
        "{}",
        vars["DOCKER_HOST"]
    );
    if service_port != 6767 {
        // 6767 was taken on this host: env says where it went.
        assert!(
            stderr(&env).contains(&format!("$ManagerIP:{service_port}")),
            "{}",
            stderr(&env)
        );
    }
    assert_eq!(
        node_statuses(&vars),
        BTreeSet::from([
            "swarm-manager-0 Ready".to_string(),
            "swarm-worker-0 Ready".to_string()
        ])
    );
    let services = lab_docker(&vars, &["service", "ls", "--format", "{{.Name}}"]);
    assert!(services.status.success(), "{}", stderr(&services));
    assert!(
        stdout(&services).lines().any(|l| l == "accountservice"),
        "{}",
        stdout(&services)
    );
    let (status, body) = http_get(&vars["ManagerIP"], service_port, "/accounts/10000").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Person_0"), "{body}");
}

#[test]
fn a_localhost_lab_is_used_through_127_0_0_1_only() {
    let _guard = LabGuard::new(LAB);
    let src = service_workspace("lh-src");
    let spec = src.join("lab/goblog.toml");
    let created = json(&run_sharing_target_dir(&[
        "create",
        "--name",
        LAB,
        "--workers",
        "1",
        "--publish",
        "localhost",
        "--file",
        spec.to_str().unwrap(),
        "-o",
        "json",
    ]));
    let service_port = assert_all_on_loopback(&created);
    assert_bound_to_loopback_only();
    assert_usable_through_env(service_port);

    // A redeploy pushes through the registry's published port.
    change_health_answer(&src, "localhost");
    let deployed = run_sharing_target_dir(&["deploy", "-q", "--name", LAB]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    wait_until(
        "the new build to answer on 127.0.0.1",
        Duration::from_secs(60),
        || {
            http_get("127.0.0.1", service_port, "/health")
                .is_ok_and(|(status, body)| status == 200 && body.contains("localhost"))
        },
    );

    // The visualizer polls the manager's engine through its published port.
    let viz = Viz::start(LAB);
    let mut state = Value::Null;
    wait_until("viz to show both nodes", Duration::from_secs(30), || {
        state = http_get("127.0.0.1", viz.port, "/api/state")
            .ok()
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null);
        state["nodes"].as_array().is_some_and(|n| n.len() == 2)
    });
    assert_eq!(state["manager"]["address"], "127.0.0.1", "{state:#}");
    assert_eq!(state["manager"]["reachable"], true, "{state:#}");
    drop(viz);

    let status = json(&run(&["status", "--name", LAB, "-o", "json"]));
    assert_eq!(assert_all_on_loopback(&status), service_port);

    // Docker picks the API and registry ports again at each start: the
    // state follows them, and env with it.
    assert!(run(&["stop", "-q", "--name", LAB]).status.success());
    let started = run(&["start", "-q", "--name", LAB]);
    assert!(started.status.success(), "{}", stderr(&started));
    let status = json(&run(&["status", "--name", LAB, "-o", "json"]));
    assert_all_on_loopback(&status);
    assert_bound_to_loopback_only();
    assert_usable_through_env(service_port);

    let destroyed = run(&["destroy", "--name", LAB]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    assert_eq!(labelled(LAB), Vec::<String>::new());
    assert!(!home().join("labs").join(LAB).exists());
}

#[test]
fn publish_localhost_is_refused_for_machines_that_are_not_containers() {
    assert_one_line_error(
        &run(&[
            "create",
            "-q",
            "--name",
            "lh-refused",
            "--driver",
            "ssh",
            "--manager",
            "root@192.0.2.1",
            "--publish",
            "localhost",
        ]),
        2,
        "--publish localhost is for dind labs",
    );
}
