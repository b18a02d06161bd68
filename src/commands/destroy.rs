//! `goblog-lab destroy`: everything gone, every time.
//!
//! It finds the lab's objects by label, not from the state file, so it
//! works after a crash, after the state was deleted, and a second time.

use std::collections::BTreeSet;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use bollard::Docker;

use crate::cli::DestroyArgs;
use crate::docker::{self, LABEL_LAB};
use crate::driver::dind::DindDriver;
use crate::driver::Driver;
use crate::error::{Context, Result};
use crate::lab::name;
use crate::lab::state::{saved_labs, LabDir};
use crate::ui::Ui;

pub async fn run(args: &DestroyArgs, ui: &Ui) -> Result<()> {
    if !args.all {
        name::validate(&args.name)?;
    }
    let host = docker::connect_host().await?;
    let names = if args.all {
        let mut names: BTreeSet<String> = saved_labs().into_iter().collect();
        names.extend(labelled_labs(&host).await?);
        names
    } else {
        BTreeSet::from([args.name.clone()])
    };
    if names.is_empty() {
        ui.info("no labs to remove");
    }
    for lab in names {
        let step = ui.step(format!("Deleting lab '{lab}' 🔥"));
        let removed = DindDriver::new(host.clone(), &lab, ui.clone())
            .destroy()
            .await?;
        let had_state = LabDir::new(&lab).exists();
        LabDir::new(&lab).remove()?;
        if removed.is_empty() && !had_state {
            step.done_with("(nothing to remove)");
        } else {
            step.done_with(format!(
                "({} container{}, {} volume{}, {} network{})",
                removed.containers,
                s(removed.containers),
                removed.volumes,
                s(removed.volumes),
                removed.networks,
                s(removed.networks)
            ));
        }
    }
    Ok(())
}

/// Lab names found on any container, volume or network carrying the label.
pub async fn labelled_labs(host: &Docker) -> Result<BTreeSet<String>> {
    let filters = std::iter::once(("label".to_string(), vec![LABEL_LAB.to_string()])).collect();
    let mut names = BTreeSet::new();
    let containers = host
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing containers")?;
    names.extend(
        containers
            .into_iter()
            .filter_map(|c| c.labels?.remove(LABEL_LAB)),
    );
    let volumes = host
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing volumes")?;
    names.extend(
        volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut v| v.labels.remove(LABEL_LAB)),
    );
    let networks = host
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing networks")?;
    names.extend(
        networks
            .into_iter()
            .filter_map(|n| n.labels?.remove(LABEL_LAB)),
    );
    Ok(names)
}

fn s(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
