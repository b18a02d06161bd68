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
//! through docker-machine's store (`docker_machine`); and VMs under QEMU on
//! a host-only network (`qemu`), driven over SSH once they boot.
//!
//! The kind is matched here and nowhere else: [`for_spec`] and [`for_lab`]
//! open a provider, and the rest of the program asks it (its preflight,
//! its step's wording, whether it adopts hosts or shares this kernel).
//! The modules of the providers are private to this one.

mod dind;
mod docker_machine;
mod docker_machine_store;
mod qemu;
mod relay;
mod ssh;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::Result;
pub use crate::lab::kind::ProviderKind;
use crate::lab::spec::LabSpec;
use crate::lab::state::{LabDir, LabState, NodeState, Publish, Role, SshState};
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

    /// Counts `more` in, noun by noun.
    pub fn add(&mut self, more: &Removed) {
        for &(n, what) in &more.items {
            match self.items.iter_mut().find(|(_, w)| *w == what) {
                Some((count, _)) => *count += n,
                None => self.items.push((n, what)),
            }
        }
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

    /// What the machines step's status line says this provider does
    /// ("Starting nodes", "Booting VMs").
    fn making(&self) -> &'static str;

    /// True when the machines are hosts that exist already and are given
    /// back on destroy: they are checked, before anything changes on them,
    /// by the provisioner's preflight, and may have Docker installed.
    fn adopts_hosts(&self) -> bool {
        false
    }

    /// True when the machines run on this machine's kernel (containers), so
    /// this kernel's IPVS decides whether the routing mesh works.
    fn shares_this_kernel(&self) -> bool {
        false
    }

    /// What this provider needs of this machine before it makes anything,
    /// as docker-machine's drivers answer `PreCreateCheck`: the first
    /// missing thing is the error, with how to get it.
    async fn pre_create_check(&self) -> Result<()> {
        Ok(())
    }

    /// Makes (or adopts) one machine per plan, in order, and returns them
    /// with the addresses they have now that they exist. `node_image` is
    /// the lab's node image on this machine's engine, for providers whose
    /// machines are containers.
    async fn create(&self, plans: &[MachinePlan], node_image: &str) -> Result<Vec<NodeState>>;

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

    /// A login shell on the machine (`shell`); returns its exit code.
    async fn shell(&self, node: &NodeState) -> Result<i32> {
        self.interactive(node, &["bash".to_string(), "-l".to_string()])
            .await
    }

    /// What a VM provider must remember to boot the lab's machines again.
    fn vm_state(&self) -> Option<crate::lab::state::VmState> {
        None
    }

    /// What a provider of adopted hosts must remember to reach them again.
    fn ssh_state(&self) -> Option<SshState> {
        None
    }

    /// What a machine's own CPU and memory are, for `bench`'s resources.
    fn machine_scope(&self) -> MachineScope {
        MachineScope::Whole
    }

    /// Lets a container of this machine's engine at `addresses` (a
    /// learner's console) reach the machines, where the provider keeps
    /// them fenced off; undone by `remove`. Containers joined to
    /// [`Provider::host_network`] need nothing.
    async fn admit(&self, _addresses: &[std::net::Ipv4Addr]) -> Result<()> {
        Ok(())
    }

    /// The machine's first process as a process of this machine's kernel,
    /// when the machine is a container of an engine on this machine (a
    /// dind node): then its cgroup counters, and those of the containers
    /// it runs, can be read from here without entering it.
    async fn local_pid(&self, _node: &NodeState) -> Option<u32> {
        None
    }

    /// An address on the machines' network that no machine holds and this
    /// host reaches like theirs: the virtual `$ManagerIP` that a lab with 3
    /// or more managers moves between them (`steps::vip`). `None` keeps
    /// `$ManagerIP` on the first manager.
    fn virtual_ip(&self, _managers: &[NodeState]) -> Option<std::net::Ipv4Addr> {
        None
    }

    /// How this host reaches the machines `create` made.
    fn publish(&self) -> Publish {
        Publish::Direct
    }

    /// The host engine's network that a container joins to reach the
    /// machines (a class's consoles), or None when this host routes to
    /// them and a container on its default bridge does too.
    fn host_network(&self) -> Option<String> {
        None
    }

    /// The machine's ports published on 127.0.0.1 as they are now (a
    /// restart may give them new host ports), by the machine's port.
    async fn published_ports(&self, node: &NodeState) -> Result<BTreeMap<u16, u16>> {
        Ok(node.published.clone())
    }

    /// Removes the machines this provider made; works twice in a row.
    /// Adopted hosts are not removed: `provision::remove_lab` gives them
    /// back as they were before this is called, and a provider of adopted
    /// hosts has nothing of its own left to remove.
    async fn remove(&self, state: Option<&LabState>) -> Result<Removed>;
}

/// What opening a provider for a new lab takes besides its spec: the
/// create's choices that concern machines.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// `--publish`: how this host reaches dind nodes, or None to find out.
    pub publish: Option<Publish>,
    /// `--accept-new-host-keys`: trust an adopted host's key on first use.
    pub accept_new_host_keys: bool,
}

