//! `goblog-lab exec NODE -- CMD` and `goblog-lab shell NODE`: a way into a
//! node, by the hostname `docker node ls` shows, for the blog's `docker ps`
//! on a worker. The provider that made the lab hands over the terminal
//! (`Provider::interactive`, `Provider::shell`): `docker exec` for a dind
//! node, an SSH channel for a host, the user's own ssh client for a VM.

use crate::cli::{ExecArgs, ShellArgs};
use crate::error::{Error, Result};
use crate::lab::name;
use crate::lab::state::{LabDir, LabState, NodeState};
use crate::provider;
use crate::ui::Ui;

pub async fn exec(args: &ExecArgs, ui: &Ui) -> Result<()> {
    let (state, dir, node) = find_node(&args.name, &args.node)?;
    let provider = provider::for_lab(&state, &dir, ui).await?;
    exit_with(provider.interactive(&node, &args.command).await?)
}

pub async fn shell(args: &ShellArgs, ui: &Ui) -> Result<()> {
    let (state, dir, node) = find_node(&args.name, &args.node)?;
    let provider = provider::for_lab(&state, &dir, ui).await?;
    exit_with(provider.shell(&node).await?)
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
