//! Turns the manager's nodes, services and tasks into the page's model once
//! a second, and publishes each change to the server's hub.
//!
//! Swarm keeps a few finished tasks per slot for history; drawn forever they
//! would bury the live ones. A task is shown while Swarm wants it running or
//! it still runs (stopping), and for a few seconds after it ended, so a
//! failure or a shutdown is seen happen.
//!
//! Each running task also gets its request rate from the edge proxy's
//! stats (`crate::viz::rates`), read in the same poll.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{Node, NodeSpecRoleEnum, Service, Task, TaskState};
use bollard::Docker;

use crate::error::{Context, Result};
use crate::lab::state::LabState;
use crate::steps::images::template_image;
use crate::viz::model::{ManagerStatus, Snapshot, VizNode, VizService, VizState, VizTask};
use crate::viz::rates::{RateReader, RateStatus};
use crate::viz::server::Hub;

/// How long an ended task stays on the page.
const ENDED_TASK_SHOWN_FOR: Duration = Duration::from_secs(10);
pub const POLL_EVERY: Duration = Duration::from_secs(1);

pub struct Poller {
    manager: Docker,
    address: String,
    /// Task id and state → when this poller first saw it so.
    seen: HashMap<(String, String), (Instant, u64)>,
    first_poll: bool,
    rates: RateReader,
}

impl Poller {
    pub fn new(manager: Docker, address: &str, lab: &LabState) -> Self {
        Poller {
            manager,
            address: address.to_string(),
            seen: HashMap::new(),
            first_poll: true,
            rates: RateReader::new(lab),
        }
    }

    /// Polls forever, publishing every change (and, every few seconds, the
    /// manager's status alone, so the page knows the picture is fresh).
    pub async fn run(mut self, hub: &Hub) {
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let snapshot = self.snapshot().await;
            hub.publish(snapshot);
        }
    }

    /// One reading of the Swarm; when the manager does not answer, the last
    /// picture stays, marked unreachable.
    pub async fn snapshot(&mut self) -> Snapshot {
        let polled_unix_ms = unix_ms();
        let read = tokio::time::timeout(Duration::from_secs(3), self.read()).await;
        let manager = |error: Option<String>| ManagerStatus {
            address: self.address.clone(),
            reachable: error.is_none(),
            error,
            polled_unix_ms,
        };
        match read {
            Ok(Ok((nodes, services, tasks, rates))) => Snapshot::Read {
                manager: manager(None),
                rates,
                nodes,
                services,
                tasks,
            },
            Ok(Err(err)) => Snapshot::Unreachable(manager(Some(err.to_string()))),
            Err(_) => Snapshot::Unreachable(manager(Some(format!(
                "the manager at {} did not answer within 3 s",
                self.address
            )))),
        }
    }

    async fn read(&mut self) -> Result<(Vec<VizNode>, Vec<VizService>, Vec<VizTask>, RateStatus)> {
        let (nodes, services, tasks) = tokio::try_join!(
            async {
                self.manager
                    .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
                    .await
                    .context("listing nodes")
            },
            async {
                self.manager
                    .list_services(None::<bollard::query_parameters::ListServicesOptions>)
                    .await
                    .context("listing services")
            },
            async {
                self.manager
                    .list_tasks(None::<bollard::query_parameters::ListTasksOptions>)
                    .await
                    .context("listing tasks")
            },
        )?;
        let now = Instant::now();
        let first_poll = std::mem::replace(&mut self.first_poll, false);
        let mut shown: Vec<VizTask> = Vec::new();
        let service_names: HashMap<String, String> = services
            .iter()
            .filter_map(|s| Some((s.id.clone()?, s.spec.as_ref()?.name.clone()?)))
            .collect();
        let mut seen = HashMap::new();
        for task in &tasks {
            let Some(model) = task_model(task, &service_names) else {
                continue;
            };
            let key = (model.id.clone(), model.state.clone());
            // Tasks that had ended before the page opened are history.
            let (since, since_ms) = match self.seen.get(&key) {
                Some(&known) => known,
                None if first_poll => (
                    now.checked_sub(ENDED_TASK_SHOWN_FOR).unwrap_or(now),
                    unix_ms(),
                ),
                None => (now, unix_ms()),
            };
            seen.insert(key, (since, since_ms));
            let live = model.desired_state == "running" || model.state == "running";
            if live || now.duration_since(since) < ENDED_TASK_SHOWN_FOR {
                shown.push(VizTask {
                    updated_unix_ms: since_ms,
                    ..model
                });
            }
        }
        self.seen = seen;
        let running: BTreeSet<String> = shown
            .iter()
            .filter(|t| t.state == "running")
            .map(|t| t.id.clone())
            .collect();
        let (rates, mut degraded, rate_status) = self.rates.read(&self.manager, &running).await;
        for task in &mut shown {
            // Tenths: finer jitter would be a change to send every second.
            task.rate_rps = rates.get(&task.id).map(|r| (r * 10.0).round() / 10.0);
            task.degraded = degraded.remove(&task.id);
        }
        shown.sort_by(|a, b| (&a.service, a.slot, &a.id).cmp(&(&b.service, b.slot, &b.id)));

        let mut nodes: Vec<VizNode> = nodes.iter().filter_map(node_model).collect();
        nodes.sort_by(|a, b| {
            (a.role != "manager", &a.hostname).cmp(&(b.role != "manager", &b.hostname))
        });
        let mut services: Vec<VizService> = services
            .iter()
            .filter_map(|s| service_model(s, &tasks, nodes.len()))
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((nodes, services, shown, rate_status))
    }
}

