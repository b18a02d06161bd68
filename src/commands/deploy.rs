//! `goblog-lab deploy [SERVICE]`: the blog's copyall.sh, without the
//! copying. The command picks the services and prints; [`crate::redeploy`]
//! builds, pushes and rolls each out.

use std::time::Duration;

use crate::cli::{DeployArgs, Output};
use crate::commands::create::interrupted;
use crate::commands::open_lab;
use crate::docker;
use crate::error::{Error, Result};
use crate::redeploy::{self, Deployed};
use crate::steps::{deploy, images};
use crate::ui::{seconds, Ui};

pub async fn run(args: &DeployArgs, ui: &Ui) -> Result<()> {
    let mut lab = open_lab(&args.name).await?;
    let targets = redeploy::targets(&lab.state, args.service.as_deref())?;
    let project_root = lab.state.project_root.clone().ok_or_else(|| {
        Error::failed(format!(
            "lab '{}' does not record which checkout it was built from (made by an older goblog-lab); recreate it to use deploy",
            lab.state.name
        ))
    })?;
    let host = docker::connect_host().await?;
    let cache = images::target_dir(&project_root);
    let mut results = Vec::new();
    for (service, build) in targets {
        let deployed = redeploy::service(
            &host,
            &mut lab,
            &project_root,
            &cache,
            &service,
            &build,
            args.replicas,
            ui,
        );
        // Once the update is sent, Swarm carries it through on its own;
        // Ctrl-C only stops the waiting.
        let result = tokio::select! {
            result = deployed => result?,
            () = interrupted() => {
                ui.warn(format!(
                    "if the rollout of {service} had begun, Swarm carries it on; `goblog-lab status --name {}` shows where it stands",
                    lab.state.name
                ));
                return Err(Error::Interrupted);
            }
        };
        results.push(result);
    }
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("deploy results serialise")
        );
    } else {
        results.iter().for_each(print_text);
    }
    Ok(())
}

fn print_text(deployed: &Deployed) {
    let secs = |s: f64| seconds(Duration::from_secs_f64(s));
    if !deployed.changed {
        println!(
            "{} is up to date ({}): nothing to deploy",
            deployed.service, deployed.to
        );
        return;
    }
    if deployed.from.as_deref() == Some(deployed.to.as_str()) {
        println!(
            "{} {} is unchanged; scaled to {} replica{} in {}",
            deployed.service,
            deployed.to,
            deployed.replicas,
            if deployed.replicas == 1 { "" } else { "s" },
            secs(deployed.seconds.total),
        );
        deploy::print_placement(&deployed.placement);
        return;
    }
    println!(
        "{} {} → {} on {} replica{} in {} (build {}, push {}, rollout {}; all serving the new image after {})",
        deployed.service,
        deployed.from.as_deref().unwrap_or("?"),
        deployed.to,
        deployed.replicas,
        if deployed.replicas == 1 { "" } else { "s" },
        secs(deployed.seconds.total),
        secs(deployed.seconds.build),
        secs(deployed.seconds.push),
        secs(deployed.seconds.rollout),
        secs(deployed.seconds.serving),
    );
    deploy::print_placement(&deployed.placement);
}
