//! The SSH core (`src/ssh/`) against a real OpenSSH server on loopback:
//! host key checking, authentication, commands, uploads and tunnels.
//!
//! The module is compiled into this test directly, with the one module of
//! the crate it uses (`retry`, which depends on tokio only), so the SSH core
//! stays testable on its own.

#[path = "../src/retry.rs"]
mod retry;
#[path = "../src/ssh/mod.rs"]
mod ssh;
#[path = "common/sshd.rs"]
mod sshd;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use ssh::{Credentials, HostKeys, SshClient, SshError, Target};
use sshd::Sshd;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The tests log in as whoever runs them (root in CI), and must not find a
/// developer's ssh-agent: its keys would be offered first and change what
/// the authentication tests see.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::remove_var("SSH_AUTH_SOCK"));
}

fn current_user() -> String {
    let output = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn target(sshd: &Sshd) -> Target {
    format!("{}@127.0.0.1:{}", current_user(), sshd.port)
        .parse()
        .unwrap()
}

fn user_known_hosts(sshd: &Sshd) -> PathBuf {
    sshd.dir.join("user_known_hosts")
}

/// Inside a directory that does not exist yet, to see it created 0700.
fn lab_known_hosts(sshd: &Sshd) -> PathBuf {
    sshd.dir.join("lab").join("known_hosts")
}

fn host_keys(sshd: &Sshd, accept_new: bool) -> HostKeys {
    HostKeys {
        user_known_hosts: user_known_hosts(sshd),
        lab_known_hosts: lab_known_hosts(sshd),
        accept_new,
    }
}

async fn connect_with(sshd: &Sshd, key: &Path, accept_new: bool) -> Result<SshClient, SshError> {
    SshClient::connect(
        target(sshd),
        Credentials {
            key: Some(key.to_path_buf()),
        },
        host_keys(sshd, accept_new),
        CONNECT_TIMEOUT,
    )
    .await
}

/// A client for tests about what comes after logging in.
async fn client(sshd: &Sshd) -> SshClient {
    match connect_with(sshd, &sshd.client_key, true).await {
        Ok(client) => client,
        Err(e) => panic!("{e}\nsshd log:\n{}", sshd.log()),
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_host_is_refused_with_its_fingerprint_then_accepted_and_recorded() {
    setup();
    let sshd = Sshd::start("unknown-host");
    let fingerprint = sshd.host_key_fingerprint();
    // The user's file knows a different key for plain 127.0.0.1, i.e. port
    // 22: OpenSSH does not apply that to another port, and neither may we.
    let other = sshd.dir.join("other_key");
    sshd::keygen(&other, "");
    let other_public = fs::read_to_string(sshd::public_of(&other)).unwrap();
    fs::write(user_known_hosts(&sshd), format!("127.0.0.1 {other_public}")).unwrap();

    let err = connect_with(&sshd, &sshd.client_key, false)
        .await
        .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::UnknownHostKey { .. }), "{message}");
    assert!(fingerprint.starts_with("SHA256:") && !fingerprint.ends_with('='));
    assert!(message.contains(&fingerprint), "{message}");
    assert!(
        message.contains(&format!("host key of 127.0.0.1:{} is not known", sshd.port)),
        "{message}"
    );
    assert!(message.contains("--accept-new-host-keys"), "{message}");
    assert!(!message.contains('\n'));
    assert!(
        !lab_known_hosts(&sshd).exists(),
        "nothing recorded when refusing"
    );

    let client = connect_with(&sshd, &sshd.client_key, true)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(client.host_key_fingerprint(), fingerprint);
    let recorded = fs::read_to_string(lab_known_hosts(&sshd)).unwrap();
    assert_eq!(
        recorded,
        format!(
            "[127.0.0.1]:{} {}\n",
            sshd.port,
            sshd.host_key_type_and_base64()
        )
    );
    assert_eq!(mode(&lab_known_hosts(&sshd)), 0o600);
    assert_eq!(mode(lab_known_hosts(&sshd).parent().unwrap()), 0o700);

    // Known now: no flag needed, nothing appended.
    connect_with(&sshd, &sshd.client_key, false).await.unwrap();
    connect_with(&sshd, &sshd.client_key, true).await.unwrap();
    assert_eq!(
        fs::read_to_string(lab_known_hosts(&sshd)).unwrap(),
        recorded
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hashed_entry_in_the_users_known_hosts_is_trusted() {
    setup();
    let sshd = Sshd::start("hashed");
    let file = user_known_hosts(&sshd);
    fs::write(
        &file,
        format!(
            "# comment\n@cert-authority *.example ssh-ed25519 AAAA\n[127.0.0.1]:{} {}\n",
            sshd.port,
            sshd.host_key_type_and_base64()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap()
        .status;
    assert!(status.success());
    let hashed = fs::read_to_string(&file).unwrap();
    assert!(hashed.contains("|1|"), "{hashed}");
    assert!(!hashed.contains("127.0.0.1"), "{hashed}");

    let client = connect_with(&sshd, &sshd.client_key, false)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(client.host_key_fingerprint(), sshd.host_key_fingerprint());
    assert!(!lab_known_hosts(&sshd).exists());
}

/// Real machines have several host keys; the one a known_hosts file lists
/// must be the one negotiated, or an honest host would look changed.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_type_known_for_a_host_is_the_one_negotiated() {
    setup();
    let mut sshd = Sshd::start("key-types");
    let ecdsa = sshd.add_host_key("ecdsa");
    let rsa = sshd.add_host_key("rsa");

    // Nothing known: the same choice as OpenSSH's client, ed25519.
    let err = connect_with(&sshd, &sshd.client_key, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&sshd.host_key_fingerprint()),
        "{err}"
    );
    assert!(err.to_string().contains("ssh-ed25519"), "{err}");

    for key in [ecdsa, rsa] {
        let public = fs::read_to_string(sshd::public_of(&key)).unwrap();
        fs::write(
            user_known_hosts(&sshd),
            format!("[127.0.0.1]:{} {public}", sshd.port),
        )
        .unwrap();
        let client = connect_with(&sshd, &sshd.client_key, false)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        assert_eq!(
            client.host_key_fingerprint(),
            sshd::fingerprint_of(&sshd::public_of(&key))
        );
        // Later sessions ask for the same type again.
        let output = client.run("echo ok", None, COMMAND_TIMEOUT).await.unwrap();
        assert_eq!(output.stdout_text(), "ok\n");
    }
    assert!(!lab_known_hosts(&sshd).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_host_key_is_refused_even_with_accept_new() {
    setup();
    let mut sshd = Sshd::start("changed-key");
    let before = client(&sshd).await;
    let old = sshd.host_key_fingerprint();
    let recorded = fs::read_to_string(lab_known_hosts(&sshd)).unwrap();

    sshd.regenerate_host_key();
    let new = sshd.host_key_fingerprint();
    assert_ne!(old, new);

    let err = connect_with(&sshd, &sshd.client_key, true)
        .await
        .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::ChangedHostKey(_)), "{message}");
    assert!(
        message.contains(&old),
        "expected fingerprint missing: {message}"
    );
    assert!(
        message.contains(&new),
        "offered fingerprint missing: {message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", sshd.port)),
        "{message}"
    );
    assert!(!message.contains('\n'));
    assert_eq!(
        fs::read_to_string(lab_known_hosts(&sshd)).unwrap(),
        recorded,
        "a changed key must never be recorded"
    );

    // A client verified earlier checks every new connection too. Its idle
    // connection is the one verified with the old key and stays usable;
    // the second of two concurrent commands needs a new connection.
    let (first, second) = tokio::join!(
        before.run("sleep 1", None, COMMAND_TIMEOUT),
        before.run("true", None, COMMAND_TIMEOUT)
    );
    let err = match (first, second) {
        (Ok(_), Err(err)) | (Err(err), Ok(_)) => err,
        other => panic!("exactly one command needs a new connection: {other:?}"),
    };
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::ChangedHostKey(_)), "{message}");
    assert!(
        message.contains(&old) && message.contains(&new),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_refused_naming_the_keys_tried() {
    setup();
    let sshd = Sshd::start("wrong-key");
    let wrong = sshd.dir.join("wrong_key");
    sshd::keygen(&wrong, "");

    let err = connect_with(&sshd, &wrong, true).await.unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::AuthFailed { .. }), "{message}");
    assert!(
        message.contains(&format!("{}@127.0.0.1:{}", current_user(), sshd.port)),
        "{message}"
    );
    assert!(message.contains(&wrong.display().to_string()), "{message}");
    assert!(!message.contains('\n'));
}

