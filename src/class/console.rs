//! A learner's console: a small container on their lab's network, from
//! which the blog's commands work as written (`docker node ls`,
//! `curl $ManagerIP:6767/accounts/10000`). It holds the `docker` CLI,
//! `curl`, `jq` and an editor (the node image has them all), the lab's
//! client certificate, and the accountservice's source in a volume.
//!
//! It is as unprivileged as a shell can be: uid 1000, every capability
//! dropped, `no-new-privileges`, memory and pid limits, no Docker socket
//! and nothing mounted from this host; the certificate and the source are
//! copied in, not bound.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount, MountType, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;

use crate::docker::{tolerate, GONE, LABEL_ROLE};
use crate::error::{Context, Error, Result};

/// Every object of a class carries it, so `class destroy` finds them all.
pub const LABEL_CLASS: &str = "io.goblog-lab.class";
const LABEL_LEARNER: &str = "io.goblog-lab.learner";

pub const USER: &str = "1000:1000";
pub const HOME: &str = "/home/learner";
/// Enough for the docker CLI, an editor and a few shells; a fork bomb or a
/// runaway `jq` stops here, not at the server's limits.
const MEMORY: i64 = 256 << 20;
const PIDS: i64 = 256;

/// What a console is for: whose it is, and which lab it reaches.
pub struct ConsoleSpec<'a> {
    pub class: &'a str,
    pub number: u32,
    /// The node image, which has every tool the console needs.
    pub image: &'a str,
    /// The host engine's network that reaches the lab's machines, if any
    /// (dind's bridge); otherwise this host routes to them.
    pub network: Option<String>,
    /// `tcp://ADDRESS:2376` of the lab's first manager.
    pub docker_host: String,
    pub manager_ip: String,
    /// The lab's client certificate: `ca.pem`, `cert.pem`, `key.pem`.
    pub certs: &'a Path,
    /// The accountservice's sources, copied into the source volume the
    /// first time (a reset keeps the learner's edits).
    pub source: &'a Path,
    /// The class's network, where `class serve` takes the learner's
    /// `deploy` on the gateway's address.
    pub class_network: &'a str,
    pub deploy_url: String,
    /// The learner's token, which their `deploy` presents.
    pub token: &'a crate::class::token::Token,
}

/// The port `class serve` takes deploys on, on the class network's gateway.
pub const DEPLOY_PORT: u16 = 7767;

/// The class's network: every console joins it beside its lab's network,
/// and `class serve` listens for deploys on its gateway. Containers on it
/// cannot reach one another (`enable_icc` off); only the server.
pub fn class_network(class: &str) -> String {
    format!("goblog-class-{class}")
}

/// Makes the class's network (once); returns its gateway address.
pub async fn ensure_class_network(docker: &Docker, class: &str) -> Result<String> {
    let name = class_network(class);
    if docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .is_err()
    {
        // A subnet of our own choosing, clear of this host's routes: one
        // from Docker's pool covered a qemu lab's host-only network.
        crate::subnet::create_bridge(docker, &name, |subnet| {
            bollard::models::NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(bollard::models::Ipam {
                    config: Some(vec![bollard::models::IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(crate::subnet::host_in(subnet, 1).to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "false".to_string(),
                )])),
                labels: Some(HashMap::from([
                    (LABEL_CLASS.to_string(), class.to_string()),
                    (LABEL_ROLE.to_string(), "class-network".to_string()),
                ])),
                ..Default::default()
            }
        })
        .await?;
    }
    gateway(docker, class).await
}

