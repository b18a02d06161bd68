//! `goblog-lab destroy`: everything gone, every time. The command picks
//! the labs (one, or `--all`) and prints; [`crate::destroy`] removes each.

use std::collections::BTreeSet;

use bollard::Docker;

use crate::cli::DestroyArgs;
use crate::destroy::Gone;
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
        match crate::destroy::lab(&lab, ui).await {
            Ok(Gone::Removed(removed)) => step.done_with(format!("({})", removed.summary())),
            Ok(Gone::Nothing) => step.done_with("(nothing to remove)"),
            Err(err) if args.force => {
                drop(step);
                ui.warn(format!("--force: forgetting lab '{lab}' here: {err}"));
                LabDir::new(&lab).remove()?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Lab names found on any container, volume or network carrying the label.
pub async fn labelled_labs(host: &Docker) -> Result<BTreeSet<String>> {
    Ok(Labelled::of_all_labs(host).await?.lab_names())
}
