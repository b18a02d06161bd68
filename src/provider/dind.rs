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
//!
//! Docker Desktop (macOS, Windows) and some rootless engines keep container
//! addresses out of this host's reach. There the nodes publish the ports
//! this host calls (each Docker API, the services behind `$ManagerIP`, the
//! registry) on 127.0.0.1, and `NodeState::endpoint` says where each went;
//! the machines still reach each other at their lab addresses.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings,
    HostConfig, Ipam, IpamConfig, Mount, MountType, NetworkCreateRequest, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::try_join_all;
use ipnet::Ipv4Net;

use crate::subnet::host_in;

use super::{
    CommandOutput, EngineSetup, Forward, MachinePlan, MachineScope, NodeFile, Provider,
    ProviderKind, Reached, Removed, DOCKER_TLS_PORT,
};
use crate::docker::{tolerate, Labelled, ALREADY, GONE, LABEL_LAB, LABEL_ROLE};
use crate::error::{docker_message, Context, Error, Result};
use crate::lab::state::{LabState, NodeState, Publish, Role};
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
    /// `--publish`: a mode, or none to find out (`auto`).
    choice: Option<Publish>,
    /// Set when the nodes publish their ports on 127.0.0.1.
    localhost: AtomicBool,
    /// Set once this process asked the engine for the lab's machines: a
    /// removal then sweeps until requests still in flight have landed.
    making: AtomicBool,
}

/// The lab's bridge network: its name and the /24 the nodes sit on.
struct LabNetwork {
    name: String,
    subnet: Ipv4Net,
}

impl LabNetwork {
    /// Managers from .10 and workers from .100, so an address tells the role.
    fn node_address(&self, role: Role, index: u32) -> Ipv4Addr {
        let first = match role {
            Role::Manager => 10,
            Role::Worker => 100,
        };
        host_in(self.subnet, first + index)
    }
}

impl DindProvider {
    pub fn new(docker: Docker, lab: &str, ui: Ui) -> Self {
        DindProvider {
            docker,
            lab: lab.to_string(),
            ui,
            unprivileged: AtomicBool::new(false),
            choice: None,
            localhost: AtomicBool::new(false),
            making: AtomicBool::new(false),
        }
    }

    /// How this host reaches the nodes: `Some` mode, or `None` to find out
    /// at create (Docker Desktop, or no route to the manager's address).
    pub fn publishing(mut self, choice: Option<Publish>) -> Self {
        self.choice = choice;
        self.localhost
            .store(choice == Some(Publish::Localhost), Ordering::SeqCst);
        self
    }

    fn on_localhost(&self) -> bool {
        self.localhost.load(Ordering::SeqCst)
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
        let mut privileged = !self.unprivileged.load(Ordering::SeqCst);
        let mut same_numbers = true;
        loop {
            self.create_container(&node, labels.clone(), privileged, same_numbers)
                .await?;
            let Err(err) = self.docker.start_container(&name, None).await else {
                break;
            };
            let message = docker_message(&err);
            if privileged && refuses_privileged(&message) {
                if !self.unprivileged.swap(true, Ordering::SeqCst) {
                    self.warn_unprivileged();
                }
                privileged = false;
            } else if same_numbers && port_taken(&message) {
                // Taken between our look and Docker's bind: any free port.
                self.ui.detail(format!(
                    "{}: a port was taken meanwhile ({message}); publishing on free ones",
                    plan.hostname
                ));
                same_numbers = false;
            } else {
                return Err(err).with_context(|| format!("starting node {}", plan.hostname));
            }
            self.remove_container(&name).await?;
        }
        self.ui.detail(format!("node {} started", plan.hostname));
        // Asked of the engine, not assumed: what the node really got.
        let inspect = self.inspect(&name).await?;
        let address = self.address_in(&name, &inspect)?;
        Ok(NodeState {
            id: name,
            hostname: plan.hostname.clone(),
            role: plan.role,
            address,
            docker_port: DOCKER_TLS_PORT,
            published: published_in(&inspect),
        })
    }

