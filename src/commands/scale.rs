//! `goblog-lab scale SERVICE=N`: the blog's `docker service scale`, which
//! also waits until Swarm has converged and shows where the tasks landed.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ServiceSpecMode, ServiceSpecModeReplicated, TaskState};
use bollard::query_parameters::{ListTasksOptions, UpdateServiceOptions};
use serde::Serialize;

use crate::cli::{Output, ScaleArgs};
use crate::commands::open_lab;
use crate::error::{Context, Error, Result};
use crate::steps::wait;
use crate::ui::Ui;

#[derive(Debug, Serialize)]
pub struct Placement {
    pub task: String,
    pub node: String,
}

pub async fn run(args: &ScaleArgs, ui: &Ui) -> Result<()> {
    let (service, replicas) = (&args.target.0, args.target.1);
    let mut lab = open_lab(&args.name).await?;
    let current = match lab.manager.inspect_service(service, None).await {
        Ok(current) => current,
        Err(err) if crate::docker::has_status(&err, crate::docker::GONE) => {
            let names: Vec<String> = lab.state.services.iter().map(|s| s.name.clone()).collect();
            return Err(Error::usage(format!(
                "no service '{service}' in lab '{}' (it has: {})",
                lab.state.name,
                names.join(", ")
            )));
        }
        Err(err) => return Err(err).with_context(|| format!("reading service {service}")),
    };
    let mut spec = current.spec.unwrap_or_default();
    // bollard's model names the field `HealthCheck` where the engine sends
    // `Healthcheck`, so the override `create` set is lost on the way in.
    // Sent back without it, Swarm would see a new task template and roll
    // every task instead of only adding or removing some.
    if let Some(container) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        if container.health_check.is_none() && lab.state.services.iter().any(|s| &s.name == service)
        {
            container.health_check = Some(crate::steps::deploy::health_check());
        }
    }
    if spec
        .mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .is_none()
    {
        return Err(Error::usage(format!(
            "service '{service}' is global: it runs one task per node and cannot be scaled"
        )));
    }
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(replicas as i64),
        }),
        ..Default::default()
    });
    let version = current.version.and_then(|v| v.index).unwrap_or_default();
    let step = ui.step(format!("Scaling {service} to {replicas} ⚖"));
    lab.manager
        .update_service(
            service,
            spec,
            UpdateServiceOptions {
                version: version as i32,
                ..Default::default()
            },
            None,
        )
        .await
        .with_context(|| format!("scaling {service}"))?;
    wait::until_converged(
        &lab.manager,
        ui,
        service,
        replicas,
        Duration::from_secs(120),
    )
    .await?;
    step.done();

    if let Some(saved) = lab.state.services.iter_mut().find(|s| &s.name == service) {
        saved.replicas = replicas;
        lab.dir.save(&lab.state)?;
    }
    let placement = placement(&lab.manager, service).await?;
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&placement).expect("placement serialises")
        );
    } else {
        for p in &placement {
            println!("{:<24} {}", p.task, p.node);
        }
    }
    Ok(())
}

/// Which node runs each running task of `service`, by task slot.
async fn placement(manager: &bollard::Docker, service: &str) -> Result<Vec<Placement>> {
    let hostname = crate::steps::swarm::node_hostnames(manager).await?;
    let filters = HashMap::from([
        ("service".to_string(), vec![service.to_string()]),
        ("desired-state".to_string(), vec!["running".to_string()]),
    ]);
    let mut tasks = manager
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .context("listing tasks")?;
    tasks.retain(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING));
    tasks.sort_by_key(|t| t.slot.unwrap_or_default());
    Ok(tasks
        .into_iter()
        .map(|t| Placement {
            task: format!("{service}.{}", t.slot.unwrap_or_default()),
            node: t
                .node_id
                .and_then(|id| hostname.get(&id).cloned())
                .unwrap_or_else(|| "?".into()),
        })
        .collect())
}
