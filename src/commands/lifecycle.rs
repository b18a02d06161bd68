//! `goblog-lab stop` and `goblog-lab start`: put a lab aside between
//! workshop sessions without losing it. Machines keep their disks and Swarm
//! state, so the Swarm comes back as it was; `start` returns when the
//! services answer through `$ManagerIP` again. The provider that made the
//! lab is read from its state, so neither takes a flag.

use futures_util::future::try_join_all;

use crate::cli::LifecycleArgs;
use crate::docker;
use crate::error::Result;
use crate::lab::name;
use crate::lab::state::{LabDir, RegistryHost};
use crate::pki::Authority;
use crate::provider;
use crate::provision::{self, EngineConfig};
use crate::steps::{deploy, engines, registry, wait};
use crate::ui::Ui;

pub async fn stop(args: &LifecycleArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let dir = LabDir::new(&args.name);
    let mut state = dir.load()?;
    let provider = provider::for_lab(&state, &dir, ui).await?;
    let legacy_registry = state.registry.runs_on == RegistryHost::HostEngine;
    let step = ui.step(format!(
        "Stopping lab '{}' ({} nodes{}) 💤",
        state.name,
        state.nodes.len(),
        if legacy_registry {
            " and the registry"
        } else {
            ""
        }
    ));
    try_join_all(state.nodes.iter().map(|node| provider.stop(node))).await?;
    if legacy_registry {
        registry::stop(&docker::connect_host().await?, &state.registry).await?;
    }
    state.stopped = true;
    dir.save(&state)?;
    step.done();
    Ok(())
}

/// Every manager's registry given what the lab runs: one that was down
/// while `deploy` pushed missed it (`registry::catch_up`). A manager that
/// cannot is named, and the lab goes on: the others still serve pulls.
async fn catch_up_registries(
    state: &crate::lab::state::LabState,
    engines: &[bollard::Docker],
    ui: &Ui,
) {
    let step = ui.step("Catching up the managers' registries 📦");
    let hosts = registry::hosts(state);
    let caught = futures_util::future::join_all(hosts.iter().map(|host| async move {
        let engine = state
            .nodes
            .iter()
            .position(|n| n.hostname == host.hostname)
            .map(|i| &engines[i]);
        match engine {
            Some(engine) => registry::catch_up(engine, state, host).await,
            None => Ok(()),
        }
    }))
    .await;
    for (host, caught) in hosts.iter().zip(caught) {
        if let Err(err) = caught {
            ui.warn(format!(
                "{}'s registry did not catch up: {err}",
                host.hostname
            ));
        }
    }
    step.done();
}

pub async fn start(args: &LifecycleArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let dir = LabDir::new(&args.name);
    let mut state = dir.load()?;
    let provider = provider::for_lab(&state, &dir, ui).await?;

    let step = ui.step(format!(
        "Starting lab '{}' ({} nodes) 📦",
        state.name,
        state.nodes.len()
    ));
    let addresses = try_join_all(state.nodes.iter().map(|node| provider.start(node))).await?;
    if state.registry.runs_on == RegistryHost::HostEngine {
        state.registry = registry::restart(&docker::connect_host().await?, &state.registry).await?;
    }
    // A machine whose address changed gets a certificate for the new one
    // before anything talks to its engine.
    let moved: Vec<usize> = state
        .nodes
        .iter()
        .zip(&addresses)
        .enumerate()
        .filter(|(_, (node, address))| node.address != **address)
        .map(|(i, _)| i)
        .collect();
    if !moved.is_empty() {
        let authority = Authority::load(&dir)?;
        for &i in &moved {
            ui.warn(format!(
                "{} moved from {} to {}: issuing its engine a certificate for the new address",
                state.nodes[i].hostname, state.nodes[i].address, addresses[i]
            ));
            state.nodes[i].address = addresses[i];
            let config = EngineConfig {
                authority: &authority,
                registries: registry::addresses(&state),
                vip: state.vip,
            };
            provision::reissue(&*provider, &state.nodes[i], &config).await?;
        }
    }
    state.stopped = false;
    // A port Docker picked for a node is picked again at each start.
    let published = try_join_all(state.nodes.iter().map(|n| provider.published_ports(n))).await?;
    for (node, published) in state.nodes.iter_mut().zip(published) {
        if node.published != published {
            ui.detail(format!(
                "{} publishes on 127.0.0.1 now: {published:?}",
                node.hostname
            ));
            node.published = published;
        }
    }
    dir.save(&state)?;
    step.done();

    let step = ui.step("Waiting for the node engines 🐳");
    let certs = dir.client_certs();
    let provider = &*provider;
    let engines = try_join_all(state.nodes.iter().map(|node| {
        engines::wait_for_engine(ui, node, &certs, deploy::Pace::of(&state), || {
            provider.ensure_running(node)
        })
    }))
    .await?;
    step.done();

    if state.registry.runs_on == RegistryHost::EveryManager && !state.services.is_empty() {
        catch_up_registries(&state, &engines, ui).await;
    }

    for service in &state.services {
        let (Some(port), Some(probe)) = (service.ports.first(), service.probe.as_ref()) else {
            continue;
        };
        let url = format!("http://{}{probe}", state.entry(*port)?);
        let step = ui.step(format!(
            "Waiting for {} to answer on {url} ⏳",
            service.name
        ));
        wait::until_answers(ui, &url, service.replicas, deploy::Pace::of(&state)).await?;
        step.done();
    }
    Ok(())
}