    /// What this node publishes on 127.0.0.1 in localhost mode: its Docker
    /// API on any free port, and what the lab calls on it under the same
    /// number where that is free here (else any free port).
    fn port_bindings(&self, reached: &[Reached], same_numbers: bool) -> Vec<(u16, String)> {
        if !self.on_localhost() {
            return Vec::new();
        }
        let mut ports = vec![(DOCKER_TLS_PORT, String::new())];
        ports.extend(reached.iter().map(|r| {
            let same = same_numbers
                && r.same_number
                && std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, r.port)).is_ok();
            (
                r.port,
                if same {
                    r.port.to_string()
                } else {
                    String::new()
                },
            )
        }));
        ports
    }

    async fn create_container(
        &self,
        node: &Node<'_>,
        labels: HashMap<String, String>,
        privileged: bool,
        same_numbers: bool,
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
        let modules = crate::routing::host_modules();
        if modules.is_dir() {
            mounts.push(Mount {
                target: Some("/lib/modules".into()),
                source: Some(modules.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        }
        let bindings = self.port_bindings(&node.plan.reached, same_numbers);
        let mut host = HostConfig {
            init: Some(true),
            network_mode: Some(node.network.name.clone()),
            mounts: Some(mounts),
            tmpfs: Some(HashMap::from([
                ("/run".to_string(), String::new()),
                ("/tmp".to_string(), String::new()),
            ])),
            // On 127.0.0.1 only: nothing of the lab is offered to the LAN.
            port_bindings: (!bindings.is_empty()).then(|| {
                bindings
                    .iter()
                    .map(|(port, host_port)| {
                        (
                            format!("{port}/tcp"),
                            Some(vec![PortBinding {
                                host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                                host_port: Some(host_port.clone()),
                            }]),
                        )
                    })
                    .collect()
            }),
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
                // Every container a node starts re-executes its dockerd
                // (libnetwork's netns-create, set-ipv6, setup-resolver,
                // docker-untar: about 70 a lab), and each run's package
                // init splits 10.0.0.0/8 into 65536 pools, which Go's
                // collector then chases: GC was 10% of a class's CPU
                // (`perf record -a` over `class create`). At 200 a lab's
                // nodes took 6.95 CPU-s instead of 7.56 (bench/lab-cpu.sh,
                // medians of 5 alternated creates) for 20 MiB more dockerd
                // RSS a lab.
                "GOGC=200".into(),
            ]),
            labels: Some(labels),
            exposed_ports: (!bindings.is_empty())
                .then(|| bindings.iter().map(|(p, _)| format!("{p}/tcp")).collect()),
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

    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
        self.docker
            .inspect_container(container, None)
            .await
            .with_context(|| format!("inspecting node {container}"))
    }

    fn address_in(&self, container: &str, inspect: &ContainerInspectResponse) -> Result<Ipv4Addr> {
        let network = Self::network_name(&self.lab);
        inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|networks| networks.get(&network))
            .and_then(|endpoint| endpoint.ip_address.as_deref())
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

    async fn create_network(&self) -> Result<LabNetwork> {
        let name = Self::network_name(&self.lab);
        let subnet =
            crate::subnet::create_bridge(&self.docker, &name, |subnet| NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(host_in(subnet, 1).to_string()),
                        // Kept from Docker's allocations: the lab's virtual
                        // $ManagerIP (`Provider::virtual_ip`).
                        auxiliary_addresses: Some(HashMap::from([(
                            "goblog-lab-vip".to_string(),
                            crate::subnet::spare_address(host_in(subnet, 1)).to_string(),
                        )])),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                labels: Some(self.labels("network")),
                ..Default::default()
            })
            .await?;
        Ok(LabNetwork { name, subnet })
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
    /// Makes the lab network and one node per plan from `image`; in `auto`
    /// mode, makes them again with published ports when this host turns
    /// out not to route to the manager's address.
    async fn create_nodes(&self, image: &str, plans: &[MachinePlan]) -> Result<Vec<NodeState>> {
        let network = self.create_network().await?;
        let nodes = self.start_nodes(&network, image, plans).await?;
        let Some(manager) = nodes.first() else {
            return Ok(nodes);
        };
        if self.choice.is_some() || self.on_localhost() {
            return Ok(nodes);
        }
        if let Err(why) = routes_to(SocketAddr::from((manager.address, DOCKER_TLS_PORT))).await {
            self.ui.warn(format!(
                "this host cannot reach container addresses ({why}): re-creating the nodes with their ports published on 127.0.0.1 (--publish localhost)"
            ));
            self.localhost.store(true, Ordering::SeqCst);
            try_join_all(nodes.iter().map(|n| self.remove_container(&n.id))).await?;
            return self.start_nodes(&network, image, plans).await;
        }
        Ok(nodes)
    }

    /// One node per plan on `network`, at the addresses their roles give.
    async fn start_nodes(
        &self,
        network: &LabNetwork,
        image: &str,
        plans: &[MachinePlan],
    ) -> Result<Vec<NodeState>> {
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
                    .map(|(plan, address)| self.create_node(network, image, plan, *address)),
            )
            .await;
        }
        let Some(((first, first_address), rest)) = addressed.split_first() else {
            return Ok(Vec::new());
        };
        // The first node finds out whether --privileged works, so the others
        // don't all fail and retry at once; the answer is kept for next time.
        let first = self
            .create_node(network, image, first, *first_address)
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
                    .map(|(plan, address)| self.create_node(network, image, plan, *address)),
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

    fn making(&self) -> &'static str {
        "Starting nodes"
    }

    fn shares_this_kernel(&self) -> bool {
        true
    }

    fn engine_setup(&self) -> EngineSetup {
        EngineSetup::DaemonJson
    }

    fn machine_scope(&self) -> MachineScope {
        // /proc/stat in a node is the host's: every node would show the
        // whole machine.
        MachineScope::OwnCgroup
    }

    async fn create(&self, plans: &[MachinePlan], image: &str) -> Result<Vec<NodeState>> {
        self.making.store(true, Ordering::SeqCst);
        if self.choice.is_none() {
            let os = self
                .docker
                .info()
                .await
                .ok()
                .and_then(|i| i.operating_system);
            if let Some(os) = os.filter(|os| crate::docker::is_docker_desktop(os)) {
                self.ui.detail(format!(
                    "the engine runs on {os}, whose container addresses this host cannot reach: publishing the nodes' ports on 127.0.0.1"
                ));
                self.localhost.store(true, Ordering::SeqCst);
            }
        }
        self.create_nodes(image, plans).await
    }

    fn host_network(&self) -> Option<String> {
        Some(Self::network_name(&self.lab))
    }

    fn publish(&self) -> Publish {
        if self.on_localhost() {
            Publish::Localhost
        } else {
            Publish::Direct
        }
    }

    async fn published_ports(&self, node: &NodeState) -> Result<BTreeMap<u16, u16>> {
        Ok(published_in(&self.inspect(&node.id).await?))
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

    /// The lab network's .254, reserved in its IPAM (`create_network`) so
    /// no container is given it. None when this host reaches the nodes
    /// only through 127.0.0.1: a moving address would not be reachable.
    fn virtual_ip(&self, managers: &[NodeState]) -> Option<Ipv4Addr> {
        if self.on_localhost() {
            return None;
        }
        managers
            .first()
            .map(|m| crate::subnet::spare_address(m.address))
    }

    async fn local_pid(&self, node: &NodeState) -> Option<u32> {
        let inspect = self.docker.inspect_container(&node.id, None).await.ok()?;
        let pid = u32::try_from(inspect.state?.pid?).ok().filter(|&p| p > 0)?;
        // An engine in a VM (Docker Desktop) answers with its own kernel's
        // pid; only a process here whose cgroup names the node is it.
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let id = inspect.id?;
        cgroup.contains(&id).then_some(pid)
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
        let inspect = self.inspect(&node.id).await?;
        self.address_in(&node.id, &inspect)
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
        // A plain TCP relay on loopback lets this host's engine push over
        // 127.0.0.1, which dockerd trusts without any daemon setting; it
        // relays to the lab address, or to the port published for it.
        super::relay::tcp(local_port, node.endpoint(port)).await
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
        // A create of this process abandoned mid-request (a failure,
        // Ctrl-C) can still have a container or network land a moment
        // later, so then it sweeps again until a pass finds nothing (at most
        // six passes, 300 ms apart); `destroy` has nothing in flight.
        let mut removed = remove_labelled(&self.docker, &self.lab).await?;
        if removed.is_empty() || !self.making.load(Ordering::SeqCst) {
            return Ok(removed);
        }
        for _ in 0..5 {
            tokio::time::sleep(SWEEP_PAUSE).await;
            let late = remove_labelled(&self.docker, &self.lab).await?;
            if late.is_empty() {
                break;
            }
            removed.add(&late);
        }
        Ok(removed)
    }
}

