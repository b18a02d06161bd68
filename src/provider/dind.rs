//! Machines as Docker-in-Docker containers on this machine's engine.
//!
//! Each node is a container of the lab's node image running its own
//! dockerd, on a user-defined bridge network. The provider picks each
//! node's address on that network itself and keeps it across restarts (a
//! Swarm whose manager moves breaks); the lab learns it only once the node
//! exists. The node waits for `/etc/docker/daemon.json` (written by the
//! provisioner once the address is known and its certificate made), then
//! runs dockerd, which keeps `/var/lib/docker` on a named volume (overlay2
//! cannot sit on the container's own overlayfs).
//!
//! Docker-in-Docker normally wants `--privileged`. Some engines refuse it
//! (this machine's bounding set lacks CAP_SYS_RESOURCE, so runc cannot grant
//! "all" capabilities); then the nodes get every capability but that one,
//! which is what dockerd actually needs, and we say so once.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::try_join_all;

use super::{
    CommandOutput, EngineSetup, Forward, MachinePlan, NodeFile, Provider, ProviderKind, Removed,
    DOCKER_TLS_PORT,
};
use crate::docker::{tolerate, Labelled, ALREADY, GONE, LABEL_LAB, LABEL_ROLE};
use crate::error::{docker_message, Context, Error, Result};
use crate::lab::state::{LabState, NodeState, Role};
use crate::ui::Ui;

/// The node's command: dockerd, once the provisioner has written its
/// configuration. A restarted node finds it there and starts at once.
const NODE_COMMAND: &str =
    "until [ -s /etc/docker/daemon.json ]; do sleep 0.05; done; exec dockerd";

pub struct DindProvider {
    docker: Docker,
    lab: String,
    ui: Ui,
    /// Set once the engine has refused `--privileged` in this run.
    unprivileged: AtomicBool,
}

/// The lab's bridge network: its name and the /24 the nodes sit on.
struct LabNetwork {
    name: String,
    base: Ipv4Addr,
}

impl LabNetwork {
    /// Managers from .10 and workers from .100, so an address tells the role.
    fn node_address(&self, role: Role, index: u32) -> Ipv4Addr {
        let first = match role {
            Role::Manager => 10,
            Role::Worker => 100,
        };
        with_last_octet(self.base, first + index as u8)
    }
}

impl DindProvider {
    pub fn new(docker: Docker, lab: &str, ui: Ui) -> Self {
        DindProvider {
            docker,
            lab: lab.to_string(),
            ui,
            unprivileged: AtomicBool::new(false),
        }
    }

    pub fn network_name(lab: &str) -> String {
        format!("goblog-lab-{lab}")
    }

    pub fn container_name(lab: &str, hostname: &str) -> String {
        format!("{lab}-{hostname}")
    }

