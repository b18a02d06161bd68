//! `goblog-lab exec NODE -- CMD` and `goblog-lab shell NODE`: a way into a
//! node, by the hostname `docker node ls` shows, for the blog's `docker ps`
//! on a worker. They hand the terminal to the `docker` CLI's own `exec`
//! against the host engine, which already does TTYs, signals and exit codes
//! right.

use std::process::Stdio;

use crate::cli::{ExecArgs, ShellArgs};
use crate::docker;
use crate::error::{Context, Error, Result};
use crate::lab::name;
use crate::lab::state::{LabDir, NodeState};

pub async fn exec(args: &ExecArgs) -> Result<()> {
    let node = find_node(&args.name, &args.node)?;
    run_docker_exec(&node, &args.command).await
}

pub async fn shell(args: &ShellArgs) -> Result<()> {
    let node = find_node(&args.name, &args.node)?;
    run_docker_exec(&node, &["bash".to_string(), "-l".to_string()]).await
}

fn find_node(lab: &str, hostname: &str) -> Result<NodeState> {
    name::validate(lab)?;
    let state = LabDir::new(lab).load()?;
    state
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
        })
}

async fn run_docker_exec(node: &NodeState, command: &[String]) -> Result<()> {
    use std::io::IsTerminal;
    let mut docker_args = vec!["exec".to_string(), "-i".to_string()];
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        docker_args.push("-t".to_string());
    }
    docker_args.push(node.id.clone());
    docker_args.extend(command.iter().cloned());
    let status = tokio::process::Command::new("docker")
        .args(&docker_args)
        // The host engine, even after `eval "$(goblog-lab env)"`.
        .env("DOCKER_HOST", docker::host_address())
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .context("running the docker CLI (is it installed?)")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code)),
        None => Err(Error::Exit(1)),
    }
}
