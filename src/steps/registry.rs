//! The lab's own registry: the piece that replaces a Docker Hub account.
//!
//! Debian's docker-registry (the CNCF distribution registry), alone in a
//! small image, runs on the first manager's engine and listens on the
//! manager's lab address, port 5000, over TLS with a certificate from the
//! lab CA, and it answers only clients with a certificate from that CA: on
//! real hosts that address is on a network others share. Every node has
//! the CA and a client certificate under `/etc/docker/certs.d/ADDR:5000`
//! (the provisioner puts them there), so no engine needs
//! `insecure-registries`.
//!
//! This machine's engine cannot be given a client certificate without
//! changing its configuration, so it pushes to a [`Gateway`] on 127.0.0.1
//! instead: plain HTTP in (dockerd treats loopback registries as insecure
//! and speaks HTTP to them), TLS with the lab's client certificate out,
//! through the provider's forward to the manager. Both live only while the
//! command that pushes runs.
//!
//! Labs made before the registry moved to the manager keep theirs on this
//! machine's engine ([`RegistryHost::HostEngine`]); `stop`, `start` and
//! `deploy` still drive those with the functions at the end.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::ops::ControlFlow;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;

use crate::docker::{drain, tolerate, ALREADY, LABEL_LAB, LABEL_ROLE};
use crate::error::{Context, Error, Result};
use crate::http::HttpClient;
use crate::lab::state::{LabState, NodeState, RegistryHost, RegistryState, Role};
use crate::pki::Bundle;
use crate::steps::images::LocalImage;

/// The registry's configuration: it listens on the manager's lab address
/// only (every address of it, where it may hold the virtual `$ManagerIP`),
/// with the container on the host's network (see [`start`]).
fn config(listen: Option<Ipv4Addr>) -> String {
    let address = listen.map_or_else(String::new, |a| a.to_string());
    format!(
        "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: {address}:{port}
  # Upload locations relative to the request, not https://HOST: this
  # machine's engine speaks plain HTTP to the gateway and must stay on it.
  relativeurls: true
  tls:
    certificate: /etc/goblog-lab/registry-cert.pem
    key: /etc/goblog-lab/registry-key.pem
    clientcas:
      - /etc/goblog-lab/lab-ca.pem
",
        port = RegistryState::PORT
    )
}

pub const CONTAINER: &str = "goblog-lab-registry";

/// Where the nodes pull from: the manager's lab address.
pub fn pull_address(manager: Ipv4Addr) -> String {
    format!("{manager}:{}", RegistryState::PORT)
}

/// The registries of a lab with a virtual `$ManagerIP` at `vip`: one on
/// every manager, pulled from through that address.
pub fn on_every_manager(vip: Ipv4Addr) -> RegistryState {
    RegistryState {
        runs_on: RegistryHost::EveryManager,
        container: CONTAINER.into(),
        push_address: String::new(),
        pull_address: pull_address(vip),
    }
}

/// The machines that run a registry of the lab: the first manager, or every
/// manager.
pub fn hosts(state: &LabState) -> Vec<NodeState> {
    match state.registry.runs_on {
        RegistryHost::EveryManager => state
            .nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .cloned()
            .collect(),
        _ => state.nodes.iter().take(1).cloned().collect(),
    }
}

/// The address `host`'s registry listens on: its lab address, or all of
/// its machine's when it may hold the virtual `$ManagerIP`.
pub fn listen(state: &LabState, host: &NodeState) -> Option<Ipv4Addr> {
    match state.registry.runs_on {
        RegistryHost::EveryManager => None,
        _ => Some(host.address),
    }
}

/// Where `host`'s own engine pushes to `host`'s own registry: its lab
/// address where every manager has a registry (the virtual address would
/// reach only the holder's), else the address the nodes pull from.
pub fn push_address_on(state: &LabState, host: &NodeState) -> String {
    match state.registry.runs_on {
        RegistryHost::EveryManager => pull_address(host.address),
        _ => state.registry.pull_address.clone(),
    }
}

/// Every registry address an engine of the lab may be asked to use, for
/// its `certs.d`: where the nodes pull, and each manager's own where every
/// manager has a registry.
pub fn addresses(state: &LabState) -> Vec<String> {
    let mut found = vec![state.registry.pull_address.clone()];
    if state.registry.runs_on == RegistryHost::EveryManager {
        found.extend(hosts(state).iter().map(|h| pull_address(h.address)));
    }
    found
}

