//! End-to-end tests of goblog-lab against the real Docker engine that
//! `.ci/run` (scripts/setup.sh) starts: real nodes, a real Swarm, the real
//! registry, real HTTP through $ManagerIP. Docker is required; a test fails
//! when it is missing.
//!
//! Every lab here has its own name, and all share one GOBLOG_LAB_HOME under
//! the target directory, so the node image is built once for the run.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
#[test]
fn create_env_docker_curl_destroy() {
    let lab = "t-main";
    let _guard = LabGuard::new(lab);
    let created = run(&["create", "--name", lab, "--workers", "2"]);
    assert!(created.status.success(), "create failed");
    let summary = stdout(&created);
    assert!(summary.contains("ManagerIP"), "{summary}");
    assert!(
        summary.contains("eval \"$(goblog-lab env --name t-main)\""),
        "{summary}"
    );
    assert!(
        summary.contains("curl $ManagerIP:6767/accounts/10000"),
        "{summary}"
    );

    // env prints only shell code on stdout.
    let env = run(&["env", "--name", lab]);
    assert!(env.status.success());
    let text = stdout(&env);
    assert!(text.ends_with("# Run this command to configure your shell:\n# eval \"$(goblog-lab env --name t-main)\"\n"), "{text}");
    let vars = env_vars(&text);
    assert_eq!(vars["DOCKER_TLS_VERIFY"], "1");
    assert_eq!(vars["GOBLOG_LAB_NAME"], lab);
    let manager_ip = vars["ManagerIP"].clone();
    assert_eq!(vars["DOCKER_HOST"], format!("tcp://{manager_ip}:2376"));

    // Keys and join tokens are 0600.
    let cert_path = PathBuf::from(&vars["DOCKER_CERT_PATH"]);
    let lab_dir = cert_path.parent().unwrap().to_path_buf();
    for secret in [
        cert_path.join("key.pem"),
        lab_dir.join("ca-key.pem"),
        lab_dir.join("swarm-worker.token"),
        lab_dir.join("swarm-manager.token"),
    ] {
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", secret.display());
    }
    let token = std::fs::read_to_string(lab_dir.join("swarm-worker.token")).unwrap();
    assert!(token.starts_with("SWMTKN-1-"), "{token}");

    // The user's own docker CLI sees the Swarm: 3 Ready nodes and my_network.
    assert_eq!(
        node_statuses(&vars),
        BTreeSet::from([
            "swarm-manager-0 Ready".to_string(),
            "swarm-worker-0 Ready".to_string(),
            "swarm-worker-1 Ready".to_string()
        ])
    );
    let networks = lab_docker(
        &vars,
        &["network", "ls", "--format", "{{.Name}} {{.Driver}}"],
    );
    assert!(
        stdout(&networks).lines().any(|l| l == "my_network overlay"),
        "{}",
        stdout(&networks)
    );
    let services = lab_docker(
        &vars,
        &["service", "ls", "--format", "{{.Name}} {{.Replicas}}"],
    );
    assert!(
        stdout(&services).lines().any(|l| l == "accountservice 3/3"),
        "{}",
        stdout(&services)
    );

    // Without TLS client certificates the node API refuses to talk.
    let anonymous = Command::new("docker")
        .args(["-H", &format!("tcp://{manager_ip}:2376"), "version"])
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "the node API answered without a client certificate"
    );

    // curl $ManagerIP:6767 reaches more than one replica.
    let mut served_by = BTreeSet::new();
    for _ in 0..30 {
        let (status, body) = http_get(&manager_ip, 6767, "/accounts/10000").unwrap();
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["name"], "Person_0");
        assert_eq!(json["id"], "10000");
        served_by.insert(json["servedBy"].as_str().unwrap().to_string());
    }
    assert!(served_by.len() >= 2, "only {served_by:?} answered");

    // The blog's scale command works through the env too.
    let scaled = lab_docker(&vars, &["service", "scale", "--detach", "accountservice=2"]);
    assert!(scaled.status.success(), "{}", stderr(&scaled));

    // status, as a script would read it.
    let status = run(&["status", "--name", lab, "--output", "json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    // Pushing left no `127.0.0.1:PORT/...` tags behind on the host engine.
    let push_prefix = format!("{}/", status["registry"].as_str().unwrap());
    let repositories = stdout(&docker(&["images", "--format", "{{.Repository}}"]));
    assert!(
        !repositories.lines().any(|r| r.starts_with(&push_prefix)),
        "{repositories}"
    );
    assert_eq!(status["manager_ip"], manager_ip.as_str());
    let account = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "accountservice")
        .unwrap();
    assert_eq!(account["desired"], 2);

    let listed = run(&["ls", "--output", "json"]);
    assert!(stdout(&listed).contains("\"t-main\""));

    let destroyed = run(&["destroy", "--name", lab]);
    assert!(destroyed.status.success());
    assert!(destroyed.stdout.is_empty(), "destroy prints no data");
    assert_eq!(labelled(lab), Vec::<String>::new());
    assert!(!lab_dir.exists(), "state directory left behind");
    // Idempotent.
    let again = run(&["destroy", "--name", lab]);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("nothing to remove"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn two_labs_run_side_by_side() {
    let _a = LabGuard::new("t-side-a");
    let _b = LabGuard::new("t-side-b");
    let spawn = |lab: &str| {
        goblog_lab(&[
            "create",
            "-q",
            "--name",
            lab,
            "--workers",
            "0",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("t-side-a"), spawn("t-side-b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let a: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_ne!(a["manager_ip"], b["manager_ip"]);
    assert_ne!(a["registry"], b["registry"]);
    for summary in [&a, &b] {
        let (status, body) = http_get(
            summary["manager_ip"].as_str().unwrap(),
            6767,
            "/accounts/10001",
        )
        .unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("Person_1"), "{body}");
    }
    assert!(run(&["destroy", "-q", "--name", "t-side-a"])
        .status
        .success());
    // Removing one leaves the other running.
    let (status, _) = http_get(b["manager_ip"].as_str().unwrap(), 6767, "/health").unwrap();
    assert_eq!(status, 200);
    assert!(run(&["destroy", "-q", "--name", "t-side-b"])
        .status
        .success());
    assert!(labelled("t-side-a").is_empty() && labelled("t-side-b").is_empty());
}

/// `create` as a library call, twice at once in one process, as a
/// classroom's server will run it: each create reports to its own sink and
/// only there, and each lab answers on its own manager.
#[test]
fn two_creates_in_one_process_keep_their_own_progress_lines() {
    use goblog_lab::create::{create, Options, Request};
    use goblog_lab::ui::Ui;
    use std::sync::{Arc, Mutex};

    let _a = LabGuard::new("t-lib-a");
    let _b = LabGuard::new("t-lib-b");
    // The library reads its home and engine from the environment, as the
    // binary does; this test process is its own (nextest).
    std::env::set_var("GOBLOG_LAB_HOME", home());
    std::env::remove_var("DOCKER_HOST");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let made = runtime.block_on(async {
        let start = |name: &'static str| {
            let lines = Arc::new(Mutex::new(Vec::<String>::new()));
            let sink = {
                let lines = lines.clone();
                move |line: &str| lines.lock().unwrap().push(line.to_string())
            };
            let ui = Ui::to_sink(Arc::new(sink), true);
            let mut loaded = goblog_lab::lab::spec::load(None).unwrap();
            loaded.spec.workers = 0;
            let request = Request {
                name: name.to_string(),
                loaded,
                options: Options::default(),
            };
            async move {
                let created = create(request, &ui, std::future::pending()).await;
                (created, lines)
            }
        };
        tokio::join!(start("t-lib-a"), start("t-lib-b"))
    });
    let mut managers = Vec::new();
    for (created, lines) in [made.0, made.1] {
        let lines = lines.lock().unwrap().clone();
        let created = created.unwrap_or_else(|err| panic!("{err}: {lines:#?}"));
        let ip = created.summary.manager_ip.clone();
        // Its own steps, in order, each finished, and its own lab's URL.
        let done: Vec<&String> = lines.iter().filter(|l| l.starts_with(" ✓ ")).collect();
        for step in [
            "node image",
            "Starting nodes",
            "Configuring the engines",
            "Forming the Swarm",
            "Deploying accountservice",
        ] {
            assert!(
                done.iter().any(|l| l.contains(step)),
                "{step} in {lines:#?}"
            );
        }
        let answered = format!("Waiting for accountservice to answer on http://{ip}:6767/");
        assert!(
            done.iter().any(|l| l.contains(&answered)),
            "{answered} in {lines:#?}"
        );
        assert!(
            !lines.iter().any(|l| l.starts_with(" ✗ ")),
            "no failed step: {lines:#?}"
        );
        assert_eq!(created.state.nodes.len(), 1);
        assert_eq!(created.state.name, created.summary.name);
        let (status, body) = http_get(&ip, 6767, "/accounts/10001").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("Person_1"), "{body}");
        managers.push((created.summary.name, ip, lines));
    }
    let (a, b) = (&managers[0], &managers[1]);
    assert_ne!(a.1, b.1, "each lab has its own manager");
    // Neither sink saw the other lab's manager.
    assert!(!a.2.iter().any(|l| l.contains(&format!("{}:", b.1))));
    assert!(!b.2.iter().any(|l| l.contains(&format!("{}:", a.1))));
    for (name, _, _) in &managers {
        assert!(run(&["destroy", "-q", "--name", name]).status.success());
        assert!(labelled(name).is_empty());
    }
}

#[test]
fn create_twice_says_it_exists_and_keeps_the_first() {
    let lab = "t-twice";
    let _guard = LabGuard::new(lab);
    assert!(create_bare(lab, "0").status.success());
    let before = labelled(lab);
    let second = create_bare(lab, "0");
    assert_one_line_error(&second, 1, "lab 't-twice' already exists");
    assert!(stderr(&second).contains("goblog-lab destroy --name t-twice"));
    assert_eq!(labelled(lab), before, "the first lab was touched");
    assert!(run(&["env", "--name", lab]).status.success());

    // Tab completes the lab's name, in a real bash that sourced the script.
    assert_eq!(bash_completes(&["status", "--name", "t-tw"]), ["t-twice"]);
    assert_eq!(bash_completes(&["destroy", "--name", "t-tw"]), ["t-twice"]);
    let commands = bash_completes(&["sta"]);
    assert!(
        commands.contains(&"start".to_string()) && commands.contains(&"status".to_string()),
        "{commands:?}"
    );
}

/// What Tab offers after `goblog-lab WORDS` in a bash that sourced
/// `goblog-lab completion bash`, the last word being the one completed.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = stdout(&run(&["completion", "bash"]));
    assert!(script.contains("complete "), "{script}");
    let script_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("completion.bash");
    std::fs::write(&script_file, script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let driver = format!(
        "source '{}'; COMP_WORDS=(goblog-lab {}); COMP_CWORD={}; \
         _clap_complete_goblog_lab goblog-lab '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_file.display(),
        quoted.join(" "),
        words.len(),
        words[words.len() - 1],
        if words.len() > 1 {
            words[words.len() - 2]
        } else {
            "goblog-lab"
        },
    );
    let out = Command::new("bash")
        .args(["-c", &driver])
        .env("GOBLOG_LAB_HOME", home())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn destroy_works_without_the_state_file() {
    let lab = "t-nostate";
    let _guard = LabGuard::new(lab);
    assert!(create_bare(lab, "1").status.success());
    std::fs::remove_dir_all(home().join("labs").join(lab)).unwrap();
    let listed = run(&["ls"]);
    assert!(stdout(&listed).contains("orphaned"), "{}", stdout(&listed));
    assert!(run(&["destroy", "--name", lab]).status.success());
    assert_eq!(labelled(lab), Vec::<String>::new());
}

#[test]
fn a_node_killed_while_joining_rolls_back_everything() {
    let lab = "t-kill";
    let _guard = LabGuard::new(lab);
    let child = spawn(&["create", "-q", "--name", lab, "--workers", "2"]);
    let victim = format!("{lab}-swarm-worker-1");
    wait_running(&victim);
    // create is held still while the node dies, so the kill lands before
    // the node joins, however fast this machine forms the Swarm: the node's
    // dockerd has not even answered yet (it takes a second or more), and
    // that is checked rather than assumed.
    signal(&child, "STOP");
    let joined = docker(&[
        "exec",
        &victim,
        "sh",
        "-c",
        "docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo no-engine-yet",
    ]);
    let joined = stdout(&joined);
    assert_ne!(
        joined.trim(),
        "active",
        "the victim joined the Swarm before create was held"
    );
    let killed = docker(&["kill", &victim]);
    signal(&child, "CONT");
    assert!(killed.status.success(), "{}", stderr(&killed));
    let output = child.wait_with_output().unwrap();
    assert_one_line_error(&output, 1, "swarm-worker-1");
    assert_rolled_back(lab);
}

#[test]
fn ctrl_c_mid_create_rolls_back() {
    let lab = "t-ctrlc";
    let _guard = LabGuard::new(lab);
    let child = spawn(&["create", "-q", "--name", lab, "--workers", "1"]);
    wait_running(&format!("{lab}-swarm-manager-0"));
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_one_line_error(&output, 130, "interrupted");
    assert_rolled_back(lab);
}

/// `kill -SIG PID`: STOP holds a process still, CONT lets it go on.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

fn spawn(args: &[&str]) -> Child {
    goblog_lab(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_running(container: &str) {
    wait_until(
        &format!("{container} to run"),
        Duration::from_secs(300),
        || {
            let out = docker(&["inspect", "--format", "{{.State.Running}}", container]);
            stdout(&out).trim() == "true"
        },
    );
}

/// Nothing of `lab` is left: no labelled object, no state directory.
fn assert_rolled_back(lab: &str) {
    assert_eq!(labelled(lab), Vec::<String>::new());
    assert!(!home().join("labs").join(lab).exists());
}

#[test]
fn port_in_use_is_refused_before_anything_is_made() {
    let lab = "t-port";
    let _guard = LabGuard::new(lab);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let output = run(&["create", "-q", "--name", lab, "--registry-port", &port]);
    assert_one_line_error(
        &output,
        1,
        &format!("port {port} on 127.0.0.1 is already in use"),
    );
    assert_eq!(labelled(lab), Vec::<String>::new());
}

#[test]
fn no_docker_daemon_is_one_clear_line() {
    let output = goblog_lab(&["create", "-q", "--name", "t-nodaemon"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_one_line_error(
        &output,
        1,
        "cannot reach the Docker daemon at unix:///nonexistent/docker.sock",
    );
    let output = goblog_lab(&["destroy", "-q", "--name", "t-nodaemon"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_one_line_error(&output, 1, "cannot reach the Docker daemon");
}

/// An engine that says it speaks API 1.24 (Docker 1.12) on a real socket.
#[test]
fn a_daemon_too_old_is_refused() {
    let socket = old_engine("lab");
    let output = goblog_lab(&["create", "-q", "--name", "t-old"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap();
    assert_one_line_error(
        &output,
        1,
        "speaks API 1.24, but goblog-lab needs 1.40 or newer",
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["create", "-q", "--workers", "21"],
            "--workers 21 is out of range 0..=20",
        ),
        (
            &["create", "-q", "--managers", "0"],
            "--managers 0 is out of range 1..=7",
        ),
        (
            &["create", "-q", "--name", "Bad Name!"],
            "invalid lab name \"Bad Name!\"",
        ),
        (&["create", "-q", "--name", "../etc"], "invalid lab name"),
        (
            &["create", "-q", "--wokers", "2"],
            "unexpected argument '--wokers'",
        ),
        (&["create", "-q", "--workers", "two"], "invalid value 'two'"),
        (&["env", "--shell", "tcsh"], "invalid value 'tcsh'"),
        (&["destroy", "--all", "--name", "x"], "cannot be used with"),
    ];
    for (args, needle) in cases {
        let output = goblog_lab(args).output().unwrap();
        assert_one_line_error(&output, 2, needle);
    }
}

#[test]
fn a_spec_with_a_typo_names_file_line_and_field() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let spec = dir.join("typo.toml");
    std::fs::write(&spec, "managers = 1\nwrokers = 2\n").unwrap();
    let output = run(&[
        "create",
        "-q",
        "--name",
        "t-typo",
        "--file",
        spec.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &output,
        2,
        &format!("{}:2:1: unknown field `wrokers`", spec.display()),
    );
    assert_eq!(labelled("t-typo"), Vec::<String>::new());
}

#[test]
fn env_of_a_missing_lab_says_how_to_create_it() {
    let output = run(&["env", "--name", "t-missing"]);
    assert_one_line_error(&output, 1, "no lab named 't-missing'");
    assert!(output.stdout.is_empty(), "nothing for eval to run");
}

#[test]
fn help_lists_every_command_and_flag() {
    let help = goblog_lab(&["--help"]).output().unwrap();
    assert!(help.status.success());
    let text = stdout(&help);
    for command in ["create", "env", "status", "ls", "destroy"] {
        assert!(text.contains(command), "{command} missing from --help");
    }
    let help = stdout(&goblog_lab(&["create", "--help"]).output().unwrap());
    for flag in [
        "--name",
        "--workers",
        "--managers",
        "--file",
        "--no-deploy",
        "--retain",
        "--registry-port",
        "--output",
    ] {
        assert!(help.contains(flag), "{flag} missing from create --help");
    }
}

#[test]
fn stop_and_start_bring_the_same_lab_back() {
    let lab = "t-pause";
    let _guard = LabGuard::new(lab);
    assert!(run(&["create", "-q", "--name", lab, "--workers", "1"])
        .status
        .success());
    let vars = env_vars(&stdout(&run(&["env", "--name", lab])));
    let manager_ip = vars["ManagerIP"].clone();

    assert!(run(&["stop", "--name", lab]).status.success());
    let running = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=io.goblog-lab.lab={lab}"),
    ]);
    assert_eq!(
        stdout(&running).trim(),
        "",
        "containers still running after stop"
    );
    assert!(
        http_get(&manager_ip, 6767, "/health").is_err(),
        "answered while stopped"
    );
    let stopped = "lab 't-pause' is stopped: start it with `goblog-lab start --name t-pause`";
    for command in [
        &["status"][..],
        &["env"],
        &["deploy"],
        &["scale", "accountservice=2"],
        &["logs", "accountservice"],
        &["viz"],
    ] {
        let args = [command, &["-q", "--name", lab]].concat();
        assert_one_line_error(&run(&args), 1, stopped);
    }

    let started = run(&["start", "--name", lab]);
    assert!(started.status.success());
    let (status, body) = http_get(&manager_ip, 6767, "/accounts/10000").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Person_0"), "{body}");
    // The same Swarm, not a new one: both nodes come back Ready.
    wait_until("both nodes Ready", Duration::from_secs(60), || {
        let nodes = lab_docker(&vars, &["node", "ls", "--format", "{{.Status}}"]);
        stdout(&nodes).lines().filter(|l| *l == "Ready").count() == 2
    });

    // Stopped behind goblog-lab's back, the machine's own state tells, and
    // the lab is not called stopped: nobody ran `stop`.
    let manager = format!("{lab}-swarm-manager-0");
    assert!(docker(&["stop", "-t", "1", &manager]).status.success());
    let down = run(&["status", "-q", "--name", lab]);
    assert_one_line_error(
        &down,
        1,
        "lab 't-pause' has no manager answering (swarm-manager-0 is down: exit code",
    );
    assert!(
        stderr(&down).contains("`goblog-lab start --name t-pause` starts its stopped nodes again")
    );
    assert!(!stderr(&down).contains("is stopped"), "{}", stderr(&down));
}

#[test]
fn scale_logs_and_exec_work_on_the_nodes() {
    let lab = "t-loop";
    let _guard = LabGuard::new(lab);
    assert!(run(&["create", "-q", "--name", lab, "--workers", "2"])
        .status
        .success());

    // Scale up: it returns when 5 run, and prints where.
    let scaled = run(&["scale", "accountservice=5", "--name", lab, "-o", "json"]);
    assert!(scaled.status.success());
    let placement: serde_json::Value = serde_json::from_slice(&scaled.stdout).unwrap();
    let placement = placement.as_array().unwrap();
    assert_eq!(placement.len(), 5, "{placement:?}");
    let nodes: BTreeSet<&str> = placement
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "5 replicas spread over the 3 nodes: {placement:?}"
    );
    // Logs from several nodes, each line saying which task on which node.
    let logs = run(&["logs", "accountservice", "--name", lab]);
    assert!(logs.status.success());
    let text = stdout(&logs);
    let started_on: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.ends_with("| Starting accountservice"))
        .filter_map(|l| l.split('@').nth(1)?.split(' ').next())
        .collect();
    assert!(started_on.len() >= 2, "logs from one node only: {text}");

    // And down.
    let scaled = run(&["scale", "accountservice=1", "--name", lab]);
    assert!(scaled.status.success());
    assert_eq!(stdout(&scaled).lines().count(), 1, "{}", stdout(&scaled));
    let status = run(&["status", "--name", lab, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let account = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "accountservice")
        .unwrap()
        .clone();
    assert_eq!(
        (account["running"].as_u64(), account["desired"].as_u64()),
        (Some(1), Some(1))
    );

    // exec on a worker runs the blog's `docker ps` there, and passes exit codes on.
    let ps = run(&[
        "exec",
        "swarm-worker-0",
        "--name",
        lab,
        "--",
        "docker",
        "ps",
        "--format",
        "{{.Names}}",
    ]);
    assert!(ps.status.success());
    let exit = run(&[
        "exec",
        "swarm-worker-0",
        "--name",
        lab,
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(exit.status.code(), Some(3));

    // Bad input: one line, exit 2.
    let unknown = goblog_lab(&["scale", "nope=2", "--name", lab])
        .output()
        .unwrap();
    assert_one_line_error(
        &unknown,
        2,
        "no service 'nope' in lab 't-loop' (it has: accountservice, quotes-service)",
    );
    let bad_n = goblog_lab(&["scale", "accountservice=lots", "--name", lab])
        .output()
        .unwrap();
    assert_one_line_error(&bad_n, 2, "is not a number of replicas");
    let no_node = goblog_lab(&["exec", "swarm-worker-7", "--name", lab, "--", "true"])
        .output()
        .unwrap();
    assert_one_line_error(&no_node, 2, "no node 'swarm-worker-7' in lab 't-loop'");
    let no_lab = goblog_lab(&["scale", "accountservice=2", "--name", "t-nolab"])
        .output()
        .unwrap();
    assert_one_line_error(&no_lab, 1, "no lab named 't-nolab'");
}

#[test]
fn a_three_manager_lab_losing_its_first_manager_says_so_and_start_heals_it() {
    let lab = "t-quorum";
    let _guard = LabGuard::new(lab);
    let src = service_workspace("quorum-src");
    let spec = src.join("lab/goblog.toml");
    let created = run_sharing_target_dir(&[
        "create",
        "-q",
        "--name",
        lab,
        "--file",
        spec.to_str().unwrap(),
        "--managers",
        "3",
        "--workers",
        "0",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));

    // $ManagerIP is the lab's virtual address, and the blog's commands
    // follow it: the Docker client too.
    let vars = lab_env(lab);
    let vip = vars["ManagerIP"].clone();
    assert!(vip.ends_with(".254"), "{vars:?}");
    assert_eq!(vars["DOCKER_HOST"], format!("tcp://{vip}:2376"));
    assert_eq!(
        node_statuses(&vars).len(),
        3,
        "docker node ls through {vip}"
    );
    let holder = vip_holder(lab, &vip);
    let answers = |what: &str| {
        wait_until(what, Duration::from_secs(60), || {
            http_get(&vip, 6767, "/accounts/10000").is_ok_and(|(status, _)| status == 200)
        })
    };
    answers("the accountservice on the virtual $ManagerIP");

    // Killed behind goblog-lab's back: Raft keeps its majority, the
    // address moves to a manager that is left, and the lab is reported
    // through it.
    let first = format!("{lab}-swarm-manager-0");
    assert!(docker(&["kill", &first]).status.success());
    answers("the virtual $ManagerIP to answer again after the first manager was killed");
    assert_ne!(vip_holder(lab, &vip), "swarm-manager-0");

    // The registry survives it: an edit deploys, its image pushed to the
    // managers that are left and pulled by managers that never had it,
    // and every replica serves it.
    change_health_answer(&src, "after-kill");
    let deployed = run_sharing_target_dir(&["deploy", "accountservice", "--name", lab]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    assert!(
        stderr(&deployed).contains("swarm-manager-0's registry did not get"),
        "{}",
        stderr(&deployed)
    );
    // Twelve answers in a row carry it (the edge takes turns among the
    // replicas); a request the busy machine drops is asked again.
    let mut health = Vec::new();
    wait_until(
        "every replica serving the edit",
        Duration::from_secs(60),
        || {
            health = (0..12)
                .filter_map(|_| http_get(&vip, 6767, "/health").ok())
                .map(|(_, body)| body)
                .collect();
            health.len() == 12 && health.iter().all(|b| b.contains(r#""build":"after-kill""#))
        },
    );
    let mut report = serde_json::Value::Null;
    wait_until(
        "the Swarm to see its first manager down",
        Duration::from_secs(120),
        || {
            let status = run(&["status", "-q", "--name", lab, "-o", "json"]);
            if !status.status.success() {
                return false;
            }
            report = serde_json::from_slice(&status.stdout).unwrap();
            report["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["hostname"] == "swarm-manager-0" && n["state"] == "down")
        },
    );
    assert_eq!(
        report["quorum"],
        serde_json::json!({"managers": 3, "reachable": 2, "needed": 2, "kept": true}),
        "{report:#}"
    );
    // It names the manager that holds $ManagerIP now.
    assert_eq!(
        report["manager_ip_held_by"],
        vip_holder(lab, &vip).as_str(),
        "{report:#}"
    );
    let table = stdout(&run(&["status", "-q", "--name", lab]));
    assert!(
        table.contains("2 of 3 managers reachable: quorum kept (Raft needs 2)"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "swarm-manager-0 is down: `goblog-lab start --name {lab}` starts it again"
        )),
        "{table}"
    );

    // start brings it back into the same Swarm.
    let started = run(&["start", "-q", "--name", lab]);
    assert!(started.status.success(), "{}", stderr(&started));
    wait_until("all three managers back", Duration::from_secs(120), || {
        let status = run(&["status", "-q", "--name", lab, "-o", "json"]);
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&status.stdout) else {
            return false;
        };
        report["quorum"]["reachable"] == 3
            && report["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["state"] == "ready")
    });
    // The healed manager did not take the address back (no second
    // outage); now the holder, not the first manager, goes.
    let holder_now = vip_holder(lab, &vip);
    assert_ne!(holder_now, "swarm-manager-0", "{holder} then {holder_now}");
    assert!(docker(&["kill", &format!("{lab}-{holder_now}")])
        .status
        .success());
    answers("the virtual $ManagerIP to answer after its holder was killed");
    let moved_to = vip_holder(lab, &vip);
    assert_ne!(moved_to, holder_now);
    let status = run(&["status", "-q", "--name", lab, "-o", "json"]);
    assert!(status.status.success(), "{}", stderr(&status));
}

/// The manager whose lab interface holds the virtual address now.
fn vip_holder(lab: &str, vip: &str) -> String {
    let mut holder = String::new();
    wait_until(
        &format!("a manager of {lab} to hold {vip}"),
        Duration::from_secs(60),
        || {
            holder = (0..3)
                .map(|i| format!("swarm-manager-{i}"))
                .find(|hostname| {
                    let held = docker(&[
                        "exec",
                        &format!("{lab}-{hostname}"),
                        "ip",
                        "-4",
                        "-o",
                        "addr",
                    ]);
                    String::from_utf8_lossy(&held.stdout).contains(&format!(" {vip}/32 "))
                })
                .unwrap_or_default();
            !holder.is_empty()
        },
    );
    holder
}