    fn labels(&self, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_LAB.to_string(), self.lab.clone()),
            (LABEL_ROLE.to_string(), role.to_string()),
        ])
    }

    async fn create_node(
        &self,
        network: &LabNetwork,
        image: &str,
        plan: &MachinePlan,
        address: Ipv4Addr,
    ) -> Result<NodeState> {
        let name = Self::container_name(&self.lab, &plan.hostname);
        let volume = format!("{name}-docker");
        let mut labels = self.labels(plan.role.as_str());
        labels.insert("io.goblog-lab.hostname".into(), plan.hostname.clone());
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating volume {volume}"))?;

        let node = Node {
            name: &name,
            volume: &volume,
            network,
            image,
            plan,
            address,
        };
        let privileged = !self.unprivileged.load(Ordering::SeqCst);
        self.create_container(&node, labels.clone(), privileged)
            .await?;
        match self.docker.start_container(&name, None).await {
            Ok(()) => {}
            Err(err) if privileged && refuses_privileged(&docker_message(&err)) => {
                if !self.unprivileged.swap(true, Ordering::SeqCst) {
                    self.warn_unprivileged();
                }
                self.remove_container(&name).await?;
                self.create_container(&node, labels, false).await?;
                self.docker
                    .start_container(&name, None)
                    .await
                    .with_context(|| format!("starting node {}", plan.hostname))?;
            }
            Err(err) => {
                return Err(err).with_context(|| format!("starting node {}", plan.hostname));
            }
        }
        self.ui.detail(format!("node {} started", plan.hostname));
        // Asked of the engine, not assumed: what the node really got.
        let address = self.address_of(&name).await?;
        Ok(NodeState {
            id: name,
            hostname: plan.hostname.clone(),
            role: plan.role,
            address,
            docker_port: DOCKER_TLS_PORT,
        })
    }

    async fn create_container(
        &self,
        node: &Node<'_>,
        labels: HashMap<String, String>,
        privileged: bool,
    ) -> Result<()> {
        let mut mounts = vec![Mount {
            target: Some("/var/lib/docker".into()),
            source: Some(node.volume.to_string()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        // The node shares this kernel but not its module files: without
        // them dockerd cannot load ip_vs for the routing mesh (kind mounts
        // them for the same reason). Read-only: a node loads, never installs.
        let modules = host_modules();
        if modules.is_dir() {
            mounts.push(Mount {
                target: Some("/lib/modules".into()),
                source: Some(modules.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let mut host = HostConfig {
            init: Some(true),
            network_mode: Some(node.network.name.clone()),
            mounts: Some(mounts),
            tmpfs: Some(HashMap::from([
                ("/run".to_string(), String::new()),
                ("/tmp".to_string(), String::new()),
            ])),
            ..Default::default()
        };
        if privileged {
            host.privileged = Some(true);
        } else {
            host.cap_add = Some(vec!["ALL".into()]);
            host.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
            host.security_opt = Some(vec![
                "seccomp=unconfined".into(),
                "apparmor=unconfined".into(),
            ]);
            // The CLI's `--security-opt systempaths=unconfined`: dockerd
            // inside must write /proc/sys (ip_forward, bridge-nf).
            host.masked_paths = Some(Vec::new());
            host.readonly_paths = Some(Vec::new());
            host.binds = Some(vec!["/sys/fs/cgroup:/sys/fs/cgroup:rw".into()]);
        }
        // A fixed address, so a restarted node comes back where the Swarm
        // and its certificate expect it.
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(node.address.to_string()),
                ..Default::default()
            }),
            aliases: Some(vec![node.plan.hostname.clone()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(node.image.to_string()),
            hostname: Some(node.plan.hostname.clone()),
            cmd: Some(vec!["sh".into(), "-c".into(), NODE_COMMAND.into()]),
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]),
            labels: Some(labels),
            host_config: Some(host),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(node.network.name.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(node.name)
            .build();
        self.docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating node {}", node.plan.hostname))
            .map(drop)
    }

    async fn address_of(&self, container: &str) -> Result<Ipv4Addr> {
        let inspect = self
            .docker
            .inspect_container(container, None)
            .await
            .with_context(|| format!("inspecting node {container}"))?;
        let network = Self::network_name(&self.lab);
        inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut networks| networks.remove(&network))
            .and_then(|endpoint| endpoint.ip_address)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| Error::failed(format!("node {container} has no address on {network}")))
    }

    fn warn_unprivileged(&self) {
        self.ui.warn(
            "this engine refuses --privileged (its capability bounding set is short); nodes run with all capabilities but CAP_SYS_RESOURCE instead",
        );
    }

    /// Where we remember that this engine (by its ID) refused --privileged,
    /// so later labs skip the failing attempt.
    async fn refusal_marker(&self) -> Option<std::path::PathBuf> {
        let id = self.docker.info().await.ok()?.id?;
        Some(refusal_marker(&id))
    }

    async fn remove_container(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        tolerate(
            self.docker.remove_container(name, Some(options)).await,
            GONE,
        )
        .with_context(|| format!("removing container {name}"))
    }

    async fn used_subnets(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        let networks = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
            .await
            .context("listing Docker networks")?;
        let mut used: Vec<(Ipv4Addr, u8)> = networks
            .iter()
            .flat_map(|n| n.ipam.iter().flat_map(|i| i.config.iter().flatten()))
            .filter_map(|c| c.subnet.as_deref().and_then(parse_cidr))
            .collect();
        used.extend(host_routes());
        Ok(used)
    }

    async fn create_network(&self) -> Result<LabNetwork> {
        let name = Self::network_name(&self.lab);
        // Two labs created at the same moment may pick the same free subnet.
        // The engine refuses the second, which then skips that subnet: the
        // first lab's network may not be listed yet.
        let mut refused = Vec::new();
        for _attempt in 0..16 {
            let mut used = self.used_subnets().await?;
            used.extend(refused.iter().map(|&base| (base, 24)));
            let base = first_free_subnet(&used).ok_or(Error::NoFreeSubnet)?;
            let subnet = format!("{base}/24");
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.clone()),
                        gateway: Some(with_last_octet(base, 1).to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                labels: Some(self.labels("network")),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => return Ok(LabNetwork { name, base }),
                Err(err) if docker_message(&err).contains("overlaps") => refused.push(base),
                Err(err) => return Err(err).with_context(|| format!("creating network {name}")),
            }
        }
        Err(Error::NoFreeSubnet)
    }
}

/// One node being made: what `create_container` needs.
struct Node<'a> {
    name: &'a str,
    volume: &'a str,
    network: &'a LabNetwork,
    image: &'a str,
    plan: &'a MachinePlan,
    address: Ipv4Addr,
}

impl DindProvider {
    /// Makes the lab network and one node per plan from `image`.
    async fn create_nodes(&self, image: &str, plans: &[MachinePlan]) -> Result<Vec<NodeState>> {
        let network = self.create_network().await?;
        let mut counters = HashMap::new();
        let addressed: Vec<(&MachinePlan, Ipv4Addr)> = plans
            .iter()
            .map(|plan| {
                let index = counters.entry(plan.role).or_insert(0u32);
                let address = network.node_address(plan.role, *index);
                *index += 1;
                (plan, address)
            })
            .collect();
        let marker = self.refusal_marker().await;
        if marker.as_ref().is_some_and(|m| m.exists()) {
            // Said in full the first time; later labs only mention it (-v).
            self.unprivileged.store(true, Ordering::SeqCst);
            self.ui
                .detail("this engine refuses --privileged (remembered): nodes get the fallback capability set");
            return try_join_all(
                addressed
                    .iter()
                    .map(|(plan, address)| self.create_node(&network, image, plan, *address)),
            )
            .await;
        }
        let Some(((first, first_address), rest)) = addressed.split_first() else {
            return Ok(Vec::new());
        };
        // The first node finds out whether --privileged works, so the others
        // don't all fail and retry at once; the answer is kept for next time.
        let first = self
            .create_node(&network, image, first, *first_address)
            .await?;
        if self.unprivileged.load(Ordering::SeqCst) {
            if let Some(marker) = marker {
                let _ = std::fs::create_dir_all(marker.parent().unwrap_or(&marker));
                let _ = std::fs::write(&marker, "this engine refuses --privileged\n");
            }
        }
        let mut nodes = vec![first];
        nodes.extend(
            try_join_all(
                rest.iter()
                    .map(|(plan, address)| self.create_node(&network, image, plan, *address)),
            )
            .await?,
        );
        Ok(nodes)
    }
}

#[async_trait]
impl Provider for DindProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Dind
    }

    fn engine_setup(&self) -> EngineSetup {
        EngineSetup::DaemonJson
    }

    async fn create(&self, plans: &[MachinePlan]) -> Result<Vec<NodeState>> {
        let image = crate::steps::node_image::ensure(&self.docker).await?;
        self.create_nodes(&image, plans).await
    }

    async fn put_files(&self, node: &NodeState, files: &[NodeFile]) -> Result<()> {
        self.docker
            .upload_to_container(
                &node.id,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(
                    crate::tarball::pack(files.iter().map(|f| {
                        (
                            f.path.trim_start_matches('/'),
                            f.contents.as_slice(),
                            f.mode,
                        )
                    }))?
                    .into(),
                ),
            )
            .await
            .with_context(|| format!("copying files into node {}", node.hostname))
    }

    async fn run(&self, node: &NodeState, command: &str) -> Result<CommandOutput> {
        let (status, output) = exec_in(&self.docker, &node.id, &["sh", "-c", command]).await?;
        Ok(CommandOutput { status, output })
    }

    async fn stop(&self, node: &NodeState) -> Result<()> {
        // dockerd drains its containers and leaves the Swarm state on disk.
        let options = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(20)
            .build();
        tolerate(
            self.docker.stop_container(&node.id, Some(options)).await,
            ALREADY,
        )
        .with_context(|| format!("stopping node {}", node.hostname))
    }

    async fn start(&self, node: &NodeState) -> Result<Ipv4Addr> {
        tolerate(self.docker.start_container(&node.id, None).await, ALREADY)
            .with_context(|| format!("starting node {}", node.hostname))?;
        self.address_of(&node.id).await
    }

    async fn ensure_running(&self, node: &NodeState) -> Result<()> {
        let inspect = self
            .docker
            .inspect_container(&node.id, None)
            .await
            .with_context(|| format!("inspecting node {}", node.hostname))?;
        let state = inspect.state.unwrap_or_default();
        if state.running == Some(true) {
            return Ok(());
        }
        Err(Error::NodeStopped {
            node: node.hostname.clone(),
            why: format!(
                "exit code {}{}",
                state.exit_code.unwrap_or(-1),
                state
                    .error
                    .filter(|e| !e.is_empty())
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        })
    }

    async fn forward(&self, node: &NodeState, port: u16, local_port: u16) -> Result<Forward> {
        // This host routes to container addresses; a plain TCP relay on
        // loopback lets its engine push over 127.0.0.1, which dockerd
        // trusts without any daemon setting.
        super::relay::tcp(local_port, SocketAddr::from((node.address, port))).await
    }

    async fn interactive(&self, node: &NodeState, command: &[String]) -> Result<i32> {
        use std::io::IsTerminal;
        let mut docker_args = vec!["exec".to_string(), "-i".to_string()];
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            docker_args.push("-t".to_string());
        }
        docker_args.push(node.id.clone());
        docker_args.extend(command.iter().cloned());
        // The docker CLI already does TTYs, signals and exit codes right.
        let status = tokio::process::Command::new("docker")
            .args(&docker_args)
            // The host engine, even after `eval "$(goblog-lab env)"`.
            .env("DOCKER_HOST", crate::docker::host_address())
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .await
            .context("running the docker CLI (is it installed?)")?;
        Ok(status.code().unwrap_or(1))
    }

    async fn remove(&self, _state: Option<&LabState>) -> Result<Removed> {
        // By label, not from the state: it works after a crash and twice.
        remove_labelled(&self.docker, &self.lab).await
    }
}

