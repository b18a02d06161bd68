//! The real binary on a loopback port: real HTTP in, JSON out, the
//! `healthcheck` subcommand, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quotes-service");

/// The service on 127.0.0.1 and a free port, read from its start-up line.
struct Service {
    child: Child,
    port: u16,
    startup: String,
    /// Held open: the service logs to it until it exits.
    _stderr: BufReader<std::process::ChildStderr>,
}

impl Service {
    fn start() -> Service {
        let mut child = Command::new(BIN)
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .env_remove("QUOTES_SERVICE_PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("quotes-service starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut startup = String::new();
        stderr.read_line(&mut startup).unwrap();
        // "quotes-service listening on 127.0.0.1:PORT, answering as IP:PORT"
        let port = startup
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split(',').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in the start-up line {startup:?}"));
        Service {
            child,
            port,
            startup,
            _stderr: stderr,
        }
    }

    fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        // Generous: the most work a request may ask for takes seconds in
        // this unoptimised test build on a busy machine.
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn answers_quotes_and_health_over_http_and_stops_on_sigterm() {
    let service = Service::start();
    let port = service.port;

    let (status, health) = get(port, "/health");
    assert_eq!(
        (status, health),
        (200, serde_json::json!({ "status": "UP" }))
    );

    let (status, first) = get(port, "/api/quote?strength=4");
    assert_eq!(status, 200);
    let ip_address = first["ipAddress"].as_str().unwrap();
    assert!(ip_address.ends_with(&format!(":{port}")), "{first}");
    assert!(service
        .startup
        .ends_with(&format!("answering as {ip_address}\n")));
    assert_eq!(first["language"], "en");
    let (_, second) = get(port, "/api/quote");
    assert_ne!(first["quote"], second["quote"], "quotes come in turn");

    let (status, error) = get(port, "/api/quote?strength=lots");
    assert_eq!(status, 400);
    assert_eq!(
        error["error"],
        "strength must be a whole number from 0 to 100"
    );
    // Clamped (see work.rs), so even a number past u32 answers.
    assert_eq!(get(port, "/api/quote?strength=4294967296").0, 200);

    let probe = Command::new(BIN)
        .args(["healthcheck", "--port", &port.to_string()])
        .env_remove("QUOTES_SERVICE_PORT")
        .output()
        .unwrap();
    assert!(probe.status.success());
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout),
        "{\"status\":\"UP\"}\n"
    );

    assert!(service.terminate().success(), "exit 0 on SIGTERM");
    let probe = Command::new(BIN)
        .args(["healthcheck", "--port", &port.to_string()])
        .env_remove("QUOTES_SERVICE_PORT")
        .output()
        .unwrap();
    assert_eq!(probe.status.code(), Some(1), "nothing listens any more");
}

#[test]
fn a_taken_port_is_one_line_and_a_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(BIN)
        .args(["--bind", "127.0.0.1", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("quotes-service: listening on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("--port"), "{stderr}");
}
