//! Nodes as Docker-in-Docker containers on the host engine.
//!
//! Each node is a container of the lab's node image running its own
//! dockerd, on a user-defined bridge network with a fixed address. The
//! inner engine keeps `/var/lib/docker` on a named volume (overlay2 cannot
//! sit on the container's own overlayfs) and listens for TLS clients on its
//! lab address only.
//!
//! Docker-in-Docker normally wants `--privileged`. Some engines refuse it
//! (this machine's bounding set lacks CAP_SYS_RESOURCE, so runc cannot grant
//! "all" capabilities); then the nodes get every capability but that one,
//! which is what dockerd actually needs, and we say so once.

use std::collections::HashMap;
use std::net::Ipv4Addr;
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

use super::{Driver, LabNetwork, NodePlan, Removed, DOCKER_TLS_PORT};
use crate::docker::{tolerate, Labelled, ALREADY, GONE, LABEL_LAB, LABEL_ROLE};
use crate::error::{docker_message, Context, Error, Result};
use crate::lab::state::{NetworkState, NodeState};
use crate::ui::Ui;

pub struct DindDriver {
    docker: Docker,
    lab: String,
    ui: Ui,
    /// Set once the engine has refused `--privileged` in this run.
    unprivileged: AtomicBool,
}

impl DindDriver {
    pub fn new(docker: Docker, lab: &str, ui: Ui) -> Self {
        DindDriver {
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
        plan: &NodePlan,
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

        let privileged = !self.unprivileged.load(Ordering::SeqCst);
        self.create_container(
            &name,
            &volume,
            network,
            image,
            plan,
            labels.clone(),
            privileged,
        )
        .await?;
        match self.docker.start_container(&name, None).await {
            Ok(()) => {}
            Err(err) if privileged && refuses_privileged(&docker_message(&err)) => {
                if !self.unprivileged.swap(true, Ordering::SeqCst) {
                    self.warn_unprivileged();
                }
                self.remove_container(&name).await?;
                self.create_container(&name, &volume, network, image, plan, labels, false)
                    .await?;
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
        Ok(NodeState {
            id: name,
            hostname: plan.hostname.clone(),
            role: plan.role,
            address: plan.address,
            docker_port: DOCKER_TLS_PORT,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_container(
        &self,
        name: &str,
        volume: &str,
        network: &LabNetwork,
        image: &str,
        plan: &NodePlan,
        labels: HashMap<String, String>,
        privileged: bool,
    ) -> Result<()> {
        let mut host = HostConfig {
            init: Some(true),
            network_mode: Some(network.state.name.clone()),
            mounts: Some(vec![Mount {
                target: Some("/var/lib/docker".into()),
                source: Some(volume.to_string()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
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
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(plan.address.to_string()),
                ..Default::default()
            }),
            aliases: Some(vec![plan.hostname.clone()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            hostname: Some(plan.hostname.clone()),
            cmd: Some(vec!["dockerd".into()]),
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]),
            labels: Some(labels),
            host_config: Some(host),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network.state.name.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating node {}", plan.hostname))?;
        self.docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(
                    crate::tarball::pack(
                        plan.files
                            .iter()
                            .map(|f| (f.path.as_str(), f.contents.as_slice(), f.mode)),
                    )?
                    .into(),
                ),
            )
            .await
            .with_context(|| format!("copying TLS files into node {}", plan.hostname))
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
        let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        Some(
            crate::lab::state::home()
                .join("engines")
                .join(format!("{id}.no-privileged")),
        )
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
}

#[async_trait]
impl Driver for DindDriver {
    fn name(&self) -> &'static str {
        "dind"
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
            let base = first_free_subnet(&used).ok_or_else(|| {
                Error::failed("no free /24 left in 172.28.0.0/14 for the lab network")
            })?;
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
                Ok(_) => {
                    return Ok(LabNetwork {
                        state: NetworkState { name, subnet },
                        base,
                    })
                }
                Err(err) if docker_message(&err).contains("overlaps") => refused.push(base),
                Err(err) => return Err(err).with_context(|| format!("creating network {name}")),
            }
        }
        Err(Error::failed(
            "could not find a free subnet for the lab network",
        ))
    }

    async fn create_nodes(
        &self,
        network: &LabNetwork,
        image: &str,
        plans: &[NodePlan],
    ) -> Result<Vec<NodeState>> {
        let marker = self.refusal_marker().await;
        if marker.as_ref().is_some_and(|m| m.exists()) {
            // Said in full the first time; later labs only mention it (-v).
            self.unprivileged.store(true, Ordering::SeqCst);
            self.ui
                .detail("this engine refuses --privileged (remembered): nodes get the fallback capability set");
            return try_join_all(
                plans
                    .iter()
                    .map(|plan| self.create_node(network, image, plan)),
            )
            .await;
        }
        let Some((first, rest)) = plans.split_first() else {
            return Ok(Vec::new());
        };
        // The first node finds out whether --privileged works, so the others
        // don't all fail and retry at once; the answer is kept for next time.
        let first = self.create_node(network, image, first).await?;
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
                    .map(|plan| self.create_node(network, image, plan)),
            )
            .await?,
        );
        Ok(nodes)
    }

    async fn stop_node(&self, node: &NodeState) -> Result<()> {
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

    async fn start_node(&self, node: &NodeState) -> Result<()> {
        tolerate(self.docker.start_container(&node.id, None).await, ALREADY)
            .with_context(|| format!("starting node {}", node.hostname))
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
        Err(Error::failed(format!(
            "node {} stopped (exit code {}{})",
            node.hostname,
            state.exit_code.unwrap_or(-1),
            state
                .error
                .filter(|e| !e.is_empty())
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )))
    }

    async fn has_ipvs(&self, node: &NodeState) -> Result<bool> {
        // The nodes share the host's kernel; dockerd inside can only use IPVS
        // when the module is there already (it cannot load modules from here).
        let (code, _) = self
            .exec(
                node,
                &[
                    "sh",
                    "-c",
                    "test -e /proc/net/ip_vs || test -d /sys/module/ip_vs",
                ],
            )
            .await?;
        Ok(code == 0)
    }

    async fn exec(&self, node: &NodeState, command: &[&str]) -> Result<(i64, String)> {
        exec_in(&self.docker, &node.id, command).await
    }

    async fn destroy(&self) -> Result<Removed> {
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
        containers: found.containers.len(),
        volumes: found.volumes.len(),
        networks: found.networks.len(),
    })
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