#[tokio::test(flavor = "multi_thread")]
async fn passphrase_protected_key_without_agent_says_so() {
    setup();
    let sshd = Sshd::start("passphrase");
    let locked = sshd.dir.join("locked_key");
    sshd::keygen(&locked, "secret");
    // Authorized, so only the passphrase stands in the way.
    sshd.authorize(&locked);

    let err = connect_with(&sshd, &locked, true).await.unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(
        matches!(err, SshError::KeyNeedsPassphrase { .. }),
        "{message}"
    );
    assert!(message.contains("passphrase"), "{message}");
    assert!(
        message.contains(&format!("ssh-add {}", locked.display())),
        "{message}"
    );
    assert!(!message.contains('\n'));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_that_is_down_gives_connect_within_the_timeout() {
    setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_secs(3);
    let err = within_a_generous_deadline(SshClient::connect(
        format!("root@127.0.0.1:{port}").parse().unwrap(),
        Credentials::default(),
        HostKeys {
            user_known_hosts: PathBuf::new(),
            lab_known_hosts: PathBuf::from("/nonexistent/known_hosts"),
            accept_new: false,
        },
        timeout,
    ))
    .await
    .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::Connect { .. }), "{message}");
    assert!(
        message.contains(&format!("root@127.0.0.1:{port}")),
        "{message}"
    );
    assert!(message.contains("down or unreachable"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_separates_stdout_stderr_and_status() {
    setup();
    let sshd = Sshd::start("run");
    let client = client(&sshd).await;
    let output = client
        .run(
            "sh -c 'echo out; echo err >&2; exit 3'",
            None,
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(output.status, 3);
    assert_eq!(output.stdout_text(), "out\n");
    assert_eq!(output.stderr_text(), "err\n");

    let message = output.check("probing").unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "probing failed on {}@127.0.0.1:{} (exit status 3): err",
            current_user(),
            sshd.port
        )
    );

    // Lots on both streams at once must not deadlock on a full window.
    let output = client
        .run(
            "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2; echo done >&2",
            None,
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(output.status, 0);
    assert_eq!(output.stdout.len(), 3_000_000);
    assert_eq!(output.stderr.len(), 3_000_005);

    let output = client
        .run("kill -TERM $$", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(output.status, 128 + 15);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_passes_stdin_through() {
    setup();
    let sshd = Sshd::start("stdin");
    let client = client(&sshd).await;
    let output = client
        .run("cat", Some(b"hello\nworld".to_vec()), COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(output.status, 0);
    assert_eq!(output.stdout, b"hello\nworld");

    // More than the channel windows hold, echoed back while still being
    // written: stdin and stdout must progress together.
    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let output = client
        .run("cat", Some(payload.clone()), COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(output.status, 0);
    assert!(
        output.stdout == payload,
        "{} bytes came back",
        output.stdout.len()
    );

    // No stdin: EOF right away, so a reader does not wait.
    let output = client.run("wc -c", None, COMMAND_TIMEOUT).await.unwrap();
    assert_eq!(output.stdout_text().trim(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn command_that_outlives_its_timeout_gives_timeout() {
    setup();
    let sshd = Sshd::start("timeout");
    let client = client(&sshd).await;
    // A `sleep 30` that ran to its end would be Ok, not Timeout.
    let err = within_a_generous_deadline(client.run("sleep 30", None, Duration::from_secs(1)))
        .await
        .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::Timeout { .. }), "{message}");
    assert!(message.contains("`sleep 30`"), "{message}");
    assert!(message.contains("1s"), "{message}");

    // Output that keeps coming does not extend the deadline: the loop never
    // ends, so only the command's own timeout can end the call.
    let err = within_a_generous_deadline(client.run(
        "while true; do echo tick; sleep 0.1; done",
        None,
        Duration::from_secs(1),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, SshError::Timeout { .. }), "{err}");
}

/// Awaits `call`, failing the test if it has not returned after two
/// minutes: the calls under test end on timeouts of 1-3 s, so this only
/// tells a hang from an answer, however loaded the machine is.
async fn within_a_generous_deadline<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), call)
        .await
        .expect("the call hung past its own timeout")
}

/// Two commands that can only finish together: each end of a FIFO blocks
/// until the other opens it. Run one after the other, the first would wait
/// out its timeout.
#[tokio::test(flavor = "multi_thread")]
async fn clones_run_commands_in_parallel() {
    setup();
    let sshd = Sshd::start("parallel");
    let client = client(&sshd).await;
    let other = client.clone();
    let fifo = sshd.dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let fifo = fifo.display();
    let timeout = Duration::from_secs(20);
    let read = format!("cat '{fifo}'");
    let write = format!("echo through > '{fifo}'");
    let (reader, writer) = tokio::join!(
        client.run(&read, None, timeout),
        other.run(&write, None, timeout),
    );
    assert_eq!(writer.unwrap().status, 0);
    assert_eq!(reader.unwrap().stdout_text(), "through\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_writes_the_file_atomically_with_its_mode() {
    setup();
    let sshd = Sshd::start("upload");
    let client = client(&sshd).await;
    client.check_root().await.unwrap();
    let whoami = client
        .run_root("id -u", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(whoami.stdout_text().trim(), "0");

    // The server is this machine, so the remote path can be checked here.
    let base = sshd.dir.join("uploads");
    let path = base.join("etc").join("docker").join("daemon.json");
    let path_text = path.to_str().unwrap();
    client
        .upload(path_text, b"{\"secret\": true}\n".to_vec(), 0o600)
        .await
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{\"secret\": true}\n");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o755);
    assert_eq!(mode(&base.join("etc")), 0o755);
    let leftovers: Vec<String> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["daemon.json".to_string()]);

    // Replacing: new content and mode, still nothing left behind.
    client
        .upload(path_text, b"{}\n".to_vec(), 0o644)
        .await
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{}\n");
    assert_eq!(mode(&path), 0o644);
    assert!(!Path::new(&format!("{path_text}.goblog-lab.tmp")).exists());

    // A failure names the file and leaves no temporary file.
    let blocked = base.join("file-not-dir");
    fs::write(&blocked, "").unwrap();
    let target = blocked.join("x.conf");
    let err = client
        .upload(target.to_str().unwrap(), b"x".to_vec(), 0o600)
        .await
        .unwrap_err();
    let message = err.to_string();
    eprintln!("{message}");
    assert!(matches!(err, SshError::Command { .. }), "{message}");
    assert!(
        message.contains(&format!("writing {}", target.display())),
        "{message}"
    );
}

/// An echo server on 127.0.0.1, standing in for a registry on the far side.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                tokio::io::copy(&mut read, &mut write).await.unwrap();
                write.shutdown().await.unwrap();
            });
        }
    });
    port
}