pub fn empty_state(lab: &str, address: &str) -> VizState {
    VizState {
        version: 0,
        lab: lab.to_string(),
        manager: ManagerStatus {
            address: address.to_string(),
            reachable: false,
            error: Some("not polled yet".into()),
            polled_unix_ms: unix_ms(),
        },
        rates: RateStatus {
            available: false,
            note: "not polled yet".into(),
        },
        nodes: Vec::new(),
        services: Vec::new(),
        tasks: Vec::new(),
    }
}

fn node_model(node: &Node) -> Option<VizNode> {
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    Some(VizNode {
        id: node.id.clone()?,
        hostname: node
            .description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .unwrap_or_else(|| "?".into()),
        role: match spec.and_then(|s| s.role) {
            Some(NodeSpecRoleEnum::MANAGER) => "manager",
            _ => "worker",
        }
        .to_string(),
        leader: node
            .manager_status
            .as_ref()
            .and_then(|m| m.leader)
            .unwrap_or(false),
        state: status
            .and_then(|s| s.state)
            .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
        availability: spec
            .and_then(|s| s.availability)
            .map_or_else(|| "active".to_string(), |a| a.to_string()),
        address: status.and_then(|s| s.addr.clone()).unwrap_or_default(),
    })
}

fn service_model(service: &Service, tasks: &[Task], node_count: usize) -> Option<VizService> {
    let id = service.id.clone()?;
    let spec = service.spec.as_ref()?;
    let replicated = spec.mode.as_ref().and_then(|m| m.replicated.as_ref());
    let running = tasks
        .iter()
        .filter(|t| t.service_id.as_deref() == Some(id.as_str()))
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
        .count() as u64;
    Some(VizService {
        name: spec.name.clone()?,
        image: template_image(spec.task_template.as_ref())
            .unwrap_or_default()
            .to_string(),
        mode: if replicated.is_some() {
            "replicated"
        } else {
            "global"
        }
        .to_string(),
        replicas: replicated
            .and_then(|r| r.replicas)
            .map_or(node_count as u64, |r| r.max(0) as u64),
        running,
        id,
    })
}

fn task_model(task: &Task, service_names: &HashMap<String, String>) -> Option<VizTask> {
    let service_id = task.service_id.clone()?;
    let status = task.status.as_ref();
    Some(VizTask {
        id: task.id.clone()?,
        service: service_names
            .get(&service_id)
            .cloned()
            .unwrap_or_else(|| "?".into()),
        service_id,
        node_id: task.node_id.clone().filter(|n| !n.is_empty()),
        slot: task.slot,
        state: status
            .and_then(|s| s.state)
            .map_or_else(|| "new".to_string(), |s| s.to_string()),
        desired_state: task
            .desired_state
            .map_or_else(|| "running".to_string(), |s| s.to_string()),
        image: template_image(task.spec.as_ref())
            .unwrap_or_default()
            .to_string(),
        error: status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty()),
        updated_unix_ms: 0,
        rate_rps: None,
        degraded: None,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
