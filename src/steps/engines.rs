//! The Docker engines inside the nodes, reached over TLS.

use std::path::Path;
use std::time::{Duration, Instant};

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
    let client = docker::node_client(&node.docker_host(), certs)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), client.ping()).await {
            ui.detail(format!("engine of {} answers", node.hostname));
            return docker::connect_node(&node.docker_host(), certs).await;
        }
        alive().await?;
        if Instant::now() > deadline {
            return Err(Error::EngineSilent {
                node: node.hostname.clone(),
                host: node.docker_host(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