/// Sends `payload` through `addr` while reading the echo, then compares.
async fn echo_through(addr: std::net::SocketAddr, payload: Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let len = payload.len();
    let writer = tokio::spawn(async move {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
        payload
    });
    let mut echoed = Vec::with_capacity(len);
    read.read_to_end(&mut echoed).await.unwrap();
    let payload = writer.await.unwrap();
    assert_eq!(echoed.len(), len);
    assert!(echoed == payload, "echo differs from what was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnel_carries_large_and_concurrent_connections() {
    setup();
    let sshd = Sshd::start("tunnel");
    let client = client(&sshd).await;
    let echo_port = echo_server().await;
    let tunnel = client.tunnel("127.0.0.1", echo_port).await.unwrap();
    let addr = tunnel.local_addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), echo_port);

    let payload: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let start = Instant::now();
    echo_through(addr, payload).await;
    eprintln!(
        "20 MiB each way through the tunnel in {:?}",
        start.elapsed()
    );

    let first: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let second: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    tokio::join!(echo_through(addr, first), echo_through(addr, second));
    assert!(tunnel.take_error().is_none());

    // A port nobody listens on: the local connection is closed, and the
    // tunnel says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = client.tunnel("127.0.0.1", closed).await.unwrap();
    let mut stream = TcpStream::connect(refused.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    assert!(buf.is_empty());
    let err = refused
        .take_error()
        .expect("the refused forward is reported");
    assert!(matches!(err, SshError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{err}"
    );

    // The listener goes with the accept task, which the drop aborts.
    drop(tunnel);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener outlived the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
