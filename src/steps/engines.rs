//! The Docker engines inside the nodes, reached over TLS.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use crate::docker;
use crate::error::{Error, Result};
use crate::lab::state::NodeState;
use crate::ui::Ui;

/// Polls the node's engine over TLS until it answers; fails fast, with the
/// reason, if `alive` (the provider's word on the machine) says it stopped.
pub async fn wait_for_engine<F, Fut>(
    ui: &Ui,
    node: &NodeState,
    certs: &Path,
    alive: F,
) -> Result<Docker>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let client = &docker::node_client(&node.docker_host(), certs)?;
    let alive = &alive;
    crate::retry::until_deadline(
        Duration::from_secs(90),
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
        },
    )
    .await?;
    ui.detail(format!("engine of {} answers", node.hostname));
    docker::connect_node(&node.docker_host(), certs).await
}
