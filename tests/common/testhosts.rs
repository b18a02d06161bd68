//! Real test hosts for the ssh provider: Debian systems with systemd as PID 1,
//! sshd and their own dockerd, booted as containers of the lab's node image
//! on a bridge network of their own. They boot in seconds, where a VM under
//! TCG takes minutes.
//!
//! Use from a test file as
//! `#[path = "common/testhosts.rs"] mod testhosts;`.
//!
//! Everything is made with the host engine's `docker` CLI and labelled
//! `io.goblog-lab.testhost=NAME` (not `io.goblog-lab.lab`: goblog-lab's own
//! `ls` and `destroy` never see test hosts). Dropping [`TestHosts`] removes
//! the containers, their volumes and the network, however the test ends.
#![allow(dead_code)] // each test file uses some of it

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LABEL: &str = "io.goblog-lab.testhost";

/// How long one host may take from `docker run`/`docker start` to ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

pub struct TestHostsOptions {
    pub count: usize,
    /// An OpenSSH public key line, authorized for root (and `sudo_user`).
    pub authorized_key: String,
    /// Also create this user, with the same key and passwordless sudo
    /// (`USER ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d, as cloud images do),
    /// on every host.
    pub sudo_user: Option<String>,
    /// false: Docker is missing, as on a host where it was never installed:
    /// after boot, `dpkg --purge docker.io containerd` (no `docker` or
    /// `dockerd`, no docker.service or docker.socket; runc stays).
    pub docker: bool,
}

impl Default for TestHostsOptions {
    fn default() -> Self {
        TestHostsOptions {
            count: 1,
            authorized_key: String::new(),
            sudo_user: None,
            docker: true,
        }
    }
}

pub struct TestHost {
    pub container: String,
    pub address: Ipv4Addr,
    pub hostname: String,
}

pub struct TestHosts {
    pub network: String,
    pub hosts: Vec<TestHost>,
    name: String,
    docker: bool,
}

