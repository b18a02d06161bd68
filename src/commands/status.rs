//! `goblog-lab status` and `goblog-lab ls`: what a lab is running, and
//! where. The Swarm's own view (nodes, services, tasks, the managers'
//! quorum) comes from the first manager, or any other that answers when
//! it is down; `ls` needs only the saved states and the host engine.

use std::collections::HashMap;

use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};
use serde::Serialize;

use crate::cli::{LsArgs, Output, StatusArgs};
use crate::commands::destroy::labelled_labs;
use crate::commands::{open_lab, OpenLab};
use crate::docker;
use crate::error::{Context, Result};
use crate::lab::state::{saved_labs, Endpoint, LabDir, Publish, Routing};

#[derive(Debug, Serialize)]
pub struct Status {
    pub name: String,
    pub manager_ip: String,
    /// Where `$ManagerIP` is virtual: the manager whose engine answers on
    /// it now (none while no manager holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager_ip_held_by: Option<String>,
    pub routing: Routing,
    pub registry: String,
    /// How this host reaches the machines: `direct` or `localhost`.
    pub publish: Publish,
    /// Every port of a machine this host calls, and where.
    pub endpoints: Vec<Endpoint>,
    pub nodes: Vec<NodeRow>,
    /// The Swarm's managers and whether Raft still has its majority.
    pub quorum: Quorum,
    pub services: Vec<ServiceRow>,
    pub tasks: Vec<TaskRow>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Quorum {
    pub managers: usize,
    pub reachable: usize,
    /// A majority of the managers: what Raft needs to change anything.
    pub needed: usize,
    pub kept: bool,
}

impl Quorum {
    /// From each manager's reachability as the Swarm reports it.
    pub fn of(nodes: &[NodeRow]) -> Quorum {
        let managers: Vec<&NodeRow> = nodes.iter().filter(|n| n.role == "manager").collect();
        let reachable = managers
            .iter()
            .filter(|n| n.reachability.as_deref() == Some("reachable"))
            .count();
        let needed = managers.len() / 2 + 1;
        Quorum {
            managers: managers.len(),
            reachable,
            needed,
            kept: reachable >= needed,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} of {} managers reachable: quorum {} (Raft needs {})",
            self.reachable,
            self.managers,
            if self.kept { "kept" } else { "LOST" },
            self.needed
        )
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    pub hostname: String,
    pub role: String,
    pub state: String,
    pub availability: String,
    pub address: String,
    pub leader: bool,
    /// A manager's Raft reachability (`reachable`, `unreachable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ServiceRow {
    pub name: String,
    pub running: u64,
    pub desired: u64,
    pub ports: Vec<String>,
    pub image: String,
}

#[derive(Debug, Serialize)]
pub struct TaskRow {
    pub name: String,
    pub service: String,
    pub node: String,
    pub state: String,
    pub desired_state: String,
    pub message: String,
}

pub async fn collect(lab: &str) -> Result<Status> {
    let OpenLab {
        state,
        manager,
        dir,
    } = open_lab(lab).await?;
    let held_by = async {
        state.vip?;
        let engine = docker::connect_node(&state.docker_host().ok()?, &dir.client_certs())
            .await
            .ok()?;
        engine.info().await.ok()?.name
    };
    let (held_by, listed) = tokio::join!(held_by, async {
        tokio::try_join!(
            async {
                manager
                    .list_nodes(None::<ListNodesOptions>)
                    .await
                    .context("listing Swarm nodes")
            },
            async {
                manager
                    .list_services(Some(ListServicesOptions {
                        status: Some(true),
                        ..Default::default()
                    }))
                    .await
                    .context("listing services")
            },
            async {
                manager
                    .list_tasks(None::<ListTasksOptions>)
                    .await
                    .context("listing tasks")
            },
        )
    });
    let (nodes, services, tasks) = listed?;

    let hostname_of: HashMap<String, String> = nodes
        .iter()
        .filter_map(|n| Some((n.id.clone()?, n.description.as_ref()?.hostname.clone()?)))
        .collect();
    let service_of: HashMap<String, String> = services
        .iter()
        .filter_map(|s| Some((s.id.clone()?, s.spec.as_ref()?.name.clone()?)))
        .collect();

    let mut node_rows: Vec<NodeRow> = nodes
        .iter()
        .map(|n| NodeRow {
            hostname: n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default(),
            role: n
                .spec
                .as_ref()
                .and_then(|s| s.role)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            state: n
                .status
                .as_ref()
                .and_then(|s| s.state)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            availability: n
                .spec
                .as_ref()
                .and_then(|s| s.availability)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            address: n
                .status
                .as_ref()
                .and_then(|s| s.addr.clone())
                .unwrap_or_default(),
            leader: n
                .manager_status
                .as_ref()
                .and_then(|m| m.leader)
                .unwrap_or(false),
            reachability: n
                .manager_status
                .as_ref()
                .and_then(|m| m.reachability)
                .map(|r| r.to_string()),
        })
        .collect();
    node_rows.sort_by(|a, b| a.hostname.cmp(&b.hostname));

    let mut service_rows: Vec<ServiceRow> = services
        .iter()
        .map(|s| {
            let spec = s.spec.clone().unwrap_or_default();
            let status = s.service_status.clone().unwrap_or_default();
            let ports = s
                .endpoint
                .as_ref()
                .and_then(|e| e.spec.as_ref())
                .and_then(|e| e.ports.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|p| {
                    format!(
                        "{}->{}/{}",
                        p.published_port.unwrap_or_default(),
                        p.target_port.unwrap_or_default(),
                        p.publish_mode.map(|m| m.to_string()).unwrap_or_default()
                    )
                })
                .collect();
            ServiceRow {
                name: spec.name.unwrap_or_default(),
                running: status.running_tasks.unwrap_or(0),
                desired: status.desired_tasks.unwrap_or(0),
                ports,
                image: spec
                    .task_template
                    .and_then(|t| t.container_spec)
                    .and_then(|c| c.image)
                    .unwrap_or_default(),
            }
        })
        .collect();
    service_rows.sort_by(|a, b| a.name.cmp(&b.name));

    let mut task_rows: Vec<TaskRow> = tasks
        .iter()
        .filter(|t| {
            t.desired_state.map(|d| d.to_string()) == Some("running".into())
                || t.status
                    .as_ref()
                    .and_then(|s| s.state)
                    .map(|s| s.to_string())
                    == Some("running".into())
        })
        .map(|t| {
            let service = t
                .service_id
                .as_ref()
                .and_then(|id| service_of.get(id))
                .cloned()
                .unwrap_or_default();
            TaskRow {
                name: format!("{service}.{}", t.slot.unwrap_or_default()),
                service,
                node: t
                    .node_id
                    .as_ref()
                    .and_then(|id| hostname_of.get(id))
                    .cloned()
                    .unwrap_or_default(),
                state: t
                    .status
                    .as_ref()
                    .and_then(|s| s.state)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                desired_state: t.desired_state.map(|s| s.to_string()).unwrap_or_default(),
                message: t
                    .status
                    .as_ref()
                    .and_then(|s| s.err.clone().or(s.message.clone()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    task_rows.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));

    Ok(Status {
        name: state.name.clone(),
        manager_ip: state.manager_ip()?.to_string(),
        manager_ip_held_by: held_by,
        routing: state.routing,
        registry: state.registry.pull_address.clone(),
        publish: state.publish,
        endpoints: state.endpoints(),
        quorum: Quorum::of(&node_rows),
        nodes: node_rows,
        services: service_rows,
        tasks: task_rows,
    })
}

pub async fn run(args: &StatusArgs) -> Result<()> {
    let status = collect(&args.name).await?;
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
        return Ok(());
    }
    let routing = match status.routing {
        Routing::Mesh => "routing mesh",
        Routing::Edge => "edge proxy",
    };
    let manager_ip = match &status.manager_ip_held_by {
        Some(holder) => format!("{} (virtual, held by {holder})", status.manager_ip),
        None => status.manager_ip.clone(),
    };
    println!(
        "Lab {}   ManagerIP {manager_ip}   registry {}   {routing}",
        status.name, status.registry
    );
    if status.publish == Publish::Localhost {
        println!("Published on 127.0.0.1 only (--publish localhost):");
        for e in &status.endpoints {
            println!("  {:<16} {}", e.node, e.describe());
        }
    }
    println!();
    let mut table = vec![vec![
        "NODE".to_string(),
        "ROLE".into(),
        "STATE".into(),
        "AVAILABILITY".into(),
        "ADDRESS".into(),
    ]];
    for n in &status.nodes {
        let role = if n.leader {
            format!("{} (leader)", n.role)
        } else {
            n.role.clone()
        };
        table.push(vec![
            n.hostname.clone(),
            role,
            n.state.clone(),
            n.availability.clone(),
            n.address.clone(),
        ]);
    }
    print_table(&table);
    if status.quorum.managers > 1 || !status.quorum.kept {
        println!("{}", status.quorum.describe());
    }
    for n in status.nodes.iter().filter(|n| n.state != "ready") {
        println!(
            "{} is {}: `goblog-lab start --name {}` starts it again",
            n.hostname, n.state, status.name
        );
    }
    println!();
    let mut table = vec![vec![
        "SERVICE".to_string(),
        "REPLICAS".into(),
        "PORTS".into(),
        "IMAGE".into(),
    ]];
    for s in &status.services {
        table.push(vec![
            s.name.clone(),
            format!("{}/{}", s.running, s.desired),
            s.ports.join(","),
            s.image.clone(),
        ]);
    }
    print_table(&table);
    println!();
    let mut table = vec![vec![
        "TASK".to_string(),
        "NODE".into(),
        "STATE".into(),
        "DESIRED".into(),
        "MESSAGE".into(),
    ]];
    for t in &status.tasks {
        table.push(vec![
            t.name.clone(),
            t.node.clone(),
            t.state.clone(),
            t.desired_state.clone(),
            t.message.clone(),
        ]);
    }
    print_table(&table);
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct LabRow {
    pub name: String,
    /// The provider that made it (dind, ssh, qemu, docker-machine); none for an orphan.
    pub driver: Option<String>,
    pub nodes: usize,
    pub manager_ip: Option<String>,
    pub state: String,
}

pub async fn ls(args: &LsArgs) -> Result<()> {
    let host = docker::connect_host().await?;
    let mut names: std::collections::BTreeSet<String> = saved_labs().into_iter().collect();
    names.extend(labelled_labs(&host).await?);
    let leftovers = crate::provider::leftovers();
    names.extend(leftovers.keys().cloned());
    let rows: Vec<LabRow> = names
        .into_iter()
        .map(|name| match LabDir::new(&name).load() {
            Ok(state) => LabRow {
                driver: Some(state.driver.as_str().to_string()),
                manager_ip: state.manager_ip().ok().map(|ip| ip.to_string()),
                nodes: state.nodes.len(),
                state: "saved".into(),
                name,
            },
            Err(_) if leftovers.contains_key(&name) => LabRow {
                nodes: leftovers[&name].running,
                driver: Some(leftovers[&name].driver.as_str().to_string()),
                name,
                manager_ip: None,
                state: "orphaned VMs or devices (no state; `destroy` removes them)".into(),
            },
            Err(_) => LabRow {
                name,
                driver: None,
                nodes: 0,
                manager_ip: None,
                state: "orphaned (no state; `destroy` removes it)".into(),
            },
        })
        .collect();
    if args.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return Ok(());
    }
    let mut table = vec![vec![
        "NAME".to_string(),
        "DRIVER".into(),
        "NODES".into(),
        "MANAGER IP".into(),
        "STATE".into(),
    ]];
    for r in rows {
        table.push(vec![
            r.name,
            r.driver.unwrap_or_else(|| "-".into()),
            r.nodes.to_string(),
            r.manager_ip.unwrap_or_else(|| "-".into()),
            r.state,
        ]);
    }
    print_table(&table);
    Ok(())
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: &str, reachability: Option<&str>) -> NodeRow {
        NodeRow {
            hostname: "n".into(),
            role: role.into(),
            state: "ready".into(),
            availability: "active".into(),
            address: "10.0.0.1".into(),
            leader: false,
            reachability: reachability.map(String::from),
        }
    }

    #[test]
    fn quorum_is_a_majority_of_the_managers_and_workers_do_not_count() {
        let reachable = || node("manager", Some("reachable"));
        let lost = || node("manager", Some("unreachable"));
        let worker = || node("worker", None);
        let one_down = Quorum::of(&[lost(), reachable(), reachable(), worker(), worker()]);
        assert_eq!(
            one_down,
            Quorum {
                managers: 3,
                reachable: 2,
                needed: 2,
                kept: true
            }
        );
        assert_eq!(
            one_down.describe(),
            "2 of 3 managers reachable: quorum kept (Raft needs 2)"
        );
        let two_down = Quorum::of(&[lost(), lost(), reachable()]);
        assert!(!two_down.kept);
        assert!(two_down.describe().contains("quorum LOST"));
        assert!(Quorum::of(&[reachable(), worker()]).kept);
    }
}
