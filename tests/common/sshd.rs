//! A real OpenSSH server on 127.0.0.1 for the SSH tests: its own host key,
//! its own authorized_keys, a free port, killed on drop.
//!
//! Real sshd rather than a mock because what the tests check is exactly what
//! mocks get wrong: which host key algorithm libssh2 and OpenSSH agree on,
//! how known_hosts lines match, what the server does with a refused key.
#![allow(dead_code)] // each test file uses some of it

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    /// Everything of this server: config, keys, log.
    pub dir: PathBuf,
    /// An unencrypted ed25519 key listed in authorized_keys.
    pub client_key: PathBuf,
    /// More host keys than the ed25519 one, from `add_host_key`.
    extra_host_keys: Vec<PathBuf>,
    child: Option<Child>,
}

impl Sshd {
    /// Starts a server whose files live in a fresh directory named after
    /// `name` (one per test, so tests can run in parallel).
    pub fn start(name: &str) -> Sshd {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("ssh-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // sshd refuses to start as root without its privilege separation
        // directory, which a container may not have.
        fs::create_dir_all("/run/sshd").unwrap();

        keygen(&dir.join("host_key"), "");
        let client_key = dir.join("client_key");
        keygen(&client_key, "");
        fs::write(dir.join("authorized_keys"), "").unwrap();

        let mut sshd = Sshd {
            port: 0,
            dir,
            client_key,
            extra_host_keys: Vec::new(),
            child: None,
        };
        sshd.authorize(&sshd.client_key.clone());
        sshd.spawn_on_a_free_port();
        sshd
    }

    /// Lets `key` (a private key path; its `.pub` is read) log in.
    pub fn authorize(&self, key: &Path) {
        let public = fs::read_to_string(public_of(key)).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("authorized_keys"))
            .unwrap()
            .write_all(public.as_bytes())
            .unwrap();
    }

    /// The host key as OpenSSH prints it: `ssh-ed25519 AAAA... comment`.
    pub fn host_public_key(&self) -> String {
        fs::read_to_string(public_of(&self.dir.join("host_key")))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `ssh-ed25519 AAAA...` without the comment: a known_hosts key part.
    pub fn host_key_type_and_base64(&self) -> String {
        let public = self.host_public_key();
        let fields: Vec<&str> = public.split_whitespace().collect();
        format!("{} {}", fields[0], fields[1])
    }

    /// The SHA256 fingerprint, as `ssh-keygen -lf` computes it.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint_of(&public_of(&self.dir.join("host_key")))
    }

    /// Gives the server a new host key (a reinstalled machine, or an
    /// impostor) and restarts it on the same port.
    pub fn regenerate_host_key(&mut self) {
        self.stop();
        let host_key = self.dir.join("host_key");
        fs::remove_file(&host_key).unwrap();
        fs::remove_file(public_of(&host_key)).unwrap();
        keygen(&host_key, "");
        assert!(
            self.spawn(self.port),
            "sshd did not restart on port {}",
            self.port
        );
    }

    /// Gives the server another host key, of `kind` ("rsa", "ecdsa"), as
    /// real machines have several, and restarts it. Returns the private
    /// key's path (its `.pub` is next to it).
    pub fn add_host_key(&mut self, kind: &str) -> PathBuf {
        self.stop();
        let path = self.dir.join(format!("host_key_{kind}"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "goblog-lab-test", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        self.extra_host_keys.push(path.clone());
        assert!(
            self.spawn(self.port),
            "sshd did not restart on port {}",
            self.port
        );
        path
    }

    fn spawn_on_a_free_port(&mut self) {
        // The port is free when chosen but not reserved; another process
        // may take it before sshd binds, so try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if self.spawn(port) {
                return;
            }
        }
        panic!("sshd did not start; log:\n{}", self.log());
    }

    /// Starts sshd on `port`; false if it exited (port taken) before it
    /// accepted connections.
    fn spawn(&mut self, port: u16) -> bool {
        self.port = port;
        let config = self.dir.join("sshd_config");
        let dir = self.dir.display();
        let extra: String = self
            .extra_host_keys
            .iter()
            .map(|key| format!("HostKey {}\n", key.display()))
            .collect();
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\n\
                 HostKey {dir}/host_key\n\
                 {extra}\
                 AuthorizedKeysFile {dir}/authorized_keys\n\
                 StrictModes no\n\
                 PidFile none\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 AllowTcpForwarding yes\n\
                 LogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))
            .unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd runs (is openssh-server installed?)");

        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What sshd logged, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Only the listener is killed: sessions already forked end when
        // their clients disconnect.
        self.stop();
        // Kept after a failure, for its sshd.log.
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `ssh-keygen -t ed25519` into `path` (and `path.pub`), with a passphrase
/// unless it is empty.
pub fn keygen(path: &Path, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "goblog-lab-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen runs (is openssh-client installed?)");
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn public_of(key: &Path) -> PathBuf {
    let mut public = key.as_os_str().to_owned();
    public.push(".pub");
    PathBuf::from(public)
}

/// The `SHA256:...` field of `ssh-keygen -l -E sha256 -f FILE`.
pub fn fingerprint_of(public_key: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public_key)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}
