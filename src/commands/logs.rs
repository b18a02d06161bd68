//! `goblog-lab logs SERVICE`: what `docker service logs` shows, with each
//! line prefixed by its task and node, so a workshop sees which replica on
//! which node said what.

use std::collections::HashMap;
use std::io::Write;

use bollard::container::LogOutput;
use bollard::query_parameters::{ListTasksOptions, LogsOptionsBuilder};
use futures_util::stream::{select_all, StreamExt};

use crate::cli::LogsArgs;
use crate::commands::open_lab;
use crate::error::{docker_message, Context, Result};

pub async fn run(args: &LogsArgs) -> Result<()> {
    let lab = open_lab(&args.name).await?;
    let manager = &lab.manager;
    if let Err(err) = manager.inspect_service(&args.service, None).await {
        if crate::docker::has_status(&err, crate::docker::GONE) {
            return Err(crate::steps::deploy::no_such_service(
                &lab.state,
                &args.service,
            ));
        }
        return Err(err).with_context(|| format!("reading service {}", args.service));
    }
    let hostname = crate::steps::swarm::node_hostnames(manager).await?;
    let filters = HashMap::from([("service".to_string(), vec![args.service.clone()])]);
    let mut tasks = manager
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .context("listing tasks")?;
    // Tasks that never got a container have no logs to give.
    tasks.retain(|t| {
        t.status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .is_some()
    });
    tasks.sort_by_key(|t| {
        (
            t.slot.unwrap_or_default(),
            t.created_at.clone().map(|c| c.to_string()),
        )
    });

    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(args.follow)
        .tail("all")
        .build();
    let streams = tasks.iter().filter_map(|task| {
        let id = task.id.clone()?;
        let node = task
            .node_id
            .as_ref()
            .and_then(|n| hostname.get(n))
            .cloned()
            .unwrap_or_else(|| "?".into());
        let prefix = format!(
            "{}.{}.{}@{node}",
            args.service,
            task.slot.unwrap_or_default(),
            &id[..id.len().min(12)]
        );
        Some(
            manager
                .task_logs(&id, Some(options.clone()))
                .map(move |line| (prefix.clone(), line))
                .boxed(),
        )
    });
    let mut all = select_all(streams);
    let mut out = std::io::stdout().lock();
    while let Some((prefix, line)) = all.next().await {
        match line {
            Ok(
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message },
            ) => {
                for text in String::from_utf8_lossy(&message).lines() {
                    // `logs ... | head` closes the pipe: stop quietly, like any filter.
                    if writeln!(out, "{prefix} | {text}")
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            Ok(LogOutput::StdIn { .. }) => {}
            Err(err) => eprintln!("goblog-lab: {prefix}: {}", docker_message(&err)),
        }
    }
    Ok(())
}
