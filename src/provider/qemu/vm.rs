//! One QEMU process per VM, daemonized, with its files in one directory of
//! the lab: the overlay disk, the identity disk, a pidfile, a QMP socket and
//! the serial console's log.
//!
//! QEMU outlives the `goblog-lab` that started it (`-daemonize`), so a VM is
//! found again from its pidfile, checked against `/proc/PID/cmdline` so that
//! a recycled pid is never taken for the VM. `-name goblog-lab/LAB/HOST`
//! lets `ls` find VMs whose lab is gone. Stopping asks the guest to power
//! down over QMP (ACPI, as VirtualBox's `acpipowerbutton`), and kills it
//! only when the deadline passes.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

use super::accel::Accel;
use super::image::{run, VmImage};
use crate::error::{Error, Result};

/// QEMU's process name prefix for the lab's VMs: `goblog-lab/LAB/HOST`.
pub const NAME_PREFIX: &str = "goblog-lab/";

/// The files of one VM.
#[derive(Debug, Clone)]
pub struct Vm {
    pub dir: PathBuf,
    /// `goblog-lab/LAB/HOST`, QEMU's `-name`.
    pub name: String,
}

/// How a VM boots: everything but its files.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    pub image: &'a VmImage,
    pub memory_mib: u32,
    pub accel: Accel,
    pub tap: String,
    pub mac: String,
}

impl Vm {
    pub fn new(lab_dir: &Path, lab: &str, hostname: &str) -> Self {
        Vm {
            dir: lab_dir.join("vms").join(hostname),
            name: format!("{NAME_PREFIX}{lab}/{hostname}"),
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.tar")
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    fn qmp(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// QEMU's command line for this VM.
    pub fn args(&self, boot: &Boot) -> Vec<String> {
        let mut args: Vec<String> = vec!["-name".into(), self.name.clone()];
        args.extend(boot.accel.args());
        args.extend(
            [
                "-m".into(),
                boot.memory_mib.to_string(),
                "-nodefaults".into(),
                "-no-user-config".into(),
                "-display".into(),
                "none".into(),
                "-kernel".into(),
                boot.image.kernel.display().to_string(),
                "-initrd".into(),
                boot.image.initrd.display().to_string(),
                // apparmor=0: the image has no apparmor_parser, without which
                // dockerd cannot start a container under an AppArmor kernel.
                // mitigations=off: the guest is the lab's own, and under TCG
                // every page-table switch they add on a system call is
                // emulated.
                // page_reporting_order=0: the balloon below is told of every
                // free page, not only of free 2 MiB blocks (the default, 9).
                // After a create most free memory is in smaller pieces: on an
                // idle 3-VM lab, setting it and dropping the guests' page
                // cache took QEMU's RSS from 1.67 GB to 1.28 GB (by hand).
                "-append".into(),
                "root=/dev/vda rw console=ttyS0 net.ifnames=0 apparmor=0 mitigations=off \
                 page_reporting.page_reporting_order=0 quiet"
                    .into(),
                "-drive".into(),
                format!(
                    "file={},if=virtio,format=qcow2,discard=unmap",
                    self.disk().display()
                ),
                "-drive".into(),
                format!(
                    "file={},if=virtio,format=raw,readonly=on",
                    self.identity().display()
                ),
                "-netdev".into(),
                format!("tap,id=lab,ifname={},script=no,downscript=no", boot.tap),
                "-device".into(),
                format!("virtio-net-pci,netdev=lab,mac={}", boot.mac),
                "-device".into(),
                "virtio-rng-pci".into(),
                // The guest hands pages it frees back to this host.
                "-device".into(),
                "virtio-balloon-pci,free-page-reporting=on".into(),
                "-serial".into(),
                format!("file:{}", self.console().display()),
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", self.qmp().display()),
                "-pidfile".into(),
                self.pidfile().display().to_string(),
                "-daemonize".into(),
            ]
            .map(String::from),
        );
        args
    }

    /// Starts QEMU; returns once it has daemonized (the guest boots on).
    pub async fn boot(&self, boot: &Boot<'_>) -> Result<()> {
        let _ = std::fs::remove_file(self.qmp());
        let mut command = Command::new("qemu-system-x86_64");
        command.args(self.args(boot));
        run(
            &mut command,
            &format!("qemu-system-x86_64 for {}", self.name),
        )
        .await?;
        Ok(())
    }

    /// The QEMU process of this VM, when it runs.
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pidfile())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == self.name.as_bytes());
        ours.then_some(pid)
    }