/// Runs `command` in a container of the host engine.
pub async fn exec_in(docker: &Docker, container: &str, command: &[&str]) -> Result<(i64, String)> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(command.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("running {:?} in {container}", command.join(" ")))?;
    let mut output = String::new();
    if let StartExecResults::Attached {
        output: mut stream, ..
    } = docker
        .start_exec(&exec.id, None)
        .await
        .with_context(|| format!("running {:?} in {container}", command.join(" ")))?
    {
        while let Some(Ok(chunk)) = stream.next().await {
            output.push_str(&chunk.to_string());
        }
    }
    let inspect = docker
        .inspect_exec(&exec.id)
        .await
        .context("reading an exec's exit code")?;
    Ok((inspect.exit_code.unwrap_or(-1), output))
}

/// Removes every container, volume and network labelled as part of `lab`:
/// containers first, since they hold the volumes and networks.
pub async fn remove_labelled(docker: &Docker, lab: &str) -> Result<Removed> {
    let found = Labelled::of_lab(docker, lab).await?;
    try_join_all(
        found
            .containers
            .iter()
            .filter_map(|c| c.id.as_deref())
            .map(|id| async move {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                tolerate(docker.remove_container(id, Some(options)).await, GONE)
                    .with_context(|| format!("removing container {}", &id[..12.min(id.len())]))
            }),
    )
    .await?;
    try_join_all(found.volumes.iter().map(|v| async move {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        tolerate(docker.remove_volume(&v.name, Some(options)).await, GONE)
            .with_context(|| format!("removing volume {}", v.name))
    }))
    .await?;
    try_join_all(
        found
            .networks
            .iter()
            .filter_map(|n| n.id.as_deref())
            .map(|id| async move {
                tolerate(docker.remove_network(id).await, GONE).context("removing the lab network")
            }),
    )
    .await?;
    Ok(Removed {
        items: vec![
            (found.containers.len(), "container"),
            (found.volumes.len(), "volume"),
            (found.networks.len(), "network"),
        ],
    })
}

