//! Builds the real `FROM scratch` image and runs it under Docker.
//!
//! Docker is required: without a daemon this test fails, it does not skip.
//! The static binary is built with its own target directory, so this nested
//! cargo does not wait on the build lock of the `cargo test` that runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The size budget for the image.
const MAX_IMAGE_BYTES: u64 = 5 * 1000 * 1000;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes what the test created, whether it passed or not.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

fn build_static_binary() -> PathBuf {
    let root = workspace_root();
    // The same directory and flags as the lab's own build (src/steps/images.rs),
    // so a test run compiles the static binary once.
    let target_dir = root.join("target").join("goblog-lab");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Would take precedence over RUSTFLAGS if the outer cargo exported it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "-p",
            "accountservice",
            "--target",
            "x86_64-unknown-linux-gnu",
        ]));
    target_dir.join("x86_64-unknown-linux-gnu/release/accountservice")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn poll<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

#[test]
fn the_scratch_image_serves_accounts_and_turns_healthy() {
    let version = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match version {
        Ok(out) if out.status.success() => {}
        other => panic!("Docker is required for this test and does not answer: {other:?}"),
    }

    let binary = build_static_binary();
    let context = tempfile::tempdir().unwrap();
    copy_dir(
        &workspace_root().join("images/accountservice"),
        context.path(),
    );
    std::fs::copy(&binary, context.path().join("accountservice")).unwrap();

    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let cleanup = Cleanup {
        container: format!("accountservice-test-{nonce}"),
        image: format!("accountservice-test:{nonce}"),
    };
    // The engine here has no BuildKit plugin; the classic builder is enough
    // for a FROM scratch image.
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &cleanup.image])
        .arg(context.path()));

    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &cleanup.image])
        .parse()
        .unwrap();
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");

    docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "-p",
        "127.0.0.1::6767",
        &cleanup.image,
    ]);
    let published = docker(&["port", &cleanup.container, "6767/tcp"]);
    let addr = published
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("not published on loopback: {published}"))
        .to_owned();

    let body = poll(
        "the account answer",
        Duration::from_secs(60),
        || match http_get(&addr, "/accounts/10000") {
            Some((200, body)) => Some(body),
            _ => None,
        },
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let container_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &cleanup.container,
    ]);
    assert_eq!(json["id"], "10000");
    assert_eq!(json["name"], "Person_0");
    assert_eq!(
        json["servedBy"].as_str().unwrap(),
        container_ip.split_whitespace().next().unwrap()
    );

    poll("Docker to report healthy", Duration::from_secs(90), || {
        let status = docker(&[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            &cleanup.container,
        ]);
        assert_ne!(
            status,
            "unhealthy",
            "health log: {}",
            docker(&[
                "inspect",
                "-f",
                "{{json .State.Health.Log}}",
                &cleanup.container
            ])
        );
        (status == "healthy").then_some(())
    });

    // PID 1 in the container handles SIGTERM itself and exits cleanly.
    docker(&["stop", "-t", "20", &cleanup.container]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &cleanup.container]),
        "0"
    );
    let logs = Command::new("docker")
        .args(["logs", &cleanup.container])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&logs.stdout);
    assert!(
        stdout.starts_with(
            "Starting accountservice\nSeeded 100 fake accounts...\nStarting HTTP service at 6767\n"
        ),
        "{stdout}"
    );
}
