//! The Docker engines inside the nodes, reached over TLS.

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;

use crate::docker;
use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::lab::state::NodeState;
use crate::ui::Ui;

/// Polls the node's engine over TLS until it answers; fails fast, with the
/// reason, if the node itself stopped meanwhile.
pub async fn wait_for_engine(
    ui: &Ui,
    driver: &dyn Driver,
    node: &NodeState,
    certs: &Path,
) -> Result<Docker> {
    let client = docker::node_client(&node.docker_host(), certs)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), client.ping()).await {
            ui.detail(format!("engine of {} answers", node.hostname));
            return docker::connect_node(&node.docker_host(), certs).await;
        }
        driver.ensure_running(node).await?;
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "the Docker engine of {} did not answer on {} within 90s",
                node.hostname,
                node.docker_host()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