/// The file that says engine `engine_id` refused --privileged before
/// (`goblog-lab doctor` reports it too).
pub fn refusal_marker(engine_id: &str) -> std::path::PathBuf {
    let id: String = engine_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    crate::lab::state::home()
        .join("engines")
        .join(format!("{id}.no-privileged"))
}

/// Where this machine keeps its kernel modules: `/lib/modules`, unless
/// `GOBLOG_LAB_HOST_MODULES` names another place (NixOS keeps them under
/// /run/booted-system/kernel-modules/lib/modules).
pub fn host_modules() -> std::path::PathBuf {
    std::env::var_os("GOBLOG_LAB_HOST_MODULES")
        .filter(|v| !v.is_empty())
        .map_or_else(|| "/lib/modules".into(), std::path::PathBuf::from)
}

fn refuses_privileged(message: &str) -> bool {
    message.contains("unable to apply caps") || message.contains("operation not permitted")
}

fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    Some((addr.parse().ok()?, prefix.parse().ok()?))
}

/// Routes of this host (`/proc/net/route`), so the lab never shadows a LAN.
fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The default route (0.0.0.0/0) overlaps everything; skip it.
            (mask != 0).then(|| {
                (
                    Ipv4Addr::from(u32::from_be(dest)),
                    u32::from_be(mask).count_ones() as u8,
                )
            })
        })
        .collect()
}

