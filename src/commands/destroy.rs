//! `goblog-lab destroy`: everything gone, every time.
//!
//! The provider that made the lab does the removing. A dind lab's objects
//! are found by label, not from the state file, so destroy works after a
//! crash, after the state was deleted, and a second time; a VM lab's
//! QEMU processes and devices are found by name and alias the same way; an
//! ssh lab's hosts are given back as they were before the lab.

use std::collections::BTreeSet;

use bollard::Docker;

use crate::cli::DestroyArgs;
use crate::docker::{self, Labelled};
use crate::error::Result;
use crate::lab::name;
use crate::lab::state::{saved_labs, LabDir};
use crate::provider;
use crate::ui::Ui;

pub async fn run(args: &DestroyArgs, ui: &Ui) -> Result<()> {
    if !args.all {
        name::validate(&args.name)?;
    }
    let names = if args.all {
        let host = docker::connect_host().await?;
        let mut names: BTreeSet<String> = saved_labs().into_iter().collect();
        names.extend(labelled_labs(&host).await?);
        names.extend(provider::leftover_labs());
        names
    } else {
        BTreeSet::from([args.name.clone()])
    };
    if names.is_empty() {
        ui.info("no labs to remove");
    }
    for lab in names {
        let step = ui.step(format!("Deleting lab '{lab}' 🔥"));
        let dir = LabDir::new(&lab);
        // A damaged or missing state still leaves the labels to go by.
        let state = dir.load().ok();
        let provider = match &state {
            Some(state) => provider::for_lab(state, &dir, ui).await?,
            None => provider::for_leftovers(&lab, &dir, ui).await?,
        };
        let removed = match crate::provision::remove_lab(&*provider, state.as_ref(), ui).await {
            Ok(removed) => removed,
            Err(err) if args.force => {
                drop(step);
                ui.warn(format!("--force: forgetting lab '{lab}' here: {err}"));
                dir.remove()?;
                continue;
            }
            Err(err) => return Err(err),
        };
        let had_state = dir.exists();
        dir.remove()?;
        if removed.is_empty() && !had_state {
            step.done_with("(nothing to remove)");
        } else {
            step.done_with(format!("({})", removed.summary()));
        }
    }
    Ok(())
}

/// Lab names found on any container, volume or network carrying the label.
pub async fn labelled_labs(host: &Docker) -> Result<BTreeSet<String>> {
    Ok(Labelled::of_all_labs(host).await?.lab_names())
}
