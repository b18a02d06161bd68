//! Builds the real `FROM scratch` image and runs it under Docker.
//!
//! Docker is required: without a daemon this test fails, it does not skip.
//! The static binaries are built with their own target directory, so this
//! nested cargo does not wait on the build lock of the `cargo test` that runs
//! it. The quotes service runs beside it, found by names that only Docker
//! knows: its embedded DNS and the container's `/etc/hosts`. That is what the
//! static binary's glibc must resolve without NSS modules on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The size budget for the image.
const MAX_IMAGE_BYTES: u64 = 5 * 1000 * 1000;

/// The budget for the service's resident set once it has answered: almost
/// all of it is the binary's code pages, hence the image profile.
const MAX_IDLE_RSS_KIB: u64 = 3 * 1024;

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
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    network: Option<String>,
}

impl Cleanup {
    /// `docker run -d --name <name> --network <network> <args>`, removed
    /// again when the test ends; `args` end with the image.
    fn run_on(&mut self, network: &str, name: String, args: &[&str]) -> String {
        self.containers.push(name.clone());
        let mut run = vec!["run", "-d", "--name", &name, "--network", network];
        run.extend_from_slice(args);
        docker(&run);
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        if let Some(network) = &self.network {
            let _ = Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
        for image in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", image]).output();
        }
    }
}

/// Builds the static `accountservice` and `quotes-service` as the images
/// `create` ships them (the `image` profile); returns their directory.
fn build_static_binaries() -> PathBuf {
    let root = workspace_root();
    // The same directory, profile and flags as the lab's own build
    // (src/steps/images.rs), so a test run compiles the static binary once.
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
            "--profile",
            "image",
            "-p",
            "accountservice",
            "-p",
            "quotes-service",
            "--target",
            "x86_64-unknown-linux-gnu",
        ]));
    target_dir.join("x86_64-unknown-linux-gnu/image")
}

/// Builds `images/<name>` with the static binary of the same name at the
/// context root, as the lab does.
fn build_image(release: &Path, name: &str, tag: &str) {
    let context = tempfile::tempdir().unwrap();
    copy_dir(&workspace_root().join("images").join(name), context.path());
    std::fs::copy(release.join(name), context.path().join(name)).unwrap();
    // The engine here has no BuildKit plugin; the classic builder is enough
    // for a FROM scratch image.
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag])
        .arg(context.path()));
}

/// The container's address on `network`.
fn ip_on(container: &str, network: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker(&["inspect", "-f", &format, container])
}

fn published_on_loopback(container: &str) -> String {
    let published = docker(&["port", container, "6767/tcp"]);
    published
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("not published on loopback: {published}"))
        .to_owned()
}

/// Account 10000 as `container` serves it, once its quote comes from
/// `quotes_from`. Until the quotes service listens, the answer carries the
/// fallback quote, and after a few of those the breaker pauses the calls;
/// the bound outlasts both.
fn account_with_quote_from(container: &str, quotes_from: &str) -> serde_json::Value {
    let addr = published_on_loopback(container);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        if let Some((200, body)) = http_get(&addr, "/accounts/10000") {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["quote"]["ipAddress"] == quotes_from {
                return json;
            }
            last = Some(json);
        }
        if Instant::now() >= deadline {
            let logs = Command::new("docker")
                .args(["logs", container])
                .output()
                .unwrap();
            panic!(
                "{container} never served a quote from {quotes_from}; last answer: {last:?}\n\
                 its log: {}",
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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

    let release = build_static_binaries();
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut cleanup = Cleanup::default();
    let image = format!("accountservice-test:{nonce}");
    let quotes_image = format!("accountservice-test-quotes:{nonce}");
    cleanup.images = vec![image.clone(), quotes_image.clone()];
    build_image(&release, "accountservice", &image);
    build_image(&release, "quotes-service", &quotes_image);

    let size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", &image])
        .parse()
        .unwrap();
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");

    // A user-defined network: containers on it get Docker's embedded DNS
    // (127.0.0.11 in their resolv.conf), which knows names and aliases.
    let network = format!("acct-image-net-{nonce}");
    docker(&["network", "create", &network]);
    cleanup.network = Some(network.clone());

    let quotes = cleanup.run_on(
        &network,
        format!("acct-image-quotes-{nonce}"),
        &["--network-alias", "quotes-by-dns", &quotes_image],
    );
    let quotes_ip = ip_on(&quotes, &network);

    // One account service finds the quotes by the DNS alias...
    let container = cleanup.run_on(
        &network,
        format!("acct-image-account-{nonce}"),
        &[
            "-e",
            "QUOTES_URL=http://quotes-by-dns:8080/api/quote",
            "-p",
            "127.0.0.1::6767",
            &image,
        ],
    );
    // ...the other by a name only in its /etc/hosts (Docker's DNS does not
    // know it, so a lookup that skipped the file would fail).
    let by_hosts = cleanup.run_on(
        &network,
        format!("acct-image-hosts-{nonce}"),
        &[
            "--add-host",
            &format!("quotes-by-hosts:{quotes_ip}"),
            "-e",
            "QUOTES_URL=http://quotes-by-hosts:8080/api/quote",
            "-p",
            "127.0.0.1::6767",
            &image,
        ],
    );

    // The resident set of the service as shipped, once it has answered
    // (no quotes: a lookup adds glibc's resolver to it).
    let plain = cleanup.run_on(
        &network,
        format!("acct-image-plain-{nonce}"),
        &["-p", "127.0.0.1::6767", &image],
    );
    let plain_addr = published_on_loopback(&plain);
    poll(
        "the plain container to answer",
        Duration::from_secs(60),
        || http_get(&plain_addr, "/accounts/10000").filter(|(status, _)| *status == 200),
    );
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &plain]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"));
    assert!(
        rss_kib <= MAX_IDLE_RSS_KIB,
        "the shipped accountservice holds {rss_kib} KiB after its first answer (budget {MAX_IDLE_RSS_KIB} KiB)"
    );

    // The quotes service signs each quote with its own address, so a quote
    // with it came through the name, not from the fallback.
    let quotes_from = format!("{quotes_ip}:8080");
    let json = account_with_quote_from(&container, &quotes_from);
    assert_eq!(json["id"], "10000");
    assert_eq!(json["name"], "Person_0");
    assert_eq!(json["servedBy"], ip_on(&container, &network));
    account_with_quote_from(&by_hosts, &quotes_from);

    poll("Docker to report healthy", Duration::from_secs(90), || {
        let status = docker(&["inspect", "-f", "{{.State.Health.Status}}", &container]);
        assert_ne!(
            status,
            "unhealthy",
            "health log: {}",
            docker(&["inspect", "-f", "{{json .State.Health.Log}}", &container])
        );
        (status == "healthy").then_some(())
    });

    // PID 1 in the container handles SIGTERM itself and exits cleanly.
    docker(&["stop", "-t", "20", &container]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &container]),
        "0"
    );
    let logs = Command::new("docker")
        .args(["logs", &container])
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
