//! `goblog-lab stop` and `goblog-lab start`: put a lab aside between
//! workshop sessions without losing it. Nodes keep their disks, addresses
//! and certificates, so the Swarm comes back as it was; `start` returns
//! when the services answer through `$ManagerIP` again.

use std::time::Duration;

use futures_util::future::try_join_all;

use crate::cli::LifecycleArgs;
use crate::docker;
use crate::driver::dind::DindDriver;
use crate::driver::Driver;
use crate::error::Result;
use crate::lab::name;
use crate::lab::state::LabDir;
use crate::steps::{engines, registry, wait};
use crate::ui::Ui;

pub async fn stop(args: &LifecycleArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let dir = LabDir::new(&args.name);
    let state = dir.load()?;
    let host = docker::connect_host().await?;
    let driver = DindDriver::new(host.clone(), &state.name, ui.clone());
    let step = ui.step(format!(
        "Stopping lab '{}' ({} nodes and the registry) 💤",
        state.name,
        state.nodes.len()
    ));
    try_join_all(state.nodes.iter().map(|node| driver.stop_node(node))).await?;
    registry::stop(&host, &state.registry).await?;
    step.done();
    Ok(())
}

pub async fn start(args: &LifecycleArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let dir = LabDir::new(&args.name);
    let mut state = dir.load()?;
    let host = docker::connect_host().await?;
    let driver = DindDriver::new(host.clone(), &state.name, ui.clone());

    let step = ui.step(format!(
        "Starting lab '{}' ({} nodes and the registry) 📦",
        state.name,
        state.nodes.len()
    ));
    let (registry, _) = tokio::try_join!(
        registry::restart(&host, &state.registry),
        try_join_all(state.nodes.iter().map(|node| driver.start_node(node)))
    )?;
    state.registry = registry;
    dir.save(&state)?;
    step.done();

    let step = ui.step("Waiting for the node engines 🐳");
    let certs = dir.client_certs();
    try_join_all(
        state
            .nodes
            .iter()
            .map(|node| engines::wait_for_engine(ui, &driver, node, &certs)),
    )
    .await?;
    step.done();

    let leader = state.leader()?;
    for service in &state.services {
        let (Some(port), Some(probe)) = (service.ports.first(), service.probe.as_ref()) else {
            continue;
        };
        let url = format!("http://{}:{port}{probe}", leader.address);
        let step = ui.step(format!(
            "Waiting for {} to answer on {url} ⏳",
            service.name
        ));
        wait::until_answers(ui, &url, service.replicas, Duration::from_secs(120)).await?;
        step.done();
    }
    Ok(())
}
