//! VMs under QEMU on a host-only network: the blog's docker-machine and
//! VirtualBox setup, on this machine.
//!
//! A driver in docker-machine's sense (`libmachine/drivers/drivers.go`): it
//! makes machines, says their addresses once they exist, starts, stops and
//! removes them. Everything inside a VM after it boots (the engine's TLS,
//! the Swarm) goes over SSH exactly as for adopted hosts (`SshHosts`,
//! `crate::provision`), so the VM path and the real-host path are one path.
//!
//! Each VM boots a copy-on-write overlay of one cached image (`image`), is
//! told who it is by a small read-only disk (`identity`), sits on the lab's
//! bridge (`net`), and runs as a daemonized QEMU found again by its pidfile
//! (`vm`). KVM is used when a guest kernel really runs under it (`accel`);
//! on this project's nested test machines it does not, and TCG is used.

pub mod accel;
pub mod identity;
pub mod image;
pub mod net;
pub mod vm;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::try_join_all;

use self::accel::Accel;
use self::image::VmImage;
use self::net::HostOnly;
use self::vm::{Boot, Vm};
use super::ssh::SshHosts;
use super::{
    CommandOutput, EngineSetup, Forward, MachinePlan, NodeFile, Provider, ProviderKind, Removed,
    DOCKER_TLS_PORT,
};
use crate::error::{Error, Result};
use crate::lab::state::{write_atomic, write_secret, LabDir, LabState, NodeState, VmState};
use crate::rootfs;
use crate::ssh::Target;
use crate::ui::{seconds, Ui};

/// How long a VM may take from QEMU's start to answering on SSH. Measured
/// under TCG here: three VMs booting at once answered after 72-83 s.
const SSH_DEADLINE_TCG: Duration = Duration::from_secs(300);
const SSH_DEADLINE_KVM: Duration = Duration::from_secs(90);
/// How long one SSH handshake may take. Under TCG, with three VMs starting
/// their engines at once, a handshake took over 10 s here.
const SSH_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits for a guest to power off after the ACPI button.
const POWER_DOWN_DEADLINE: Duration = Duration::from_secs(60);

pub struct QemuProvider {
    lab: String,
    dir: LabDir,
    memory_mib: u32,
    ui: Ui,
    ssh: SshHosts,
    /// Set by `create`, or read from the state of a saved lab.
    booted: std::sync::Mutex<Option<VmState>>,
}

/// What the qemu driver needs of this machine, checked before anything is
/// made: QEMU, qemu-img, and root for the bridge and taps.
pub fn preflight() -> Result<()> {
    rootfs::require(
        "the qemu driver",
        &[
            (
                "qemu-system-x86_64",
                "`apt-get install qemu-system-x86` (or `scripts/setup.sh --for-tests`)",
            ),
            ("qemu-img", "`apt-get install qemu-utils`"),
            ("ip", "`apt-get install iproute2`"),
            ("iptables", "`apt-get install iptables`"),
        ],
    )?;
    if !rootfs::is_root() {
        return Err(Error::NeedsRoot { driver: "qemu" });
    }
    Ok(())
}

/// The VMs running on this machine, as (lab, hostname).
pub fn running_vms() -> Vec<(String, String)> {
    vm::running()
}

/// How guests ran here the last time it was probed, and why.
pub fn accel_cached() -> Option<(String, String)> {
    accel::cached().map(|(accel, why)| (accel.as_str().to_string(), why))
}

/// `prepare --driver qemu`: the VM image, built before anyone waits for
/// it; returns the directory it is cached in.
pub async fn prepare(ui: &Ui) -> Result<String> {
    let step = ui.step(
        "Building the VM image 💿 (debootstrap with a kernel; about two minutes the first time)",
    );
    let image = image::ensure().await?;
    let dir = image.base.parent().map_or_else(
        || image.base.display().to_string(),
        |d| d.display().to_string(),
    );
    step.done_with(dir.clone());
    Ok(dir)
}

/// Labs with a VM running or a device on this machine: what `ls` and
/// `destroy` find when a VM lab's state is gone.
pub fn labs_on_this_machine() -> std::collections::BTreeSet<String> {
    vm::running()
        .into_iter()
        .map(|(lab, _)| lab)
        .chain(net::labs_with_devices())
        .collect()
}

