//! Machines that `docker-machine create` made (any of its drivers),
//! adopted as a lab's nodes.
//!
//! A provider of its own because what it knows is its own: the machines
//! are named, not addressed, and their address, SSH user, port and key
//! come from docker-machine's store (`docker_machine_store`). Once found,
//! a machine is an adopted host like any other, so every machine question
//! is answered by the shared SSH path (`SshProvider`): checked host keys,
//! nothing changed before every host passes its checks, and `remove` gives
//! the machines back as they were (docker-machine's to stop and remove).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use async_trait::async_trait;

use super::docker_machine_store::{read_all, storage_path};
use super::ssh::SshProvider;
use super::{
    CommandOutput, EngineSetup, Forward, MachinePlan, NodeFile, Provider, ProviderKind, Removed,
};
use crate::error::{Error, Result};
use crate::lab::state::{LabDir, LabState, NodeState, SshState};
use crate::ui::Ui;

pub struct DockerMachineProvider {
    hosts: SshProvider,
}

impl DockerMachineProvider {
    /// For `create`: the machines by name, managers first, read from the
    /// store (`$MACHINE_STORAGE_PATH`, else `~/.docker/machine`).
    pub fn new(dir: &LabDir, machines: &[String], accept_new: bool, ui: Ui) -> Result<Self> {
        if machines.is_empty() {
            return Err(Error::usage(
                "--driver docker-machine needs --machines NAME,NAME,... (managers first; `docker-machine ls` lists them)",
            ));
        }
        let machines = read_all(&storage_path(), machines)
            .map_err(|err| Error::DockerMachine(Box::new(err)))?;
        let targets: Vec<String> = machines.iter().map(|m| m.ssh_target()).collect();
        let keys: BTreeMap<String, PathBuf> = machines
            .iter()
            .map(|m| (m.ssh_target(), m.ssh_key.clone()))
            .collect();
        for machine in &machines {
            ui.detail(format!(
                "{} ({} driver): {} with {}",
                machine.name,
                machine.driver,
                machine.ssh_target(),
                machine.ssh_key.display()
            ));
        }
        Ok(DockerMachineProvider {
            hosts: SshProvider::new(dir, &targets, None, accept_new, ui)?.with_own_keys(&keys),
        })
    }

    /// For a saved lab: the machines' targets and keys are in its state.
    pub fn for_lab(state: &LabState, dir: &LabDir, ui: Ui) -> Result<Self> {
        Ok(DockerMachineProvider {
            hosts: SshProvider::for_lab(state, dir, ui)?,
        })
    }
}

#[async_trait]
impl Provider for DockerMachineProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::DockerMachine
    }

    fn making(&self) -> &'static str {
        "Connecting to the docker-machine machines and checking them"
    }

    fn adopts_hosts(&self) -> bool {
        true
    }

    fn engine_setup(&self) -> EngineSetup {
        self.hosts.engine_setup()
    }

    fn ssh_state(&self) -> Option<SshState> {
        self.hosts.ssh_state()
    }

    async fn create(&self, plans: &[MachinePlan], node_image: &str) -> Result<Vec<NodeState>> {
        self.hosts.create(plans, node_image).await
    }

    async fn put_files(&self, node: &NodeState, files: &[NodeFile]) -> Result<()> {
        self.hosts.put_files(node, files).await
    }

    async fn run(&self, node: &NodeState, command: &str) -> Result<CommandOutput> {
        self.hosts.run(node, command).await
    }

    async fn stop(&self, node: &NodeState) -> Result<()> {
        self.hosts.stop(node).await
    }

    async fn start(&self, node: &NodeState) -> Result<Ipv4Addr> {
        self.hosts.start(node).await
    }

    async fn ensure_running(&self, node: &NodeState) -> Result<()> {
        self.hosts.ensure_running(node).await
    }

    async fn forward(&self, node: &NodeState, port: u16, local_port: u16) -> Result<Forward> {
        self.hosts.forward(node, port, local_port).await
    }

    async fn interactive(&self, node: &NodeState, command: &[String]) -> Result<i32> {
        self.hosts.interactive(node, command).await
    }

    async fn shell(&self, node: &NodeState) -> Result<i32> {
        self.hosts.shell(node).await
    }

    async fn remove(&self, state: Option<&LabState>) -> Result<Removed> {
        self.hosts.remove(state).await
    }
}
