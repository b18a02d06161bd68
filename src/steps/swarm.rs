//! Swarm membership: `swarm init` on the first manager, joins with the
//! saved tokens, and the blog's `my_network` overlay.

use std::collections::HashMap;

use bollard::models::{NetworkCreateRequest, SwarmInitRequest, SwarmJoinRequest};
use bollard::Docker;

use crate::docker::LABEL_LAB;
use crate::error::{Context, Error, Result};
use crate::lab::state::{write_secret, LabDir, NodeState, Role};

pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}

/// Initialises the Swarm on `leader`, advertising its lab address, and
/// saves both join tokens (0600) as the blog had the user copy them.
pub async fn init(docker: &Docker, leader: &NodeState, dir: &LabDir) -> Result<JoinTokens> {
    docker
        .init_swarm(SwarmInitRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: Some(leader.address.to_string()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("swarm init on {}", leader.hostname))?;
    let swarm = docker
        .inspect_swarm()
        .await
        .context("reading the join tokens")?;
    let tokens = swarm
        .join_tokens
        .ok_or_else(|| Error::failed("the new Swarm reported no join tokens"))?;
    let tokens = JoinTokens {
        worker: tokens.worker.unwrap_or_default(),
        manager: tokens.manager.unwrap_or_default(),
    };
    write_secret(&dir.join_token(Role::Worker), tokens.worker.as_bytes())?;
    write_secret(&dir.join_token(Role::Manager), tokens.manager.as_bytes())?;
    Ok(tokens)
}

/// Drops the ingress network on a kernel without IPVS. Its routing mesh
/// cannot work there, and every node would still build its sandbox (a
/// namespace, a bridge, dozens of iptables rules) at the first task: about
/// a second of each deploy, for nothing. A service published in ingress mode
/// then fails with a clear error instead of silently never answering.
pub async fn remove_ingress(docker: &Docker) -> Result<()> {
    docker
        .remove_network("ingress")
        .await
        .context("removing the ingress network (no IPVS for its routing mesh)")
}

/// Joins `node` to the Swarm led by `leader`, with the token for its role.
pub async fn join(
    docker: &Docker,
    node: &NodeState,
    leader: &NodeState,
    tokens: &JoinTokens,
) -> Result<()> {
    let token = match node.role {
        Role::Manager => &tokens.manager,
        Role::Worker => &tokens.worker,
    };
    let joined = docker
        .join_swarm(SwarmJoinRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: Some(node.address.to_string()),
            remote_addrs: Some(vec![format!("{}:2377", leader.address)]),
            join_token: Some(token.clone()),
            ..Default::default()
        })
        .await;
    match joined {
        // The engine gives up waiting after 20 s but goes on joining (a
        // manager's Raft join under TCG took longer: `create --driver qemu
        // --managers 3`, 2026-12-06): wait for it, as its message says.
        Err(err) if crate::error::docker_message(&err).contains("continue in the background") => {
            wait_until_joined(docker, node).await
        }
        joined => joined.with_context(|| format!("{} joining the Swarm", node.hostname)),
    }
}

/// Waits up to 5 minutes for a join the engine finishes in the background.
async fn wait_until_joined(docker: &Docker, node: &NodeState) -> Result<()> {
    use bollard::models::LocalNodeState;
    crate::retry::until_deadline(
        std::time::Duration::from_secs(300),
        std::time::Duration::from_secs(1),
        || async {
            let swarm = docker.info().await.ok().and_then(|info| info.swarm);
            let state = swarm.as_ref().and_then(|s| s.local_node_state);
            match state {
                Some(LocalNodeState::ACTIVE) => Ok(std::ops::ControlFlow::Break(())),
                // The engine stopped trying: say what it said.
                Some(LocalNodeState::ERROR) => Err(Error::failed(format!(
                    "{} joining the Swarm: {}",
                    node.hostname,
                    swarm
                        .and_then(|s| s.error)
                        .unwrap_or_else(|| "the engine gave up".into())
                ))),
                other => Ok(std::ops::ControlFlow::Continue(
                    other.map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                )),
            }
        },
        |last| {
            Error::failed(format!(
                "{} joining the Swarm: still not active after 300 s (last state {last})",
                node.hostname
            ))
        },
    )
    .await
}

/// Swarm node IDs to the hostnames `docker node ls` shows, for naming
/// where tasks run.
pub async fn node_hostnames(manager: &Docker) -> Result<HashMap<String, String>> {
    let nodes = manager
        .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
        .await
        .context("listing the Swarm's nodes")?;
    Ok(nodes
        .into_iter()
        .filter_map(|n| Some((n.id?, n.description?.hostname?)))
        .collect())
}

/// The blog's `docker network create --driver overlay my_network`, made
/// attachable so plain containers (and `goblog-lab exec`) can join it.
pub async fn create_overlay(docker: &Docker, name: &str, lab: &str) -> Result<()> {
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(HashMap::from([(LABEL_LAB.to_string(), lab.to_string())])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the overlay network {name}"))?;
    Ok(())
}
