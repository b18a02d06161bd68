//! A running lab, opened: its files, its state and a manager's engine (the
//! first, else any other that answers), or the error that says why not
//! (no such lab, stopped, no manager answering).

use futures_util::future::join_all;

use crate::error::{Error, Result};
use crate::lab::state::{NodeState, Role};
use crate::ui::Ui;

/// A running lab: its files, its state, and the engine of a manager that
/// answered, the first when it does.
pub struct OpenLab {
    pub dir: crate::lab::state::LabDir,
    pub state: crate::lab::state::LabState,
    pub manager: bollard::Docker,
}

pub async fn open_lab(name: &str) -> Result<OpenLab> {
    crate::lab::name::validate(name)?;
    let dir = crate::lab::state::LabDir::new(name);
    let state = dir.load()?;
    if state.stopped {
        return Err(Error::LabStopped(state.name));
    }
    let leader = state.leader()?;
    let certs = dir.client_certs();
    // The virtual $ManagerIP, where a lab has one: whichever manager holds
    // it answers, the first or not.
    let first = match crate::docker::connect_node(&state.docker_host()?, &certs).await {
        Ok(manager) => {
            return Ok(OpenLab {
                dir,
                state,
                manager,
            })
        }
        Err(unreachable @ Error::NoDaemon { .. }) => unreachable,
        Err(other) => return Err(other),
    };
    // The first manager is down (or, with a virtual address, no manager
    // holds it now): with three managers the Swarm still has its quorum,
    // and any other manager answers for it.
    let others: Vec<&NodeState> = state
        .nodes
        .iter()
        .filter(|n| {
            n.role == Role::Manager && (state.vip.is_some() || n.hostname != leader.hostname)
        })
        .collect();
    let answers = join_all(
        others
            .iter()
            .map(|node| async { crate::docker::connect_node(&node.docker_host(), &certs).await }),
    )
    .await;
    if let Some(manager) = answers.into_iter().find_map(Result::ok) {
        return Ok(OpenLab {
            dir,
            state,
            manager,
        });
    }
    // No manager answers. Stopped behind goblog-lab's back (`docker
    // kill`, a reboot): the machine's own state says so better than an
    // unreachable engine; "stopped" stays the word for `goblog-lab stop`.
    let quiet = Ui::new(true, false);
    let provider = crate::provider::for_lab(&state, &dir, &quiet).await?;
    match provider.ensure_running(leader).await {
        Err(Error::NodeStopped { node, why }) => Err(Error::NoManagerAnswers {
            lab: state.name.clone(),
            why: format!("{node} is down: {why}"),
        }),
        _ => Err(first),
    }
}