/// How long `remove` lets a request still in flight land before it looks
/// again.
const SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

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

/// The container's ports published on 127.0.0.1, by the container's port.
fn published_in(inspect: &ContainerInspectResponse) -> BTreeMap<u16, u16> {
    let Some(ports) = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
    else {
        return BTreeMap::new();
    };
    ports
        .iter()
        .filter_map(|(port, bindings)| {
            let port: u16 = port.strip_suffix("/tcp")?.parse().ok()?;
            let local = bindings
                .iter()
                .flatten()
                .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
                .find_map(|b| b.host_port.as_deref()?.parse().ok())?;
            Some((port, local))
        })
        .collect()
}

/// Whether this host routes to `target`: an answer, even a refusal (the
/// node's dockerd is not listening yet), says yes; a timeout or "no route"
/// says no, and why.
async fn routes_to(target: SocketAddr) -> std::result::Result<(), String> {
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Ok(Err(err)) => Err(format!("{target}: {err}")),
        Err(_) => Err(format!("{target}: no answer in 1 s")),
    }
}

fn port_taken(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}

fn refuses_privileged(message: &str) -> bool {
    message.contains("unable to apply caps") || message.contains("operation not permitted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_are_read_for_loopback_only() {
        let inspect: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "NetworkSettings": { "Ports": {
                "2376/tcp": [{ "HostIp": "127.0.0.1", "HostPort": "49153" }],
                "6767/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "6767" }],
                "5000/tcp": null,
                "53/udp": [{ "HostIp": "127.0.0.1", "HostPort": "53" }]
            }}
        }))
        .unwrap();
        assert_eq!(published_in(&inspect), BTreeMap::from([(2376, 49153)]));
    }

    #[tokio::test]
    async fn a_refused_connection_proves_a_route() {
        // A port nothing listens on: the refusal comes back at once.
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(routes_to(port).await, Ok(()));
        let listening = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        assert_eq!(routes_to(listening.local_addr().unwrap()).await, Ok(()));
        assert!(port_taken(
            "driver failed programming external connectivity on endpoint x: Bind for 127.0.0.1:6767 failed: port is already allocated"
        ));
    }

    #[test]
    fn refusal_of_privileged_is_recognised() {
        assert!(refuses_privileged(
            "OCI runtime create failed: runc create failed: unable to apply caps: operation not permitted: unknown"
        ));
        assert!(!refuses_privileged("No such image: goblog-lab/node:abc"));
    }
}