/// The gateway address of the class's network: this host, as the
/// consoles reach it.
pub async fn gateway(docker: &Docker, class: &str) -> Result<String> {
    let name = class_network(class);
    let network = docker
        .inspect_network(
            &name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .with_context(|| format!("reading network {name}"))?;
    network
        .ipam
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .find_map(|config| config.gateway)
        .ok_or_else(|| Error::failed(format!("network {name} has no gateway address")))
}

pub fn container_name(class: &str, number: u32) -> String {
    format!("goblog-class-{class}-console-{number}")
}

fn volume_name(class: &str, number: u32) -> String {
    format!("goblog-class-{class}-source-{number}")
}

fn labels(class: &str, number: u32) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_CLASS.to_string(), class.to_string()),
        (LABEL_LEARNER.to_string(), number.to_string()),
        (LABEL_ROLE.to_string(), "console".to_string()),
    ])
}

/// What the console's shell starts with: the blog's variables, a prompt
/// that says whose lab this is, and where the source is.
fn profile(spec: &ConsoleSpec) -> String {
    format!(
        "export DOCKER_HOST={host}\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH={HOME}/.docker\n\
         export ManagerIP={ip}\nexport EDITOR=nano\nexport TERM=${{TERM:-xterm-256color}}\n\
         PS1='\\[\\e[1;32m\\]learner-{n}\\[\\e[0m\\]:\\w$ '\ncd {HOME}\n",
        host = spec.docker_host,
        ip = spec.manager_ip,
        n = spec.number,
    )
}

