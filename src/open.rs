//! A running lab, opened: its files, its state and its first manager's
//! engine, or the error that says why not (no such lab, stopped).

use crate::error::{Error, Result};
use crate::ui::Ui;

/// A running lab: its files, its state, and its first manager's engine.
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
    let manager =
        match crate::docker::connect_node(&leader.docker_host(), &dir.client_certs()).await {
            Ok(manager) => manager,
            // Stopped behind goblog-lab's back (`docker stop`, a reboot): the
            // machine's own state says so better than an unreachable engine.
            Err(unreachable @ Error::NoDaemon { .. }) => {
                let quiet = Ui::new(true, false);
                let provider = crate::provider::for_lab(&state, &dir, &quiet).await?;
                return Err(match provider.ensure_running(leader).await {
                    Err(Error::NodeStopped { .. }) => Error::LabStopped(state.name),
                    _ => unreachable,
                });
            }
            Err(other) => return Err(other),
        };
    Ok(OpenLab {
        dir,
        state,
        manager,
    })
}
