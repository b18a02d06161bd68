//! Connections to Docker engines: the host engine that runs the lab, and the
//! engines inside the nodes, reached over TLS with the lab's client
//! certificate.
//!
//! Both negotiate the API version down to what the engine speaks (Debian's
//! docker.io 20.10 answers 1.41; bollard would otherwise ask for a far newer
//! one) and refuse engines older than goblog-lab needs, in one line.

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use crate::error::{docker_message, Context, Error, Result};

/// Labels that find every object of a lab without the state file.
pub const LABEL_LAB: &str = "io.goblog-lab.lab";
pub const LABEL_ROLE: &str = "io.goblog-lab.role";

/// Swarm configs with `Data`, dnsrr with host-mode ports, placement
/// preferences: all present by API 1.40 (Docker 19.03).
const MIN_API: (u32, u32) = (1, 40);

/// Whether an engine's `info` OperatingSystem is Docker Desktop's: its
/// engine runs in a VM, so this host neither routes to container addresses
/// nor shares the engine's kernel.
pub fn is_docker_desktop(operating_system: &str) -> bool {
    operating_system.contains("Docker Desktop")
}

/// The engine the lab's containers run on.
pub async fn connect_host() -> Result<Docker> {
    let host = host_address();
    let docker = Docker::connect_with_host(&host).map_err(|err| Error::NoDaemon {
        host: host.clone(),
        reason: docker_message(&err),
    })?;
    check_engine(docker, &host).await
}

/// `DOCKER_HOST`, unless it points into a lab: after `eval "$(goblog-lab env)"`
/// it names a lab's manager, and goblog-lab must still drive the host engine.
/// `GOBLOG_LAB_DOCKER_HOST` overrides both.
pub fn host_address() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(host) = var("GOBLOG_LAB_DOCKER_HOST") {
        return host;
    }
    match var("DOCKER_HOST") {
        Some(host) if var("GOBLOG_LAB_NAME").is_none() => host,
        _ => "unix:///var/run/docker.sock".to_string(),
    }
}

/// The Docker engine inside a node, by its lab address.
pub async fn connect_node(docker_host: &str, certs: &Path) -> Result<Docker> {
    let docker = node_client(docker_host, certs)?;
    check_engine(docker, docker_host).await
}

/// A client for a node's engine without talking to it yet (used while the
/// node is still starting).
pub fn node_client(docker_host: &str, certs: &Path) -> Result<Docker> {
    Docker::connect_with_ssl(
        docker_host,
        &certs.join("key.pem"),
        &certs.join("cert.pem"),
        &certs.join("ca.pem"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|err| Error::NoDaemon {
        host: docker_host.to_string(),
        reason: docker_message(&err),
    })
}

async fn check_engine(docker: Docker, host: &str) -> Result<Docker> {
    let no_daemon = |reason: String| Error::NoDaemon {
        host: host.to_string(),
        reason,
    };
    match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
        Err(_) => return Err(no_daemon("no answer in 10 s".into())),
        Ok(Err(err)) => return Err(no_daemon(docker_message(&err))),
        Ok(Ok(_)) => {}
    }
    // One /version call: negotiation lowers the client to the engine's API
    // version, which is then the version to judge.
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|err| no_daemon(docker_message(&err)))?;
    let version = docker.client_version();
    if !is_supported(version.major_version, version.minor_version) {
        return Err(Error::DaemonTooOld {
            host: host.to_string(),
            found: format!("{}.{}", version.major_version, version.minor_version),
            needed: format!("{}.{}", MIN_API.0, MIN_API.1),
        });
    }
    Ok(docker)
}

fn is_supported(major: usize, minor: usize) -> bool {
    (major as u32, minor as u32) >= MIN_API
}

/// The engine answers 404 for an object already gone and 304 for a
/// container already started or stopped.
pub const GONE: u16 = 404;
pub const ALREADY: u16 = 304;