impl TestHosts {
    /// Boots `options.count` hosts concurrently and returns when each one
    /// has sshd answering on :22 (from this machine), `systemctl
    /// is-system-running` says `running` and, with `docker`, its dockerd
    /// answers. Panics (after printing the failed units) when a host comes
    /// up `degraded` or not at all.
    pub fn start(name: &str, image: &str, options: TestHostsOptions) -> TestHosts {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "a test-host set's name is lowercase letters, digits and dashes: {name:?}"
        );
        assert!(options.count <= 200, "at most 200 hosts: one /24 each set");
        remove_labelled(name);
        let started = Instant::now();
        let label = format!("{LABEL}={name}");
        let network = format!("goblog-testhost-{name}");
        let prefix = create_network(&network, &label);
        let mut hosts = TestHosts {
            network,
            hosts: Vec::new(),
            name: name.to_string(),
            docker: options.docker,
        };
        for i in 0..options.count {
            let hostname = format!("{name}-{i}");
            hosts.hosts.push(TestHost {
                container: format!("goblog-testhost-{hostname}"),
                address: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 10 + i as u8),
                hostname,
            });
        }
        std::thread::scope(|scope| {
            let boots: Vec<_> = (0..hosts.hosts.len())
                .map(|i| {
                    let (hosts, options, image, label) = (&hosts, &options, image, &label);
                    scope.spawn(move || hosts.boot(i, image, label, options))
                })
                .collect();
            let failures: Vec<String> = boots
                .into_iter()
                .filter_map(|boot| match boot.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(err),
                    Err(_) => Some("a boot thread panicked".into()),
                })
                .collect();
            assert!(
                failures.is_empty(),
                "test hosts failed to boot:\n{}",
                failures.join("\n")
            );
        });
        eprintln!(
            "test hosts {name}: {} up in {:.1}s on {} ({})",
            hosts.hosts.len(),
            started.elapsed().as_secs_f64(),
            hosts.network,
            hosts
                .hosts
                .iter()
                .map(|h| format!("{} {}", h.hostname, h.address))
                .collect::<Vec<_>>()
                .join(", ")
        );
        hosts
    }

    /// `docker exec HOST sh -c SCRIPT` on the host engine, as root: test
    /// setup and inspection only (iptables rules, daemon.json, reading
    /// files). Returns the exit code and stdout; stderr goes to the test's
    /// log (redirect `2>&1` to get it).
    pub fn exec(&self, host: usize, script: &str) -> (i32, String) {
        let out = docker(&["exec", &self.hosts[host].container, "sh", "-c", script]);
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            eprintln!("[{}] {}", self.hosts[host].hostname, err.trim_end());
        }
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `ADDRESS ssh-ed25519 AAAA…`: the host's own ed25519 host key as a
    /// known_hosts line (made at its first boot).
    pub fn host_key_line(&self, host: usize) -> String {
        let (code, key) = self.exec(host, "cat /etc/ssh/ssh_host_ed25519_key.pub");
        assert_eq!(
            code, 0,
            "reading the host key of {}",
            self.hosts[host].hostname
        );
        let mut fields = key.split_whitespace();
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
            panic!("no host key on {}: {key:?}", self.hosts[host].hostname);
        };
        format!("{} {kind} {blob}", self.hosts[host].address)
    }

    /// `docker stop`: systemd shuts down (SIGRTMIN+3), the address stops
    /// answering.
    pub fn stop_host(&self, host: usize) {
        let out = docker(&["stop", "-t", "20", &self.hosts[host].container]);
        assert!(out.status.success(), "docker stop: {}", text(&out.stderr));
    }

    /// `docker start` and wait until the host is ready again, as after
    /// `start`: same address, same host keys and machine-id.
    pub fn start_host(&self, host: usize) {
        let out = docker(&["start", &self.hosts[host].container]);
        assert!(out.status.success(), "docker start: {}", text(&out.stderr));
        if let Err(err) = self.wait_ready(host, Instant::now() + BOOT_TIMEOUT) {
            panic!("{err}");
        }
    }

    fn boot(
        &self,
        i: usize,
        image: &str,
        label: &str,
        options: &TestHostsOptions,
    ) -> Result<(), String> {
        let host = &self.hosts[i];
        let volume = format!("{}-docker", host.container);
        let out = docker(&["volume", "create", "--label", label, &volume]);
        if !out.status.success() {
            return Err(format!("volume {volume}: {}", text(&out.stderr)));
        }
        let address = host.address.to_string();
        let docker_volume = format!("{volume}:/var/lib/docker");
        #[rustfmt::skip]
        let args = [
            "run", "-d", "--init=false",
            "--name", &host.container,
            "--hostname", &host.hostname,
            "--label", label,
            "--network", &self.network, "--ip", &address, "--network-alias", &host.hostname,
            // All capabilities but the one this engine's bounding set lacks
            // (`--privileged` is refused here), as the lab's dind nodes.
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined",
            "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined",
            // systemd manages its own subtree of the host's cgroup v1
            // hierarchy; dockerd inside makes its containers' cgroups there.
            "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs", "/run:rw,exec,mode=755",
            "--tmpfs", "/run/lock:rw,mode=1777",
            "--tmpfs", "/tmp:rw,exec,mode=1777",
            // overlay2 cannot sit on the container's own overlayfs.
            "-v", &docker_volume,
            "--env", "container=docker",
            "--stop-signal", "SIGRTMIN+3",
            image, "/sbin/init",
        ];
        let out = docker(&args);
        if !out.status.success() {
            return Err(format!(
                "docker run {}: {}",
                host.container,
                text(&out.stderr)
            ));
        }
        let deadline = Instant::now() + BOOT_TIMEOUT;
        // Accounts first (no need to wait for systemd): sshd reads the keys
        // at each login.
        let mut setup = String::from(
            "set -e\n\
             install -d -m 700 /root/.ssh\n\
             printf '%s\\n' \"$KEY\" > /root/.ssh/authorized_keys\n\
             chmod 600 /root/.ssh/authorized_keys\n",
        );
        if let Some(user) = &options.sudo_user {
            setup.push_str(&format!(
                "useradd --create-home --shell /bin/bash {user}\n\
                 install -d -m 700 -o {user} -g {user} /home/{user}/.ssh\n\
                 printf '%s\\n' \"$KEY\" > /home/{user}/.ssh/authorized_keys\n\
                 chown {user}:{user} /home/{user}/.ssh/authorized_keys\n\
                 chmod 600 /home/{user}/.ssh/authorized_keys\n\
                 echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-{user}\n\
                 chmod 440 /etc/sudoers.d/90-{user}\n"
            ));
        }
        let key_env = format!("KEY={}", options.authorized_key.trim());
        let out = docker(&["exec", "-e", &key_env, &host.container, "sh", "-c", &setup]);
        if !out.status.success() {
            return Err(format!(
                "{}: account setup: {}",
                host.hostname,
                text(&out.stderr)
            ));
        }
        if options.docker {
            return self.wait_ready(i, deadline);
        }
        self.wait_running(i, deadline)?;
        let (code, out) = self.exec(
            i,
            "DEBIAN_FRONTEND=noninteractive dpkg --purge docker.io containerd >/dev/null 2>&1 \
             && systemctl reset-failed && ! command -v docker && ! command -v dockerd && echo gone",
        );
        if code != 0 || !out.contains("gone") {
            return Err(format!(
                "{}: removing Docker failed ({code})",
                host.hostname
            ));
        }
        self.wait_ready(i, deadline)
    }

    /// Ready: systemd `running`, sshd answering from this machine, and
    /// dockerd answering inside when the host has Docker.
    fn wait_ready(&self, i: usize, deadline: Instant) -> Result<(), String> {
        let host = &self.hosts[i];
        self.wait_running(i, deadline)?;
        let ssh = SocketAddr::from((host.address, 22));
        loop {
            if ssh_banner(ssh).is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{}: sshd does not answer on {ssh}", host.hostname));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !self.docker {
            return Ok(());
        }
        loop {
            let out = docker(&[
                "exec",
                &host.container,
                "docker",
                "info",
                "--format",
                "{{.ServerVersion}}",
            ]);
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: dockerd does not answer: {}",
                    host.hostname,
                    text(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Waits until systemd has finished booting; `degraded` is an error that
    /// names the failed units and their last journal lines.
    fn wait_running(&self, i: usize, deadline: Instant) -> Result<(), String> {
        let host = &self.hosts[i];
        let mut state = String::new();
        while Instant::now() < deadline {
            // Before systemd has made /run/systemd/private, systemctl says
            // "offline" at once; `--wait` then blocks until boot is over.
            let out = docker(&[
                "exec",
                &host.container,
                "timeout",
                "60",
                "systemctl",
                "is-system-running",
                "--wait",
            ]);
            state = text(&out.stdout);
            match state.as_str() {
                "running" => return Ok(()),
                "degraded" | "maintenance" => {
                    let (_, failed) = self.exec(
                        i,
                        "systemctl --failed --no-legend --plain; \
                         for u in $(systemctl --failed --no-legend --plain | cut -d' ' -f1); do \
                         echo \"--- $u\"; journalctl -b -u \"$u\" --no-pager -n 20; done",
                    );
                    return Err(format!(
                        "{}: systemd is {state}; failed units:\n{failed}",
                        host.hostname
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Err(format!(
            "{}: systemd did not finish booting (last state {state:?})",
            host.hostname
        ))
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        remove_labelled(&self.name);
    }
}

/// The server's identification line (`SSH-2.0-…`), if sshd answers.
pub fn ssh_banner(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    line.starts_with("SSH-")
        .then(|| line.trim_end().to_string())
}

/// Removes the containers (with their volumes), volumes and network of the
/// set `name`: what a previous run that died may have left, or this one.
pub fn remove_labelled(name: &str) {
    let filter = format!("label={LABEL}={name}");
    let list = |args: &[&str]| -> Vec<String> {
        let mut args = args.to_vec();
        args.extend(["--filter", filter.as_str()]);
        text(&docker(&args).stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let containers = list(&["ps", "-aq"]);
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        docker(&args);
    }
    let volumes = list(&["volume", "ls", "-q"]);
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        docker(&args);
    }
    for network in list(&["network", "ls", "-q"]) {
        docker(&["network", "rm", &network]);
    }
}

/// A bridge network on the first free 10.213.N.0/24: away from the lab's own
/// networks (free /24s of 172.28.0.0/14) and from Docker's default pools.
/// Returns the subnet's first three octets.
fn create_network(network: &str, label: &str) -> [u8; 3] {
    let ids = text(&docker(&["network", "ls", "-q"]).stdout);
    let mut args = vec![
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
    ];
    args.extend(ids.lines());
    let taken = text(&docker(&args).stdout);
    let mut last_error = String::new();
    for n in 0..=255u8 {
        let subnet = format!("10.213.{n}.0/24");
        if taken.split_whitespace().any(|s| s == subnet) {
            continue;
        }
        let out = docker(&[
            "network", "create", "--driver", "bridge", "--subnet", &subnet, "--label", label,
            network,
        ]);
        if out.status.success() {
            return [10, 213, n];
        }
        // Another test may have taken it meanwhile; try the next.
        last_error = text(&out.stderr);
        if !last_error.contains("overlap") {
            break;
        }
    }
    panic!("creating network {network}: {last_error}");
}

/// The host engine's `docker` CLI, whatever the caller's environment says.
fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// The image test hosts boot from: the lab's own node image, built (once
/// per test binary) by `goblog-lab prepare`. Needs `mod common;` beside
/// this module in the test file.
pub fn node_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let out = crate::common::run(&["prepare", "-q", "-o", "json"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let prepared: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            prepared["node_image"]
                .as_str()
                .expect("node_image")
                .to_string()
        })
        .clone()
}
