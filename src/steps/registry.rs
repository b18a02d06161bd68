//! The lab's own registry: the piece that replaces a Docker Hub account.
//!
//! It runs Debian's docker-registry from the node image on the host engine,
//! joined to the lab network under the name `LAB-registry`, and is
//! published on 127.0.0.1 only. This machine pushes to 127.0.0.1:PORT (which
//! dockerd treats as insecure-by-default loopback); the nodes pull from
//! `LAB-registry:5000`, which each inner engine lists as an insecure
//! registry. Debian's default config turns on htpasswd auth (every request
//! answers 401), so the container gets a config of its own.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;

use crate::docker::{drain, tolerate, ALREADY, LABEL_LAB, LABEL_ROLE};
use crate::driver::LabNetwork;
use crate::error::{Context, Error, Result};
use crate::http::HttpClient;
use crate::lab::state::RegistryState;
use crate::steps::images::LocalImage;

const CONFIG: &str = "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
";

pub fn container_name(lab: &str) -> String {
    format!("{lab}-registry")
}

/// Refuses a fixed port that something already holds, before the lab makes
/// anything, so the failure costs nothing to undo.
pub fn check_port_free(port: u16) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map(drop)
        .map_err(|_| Error::PortInUse {
            port,
            purpose: "the lab registry",
            flag: "--registry-port",
        })
}

/// Starts the registry and waits until it answers on 127.0.0.1.
pub async fn start(
    docker: &Docker,
    lab: &str,
    network: &LabNetwork,
    node_image: &str,
    port: u16,
) -> Result<RegistryState> {
    let name = container_name(lab);
    let host = HostConfig {
        network_mode: Some(network.state.name.clone()),
        port_bindings: Some(HashMap::from([(
            "5000/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(if port == 0 {
                    String::new()
                } else {
                    port.to_string()
                }),
            }]),
        )])),
        init: Some(true),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(node_image.to_string()),
        hostname: Some(name.clone()),
        cmd: Some(vec![
            "docker-registry".into(),
            "serve".into(),
            "/etc/goblog-lab/registry.yml".into(),
        ]),
        exposed_ports: Some(vec!["5000/tcp".to_string()]),
        labels: Some(HashMap::from([
            (LABEL_LAB.to_string(), lab.to_string()),
            (LABEL_ROLE.to_string(), "registry".to_string()),
        ])),
        host_config: Some(host),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.state.name.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(network.registry_address().to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .context("creating the lab registry")?;
    docker
        .upload_to_container(
            &name,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            bollard::body_full(
                crate::tarball::pack([("etc/goblog-lab/registry.yml", CONFIG.as_bytes(), 0o644)])?
                    .into(),
            ),
        )
        .await
        .context("configuring the lab registry")?;
    docker.start_container(&name, None).await.map_err(|err| {
        let message = crate::error::docker_message(&err);
        if port != 0
            && (message.contains("address already in use")
                || message.contains("port is already allocated"))
        {
            Error::PortInUse {
                port,
                purpose: "the lab registry",
                flag: "--registry-port",
            }
        } else {
            Error::Docker {
                action: "starting the lab registry".into(),
                message,
            }
        }
    })?;
    let host_port = published_port(docker, &name).await?;
    let state = RegistryState {
        container: name.clone(),
        push_address: format!("127.0.0.1:{host_port}"),
        pull_address: format!("{name}:5000"),
    };
    wait_ready(&state.push_address).await?;
    Ok(state)
}

/// Starts the lab's registry again after `goblog-lab stop`. Docker picks a
/// new host port when the lab asked for any free one, so this returns the
/// address to push to now.
pub async fn restart(docker: &Docker, registry: &RegistryState) -> Result<RegistryState> {
    tolerate(
        docker.start_container(&registry.container, None).await,
        ALREADY,
    )
    .context("starting the lab registry")?;
    let port = published_port(docker, &registry.container).await?;
    let state = RegistryState {
        push_address: format!("127.0.0.1:{port}"),
        ..registry.clone()
    };
    wait_ready(&state.push_address).await?;
    Ok(state)
}

pub async fn stop(docker: &Docker, registry: &RegistryState) -> Result<()> {
    tolerate(
        docker.stop_container(&registry.container, None).await,
        ALREADY,
    )
    .context("stopping the lab registry")
}

async fn published_port(docker: &Docker, name: &str) -> Result<u16> {
    let inspect = docker
        .inspect_container(name, None)
        .await
        .context("inspecting the lab registry")?;
    inspect
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|ports| ports.get("5000/tcp").cloned().flatten())
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port?.parse().ok()))
        .ok_or_else(|| Error::failed("the lab registry has no published port"))
}

async fn wait_ready(push_address: &str) -> Result<()> {
    let http = HttpClient::new();
    let url = format!("http://{push_address}/v2/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match http.get(&url, Duration::from_secs(2)).await {
            Ok(response) if response.status == 200 => return Ok(()),
            Ok(response) => format!("HTTP {}", response.status),
            Err(err) => err,
        };
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "the lab registry did not answer on {url}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes a host image into the lab registry; returns the reference the
/// nodes pull it by.
pub async fn push(docker: &Docker, registry: &RegistryState, image: &LocalImage) -> Result<String> {
    let push_repo = format!("{}/{}", registry.push_address, image.short_name());
    docker
        .tag_image(
            &image.reference(),
            Some(
                TagImageOptionsBuilder::default()
                    .repo(&push_repo)
                    .tag(&image.tag)
                    .build(),
            ),
        )
        .await
        .with_context(|| format!("tagging {}", image.reference()))?;
    let pushed = drain(
        docker.push_image(
            &push_repo,
            Some(PushImageOptionsBuilder::default().tag(&image.tag).build()),
            None,
        ),
        &format!("pushing {} to the lab registry", image.reference()),
    )
    .await;
    // The push tag names this lab's port; left behind, every lab would add
    // one more tag to the host engine. Untag only: the image stays.
    let untagged = docker
        .remove_image(
            &format!("{push_repo}:{}", image.tag),
            Some(RemoveImageOptionsBuilder::default().noprune(true).build()),
            None,
        )
        .await
        .with_context(|| format!("untagging {push_repo}:{}", image.tag));
    pushed?;
    untagged?;
    Ok(pull_reference(registry, image))
}

/// The reference the nodes pull `image` by, once pushed.
pub fn pull_reference(registry: &RegistryState, image: &LocalImage) -> String {
    format!(
        "{}/{}:{}",
        registry.pull_address,
        image.short_name(),
        image.tag
    )
}
