//! Helpers the end-to-end test files share: running goblog-lab with its
//! own GOBLOG_LAB_HOME, the host's and a lab's `docker` CLI, plain HTTP, and
//! a guard that destroys a lab however the test ends.
#![allow(dead_code)] // each test file uses some of them

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_goblog-lab");

pub fn home() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-tests-home");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the suite keeps across clones on one machine (the VM image, an
/// old release's binary): `$XDG_CACHE_HOME/goblog-lab-tests`, else
/// `~/.cache/goblog-lab-tests`. Each entry is named by what it was built
/// from, so a change builds anew.
pub fn machine_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .expect("HOME is set")
        .join("goblog-lab-tests")
}

pub fn goblog_lab(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("GOBLOG_LAB_HOME", home())
        .env_remove("DOCKER_HOST")
        .env_remove("GOBLOG_LAB_NAME")
        .stdin(Stdio::null());
    cmd
}

pub fn run(args: &[&str]) -> Output {
    run_command(goblog_lab(args), args)
}

/// How long one goblog-lab call in a test may take before the test fails
/// naming it: far past any call's own timeouts (a VM lab's create under TCG
/// takes about five minutes here), so it only tells a hang from an answer.
const CALL_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// Runs a command made by `goblog_lab(args)` (perhaps given more
/// environment), echoing what it printed for the test's log. A call still
/// running after [`CALL_DEADLINE`] is killed and fails the test.
pub fn run_command(mut command: Command, args: &[&str]) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("goblog-lab runs");
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let Ok(output) = finished.recv_timeout(CALL_DEADLINE) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!(
            "goblog-lab {} did not return within {CALL_DEADLINE:?}",
            args.join(" ")
        );
    };
    let output = output.expect("goblog-lab's output is read");
    eprintln!(
        "$ goblog-lab {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure with `-q`: exactly one line on stderr, the error, and a code.
pub fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err:?}");
    assert!(lines[0].starts_with("goblog-lab: error: "), "{err}");
    assert!(lines[0].contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The host engine's `docker` CLI, whatever the caller's environment says.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .expect("the docker CLI runs")
}

/// Names of every container, volume and network labelled with `lab`.
pub fn labelled(lab: &str) -> Vec<String> {
    let filter = format!("label=io.goblog-lab.lab={lab}");
    let mut found = Vec::new();
    for kind in [
        vec!["ps", "-a", "--format", "{{.Names}}"],
        vec!["volume", "ls", "--format", "{{.Name}}"],
        vec!["network", "ls", "--format", "{{.Name}}"],
    ] {
        let mut args = kind.clone();
        args.extend(["--filter", filter.as_str()]);
        let out = docker(&args);
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        found.extend(stdout(&out).lines().map(str::to_string));
    }
    found
}

/// Leaves nothing of `lab` behind, even when an assertion fails.
pub struct LabGuard(pub &'static str);

impl LabGuard {
    pub fn new(lab: &'static str) -> Self {
        // A previous run that died may have left it.
        // --force: an ssh lab whose test hosts are gone is only forgotten.
        let _ = goblog_lab(&["destroy", "-q", "--force", "--name", lab]).output();
        LabGuard(lab)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = goblog_lab(&["destroy", "-q", "--force", "--name", self.0]).output();
    }
}

/// A lab without services: nodes, Swarm and registry only, for tests about
/// the lab itself rather than what runs on it.
pub fn create_bare(lab: &str, workers: &str) -> Output {
    run(&[
        "create",
        "-q",
        "--name",
        lab,
        "--workers",
        workers,
        "--no-deploy",
    ])
}

/// Parses `export K="V"` lines of `goblog-lab env`.
pub fn env_vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The user's own `docker` CLI after `eval "$(goblog-lab env)"`.
pub fn lab_docker(vars: &HashMap<String, String>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("the docker CLI runs")
}

pub fn http_get(host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?,
        Duration::from_secs(3),
    )
    .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ctrl-C, as a terminal would send it.
pub fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A stand-in for an engine that says it speaks API 1.24 (Docker 1.12), on
/// a real UNIX socket: `DOCKER_HOST=unix://PATH` points goblog-lab at it.
/// It answers until the test process ends.
pub fn old_engine(tag: &str) -> PathBuf {
    use std::os::unix::net::UnixListener;
    let socket = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("old-docker-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let body = if request.contains("/_ping") {
                "OK".to_string()
            } else {
                r#"{"Version":"1.12.6","ApiVersion":"1.24","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#.to_string()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nApi-Version: 1.24\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    socket
}

/// A copy of the service's sources the test may edit; it shares the
/// compiled dependencies (`shared_target_dir`), so only the edited crate
/// compiles.
pub fn service_workspace(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let status = Command::new(manifest.join("scripts/service-workspace.sh"))
        .arg(&dest)
        .status()
        .expect("scripts/service-workspace.sh runs");
    assert!(status.success());
    dest
}

/// Where services compile: `GOBLOG_LAB_TARGET_DIR` when the run sets it
/// (checkouts sharing one build), else the checkout's own.
pub fn shared_target_dir() -> PathBuf {
    std::env::var_os("GOBLOG_LAB_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/goblog-lab"))
}

/// goblog-lab building services into `shared_target_dir`.
pub fn run_sharing_target_dir(args: &[&str]) -> Output {
    let mut command = goblog_lab(args);
    command.env("GOBLOG_LAB_TARGET_DIR", shared_target_dir());
    run_command(command, args)
}

/// What `goblog-lab env` exports for `lab`.
pub fn lab_env(lab: &str) -> HashMap<String, String> {
    let env = run(&["env", "--name", lab, "--shell", "bash"]);
    assert!(env.status.success());
    env_vars(&stdout(&env))
}

/// `goblog-lab viz --port 0` for `lab`, on the port it printed; killed
/// when dropped.
pub struct Viz {
    child: std::process::Child,
    pub port: u16,
}

impl Viz {
    pub fn start(lab: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = goblog_lab(&["viz", "--name", lab, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first_line)
            .unwrap();
        // Killed by Drop even when the line is not what was expected.
        let mut viz = Viz { child, port: 0 };
        let url = first_line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("viz prints its URL: {first_line:?}"));
        let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
        viz.port = port.parse().unwrap();
        viz
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Viz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `HOSTNAME STATUS` of each node, as the user's `docker node ls` shows them.
pub fn node_statuses(vars: &HashMap<String, String>) -> std::collections::BTreeSet<String> {
    let nodes = lab_docker(
        vars,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
    );
    assert!(nodes.status.success(), "{}", stderr(&nodes));
    stdout(&nodes).lines().map(str::to_string).collect()
}

/// The one-line change a workshop makes in a `service_workspace`: the
/// `/health` answer gains `"build":BUILD`. Returns the file changed.
pub fn change_health_answer(workspace: &Path, build: &str) -> PathBuf {
    let routes = workspace.join("accountservice/src/routes.rs");
    let code = std::fs::read_to_string(&routes).unwrap();
    let old_line = r##"br#"{"status":"UP"}"#"##;
    assert!(code.contains(old_line), "routes.rs has the /health answer");
    let new_line = format!(r##"br#"{{"status":"UP","build":"{build}"}}"#"##);
    std::fs::write(&routes, code.replace(old_line, &new_line)).unwrap();
    routes
}