/// The provider for a new lab, from its spec (the factory: the only place
/// a kind becomes a provider for `create`).
pub async fn for_spec(
    name: &str,
    spec: &LabSpec,
    choices: &Choices,
    dir: &LabDir,
    ui: &Ui,
) -> Result<Box<dyn Provider>> {
    Ok(match spec.driver.unwrap_or_default() {
        ProviderKind::Dind => {
            let host = crate::docker::connect_host().await?;
            Box::new(dind::DindProvider::new(host, name, ui.clone()).publishing(choices.publish))
        }
        ProviderKind::Qemu => Box::new(qemu::QemuProvider::new(
            name,
            dir,
            spec.vm.as_ref().map_or(512, |vm| vm.memory),
            ui.clone(),
        )?),
        ProviderKind::Ssh => {
            let ssh = spec.ssh.clone().unwrap_or_default();
            let hosts: Vec<String> = ssh.managers.iter().chain(&ssh.workers).cloned().collect();
            Box::new(
                ssh::SshProvider::new(
                    dir,
                    &hosts,
                    ssh.key,
                    choices.accept_new_host_keys,
                    ui.clone(),
                )?
                .with_vip(ssh.vip),
            )
        }
        ProviderKind::DockerMachine => {
            let machines = spec
                .docker_machine
                .as_ref()
                .map_or(&[][..], |m| m.machines.as_slice());
            Box::new(docker_machine::DockerMachineProvider::new(
                dir,
                machines,
                choices.accept_new_host_keys,
                ui.clone(),
            )?)
        }
    })
}

/// The provider that made a saved lab, ready to drive it.
pub async fn for_lab(state: &LabState, dir: &LabDir, ui: &Ui) -> Result<Box<dyn Provider>> {
    Ok(match state.driver {
        ProviderKind::Dind => {
            let host = crate::docker::connect_host().await?;
            Box::new(
                dind::DindProvider::new(host, &state.name, ui.clone())
                    .publishing(Some(state.publish)),
            )
        }
        ProviderKind::Ssh => Box::new(ssh::SshProvider::for_lab(state, dir, ui.clone())?),
        ProviderKind::DockerMachine => Box::new(docker_machine::DockerMachineProvider::for_lab(
            state,
            dir,
            ui.clone(),
        )?),
        ProviderKind::Qemu => Box::new(qemu::QemuProvider::for_lab(state, dir, ui.clone())?),
    })
}

/// The provider that removes what a lab left on this machine when its
/// state is gone: VMs and devices found by name, else containers, volumes
/// and networks found by label.
pub async fn for_leftovers(name: &str, dir: &LabDir, ui: &Ui) -> Result<Box<dyn Provider>> {
    if qemu::labs_on_this_machine().contains(name) {
        return Ok(Box::new(qemu::QemuProvider::new(name, dir, 0, ui.clone())?));
    }
    let host = crate::docker::connect_host().await?;
    Ok(Box::new(dind::DindProvider::new(host, name, ui.clone())))
}

/// A lab's machines found on this machine without its state (`ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub driver: ProviderKind,
    /// Machines still running.
    pub running: usize,
}

/// Labs with machines or devices on this machine that only their names
/// tie to a lab (VMs, taps, bridges), by lab name. Containers are found by
/// label instead (`docker::Labelled`).
pub fn leftovers() -> BTreeMap<String, Leftover> {
    let running = qemu::running_vms();
    qemu::labs_on_this_machine()
        .into_iter()
        .map(|lab| {
            let count = running.iter().filter(|(l, _)| *l == lab).count();
            (
                lab,
                Leftover {
                    driver: ProviderKind::Qemu,
                    running: count,
                },
            )
        })
        .collect()
}

/// Names of labs with leftovers here, for `destroy --all`.
pub fn leftover_labs() -> BTreeSet<String> {
    leftovers().into_keys().collect()
}

/// What the providers found out about this machine before, for `doctor`:
/// answers remembered from earlier creates.
#[derive(Debug, Clone, Default)]
pub struct Remembered {
    /// This engine refused `--privileged` to a dind node.
    pub refused_privileged: bool,
    /// How QEMU ran guests here, and why (`kvm`/`tcg`), once probed.
    pub vm_acceleration: Option<(String, String)>,
}

/// What the providers remember of this machine and of the engine with ID
/// `engine_id`.
pub fn remembered(engine_id: Option<&str>) -> Remembered {
    Remembered {
        refused_privileged: engine_id
            .is_some_and(|id| !id.is_empty() && dind::refusal_marker(id).exists()),
        vm_acceleration: qemu::accel_cached(),
    }
}

/// What `prepare --driver KIND` readies beyond the images every lab uses:
/// for VM labs, the VM image (a description of where it is).
pub async fn prepare(kind: ProviderKind, ui: &Ui) -> Result<Option<String>> {
    match kind {
        ProviderKind::Qemu => qemu::prepare(ui).await.map(Some),
        ProviderKind::Dind | ProviderKind::Ssh | ProviderKind::DockerMachine => Ok(None),
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