impl QemuProvider {
    /// For `create`.
    pub fn new(lab: &str, dir: &LabDir, memory_mib: u32, ui: Ui) -> Result<Self> {
        preflight()?;
        Ok(QemuProvider {
            lab: lab.to_string(),
            dir: dir.clone(),
            memory_mib,
            ui,
            ssh: SshHosts::lab_only(dir, dir.ssh_key()).with_connect_timeout(SSH_HANDSHAKE_TIMEOUT),
            booted: std::sync::Mutex::new(None),
        })
    }

    /// For a saved lab.
    pub fn for_lab(state: &LabState, dir: &LabDir, ui: Ui) -> Result<Self> {
        let provider = Self::new(
            &state.name,
            dir,
            state.vm.as_ref().map_or(512, |vm| vm.memory_mib),
            ui,
        )?;
        *provider.booted.lock().unwrap() = state.vm.clone();
        Ok(provider)
    }

    fn vm(&self, hostname: &str) -> Vm {
        Vm::new(self.dir.root(), &self.lab, hostname)
    }

    fn target(node: &NodeState) -> Target {
        Target {
            user: "root".into(),
            host: node.address.to_string(),
            port: 22,
        }
    }

    fn boot_settings(&self) -> Result<(VmImage, Accel, HostOnly)> {
        let booted = self.booted.lock().unwrap().clone().ok_or_else(|| {
            Error::failed("the lab's state has no VM settings: `goblog-lab destroy` removes it")
        })?;
        let image = image::cached()
            .filter(|image| image.fingerprint == booted.image)
            .ok_or(Error::MissingProgram {
                what: "starting this VM lab",
                program: "the VM image it was made with",
                install:
                    "it was removed from goblog-lab's cache; destroy the lab and create it again",
            })?;
        let accel = if booted.accel == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        Ok((
            image,
            accel,
            HostOnly {
                octet: booted.network_octet,
            },
        ))
    }

    /// Boots one VM and waits until it answers on SSH with its own host key.
    async fn boot(
        &self,
        node: &NodeState,
        index: usize,
        settings: &(VmImage, Accel, HostOnly),
    ) -> Result<()> {
        let (image, accel, net) = settings;
        let vm = self.vm(&node.hostname);
        let started = Instant::now();
        vm.boot(&Boot {
            image,
            memory_mib: self.memory_mib,
            accel: *accel,
            tap: net.tap(index),
            mac: vm::mac(net.octet, index),
        })
        .await?;
        let deadline = match accel {
            Accel::Kvm => SSH_DEADLINE_KVM,
            Accel::Tcg => SSH_DEADLINE_TCG,
        };
        self.ssh.forget(&Self::target(node));
        self.wait_for_ssh(node, &vm, deadline).await?;
        self.ui.detail(format!(
            "{} answers on SSH at {} after {}",
            node.hostname,
            node.address,
            seconds(started.elapsed())
        ));
        Ok(())
    }

    async fn wait_for_ssh(&self, node: &NodeState, vm: &Vm, deadline: Duration) -> Result<()> {
        let target = &Self::target(node);
        let ssh_port = SocketAddr::from((node.address, 22));
        let answers = || async move {
            if vm.pid().is_none() {
                return Err(Error::VmFailed {
                    vm: node.hostname.clone(),
                    what: "stopped while booting".into(),
                    console: vm.console().display().to_string(),
                });
            }
            let open = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(ssh_port),
            )
            .await;
            if !matches!(open, Ok(Ok(_))) {
                return Ok(ControlFlow::Continue("no answer yet".to_string()));
            }
            match self.ssh.connect(target).await {
                Ok(_) => Ok(ControlFlow::Break(())),
                // A changed host key is never waited out.
                Err(Error::Ssh(err @ crate::ssh::SshError::ChangedHostKey(_))) => {
                    Err(Error::Ssh(err))
                }
                Err(err) => Ok(ControlFlow::Continue(err.to_string())),
            }
        };
        crate::retry::until_deadline(deadline, Duration::from_secs(1), answers, |last| {
            Error::VmFailed {
                vm: node.hostname.clone(),
                what: format!(
                    "did not answer on SSH within {} ({last})",
                    seconds(deadline)
                ),
                console: vm.console().display().to_string(),
            }
        })
        .await
    }

    /// Writes a VM's disks: its overlay of the base, and its identity.
    async fn make_disks(
        &self,
        plan: &MachinePlan,
        address: Ipv4Addr,
        net: HostOnly,
        image: &VmImage,
        lab_key: &identity::KeyPair,
    ) -> Result<String> {
        let vm = self.vm(&plan.hostname);
        std::fs::create_dir_all(&vm.dir).map_err(|source| Error::Io {
            action: format!("creating {}", vm.dir.display()),
            source,
        })?;
        image::overlay(image, &vm.disk()).await?;
        let host_key = identity::ed25519(&plan.hostname)?;
        let disk = identity::Identity {
            hostname: &plan.hostname,
            address,
            prefix: 24,
            gateway: net.gateway(),
            authorized_key: &lab_key.public_openssh,
            host_key: &host_key,
        }
        .disk()?;
        // It holds the VM's private host key.
        write_secret(&vm.identity(), &disk)?;
        Ok(format!("{address} {}\n", host_key.public_openssh.trim()))
    }
}