fn with_last_octet(addr: Ipv4Addr, last: u8) -> Ipv4Addr {
    let [a, b, c, _] = addr.octets();
    Ipv4Addr::new(a, b, c, last)
}

/// The first 172.28-31.x.0/24 that overlaps none of `used`.
fn first_free_subnet(used: &[(Ipv4Addr, u8)]) -> Option<Ipv4Addr> {
    let overlaps = |candidate: u32, (net, prefix): (Ipv4Addr, u8)| {
        let prefix = prefix.min(24) as u32;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        candidate & mask == u32::from(net) & mask
    };
    let start = u32::from(Ipv4Addr::new(172, 28, 0, 0));
    (0..1024u32)
        .map(|i| start + (i << 8))
        .find(|&candidate| used.iter().all(|&u| !overlaps(candidate, u)))
        .map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_first_subnet_nobody_uses() {
        assert_eq!(first_free_subnet(&[]), Some(Ipv4Addr::new(172, 28, 0, 0)));
        let used = [
            parse_cidr("172.28.0.0/24").unwrap(),
            parse_cidr("172.28.1.0/24").unwrap(),
        ];
        assert_eq!(first_free_subnet(&used), Some(Ipv4Addr::new(172, 28, 2, 0)));
        // A /16 in the way pushes past all of it.
        let used = [parse_cidr("172.28.0.0/16").unwrap()];
        assert_eq!(first_free_subnet(&used), Some(Ipv4Addr::new(172, 29, 0, 0)));
    }

    #[test]
    fn refusal_of_privileged_is_recognised() {
        assert!(refuses_privileged(
            "OCI runtime create failed: runc create failed: unable to apply caps: operation not permitted: unknown"
        ));
        assert!(!refuses_privileged("No such image: goblog-lab/node:abc"));
    }
}