/// Whether the engine refused with HTTP `status`.
pub fn has_status(err: &bollard::errors::Error, status: u16) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Counts an answer of `status` as success: removing what is gone, or
/// starting what runs, leaves things as asked, so these calls are idempotent.
pub fn tolerate(
    result: std::result::Result<(), bollard::errors::Error>,
    status: u16,
) -> std::result::Result<(), bollard::errors::Error> {
    match result {
        Err(err) if has_status(&err, status) => Ok(()),
        other => other,
    }
}

/// The containers, volumes and networks that carry a label: how every
/// lab object is found, with or without the state file.
#[derive(Debug, Default)]
pub struct Labelled {
    pub containers: Vec<bollard::models::ContainerSummary>,
    pub volumes: Vec<bollard::models::Volume>,
    pub networks: Vec<bollard::models::Network>,
}

impl Labelled {
    /// Everything of lab `lab`.
    pub async fn of_lab(docker: &Docker, lab: &str) -> Result<Self> {
        Self::list(docker, &format!("{LABEL_LAB}={lab}")).await
    }

    /// Everything of any lab.
    pub async fn of_all_labs(docker: &Docker) -> Result<Self> {
        Self::list(docker, LABEL_LAB).await
    }

    async fn list(docker: &Docker, label: &str) -> Result<Self> {
        use bollard::query_parameters::{
            ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
        };
        let filters: std::collections::HashMap<String, Vec<String>> =
            std::iter::once(("label".to_string(), vec![label.to_string()])).collect();
        let (containers, volumes, networks) = tokio::try_join!(
            docker.list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build()
            )),
            docker.list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build()
            )),
            docker.list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build()
            )),
        )
        .context("listing the labs' containers, volumes and networks")?;
        Ok(Labelled {
            containers,
            volumes: volumes.volumes.unwrap_or_default(),
            networks,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.volumes.is_empty() && self.networks.is_empty()
    }

    /// The lab names found on these objects.
    pub fn lab_names(&self) -> std::collections::BTreeSet<String> {
        let containers = self
            .containers
            .iter()
            .filter_map(|c| c.labels.as_ref()?.get(LABEL_LAB));
        let volumes = self.volumes.iter().filter_map(|v| v.labels.get(LABEL_LAB));
        let networks = self
            .networks
            .iter()
            .filter_map(|n| n.labels.as_ref()?.get(LABEL_LAB));
        containers.chain(volumes).chain(networks).cloned().collect()
    }
}

/// Drains a Docker progress stream (pull, push, build, import), failing on
/// the first error the engine reports inside it.
pub async fn drain<S, T>(stream: S, action: &str) -> Result<Vec<T>>
where
    S: futures_util::Stream<Item = std::result::Result<T, bollard::errors::Error>>,
{
    use futures_util::StreamExt;
    let mut items = Vec::new();
    futures_util::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => items.push(item),
            Err(err) => {
                return Err(Error::Docker {
                    action: action.to_string(),
                    message: docker_message(&err),
                })
            }
        }
    }
    Ok(items)
}

/// How the lab runs a program of its own on a node, beside the Swarm (the
/// registry, keepalived): a container `name` on the node's own network,
/// back with the engine after a restart, with `files` (configuration,
/// certificates) copied in before it first runs. `what` names it in
/// errors.
pub async fn run_on_node(
    engine: &Docker,
    name: &str,
    mut body: bollard::models::ContainerCreateBody,
    files: &[(&str, &[u8], u32)],
    what: &str,
) -> Result<()> {
    use bollard::models::{RestartPolicy, RestartPolicyNameEnum};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder,
    };
    let host = body.host_config.get_or_insert_with(Default::default);
    host.network_mode = Some("host".into());
    host.restart_policy = Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        ..Default::default()
    });
    engine
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .with_context(|| format!("creating {what}"))?;
    engine
        .upload_to_container(
            name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(crate::tarball::pack(files.iter().copied())?.into()),
        )
        .await
        .with_context(|| format!("configuring {what}"))?;
    engine
        .start_container(name, None)
        .await
        .with_context(|| format!("starting {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert!(is_supported(1, 41));
        assert!(is_supported(1, 40));
        assert!(!is_supported(1, 9));
        assert!(!is_supported(1, 24));
        assert!(is_supported(1, 100));
    }
}