/// Makes and starts the console (and its source volume, the first time).
pub async fn create(docker: &Docker, spec: &ConsoleSpec<'_>) -> Result<String> {
    let name = container_name(spec.class, spec.number);
    let volume = volume_name(spec.class, spec.number);
    let fresh_volume = docker.inspect_volume(&volume).await.is_err();
    if fresh_volume {
        docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(labels(spec.class, spec.number)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating volume {volume}"))?;
    }
    let env = vec![
        format!("DOCKER_HOST={}", spec.docker_host),
        "DOCKER_TLS_VERIFY=1".to_string(),
        format!("DOCKER_CERT_PATH={HOME}/.docker"),
        format!("ManagerIP={}", spec.manager_ip),
        format!("GOBLOG_CLASS_URL={}", spec.deploy_url),
        format!("HOME={HOME}"),
        "TERM=xterm-256color".to_string(),
    ];
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        hostname: Some(format!("learner-{}", spec.number)),
        user: Some(USER.to_string()),
        working_dir: Some(HOME.to_string()),
        env: Some(env),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        labels: Some(labels(spec.class, spec.number)),
        host_config: Some(HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            memory: Some(MEMORY),
            memory_swap: Some(MEMORY),
            pids_limit: Some(PIDS),
            init: Some(true),
            network_mode: spec.network.clone(),
            mounts: Some(vec![Mount {
                target: Some(format!("{HOME}/accountservice")),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        networking_config: spec.network.as_ref().map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating the console {name}"))?;
    docker
        .connect_network(
            spec.class_network,
            bollard::models::NetworkConnectRequest {
                container: name.clone(),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("connecting {name} to {}", spec.class_network))?;
    let files = home_files(spec, fresh_volume)?;
    docker
        .upload_to_container(
            &name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(files.into()),
        )
        .await
        .with_context(|| format!("copying the certificate and source into {name}"))?;
    docker
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .with_context(|| format!("starting the console {name}"))?;
    Ok(name)
}

/// The learner's home: the profile, the certificate, and (into a fresh
/// volume) the source, all owned by the learner.
fn home_files(spec: &ConsoleSpec, with_source: bool) -> Result<Vec<u8>> {
    let mut tar = Tar::new();
    let home = HOME.trim_start_matches('/');
    tar.dir(home)?;
    tar.dir(&format!("{home}/.docker"))?;
    let profile = profile(spec);
    tar.file(&format!("{home}/.bashrc"), profile.as_bytes(), 0o644)?;
    tar.file(&format!("{home}/.profile"), b". ~/.bashrc\n", 0o644)?;
    for (file, mode) in [("ca.pem", 0o644), ("cert.pem", 0o644), ("key.pem", 0o600)] {
        let path = spec.certs.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        tar.file(&format!("{home}/.docker/{file}"), &bytes, mode)?;
    }
    tar.dir(&format!("{home}/.config"))?;
    tar.file(
        &format!("{home}/.config/goblog-lab-token"),
        spec.token.reveal().as_bytes(),
        0o600,
    )?;
    tar.file("usr/local/bin/deploy", DEPLOY_SCRIPT.as_bytes(), 0o755)?;
    tar.dir(&format!("{home}/accountservice"))?;
    if with_source {
        tar.tree(spec.source, &format!("{home}/accountservice"))?;
    }
    tar.finish()
}

/// `deploy [SERVICE]` in the console: asks `class serve` to build the
/// learner's `~/accountservice` on the server and roll it out to their lab,
/// and prints the build's lines as they come; its exit status is the
/// deploy's.
const DEPLOY_SCRIPT: &str = r#"#!/bin/bash
# deploy [SERVICE]: builds your ~/accountservice on the class's server and
# rolls it out to your lab, with no failed request (goblog-lab deploy).
set -u
service="${1:-accountservice}"
status=1
while IFS= read -r line; do
  case "$line" in
    "GOBLOG-EXIT "*) status="${line#GOBLOG-EXIT }" ;;
    *) printf '%s
' "$line" ;;
  esac
done < <(curl -sS -N --max-time 900 -X POST   -H "Authorization: Bearer $(cat ~/.config/goblog-lab-token)"   "$GOBLOG_CLASS_URL/deploy/$service" || echo "deploy: the class's server did not answer at $GOBLOG_CLASS_URL (is \`goblog-lab class serve\` running?)")
exit "$status"
"#;

/// A tar of the learner's files, each owned by uid 1000.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_mtime(0);
        header.set_cksum();
        header
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.0
            .append_data(&mut header, format!("{path}/"), std::io::empty())
            .with_context(|| format!("packing {path}"))
    }

    fn file(&mut self, path: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, bytes.len() as u64, mode);
        self.0
            .append_data(&mut header, path, bytes)
            .with_context(|| format!("packing {path}"))
    }

    /// `from`'s files under `to`, leaving out build output.
    fn tree(&mut self, from: &Path, to: &str) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(from)
            .with_context(|| format!("reading {}", from.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let inside = format!("{to}/{name}");
            if path.is_dir() {
                self.dir(&inside)?;
                self.tree(&path, &inside)?;
            } else if path.is_file() {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                self.file(&inside, &bytes, 0o644)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>> {
        self.0.into_inner().context("packing the console's files")
    }
}

/// Removes a console (not its source volume).
pub async fn remove(docker: &Docker, class: &str, number: u32) -> Result<()> {
    let name = container_name(class, number);
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    tolerate(docker.remove_container(&name, Some(options)).await, GONE)
        .with_context(|| format!("removing the console {name}"))?;
    Ok(())
}

/// Removes every container and volume of `class`; returns how many.
pub async fn remove_class(docker: &Docker, class: &str) -> Result<(usize, usize)> {
    let filter = HashMap::from([("label".to_string(), vec![format!("{LABEL_CLASS}={class}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .context("listing the class's containers")?;
    for container in &containers {
        if let Some(id) = &container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            tolerate(docker.remove_container(id, Some(options)).await, GONE)
                .context("removing a console")?;
        }
    }
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .context("listing the class's networks")?;
    for network in &networks {
        if let Some(name) = &network.name {
            tolerate(docker.remove_network(name).await, GONE)
                .with_context(|| format!("removing network {name}"))?;
        }
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .context("listing the class's volumes")?
        .volumes
        .unwrap_or_default();
    for volume in &volumes {
        tolerate(
            docker
                .remove_volume(
                    &volume.name,
                    Some(RemoveVolumeOptionsBuilder::default().force(true).build()),
                )
                .await,
            GONE,
        )
        .with_context(|| format!("removing volume {}", volume.name))?;
    }
    Ok((containers.len(), volumes.len()))
}
