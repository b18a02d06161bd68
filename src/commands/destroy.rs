//! `goblog-lab destroy`: everything gone, every time.
//!
//! It finds the lab's objects by label, not from the state file, so it
//! works after a crash, after the state was deleted, and a second time.

use std::collections::BTreeSet;

use bollard::Docker;

use crate::cli::DestroyArgs;
use crate::docker::{self, Labelled};
use crate::driver::dind::DindDriver;
use crate::driver::Driver;
use crate::error::Result;
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
    Ok(Labelled::of_all_labs(host).await?.lab_names())
}

fn s(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
