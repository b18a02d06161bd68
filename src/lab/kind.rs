//! Which provider makes a lab's machines: part of the model (a lab file
//! and a lab's state name it), so the model owns the type and the
//! providers implement it.

use serde::{Deserialize, Serialize};

/// Which provider made a lab; recorded in its state so that `stop`,
/// `start`, `destroy`, `exec` and `shell` need no flag. Serde's names are
/// the ones state files have always held (`"dind"`, ...), so labs saved
/// when the field was a string read as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Docker-in-Docker containers on this machine's Docker engine: the
    /// default, when neither a flag nor the lab file names one.
    #[default]
    Dind,
    /// Existing Linux hosts with Docker, reached over SSH.
    Ssh,
    /// VMs under QEMU on a host-only network (192.168.99.0/24), as the
    /// blog's docker-machine and VirtualBox made them.
    Qemu,
    /// Machines made with `docker-machine create` (any driver), adopted
    /// over SSH through docker-machine's store and given back on destroy.
    #[value(name = "docker-machine")]
    #[serde(rename = "docker-machine")]
    DockerMachine,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Dind => "dind",
            ProviderKind::Ssh => "ssh",
            ProviderKind::Qemu => "qemu",
            ProviderKind::DockerMachine => "docker-machine",
        }
    }
}
