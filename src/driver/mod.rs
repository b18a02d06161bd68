//! The boundary between "a lab needs N Docker engines on one network" and
//! how those engines come to exist.
//!
//! Docker-in-Docker containers are the first driver. docker-machine VMs and
//! plain SSH hosts fit behind the same trait: each makes a network the host
//! can reach, makes nodes that run dockerd with the files it is given (TLS
//! material, daemon.json), and removes all of it again.

pub mod dind;

use std::net::Ipv4Addr;

use async_trait::async_trait;

use crate::error::Result;
use crate::lab::state::{NetworkState, NodeState, Role};

/// A file to place on a node before its dockerd starts.
#[derive(Debug, Clone)]
pub struct NodeFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// What the lab asks a driver for: one node.
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub hostname: String,
    pub role: Role,
    pub address: Ipv4Addr,
    pub files: Vec<NodeFile>,
}

/// The port every node's Docker API listens on, TLS only, as docker-machine had it.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// An address plan for the lab's /24: the gateway is .1, the registry .2,
/// managers from .10 and workers from .100, so an address tells the role.
#[derive(Debug, Clone)]
pub struct LabNetwork {
    pub state: NetworkState,
    pub base: Ipv4Addr,
}

impl LabNetwork {
    pub fn host(&self, last_octet: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, last_octet)
    }
    pub fn registry_address(&self) -> Ipv4Addr {
        self.host(2)
    }
    pub fn node_address(&self, role: Role, index: u32) -> Ipv4Addr {
        let first = match role {
            Role::Manager => 10,
            Role::Worker => 100,
        };
        self.host(first + index as u8)
    }
}

/// What `destroy` removed, for its summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub containers: usize,
    pub volumes: usize,
    pub networks: usize,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.containers + self.volumes + self.networks == 0
    }
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;

    /// Makes the network the nodes, the registry and this host share.
    async fn create_network(&self) -> Result<LabNetwork>;

    /// Makes and starts the nodes from `image` (a Docker image for dind; a
    /// VM image for a VM driver). Returns once each node runs; its engine
    /// may still be starting (wait on `/_ping`).
    async fn create_nodes(
        &self,
        network: &LabNetwork,
        image: &str,
        plans: &[NodePlan],
    ) -> Result<Vec<NodeState>>;

    /// Stops a node, keeping its disk (the engine's `/var/lib/docker`, and
    /// with it the node's Swarm membership) for [`Driver::start_node`].
    async fn stop_node(&self, node: &NodeState) -> Result<()>;

    /// Starts a stopped node again, at the same address.
    async fn start_node(&self, node: &NodeState) -> Result<()>;

    /// Fails with the reason when the node has stopped (crashed, killed).
    async fn ensure_running(&self, node: &NodeState) -> Result<()>;

    /// Whether the nodes' kernel has IPVS, which Swarm's routing mesh needs.
    async fn has_ipvs(&self, node: &NodeState) -> Result<bool>;

    /// Runs a command on a node; returns its exit code and combined output.
    async fn exec(&self, node: &NodeState, command: &[&str]) -> Result<(i64, String)>;

    /// Removes every node, volume and network of the lab, found by label, so
    /// it works without the state file and twice in a row.
    async fn destroy(&self) -> Result<Removed>;
}
