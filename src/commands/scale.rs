//! `goblog-lab scale SERVICE=N`: the blog's `docker service scale`, which
//! also waits until Swarm has converged and shows where the tasks landed.

use std::time::Duration;

use crate::cli::{Output, ScaleArgs};
use crate::commands::open_lab;
use crate::error::Result;
use crate::steps::{deploy, wait};
use crate::ui::Ui;

pub async fn run(args: &ScaleArgs, ui: &Ui) -> Result<()> {
    let (service, replicas) = (&args.target.0, args.target.1);
    let mut lab = open_lab(&args.name).await?;
    let mut running = deploy::running(&lab.manager, &lab.state, service).await?;
    running.set_replicas(replicas)?;
    let step = ui.step(format!("Scaling {service} to {replicas} ⚖"));
    running.update(&lab.manager, "scaling").await?;
    wait::until_converged(
        &lab.manager,
        ui,
        service,
        replicas,
        None,
        Duration::from_secs(120),
    )
    .await?;
    step.done();

    if let Some(saved) = lab.state.services.iter_mut().find(|s| &s.name == service) {
        saved.replicas = replicas;
        lab.dir.save(&lab.state)?;
    }
    let placement = deploy::placement(&lab.manager, service).await?;
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&placement).expect("placement serialises")
        );
    } else {
        deploy::print_placement(&placement);
    }
    Ok(())
}
