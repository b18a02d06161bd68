//! `goblog-lab exec NODE -- CMD` and `goblog-lab shell NODE`: a way into a
//! node, by the hostname `docker node ls` shows, for the blog's `docker ps`
//! on a worker. The provider that made the lab hands over the terminal:
//! `docker exec` for a dind node, an SSH channel for a host.

use crate::cli::{ExecArgs, ShellArgs};
use crate::error::{Error, Result};
use crate::lab::name;
use crate::lab::state::{LabDir, LabState, NodeState};
use crate::provider::{self, ProviderKind};
use crate::ui::Ui;

pub async fn exec(args: &ExecArgs, ui: &Ui) -> Result<()> {
    let (state, dir, node) = find_node(&args.name, &args.node)?;
    let provider = provider::for_lab(&state, &dir, ui).await?;
    exit_with(provider.interactive(&node, &args.command).await?)
}

pub async fn shell(args: &ShellArgs, ui: &Ui) -> Result<()> {
    let (state, dir, node) = find_node(&args.name, &args.node)?;
    if state.driver == ProviderKind::Qemu.as_str() {
        return ssh_into_vm(&dir, &node);
    }
    if state.driver == ProviderKind::Ssh.as_str()
        || state.driver == ProviderKind::DockerMachine.as_str()
    {
        // A terminal over libssh2 would be a worse `ssh`; the host is the
        // user's own, and so is their ssh client.
        return Err(Error::usage(format!(
            "{} is a host of your own: log in with `ssh {}` (`goblog-lab exec {} -- CMD` runs one command)",
            node.hostname, node.id, node.hostname
        )));
    }
    let provider = provider::for_lab(&state, &dir, ui).await?;
    exit_with(
        provider
            .interactive(&node, &["bash".to_string(), "-l".to_string()])
            .await?,
    )
}

/// A terminal on a lab VM, as `docker-machine ssh` gave one: the user's own
/// ssh client, with the lab's key and the lab's recorded host keys only.
fn ssh_into_vm(dir: &LabDir, node: &NodeState) -> Result<()> {
    if crate::rootfs::which("ssh").is_none() {
        return Err(Error::MissingProgram {
            what: "`goblog-lab shell` on a VM",
            program: "ssh",
            install: "`apt-get install openssh-client` (`goblog-lab exec NODE -- CMD` needs none)",
        });
    }
    let status = std::process::Command::new("ssh")
        .arg("-i")
        .arg(dir.ssh_key())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.known_hosts().display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("root@{}", node.address))
        .status()
        .map_err(|source| Error::Io {
            action: "running ssh".into(),
            source,
        })?;
    exit_with(status.code().unwrap_or(1))
}

fn exit_with(code: i32) -> Result<()> {
    match code {
        0 => Ok(()),
        code => Err(Error::Exit(code)),
    }
}

fn find_node(lab: &str, hostname: &str) -> Result<(LabState, LabDir, NodeState)> {
    name::validate(lab)?;
    let dir = LabDir::new(lab);
    let state = dir.load()?;
    let node = state
        .nodes
        .iter()
        .find(|n| n.hostname == hostname || n.id == hostname)
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = state.nodes.iter().map(|n| n.hostname.as_str()).collect();
            Error::usage(format!(
                "no node '{hostname}' in lab '{lab}' (it has: {})",
                names.join(", ")
            ))
        })?;
    Ok((state, dir, node))
}
