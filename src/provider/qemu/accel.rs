//! KVM when it really works, TCG (software emulation) otherwise.
//!
//! `/dev/kvm` existing proves little: on nested machines like the ones this
//! project is tested on, KVM opens, runs the firmware and even a boot
//! sector, then hangs as Linux leaves real mode (measured here with QEMU
//! 7.2: the console stops after "Probing EDD"). So the probe boots the VM
//! image's own kernel under KVM, with no disk and `panic=-1`: a working KVM
//! prints "Linux version" and ends in a panic that QEMU turns into an exit
//! (`-no-reboot`) within seconds; a broken one prints nothing more before
//! the deadline.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::lab::state::home;

/// How QEMU runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// TCG's translation cache, in MiB. QEMU's default (a quarter of guest
/// memory, at least 1 GiB on 7.2) made each VM of the probe 1.7 GiB RSS;
/// 64 MiB keeps a 512 MiB guest near its own size and, measured here,
/// did not slow the boot.
const TB_SIZE_MIB: u32 = 64;

impl Accel {
    pub fn args(self) -> Vec<String> {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host", "-smp", "2"]
                .map(String::from)
                .to_vec(),
            Accel::Tcg => vec![
                "-accel".into(),
                format!("tcg,tb-size={TB_SIZE_MIB}"),
                "-smp".into(),
                "1".into(),
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG, software emulation",
        }
    }
}

/// How long the probe waits for the kernel's banner, which a working KVM
/// (or even TCG, measured here: 0.3 s) prints well within a second.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// KVM if the VM kernel really runs under it here; else TCG, with the
/// reason. The answer is kept per host kernel, QEMU and VM kernel, so only
/// the first VM lab pays for a hung probe.
pub async fn probe(kernel: &Path) -> (Accel, String) {
    let key = probe_key(kernel).await;
    let cache = home().join("accel-probe.json");
    let cached: HashMap<String, (Accel, String)> = std::fs::read(&cache)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if let Some((accel, why)) = cached.get(&key) {
        return (*accel, format!("{why}, as probed before"));
    }
    let found = run_probe(kernel).await;
    let mut cached = cached;
    cached.insert(key, found.clone());
    let _ = std::fs::create_dir_all(home());
    let _ = std::fs::write(&cache, serde_json::to_vec(&cached).unwrap_or_default());
    found
}

/// What an earlier probe found on this host kernel, without probing:
/// `doctor` must not boot a VM.
pub fn cached() -> Option<(Accel, String)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cached: HashMap<String, (Accel, String)> =
        serde_json::from_slice(&std::fs::read(home().join("accel-probe.json")).ok()?).ok()?;
    cached
        .into_iter()
        .find(|(key, _)| key.starts_with(&format!("{} |", release.trim())))
        .map(|(_, found)| found)
}

/// What the probe's answer depends on.
async fn probe_key(kernel: &Path) -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .await
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let size = std::fs::metadata(kernel).map(|m| m.len()).unwrap_or(0);
    format!("{} | {qemu} | {} {size}", release.trim(), kernel.display())
}

async fn run_probe(kernel: &Path) -> (Accel, String) {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (Accel::Tcg, "/dev/kvm cannot be opened".into());
    }
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-accel", "kvm", "-cpu", "host", "-m", "128", "-display", "none",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return (Accel::Tcg, format!("qemu-system-x86_64 did not run: {err}")),
    };
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let banner = async {
        while let Ok(Some(line)) = stdout.next_line().await {
            if line.contains("Linux version") {
                return true;
            }
        }
        false
    };
    let outcome = tokio::time::timeout(PROBE_DEADLINE, banner).await;
    let _ = child.kill().await;
    match outcome {
        Ok(true) => (Accel::Kvm, "a guest kernel booted under KVM".into()),
        Err(_) => (
            Accel::Tcg,
            "KVM is present but a guest kernel hung under it".into(),
        ),
        Ok(false) => {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            (
                Accel::Tcg,
                format!(
                    "a guest kernel failed under KVM: {}",
                    stderr.lines().next().unwrap_or("no output")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_bounds_its_translation_cache() {
        assert!(Accel::Tcg
            .args()
            .iter()
            .any(|a| a.starts_with("tcg,tb-size=")));
    }
}
