//! Shared helpers for the integration tests: run the real binary, talk to it
//! with a real HTTP client, and stand up a real quotes stub.

#![allow(dead_code)] // each test binary uses a different subset

pub mod stub;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_accountservice");

/// Start-up can be slow when other test binaries compete for two cores.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `accountservice` on a kernel-chosen loopback port. Killed on drop.
pub struct Service {
    child: Child,
    pub port: u16,
    pub startup_lines: Vec<String>,
    stderr_path: PathBuf,
    _stdout_drain: std::thread::JoinHandle<()>,
}

impl Service {
    /// Starts the binary on `db`; `env` adds variables (e.g. QUOTES_URL).
    pub fn start(db: &Path, env: &[(&str, &str)]) -> Service {
        let stderr_path = db.with_extension(format!("stderr.{}", unique()));
        let mut cmd = Command::new(BIN);
        cmd.args(["--port", "0", "--bind", "127.0.0.1", "--db"])
            .arg(db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("create stderr log"));
        // Settings from the developer's shell must not leak into tests.
        for (key, _) in std::env::vars() {
            if key.starts_with("ACCOUNTSERVICE_") || key.starts_with("QUOTES_") {
                cmd.env_remove(key);
            }
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("spawn accountservice");

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let drain = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child
                    // never blocks on a full pipe.
                }
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut lines = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let port = line
                        .strip_prefix("Starting HTTP service at ")
                        .map(|p| p.trim().parse::<u16>().expect("port number"));
                    lines.push(line);
                    if let Some(port) = port {
                        break port;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "service did not report its port; stdout {lines:?}; stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
            }
        };
        Service {
            child,
            port,
            startup_lines: lines,
            stderr_path,
            _stdout_drain: drain,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit, polling so slow machines get time.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "service still running {timeout:?} after being asked to stop; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a request came back with.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One HTTP/1.1 request on a fresh connection, with a generous timeout.
pub async fn request(method: Method, port: u16, path: &str) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), try_request(method, port, path))
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} within 30 s"))
        .unwrap_or_else(|e| panic!("request to {path} failed: {e}"))
}

pub async fn try_request(
    method: Method,
    port: u16,
    path: &str,
) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())?;
    let exchange = async move {
        let response = sender.send_request(req).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Reply {
            status,
            headers,
            body,
        })
    };
    let (reply, _) = tokio::join!(exchange, conn);
    Ok(reply?)
}

pub async fn get(port: u16, path: &str) -> Reply {
    request(Method::GET, port, path).await
}

/// The address the service should report as `servedBy`.
pub fn first_non_loopback_ipv4() -> String {
    if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .find_map(|i| match i.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

pub fn fallback_quote() -> serde_json::Value {
    serde_json::json!({
        "quote": "May the source be with you, always.",
        "ipAddress": "circuit-breaker",
        "language": "en"
    })
}
