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
    /// Whether this provider makes its machines (dind, qemu) rather than
    /// adopting hosts it is given: a class needs one lab per learner made
    /// from nothing.
    pub fn makes_machines(self) -> bool {
        matches!(self, ProviderKind::Dind | ProviderKind::Qemu)
    }

    /// What a class of labs of this kind lets a learner reach, said
    /// before the class is made (the security statement).
    pub fn class_isolation(self) -> &'static str {
        match self {
            ProviderKind::Qemu => {
                "each lab runs in its own VMs: a learner's containers reach their own VMs, not this host"
            }
            _ => {
                "dind nodes are privileged: a learner who can run containers in their lab can reach this host. \
                 A dind class is for learners you trust with this server; --driver qemu keeps each lab in its own VMs."
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Dind => "dind",
            ProviderKind::Ssh => "ssh",
            ProviderKind::Qemu => "qemu",
            ProviderKind::DockerMachine => "docker-machine",
        }
    }
}