#[async_trait]
impl Provider for QemuProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Qemu
    }

    fn making(&self) -> &'static str {
        "Booting VMs"
    }

    async fn pre_create_check(&self) -> Result<()> {
        preflight()
    }

    fn engine_setup(&self) -> EngineSetup {
        EngineSetup::SystemdDropIn
    }

    fn vm_state(&self) -> Option<VmState> {
        self.booted.lock().unwrap().clone()
    }

    async fn create(&self, plans: &[MachinePlan], _node_image: &str) -> Result<Vec<NodeState>> {
        if image::cached().is_none() {
            self.ui
                .detail("building the VM image with debootstrap (once; about two minutes)");
        }
        let image = image::ensure().await?;
        let (accel, why) = accel::probe(&image.kernel).await;
        self.ui
            .info(format!("VMs run under {} ({why})", accel.as_str()));

        let lab_key = identity::ed25519(&format!("goblog-lab {}", self.lab))?;
        write_secret(&self.dir.ssh_key(), lab_key.private_openssh.as_bytes())?;
        write_atomic(
            &self.dir.ssh_key().with_extension("pub"),
            format!("{}\n", lab_key.public_openssh).as_bytes(),
            0o644,
        )?;

        let net = {
            let _lock = net::lock().await?;
            net::create(&self.lab, plans.len()).await?
        };
        *self.booted.lock().unwrap() = Some(VmState {
            memory_mib: self.memory_mib,
            accel: match accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            }
            .into(),
            network_octet: net.octet,
            image: image.fingerprint.clone(),
        });
        self.ui.detail(format!(
            "host-only network {}.0/24 on bridge {} (this host is {})",
            net.gateway().to_string().trim_end_matches(".1"),
            net.bridge(),
            net.gateway()
        ));

        let nodes: Vec<NodeState> = plans
            .iter()
            .enumerate()
            .map(|(index, plan)| NodeState {
                id: self.vm(&plan.hostname).name,
                hostname: plan.hostname.clone(),
                role: plan.role,
                address: net.address(index),
                docker_port: DOCKER_TLS_PORT,
                published: Default::default(),
            })
            .collect();
        let known_hosts = try_join_all(
            plans
                .iter()
                .zip(&nodes)
                .map(|(plan, node)| self.make_disks(plan, node.address, net, &image, &lab_key)),
        )
        .await?;
        write_atomic(
            &self.dir.known_hosts(),
            known_hosts.concat().as_bytes(),
            0o600,
        )?;

        let settings = (image, accel, net);
        try_join_all(
            nodes
                .iter()
                .enumerate()
                .map(|(index, node)| self.boot(node, index, &settings)),
        )
        .await?;
        Ok(nodes)
    }

    async fn put_files(&self, node: &NodeState, files: &[NodeFile]) -> Result<()> {
        self.ssh.put_files(&Self::target(node), files).await
    }

    async fn run(&self, node: &NodeState, command: &str) -> Result<CommandOutput> {
        self.ssh.run(&Self::target(node), command).await
    }

    async fn stop(&self, node: &NodeState) -> Result<()> {
        let vm = self.vm(&node.hostname);
        if vm.pid().is_none() {
            return Ok(());
        }
        // The image has no ACPI daemon (systemd-logind needs D-Bus), so the
        // guest is asked over SSH first; the ACPI button and then a kill
        // remain for a guest that does not answer. The command's connection
        // ends with the guest, so its outcome says nothing.
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            self.ssh
                .run(&Self::target(node), "systemctl --no-block poweroff"),
        )
        .await;
        if !vm.power_down(POWER_DOWN_DEADLINE).await? {
            self.ui.warn(format!(
                "{} did not power off within {}; it was killed",
                node.hostname,
                seconds(POWER_DOWN_DEADLINE)
            ));
        }
        self.ssh.forget(&Self::target(node));
        Ok(())
    }

    async fn start(&self, node: &NodeState) -> Result<Ipv4Addr> {
        let vm = self.vm(&node.hostname);
        if vm.pid().is_some() {
            return Ok(node.address);
        }
        let settings = self.boot_settings()?;
        let net = settings.2;
        let index = (node.address.octets()[3] - net::FIRST_HOST) as usize;
        // After a reboot of this host the bridge and taps are gone.
        {
            let _lock = net::lock().await?;
            net::ensure(&self.lab, net, index).await?;
        }
        self.boot(node, index, &settings).await?;
        Ok(node.address)
    }

    async fn ensure_running(&self, node: &NodeState) -> Result<()> {
        if self.vm(&node.hostname).pid().is_some() {
            return Ok(());
        }
        Err(Error::NodeStopped {
            node: node.hostname.clone(),
            why: format!(
                "its QEMU process is gone; `goblog-lab start --name {}` boots it again",
                self.lab
            ),
        })
    }

    async fn forward(&self, node: &NodeState, port: u16, local_port: u16) -> Result<Forward> {
        // This host is on the VMs' network: a loopback relay is enough.
        super::relay::tcp(local_port, SocketAddr::from((node.address, port))).await
    }

    async fn interactive(&self, node: &NodeState, command: &[String]) -> Result<i32> {
        self.ssh.interactive(&Self::target(node), command).await
    }

    /// A terminal on a lab VM, as `docker-machine ssh` gave one: the user's
    /// own ssh client, with the lab's key and the lab's recorded host keys
    /// only.
    async fn shell(&self, node: &NodeState) -> Result<i32> {
        if rootfs::which("ssh").is_none() {
            return Err(Error::MissingProgram {
                what: "`goblog-lab shell` on a VM",
                program: "ssh",
                install:
                    "`apt-get install openssh-client` (`goblog-lab exec NODE -- CMD` needs none)",
            });
        }
        let status = tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(self.dir.ssh_key())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.known_hosts().display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg(format!("root@{}", node.address))
            .status()
            .await
            .map_err(|source| Error::Io {
                action: "running ssh".into(),
                source,
            })?;
        Ok(status.code().unwrap_or(1))
    }

    /// The host-only network's .254: the VMs are .100 and up, and nothing
    /// on it hands out addresses.
    fn virtual_ip(&self, managers: &[NodeState]) -> Option<Ipv4Addr> {
        managers
            .first()
            .map(|m| crate::subnet::spare_address(m.address))
    }

    async fn admit(&self, addresses: &[Ipv4Addr]) -> Result<()> {
        let octet = self
            .booted
            .lock()
            .unwrap()
            .as_ref()
            .map(|b| b.network_octet)
            .ok_or_else(|| Error::failed(format!("lab '{}' has no VMs booted", self.lab)))?;
        net::admit(&self.lab, net::HostOnly { octet }, addresses).await
    }

    async fn remove(&self, state: Option<&LabState>) -> Result<Removed> {
        crate::ssh::settle(Duration::from_secs(30)).await;
        let mut hostnames: Vec<String> = state
            .map(|s| s.nodes.iter().map(|n| n.hostname.clone()).collect())
            .unwrap_or_default();
        // VMs booted before the state was saved, or whose state is gone.
        for (lab, host) in vm::running() {
            if lab == self.lab && !hostnames.contains(&host) {
                hostnames.push(host);
            }
        }
        if let Ok(dirs) = std::fs::read_dir(self.dir.root().join("vms")) {
            for entry in dirs.flatten() {
                let host = entry.file_name().to_string_lossy().into_owned();
                if !hostnames.contains(&host) {
                    hostnames.push(host);
                }
            }
        }
        let running: Vec<Vm> = hostnames
            .iter()
            .map(|host| self.vm(host))
            .filter(|vm| vm.pid().is_some())
            .collect();
        futures_util::future::join_all(running.iter().map(Vm::kill)).await;
        let killed = running.len();
        let (taps, bridges) = {
            let _lock = net::lock().await?;
            net::remove(&self.lab).await?
        };
        match std::fs::remove_dir_all(self.dir.root().join("vms")) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    action: "removing the lab's VM disks".into(),
                    source: err,
                })
            }
            _ => {}
        }
        Ok(Removed {
            items: vec![(killed, "VM"), (taps, "tap"), (bridges, "bridge")],
        })
    }
}
