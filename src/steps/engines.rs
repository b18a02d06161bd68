//! The Docker engines inside the nodes, reached over TLS.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use crate::docker;
use crate::error::{Error, Result};
use crate::lab::state::NodeState;
use crate::steps::deploy::Pace;
use crate::ui::Ui;

/// How long an engine may take to answer once its machine runs: 90 s on
/// native machines, `Pace::patience` of it on emulated VMs, where an engine
/// restarting after its VM was killed (journal replay, the Swarm state
/// restored) once took longer than 90 s under a busy CI run.
const ENGINE_DEADLINE: Duration = Duration::from_secs(90);

/// Polls the node's engine over TLS until it answers; fails fast, with the
/// reason, if `alive` (the provider's word on the machine) says it stopped.
pub async fn wait_for_engine<F, Fut>(
    ui: &Ui,
    node: &NodeState,
    certs: &Path,
    pace: Pace,
    alive: F,
) -> Result<Docker>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let client = &docker::node_client(&node.docker_host(), certs)?;
    let alive = &alive;
    crate::retry::until_deadline(
        pace.patience(ENGINE_DEADLINE),
        Duration::from_millis(100),
        || async move {
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), client.ping()).await {
                return Ok(ControlFlow::Break(()));
            }
            // A node that died is not waited for.
            alive().await?;
            Ok(ControlFlow::Continue(()))
        },
        |()| Error::EngineSilent {
            node: node.hostname.clone(),
            host: node.docker_host(),
            seconds: pace.patience(ENGINE_DEADLINE).as_secs(),
        },
    )
    .await?;
    ui.detail(format!("engine of {} answers", node.hostname));
    docker::connect_node(&node.docker_host(), certs).await
}
