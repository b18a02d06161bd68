//! What the visualizer draws, as plain data: the JSON `/api/state` returns
//! and the page renders. It is kept apart from Docker's types so the page
//! sees a small, stable model, and so a change is found by comparing two
//! snapshots rather than by trusting Docker's event stream.

use serde::Serialize;

pub use crate::viz::rates::RateStatus;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VizState {
    /// Bumped on every change the page is sent.
    pub version: u64,
    pub lab: String,
    pub manager: ManagerStatus,
    /// Whether tasks carry request rates, and why not.
    pub rates: RateStatus,
    pub nodes: Vec<VizNode>,
    pub services: Vec<VizService>,
    pub tasks: Vec<VizTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManagerStatus {
    pub address: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub polled_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VizNode {
    pub id: String,
    pub hostname: String,
    /// manager | worker
    pub role: String,
    pub leader: bool,
    /// ready | down | unknown | disconnected
    pub state: String,
    /// active | pause | drain
    pub availability: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VizService {
    pub id: String,
    pub name: String,
    pub image: String,
    /// replicated | global
    pub mode: String,
    pub replicas: u64,
    pub running: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VizTask {
    pub id: String,
    pub service_id: String,
    pub service: String,
    /// None until Swarm has scheduled the task.
    pub node_id: Option<String>,
    pub slot: Option<i64>,
    /// Swarm's own task state: new, pending, ..., running, shutdown, failed.
    pub state: String,
    pub desired_state: String,
    pub image: String,
    pub error: Option<String>,
    /// When the poller first saw the task in its current state.
    pub updated_unix_ms: u64,
    /// Requests per second the edge proxy sent this running task over the
    /// last poll; None when unknown (no edge, not behind it, just appeared).
    pub rate_rps: Option<f64>,
    /// What the task says it lacks while up (its `/health`'s `X-Degraded`,
    /// as the edge proxy's check read it): "quote breaker open" while its
    /// answers carry the fallback quote.
    pub degraded: Option<String>,
}

/// What changed between two snapshots, as the page applies it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub version: u64,
    pub upsert: Upserts,
    pub remove: Removals,
    pub manager: ManagerStatus,
    pub rates: RateStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Upserts {
    pub nodes: Vec<VizNode>,
    pub services: Vec<VizService>,
    pub tasks: Vec<VizTask>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Removals {
    pub nodes: Vec<String>,
    pub services: Vec<String>,
    pub tasks: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.upsert == Upserts::default() && self.remove == Removals::default()
    }
}

trait Keyed: Clone + PartialEq {
    fn key(&self) -> &str;
}
impl Keyed for VizNode {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for VizService {
    fn key(&self) -> &str {
        &self.id
    }
}
impl Keyed for VizTask {
    fn key(&self) -> &str {
        &self.id
    }
}

fn changes<T: Keyed>(old: &[T], new: &[T]) -> (Vec<T>, Vec<String>) {
    let upserts = new
        .iter()
        .filter(|n| !old.iter().any(|o| o == *n))
        .cloned()
        .collect();
    let removals = old
        .iter()
        .filter(|o| !new.iter().any(|n| n.key() == o.key()))
        .map(|o| o.key().to_string())
        .collect();
    (upserts, removals)
}

/// The changes from `old` to `new`, numbered `new.version`. The manager's
/// status always rides along, so the page can show how fresh it is, and so
/// does whether rates are shown.
pub fn diff(old: &VizState, new: &VizState) -> Diff {
    let (nodes, removed_nodes) = changes(&old.nodes, &new.nodes);
    let (services, removed_services) = changes(&old.services, &new.services);
    let (tasks, removed_tasks) = changes(&old.tasks, &new.tasks);
    Diff {
        version: new.version,
        upsert: Upserts {
            nodes,
            services,
            tasks,
        },
        remove: Removals {
            nodes: removed_nodes,
            services: removed_services,
            tasks: removed_tasks,
        },
        manager: new.manager.clone(),
        rates: new.rates.clone(),
    }
}

/// What one poll found.
pub enum Snapshot {
    Read {
        manager: ManagerStatus,
        rates: RateStatus,
        nodes: Vec<VizNode>,
        services: Vec<VizService>,
        tasks: Vec<VizTask>,
    },
    Unreachable(ManagerStatus),
}

impl Snapshot {
    /// The next model: this reading on top of the last one.
    pub fn apply(self, last: &VizState) -> VizState {
        match self {
            Snapshot::Read {
                manager,
                rates,
                nodes,
                services,
                tasks,
            } => VizState {
                version: last.version,
                lab: last.lab.clone(),
                manager,
                rates,
                nodes,
                services,
                tasks,
            },
            Snapshot::Unreachable(manager) => VizState {
                manager,
                ..last.clone()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, state: &str) -> VizTask {
        VizTask {
            id: id.into(),
            service_id: "s1".into(),
            service: "accountservice".into(),
            node_id: Some("n1".into()),
            slot: Some(1),
            state: state.into(),
            desired_state: "running".into(),
            image: "registry:5000/accountservice:abc".into(),
            error: None,
            updated_unix_ms: 0,
            rate_rps: None,
            degraded: None,
        }
    }

    fn state(tasks: Vec<VizTask>) -> VizState {
        VizState {
            version: 1,
            lab: "goblog".into(),
            manager: ManagerStatus {
                address: "172.28.0.10".into(),
                reachable: true,
                error: None,
                polled_unix_ms: 0,
            },
            rates: RateStatus {
                available: true,
                note: String::new(),
            },
            nodes: vec![],
            services: vec![],
            tasks,
        }
    }

    #[test]
    fn an_unchanged_snapshot_gives_an_empty_diff() {
        let a = state(vec![task("t1", "running")]);
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn new_changed_and_gone_tasks_are_upserted_or_removed() {
        let old = state(vec![task("t1", "running"), task("t2", "starting")]);
        let mut new = state(vec![task("t2", "running"), task("t3", "pending")]);
        new.version = 2;
        let d = diff(&old, &new);
        assert_eq!(d.version, 2);
        let upserted: Vec<(&str, &str)> = d
            .upsert
            .tasks
            .iter()
            .map(|t| (t.id.as_str(), t.state.as_str()))
            .collect();
        assert_eq!(upserted, vec![("t2", "running"), ("t3", "pending")]);
        assert_eq!(d.remove.tasks, vec!["t1".to_string()]);
        assert!(!d.is_empty());
    }

    #[test]
    fn a_new_rate_is_a_change_of_its_task() {
        let old = state(vec![task("t1", "running")]);
        let mut new = old.clone();
        new.tasks[0].rate_rps = Some(42.0);
        let d = diff(&old, &new);
        assert_eq!(d.upsert.tasks.len(), 1);
        assert_eq!(d.upsert.tasks[0].rate_rps, Some(42.0));
    }
}