    /// Asks the guest to power off (ACPI) and waits up to `deadline`; kills
    /// QEMU when the guest does not comply. True when the guest shut down
    /// by itself.
    pub async fn power_down(&self, deadline: Duration) -> Result<bool> {
        let Some(pid) = self.pid() else {
            return Ok(true);
        };
        let asked = qmp(&self.qmp(), "system_powerdown").await.is_ok();
        if asked && wait_gone(pid, deadline).await {
            return Ok(true);
        }
        self.kill().await;
        Ok(false)
    }

    /// Ends QEMU at once (SIGKILL) and waits for the process to go.
    pub async fn kill(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) has no memory effects; the pid was just checked
            // to be this VM's QEMU.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            wait_gone(pid, Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}

async fn wait_gone(pid: i32, deadline: Duration) -> bool {
    let gone = || async move {
        Ok::<_, ()>(match Path::new(&format!("/proc/{pid}")).exists() {
            false => ControlFlow::Break(()),
            true => ControlFlow::Continue(()),
        })
    };
    crate::retry::until_deadline(deadline, Duration::from_millis(200), gone, |()| ())
        .await
        .is_ok()
}

/// Sends one QMP command and waits for its answer.
async fn qmp(socket: &Path, command: &str) -> Result<Value> {
    let io = |err: std::io::Error| Error::Io {
        action: format!("talking QMP on {}", socket.display()),
        source: err,
    };
    let stream = UnixStream::connect(socket).await.map_err(io)?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let exchange = async {
        lines.next_line().await.map_err(io)?; // the greeting
        for execute in ["qmp_capabilities", command] {
            write
                .write_all(format!("{{\"execute\":\"{execute}\"}}\n").as_bytes())
                .await
                .map_err(io)?;
            loop {
                let line = lines.next_line().await.map_err(io)?.unwrap_or_default();
                let reply: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if reply.get("event").is_some() {
                    continue;
                }
                if let Some(error) = reply.get("error") {
                    return Err(Error::Local {
                        command: format!("QMP {execute}"),
                        status: "error".into(),
                        output: error.to_string(),
                    });
                }
                if execute == command {
                    return Ok(reply);
                }
                break;
            }
        }
        unreachable!("the loop returns on the last command")
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Local {
                command: format!("QMP {command}"),
                status: "timeout".into(),
                output: "QEMU did not answer within 5 s".into(),
            })
        })
}

/// A stable MAC address for a VM, in QEMU's locally administered range.
pub fn mac(octet: u8, index: usize) -> String {
    format!("52:54:00:67:{octet:02x}:{:02x}", index + 100)
}

/// The lab and host names of every goblog-lab VM running on this machine,
/// from QEMU's `-name`: how `ls` finds VMs whose lab is gone.
pub fn running() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        while let Some(arg) = args.next() {
            if arg == b"-name" {
                let name = String::from_utf8_lossy(args.next().unwrap_or_default());
                if let Some((lab, host)) = name
                    .strip_prefix(NAME_PREFIX)
                    .and_then(|rest| rest.split_once('/'))
                {
                    found.push((lab.to_string(), host.to_string()));
                }
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_vm_and_its_files() {
        let image = VmImage {
            fingerprint: "f".into(),
            kernel: "/c/vmlinuz".into(),
            initrd: "/c/initrd.img".into(),
            base: "/c/base.qcow2".into(),
        };
        let vm = Vm::new(Path::new("/labs/x"), "x", "swarm-manager-0");
        let args = vm.args(&Boot {
            image: &image,
            memory_mib: 512,
            accel: Accel::Tcg,
            tap: "goblog99t0".into(),
            mac: mac(99, 0),
        });
        let line = args.join(" ");
        assert!(line.starts_with("-name goblog-lab/x/swarm-manager-0 "));
        assert!(line.contains("-m 512 "));
        assert!(line.contains("file=/labs/x/vms/swarm-manager-0/disk.qcow2,if=virtio"));
        assert!(line.contains("ifname=goblog99t0,script=no"));
        assert!(line.contains("-accel tcg,tb-size="));
        assert!(line.ends_with("-daemonize"));
        assert_eq!(mac(99, 2), "52:54:00:67:63:66");
    }
}