/// The registry a lab runs on the manager at `manager`.
pub fn on_manager(manager: Ipv4Addr) -> RegistryState {
    RegistryState {
        runs_on: RegistryHost::Manager,
        container: CONTAINER.into(),
        push_address: String::new(),
        pull_address: pull_address(manager),
    }
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

/// Starts the registry on the manager's engine, from `image` (already on
/// that engine), with `tls` made for the manager's addresses, listening on
/// `listen` (every address for `None`).
pub async fn start(
    manager: &Docker,
    lab: &str,
    listen: Option<Ipv4Addr>,
    image: &LocalImage,
    tls: &Bundle,
    ca_pem: &str,
) -> Result<()> {
    let labels = HashMap::from([
        (LABEL_LAB.to_string(), lab.to_string()),
        (LABEL_ROLE.to_string(), "registry".to_string()),
    ]);
    manager
        .create_volume(VolumeCreateRequest {
            name: Some(CONTAINER.into()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .context("creating the lab registry's volume")?;
    // On the manager's own network, listening on its lab address only
    // (`config`): the manager's other networks see nothing, and the engine
    // has no bridge endpoint, NAT rule or docker-proxy to set up. Under TCG
    // that made the registry container's start 10 s instead of 19 s
    // (`docker run` on an idle VM of a lab). Back with the manager's engine
    // after `stop`/`start`.
    let body = ContainerCreateBody {
        image: Some(image.reference()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/var/lib/docker-registry".into()),
                source: Some(CONTAINER.into()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = config(listen);
    crate::docker::run_on_node(
        manager,
        CONTAINER,
        body,
        &[
            ("etc/goblog-lab/registry.yml", config.as_bytes(), 0o644),
            ("etc/goblog-lab/lab-ca.pem", ca_pem.as_bytes(), 0o644),
            (
                "etc/goblog-lab/registry-cert.pem",
                tls.cert_pem.as_bytes(),
                0o644,
            ),
            (
                "etc/goblog-lab/registry-key.pem",
                tls.key_pem.as_bytes(),
                0o600,
            ),
        ],
        "the lab registry",
    )
    .await
}

/// Waits until the registry answers through the gateway.
pub async fn wait_ready(gateway: &Gateway) -> Result<()> {
    wait_for(&format!("http://{}/v2/", gateway.local), |status| {
        status == 200
    })
    .await
}

/// A local door to the lab registry for this machine's engine: plain HTTP
/// on 127.0.0.1, TLS with the lab's client certificate to the registry.
#[must_use = "the gateway closes when dropped"]
pub struct Gateway {
    pub local: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

/// Opens a gateway on 127.0.0.1:`local_port` (any free port for 0) to the
/// registry at `upstream` (the provider's forward to the manager), which
/// must present a certificate for `registry_ip` from `ca_pem`.
pub async fn gateway(
    upstream: SocketAddr,
    local_port: u16,
    registry_ip: Ipv4Addr,
    ca_pem: &str,
    client: &Bundle,
) -> Result<Gateway> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;

    let bad_pem = |what: &str| Error::Pki(format!("reading the {what} for the registry gateway"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|_| bad_pem("lab CA"))?)
            .map_err(|_| bad_pem("lab CA"))?;
    }
    let chain = CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad_pem("client certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
        .map_err(|_| bad_pem("client key"))?;
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|err| Error::Pki(err.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|err| Error::Pki(err.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let server_name = ServerName::IpAddress(IpAddr::V4(registry_ip).into());

    let listener = crate::loopback::bind(local_port, "the gateway to the lab registry").await?;
    let local = listener
        .local_addr()
        .context("reading the registry gateway's port")?;
    let stop = crate::loopback::serve(listener, move |mut inbound| {
        let (connector, server_name) = (connector.clone(), server_name.clone());
        async move {
            // dockerd tries HTTPS first; a TLS hello gets a closed
            // connection, and dockerd goes on to plain HTTP at once.
            let mut first = [0u8; 1];
            if inbound.peek(&mut first).await.is_err() || first[0] == 0x16 {
                return;
            }
            let Ok(tcp) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            if let Ok(mut outbound) = connector.connect(server_name, tcp).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        }
    });
    Ok(Gateway { local, _stop: stop })
}

/// Whether the registry answers through the gateway now, asked once with
/// a short deadline: a manager that is down is left out of a push at once,
/// instead of after the engine's five retries.
pub async fn answers(gateway: &Gateway) -> Result<()> {
    let url = format!("http://{}/v2/", gateway.local);
    match HttpClient::new().get(&url, Duration::from_secs(3)).await {
        Ok(response) if response.status == 200 => Ok(()),
        Ok(response) => Err(Error::RegistryDown {
            url,
            last: format!("HTTP {}", response.status),
        }),
        Err(last) => Err(Error::RegistryDown { url, last }),
    }
}

async fn wait_for(url: &str, ready: impl Fn(u16) -> bool) -> Result<()> {
    let http = &HttpClient::new();
    let ready = &ready;
    crate::retry::until_deadline(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async move {
            Ok(match http.get(url, Duration::from_secs(2)).await {
                Ok(response) if ready(response.status) => ControlFlow::Break(()),
                Ok(response) => ControlFlow::Continue(format!("HTTP {}", response.status)),
                Err(err) => ControlFlow::Continue(err),
            })
        },
        |last| Error::RegistryDown {
            url: url.to_string(),
            last,
        },
    )
    .await
}

/// Pushes a host image to the lab registry through `push_address` (the
/// relay, or an older lab's published port); returns the reference the
/// nodes pull it by.
pub async fn push(
    docker: &Docker,
    push_address: &str,
    registry: &RegistryState,
    image: &LocalImage,
) -> Result<String> {
    let push_repo = format!("{push_address}/{}", image.short_name());
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
    // The push tag names a passing port; left behind, every push would add
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

/// Pushes an image that `engine` (a node's) already has under the name the
/// nodes pull it by (loaded there while the Swarm formed) from that engine:
/// one hop on the lab's network, with the node's own certificate for the
/// registry, instead of this machine's engine through a gateway and a
/// relay. Measured in a running lab: 0.16-0.25 s an image. A registry that
/// has only just started is asked again until it answers (30 s).
///
/// `to` is the registry to push to (`push_address_on`): where it is not the
/// pull address, the image is tagged for it first and untagged after.
pub async fn push_loaded(
    engine: &Docker,
    registry: &RegistryState,
    to: &str,
    image: &LocalImage,
) -> Result<String> {
    let repository = format!("{to}/{}", image.short_name());
    let retagged = to != registry.pull_address;
    if retagged {
        engine
            .tag_image(
                &pull_reference(registry, image),
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(&repository)
                        .tag(&image.tag)
                        .build(),
                ),
            )
            .await
            .with_context(|| format!("tagging {repository}:{}", image.tag))?;
    }
    let what = format!("pushing {repository}:{} from the manager", image.tag);
    crate::retry::until_deadline(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let pushed = drain(
                engine.push_image(
                    &repository,
                    Some(PushImageOptionsBuilder::default().tag(&image.tag).build()),
                    None,
                ),
                &what,
            )
            .await;
            Ok(match pushed {
                Ok(_) => ControlFlow::Break(()),
                Err(err) => ControlFlow::Continue(err.to_string()),
            })
        },
        |last| Error::RegistryDown {
            url: format!("https://{to}/v2/"),
            last,
        },
    )
    .await?;
    if retagged {
        engine
            .remove_image(
                &format!("{repository}:{}", image.tag),
                Some(RemoveImageOptionsBuilder::default().noprune(true).build()),
                None,
            )
            .await
            .with_context(|| format!("untagging {repository}:{}", image.tag))?;
    }
    Ok(pull_reference(registry, image))
}

/// Fills `host`'s own registry with the images the lab runs, pulled
/// through the virtual `$ManagerIP` from whichever manager holds it: a
/// manager that was down while `deploy` pushed has them again before it can
/// come to hold the address. Layers the registry has are not sent again.
pub async fn catch_up(engine: &Docker, state: &LabState, host: &NodeState) -> Result<()> {
    let to = push_address_on(state, host);
    for service in &state.services {
        let image = LocalImage::parse(&service.image);
        drain(
            engine.create_image(
                Some(
                    CreateImageOptionsBuilder::default()
                        .from_image(&image.repository)
                        .tag(&image.tag)
                        .build(),
                ),
                None,
                None,
            ),
            &format!("pulling {} on {}", service.image, host.hostname),
        )
        .await?;
        push_loaded(engine, &state.registry, &to, &image).await?;
    }
    Ok(())
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

/// Starts an older lab's registry (on this machine's engine) again after `goblog-lab stop`. Docker picks a
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
    wait_for(&format!("http://{}/v2/", state.push_address), |status| {
        status == 200
    })
    .await?;
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
        .ok_or_else(|| Error::RegistryDown {
            url: name.to_string(),
            last: "it has no published port".into(),
        })
}
