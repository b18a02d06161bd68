//! Machines that already exist: Linux hosts with Docker, reached over SSH.
//!
//! The provider of docker-machine's `generic` driver and of k3sup, without
//! their shortcuts: host keys are checked (`crate::ssh`), never ignored, and
//! nothing is changed on a host before every host has passed its checks
//! (`crate::provision::preflight`). A host is adopted, not made, so it is
//! given back as it was rather than deleted (`crate::provision::remove_lab`:
//! the provisioner undoes what it set up), and
//! `stop`/`start` stop and start the host's dockerd, not the host.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;

use super::{
    CommandOutput, EngineSetup, Forward, MachinePlan, NodeFile, Provider, ProviderKind, Removed,
    DOCKER_TLS_PORT,
};
use crate::error::{Error, Result};
use crate::lab::state::{LabDir, LabState, NodeState, SshState};
use crate::ssh::{Credentials, HostKeys, SshClient, Target};
use crate::ui::Ui;

/// How long an SSH connection (TCP, handshake, authentication) may take:
/// docker-machine's hangs waiting for SSH are a known complaint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A command that configures a host; restarting dockerd is the slowest.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub struct SshProvider {
    hosts: Vec<Target>,
    ssh: SshHosts,
    ui: Ui,
    /// `--vip`: the virtual `$ManagerIP` the user gave (`virtual_ip`).
    vip: Option<Ipv4Addr>,
}

/// Verified, logged-in SSH clients to machines, one per machine: what every
/// provider that reaches its machines over SSH (ssh, docker-machine, qemu)
/// drives them with.
pub struct SshHosts {
    key: Option<PathBuf>,
    /// A key of one host's own (docker-machine makes one per machine), by
    /// `user@host:port`.
    keys: HashMap<String, PathBuf>,
    known_hosts: HostKeysFiles,
    accept_new: bool,
    /// One verified client per host, by `user@host:port`.
    clients: Mutex<HashMap<String, SshClient>>,
    connect_timeout: Duration,
}

struct HostKeysFiles {
    user: PathBuf,
    lab: PathBuf,
}

