//! The boundary between "a lab needs N machines that run dockerd" and how
//! those machines come to exist.
//!
//! A provider answers machine questions only, as docker-machine's drivers
//! did (`libmachine/drivers/drivers.go`): make or adopt machines, tell each
//! one's address *after* it exists, put files on it, run a command on it,
//! start, stop and remove it. Everything after "a Docker engine with TLS
//! answers at ADDRESS:2376" (the Swarm, the registry, deploys, routing,
//! waiting) lives in `steps/` and never sees a provider.
//!
//! The providers: Docker-in-Docker containers on this machine's engine
//! (`dind`); existing hosts reached over SSH (`ssh`), or the same found
//! through docker-machine's store (`docker-machine`); and VMs under QEMU on
//! a host-only network (`qemu`), driven over SSH once they boot.

pub mod dind;
pub mod docker_machine;
pub mod qemu;
mod relay;
pub mod ssh;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::Result;
pub use crate::lab::kind::ProviderKind;
use crate::lab::state::{LabDir, LabState, NodeState, Publish, Role};
use crate::ui::Ui;

/// The port every node's Docker API listens on, TLS only, as docker-machine had it.
pub const DOCKER_TLS_PORT: u16 = 2376;

/// A file to place on a machine.
#[derive(Debug, Clone)]
pub struct NodeFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl NodeFile {
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        NodeFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        }
    }
}

/// What the lab asks a provider for: one machine, by name and role. Its
/// address is the provider's to give.
#[derive(Debug, Clone)]
pub struct MachinePlan {
    pub hostname: String,
    pub role: Role,
    /// Ports of the machine this host calls besides its Docker API (the
    /// services behind `$ManagerIP`, the registry). A provider whose
    /// machines this host cannot route to publishes them on 127.0.0.1.
    pub reached: Vec<Reached>,
}

/// A port of a machine that this host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub port: u16,
    /// Published under the same number where that is free on this host:
    /// the tutorial's `curl $ManagerIP:6767` then works as written.
    pub same_number: bool,
}

/// How a machine's dockerd takes the lab's configuration; the provisioner
/// (`crate::provision`) writes it accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineSetup {
    /// The machine starts dockerd itself once `/etc/docker/daemon.json`
    /// exists (a dind node waits for it).
    DaemonJson,
    /// dockerd is a systemd service of the host: the lab adds a drop-in and
    /// restarts it, and takes both away again on destroy.
    SystemdDropIn,
}

/// What `destroy` removed, for its summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// What was removed or given back, counted, by a noun first ("container",
    /// "host given back").
    pub items: Vec<(usize, &'static str)>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.items.iter().all(|(n, _)| *n == 0)
    }

    pub fn summary(&self) -> String {
        self.items
            .iter()
            .map(|(n, what)| {
                // The noun is the first word: "host given back".
                let (noun, rest) = what.split_once(' ').unwrap_or((what, ""));
                let s = if *n == 1 { "" } else { "s" };
                format!(
                    "{n} {noun}{s}{}{rest}",
                    if rest.is_empty() { "" } else { " " }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A command's result on a machine.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: i64,
    /// stdout and stderr, as a person would have seen them.
    pub output: String,
}

/// Where a machine's own CPU and memory figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineScope {
    /// A VM or a host: the whole kernel's (`/proc/stat`, `/proc/meminfo`).
    Whole,
    /// A container on a shared kernel (a dind node): its own cgroup, named
    /// in `/proc/1/cgroup`, plus the cgroups of the containers its engine
    /// runs, which sit beside it rather than under it when the node shares
    /// the host's cgroup namespace.
    OwnCgroup,
}

/// A local address that reaches a port of a machine for as long as it is
/// held: how this host's engine pushes to the lab registry on the manager.
#[must_use = "the forward closes when dropped"]
pub struct Forward {
    pub local: SocketAddr,
    /// Stops the forward when dropped.
    pub _guard: Box<dyn Send + Sync>,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// How the machines' dockerd takes its configuration.
    fn engine_setup(&self) -> EngineSetup;

    /// Makes (or adopts) one machine per plan, in order, and returns them
    /// with the addresses they have now that they exist.
    async fn create(&self, plans: &[MachinePlan]) -> Result<Vec<NodeState>>;

    /// Writes files on a machine, atomically, as root.
    async fn put_files(&self, node: &NodeState, files: &[NodeFile]) -> Result<()>;

    /// Runs a shell command on a machine as root.
    async fn run(&self, node: &NodeState, command: &str) -> Result<CommandOutput>;

    /// Stops a machine's lab engine, keeping its disk and Swarm state.
    async fn stop(&self, node: &NodeState) -> Result<()>;

    /// Starts it again; returns the address it has now (a VM's may change).
    async fn start(&self, node: &NodeState) -> Result<std::net::Ipv4Addr>;

    /// Fails with the reason when the machine has stopped (crashed, killed).
    async fn ensure_running(&self, node: &NodeState) -> Result<()>;

    /// An address on 127.0.0.1 (`local_port`, or any free one for 0) that
    /// forwards to `port` on the machine's lab address while it is held.
    async fn forward(&self, node: &NodeState, port: u16, local_port: u16) -> Result<Forward>;

    /// Hands the terminal to a command on the machine (`exec`, `shell`);
    /// returns its exit code.
    async fn interactive(&self, node: &NodeState, command: &[String]) -> Result<i32>;

    /// What a VM provider must remember to boot the lab's machines again.
    fn vm_state(&self) -> Option<crate::lab::state::VmState> {
        None
    }

    /// What a machine's own CPU and memory are, for `bench`'s resources.
    fn machine_scope(&self) -> MachineScope {
        MachineScope::Whole
    }

    /// How this host reaches the machines `create` made.
    fn publish(&self) -> Publish {
        Publish::Direct
    }

    /// The machine's ports published on 127.0.0.1 as they are now (a
    /// restart may give them new host ports), by the machine's port.
    async fn published_ports(&self, node: &NodeState) -> Result<BTreeMap<u16, u16>> {
        Ok(node.published.clone())
    }

    /// Removes the lab's machines, or gives adopted hosts back as they were.
    /// Works twice in a row.
    async fn remove(&self, state: Option<&LabState>) -> Result<Removed>;
}

/// The provider that made a saved lab, ready to drive it.
pub async fn for_lab(state: &LabState, dir: &LabDir, ui: &Ui) -> Result<Box<dyn Provider>> {
    match ProviderKind::parse(&state.driver)? {
        ProviderKind::Dind => {
            let host = crate::docker::connect_host().await?;
            Ok(Box::new(
                dind::DindProvider::new(host, &state.name, ui.clone())
                    .publishing(Some(state.publish)),
            ))
        }
        ProviderKind::Ssh | ProviderKind::DockerMachine => {
            Ok(Box::new(ssh::SshProvider::for_lab(state, dir, ui.clone())?))
        }
        ProviderKind::Qemu => Ok(Box::new(qemu::QemuProvider::for_lab(
            state,
            dir,
            ui.clone(),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_summaries_count_the_noun() {
        let removed = Removed {
            items: vec![(3, "container"), (1, "network"), (2, "host given back")],
        };
        assert_eq!(
            removed.summary(),
            "3 containers, 1 network, 2 hosts given back"
        );
        assert!(!removed.is_empty());
        assert!(Removed {
            items: vec![(0, "volume")]
        }
        .is_empty());
    }
}
