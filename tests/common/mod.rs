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

/// Runs a command made by `goblog_lab(args)` (perhaps given more
/// environment), echoing what it printed for the test's log.
pub fn run_command(mut command: Command, args: &[&str]) -> Output {
    let output = command.output().expect("goblog-lab runs");
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