impl SshHosts {
    /// Clients that check host keys against `~/.ssh/known_hosts` and the
    /// lab's file.
    pub fn new(dir: &LabDir, key: Option<PathBuf>, accept_new: bool) -> Self {
        SshHosts {
            key,
            keys: HashMap::new(),
            known_hosts: HostKeysFiles {
                user: dirs::home_dir()
                    .unwrap_or_default()
                    .join(".ssh")
                    .join("known_hosts"),
                lab: dir.known_hosts(),
            },
            accept_new,
            clients: Mutex::default(),
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// Allows a slower handshake: a VM under software emulation that is
    /// busy starting its engine took more than the default 10 s here.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Clients for machines the lab made itself: their host keys are in the
    /// lab's file only, so a stale line of the user's (an old VM at the same
    /// address) can neither help nor hinder.
    pub fn lab_only(dir: &LabDir, key: PathBuf) -> Self {
        let mut hosts = Self::new(dir, Some(key), false);
        hosts.known_hosts.user = dir.known_hosts();
        hosts
    }

    pub async fn connect(&self, target: &Target) -> Result<SshClient> {
        let id = target.to_string();
        if let Some(client) = self.clients.lock().unwrap().get(&id) {
            return Ok(client.clone());
        }
        let client = SshClient::connect(
            target.clone(),
            Credentials {
                key: self.keys.get(&id).cloned().or_else(|| self.key.clone()),
            },
            HostKeys {
                user_known_hosts: self.known_hosts.user.clone(),
                lab_known_hosts: self.known_hosts.lab.clone(),
                accept_new: self.accept_new,
            },
            self.connect_timeout,
        )
        .await?;
        client.check_root().await?;
        self.clients.lock().unwrap().insert(id, client.clone());
        Ok(client)
    }

    /// Forgets the client of `target` (its machine rebooted).
    pub fn forget(&self, target: &Target) {
        self.clients.lock().unwrap().remove(&target.to_string());
    }

    /// One file after another over the pooled session: side by side, each
    /// upload opened a connection of its own, and a VM under software
    /// emulation, busy starting its engine, took over a minute to finish
    /// seven handshakes at once.
    pub async fn put_files(&self, target: &Target, files: &[NodeFile]) -> Result<()> {
        let client = self.connect(target).await?;
        for file in files {
            client
                .upload(&file.path, file.contents.clone(), file.mode)
                .await?;
        }
        Ok(())
    }

    pub async fn run(&self, target: &Target, command: &str) -> Result<CommandOutput> {
        let client = self.connect(target).await?;
        let output = client.run_root(command, None, COMMAND_TIMEOUT).await?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(CommandOutput {
            status: i64::from(output.status),
            output: text,
        })
    }

    /// A loopback port that reaches `address:port` from the machine's side.
    pub async fn forward(
        &self,
        target: &Target,
        address: Ipv4Addr,
        port: u16,
        local_port: u16,
    ) -> Result<Forward> {
        let client = self.connect(target).await?;
        // The registry listens on the manager's lab address only; a
        // direct-tcpip channel reaches it from the manager's side, so
        // nothing is opened to the network for this host's push.
        let tunnel = client
            .tunnel_on(local_port, &address.to_string(), port)
            .await
            .map_err(|err| match err {
                crate::ssh::SshError::Io { .. } if local_port != 0 => Error::PortInUse {
                    port: local_port,
                    purpose: "the push tunnel to the lab registry",
                    flag: "--registry-port",
                },
                other => other.into(),
            })?;
        Ok(Forward {
            local: tunnel.local_addr(),
            _guard: Box::new(tunnel),
        })
    }

    pub async fn interactive(&self, target: &Target, command: &[String]) -> Result<i32> {
        use std::io::Write;
        let client = self.connect(target).await?;
        let line = command
            .iter()
            .map(|word| crate::ssh::shell_quote(word))
            .collect::<Vec<_>>()
            .join(" ");
        let output = client.run(&line, None, Duration::from_secs(3600)).await?;
        std::io::stdout().write_all(&output.stdout).ok();
        std::io::stderr().write_all(&output.stderr).ok();
        Ok(output.status)
    }
}

impl SshProvider {
    /// For `create`: the hosts in plan order (managers first).
    pub fn new(
        dir: &LabDir,
        hosts: &[String],
        key: Option<PathBuf>,
        accept_new: bool,
        ui: Ui,
    ) -> Result<Self> {
        let hosts = hosts
            .iter()
            .map(|h| h.parse::<Target>().map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = hosts.iter().find(|t| !seen.insert((&t.host, t.port))) {
            return Err(Error::usage(format!(
                "{twice} is named twice: each host can be one node only"
            )));
        }
        Ok(SshProvider {
            hosts,
            ssh: SshHosts::new(dir, key, accept_new),
            ui,
            vip: None,
        })
    }

    /// `--vip`: the address the user keeps free on the hosts' network.
    pub fn with_vip(mut self, vip: Option<Ipv4Addr>) -> Self {
        self.vip = vip;
        self
    }

    /// For machines made by docker-machine: each has a key of its own.
    pub fn with_own_keys(mut self, keys: &std::collections::BTreeMap<String, PathBuf>) -> Self {
        for target in &self.hosts {
            if let Some(key) = keys.get(&target.to_string()) {
                self.ssh.keys.insert(target.to_string(), key.clone());
            }
        }
        self
    }

    /// For a saved lab: its hosts are its nodes; host keys must be known.
    pub fn for_lab(state: &LabState, dir: &LabDir, ui: Ui) -> Result<Self> {
        let hosts: Vec<String> = state.nodes.iter().map(|n| n.id.clone()).collect();
        let key = state.ssh.as_ref().and_then(|s| s.key.clone());
        let provider = Self::new(dir, &hosts, key, false, ui)?;
        Ok(match state.ssh.as_ref() {
            Some(ssh) => provider.with_own_keys(&ssh.keys),
            None => provider,
        })
    }

    fn target(node: &NodeState) -> Result<Target> {
        Ok(node.id.parse::<Target>()?)
    }

    async fn adopt(&self, target: &Target, plan: &MachinePlan) -> Result<NodeState> {
        let client = self.ssh.connect(target).await?;
        let hostname = client
            .run("hostname", None, COMMAND_TIMEOUT)
            .await?
            .stdout_text()
            .trim()
            .to_string();
        self.ui
            .detail(format!("{target} answers as {hostname} ({:?})", plan.role));
        Ok(NodeState {
            id: target.to_string(),
            hostname: if hostname.is_empty() {
                plan.hostname.clone()
            } else {
                hostname
            },
            role: plan.role,
            address: resolve(&target.host).await?,
            docker_port: DOCKER_TLS_PORT,
            published: Default::default(),
        })
    }
}

/// The host's IPv4 address: what the Swarm advertises and the certificate
/// names.
async fn resolve(host: &str) -> Result<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    let found = tokio::net::lookup_host((host, 22))
        .await
        .map_err(|err| Error::HostUnfit {
            host: host.to_string(),
            reason: format!("cannot resolve it: {err}"),
        })?;
    found
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| Error::HostUnfit {
            host: host.to_string(),
            reason: "it has no IPv4 address, which Swarm's advertise address needs".into(),
        })
}

#[async_trait]
impl Provider for SshProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ssh
    }

    fn making(&self) -> &'static str {
        "Connecting to the hosts and checking them"
    }

    fn adopts_hosts(&self) -> bool {
        true
    }

    /// Only the user knows which address of the hosts' network is free.
    fn virtual_ip(&self, _managers: &[NodeState]) -> Option<Ipv4Addr> {
        self.vip
    }

    fn ssh_state(&self) -> Option<SshState> {
        Some(SshState {
            key: self.ssh.key.clone(),
            keys: self
                .ssh
                .keys
                .iter()
                .map(|(target, key)| (target.clone(), key.clone()))
                .collect(),
        })
    }

    fn engine_setup(&self) -> EngineSetup {
        EngineSetup::SystemdDropIn
    }

    async fn create(&self, plans: &[MachinePlan], _node_image: &str) -> Result<Vec<NodeState>> {
        assert_eq!(plans.len(), self.hosts.len(), "one plan per host");
        // Every host answers (and its key is checked) before any is changed.
        try_join_all(
            self.hosts
                .iter()
                .zip(plans)
                .map(|(target, plan)| self.adopt(target, plan)),
        )
        .await
    }

    async fn put_files(&self, node: &NodeState, files: &[NodeFile]) -> Result<()> {
        self.ssh.put_files(&Self::target(node)?, files).await
    }

    async fn run(&self, node: &NodeState, command: &str) -> Result<CommandOutput> {
        self.ssh.run(&Self::target(node)?, command).await
    }

    async fn stop(&self, node: &NodeState) -> Result<()> {
        // The lab's engine, not the host: it is the user's machine.
        let out = self
            .run(node, "systemctl stop docker.socket docker.service")
            .await?;
        expect_ok(node, "systemctl stop docker", out)
    }

    async fn start(&self, node: &NodeState) -> Result<Ipv4Addr> {
        let out = self.run(node, "systemctl start docker.service").await?;
        expect_ok(node, "systemctl start docker", out)?;
        resolve(&node.id.parse::<Target>()?.host).await
    }

    async fn ensure_running(&self, node: &NodeState) -> Result<()> {
        let out = self.run(node, "systemctl is-active docker.service").await?;
        if out.status == 0 {
            return Ok(());
        }
        Err(Error::NodeStopped {
            node: node.hostname.clone(),
            why: format!("docker.service is {}", out.output.trim()),
        })
    }

    async fn forward(&self, node: &NodeState, port: u16, local_port: u16) -> Result<Forward> {
        self.ssh
            .forward(&Self::target(node)?, node.address, port, local_port)
            .await
    }

    async fn interactive(&self, node: &NodeState, command: &[String]) -> Result<i32> {
        self.ssh.interactive(&Self::target(node)?, command).await
    }

    async fn shell(&self, node: &NodeState) -> Result<i32> {
        // A terminal over libssh2 would be a worse `ssh`; the host is the
        // user's own, and so is their ssh client.
        Err(Error::usage(format!(
            "{} is a host of your own: log in with `ssh {}` (`goblog-lab exec {} -- CMD` runs one command)",
            node.hostname, node.id, node.hostname
        )))
    }

    async fn remove(&self, _state: Option<&LabState>) -> Result<Removed> {
        // The hosts are the user's: nothing here is this provider's to
        // remove. The provisioner gives them back as they were
        // (`provision::remove_lab`), before this is called.
        Ok(Removed::default())
    }
}

fn expect_ok(node: &NodeState, what: &str, out: CommandOutput) -> Result<()> {
    if out.status == 0 {
        return Ok(());
    }
    Err(Error::Remote {
        node: node.id.clone(),
        command: what.to_string(),
        status: out.status,
        output: out.output.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}
