//! What the lab spent while under load: every second, each node's and each
//! Swarm task's CPU and memory, as `docker stats` shows them, read through
//! each node's engine API. The blog read `docker stats` by hand after its
//! Gatling run; here the peak and mean per task land in the report.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptionsBuilder, StatsOptionsBuilder};
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::Serialize;

/// Swarm names a task's container with this label: `SERVICE.SLOT.TASKID`.
const TASK_LABEL: &str = "com.docker.swarm.task.name";
/// A node that does not answer a round (stopped by `--kill`) is skipped
/// for that second rather than holding up the others.
const ROUND_TIMEOUT: Duration = Duration::from_millis(900);

/// Peak and mean of one measure over the samples taken.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measure {
    pub peak: f64,
    pub mean: f64,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    samples: u64,
}

impl Measure {
    pub fn add(&mut self, value: f64) {
        self.peak = self.peak.max(value);
        self.sum += value;
        self.samples += 1;
        self.mean = self.sum / self.samples as f64;
    }
}

/// A task's or a node's use of CPU (percent of one core) and memory (MiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub cpu_percent: Measure,
    pub memory_mib: Measure,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    /// By task (`accountservice.1`) with the node it runs on.
    pub tasks: BTreeMap<String, TaskUsage>,
    /// By node: everything its engine runs (tasks, the edge, the registry).
    pub nodes: BTreeMap<String, Usage>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskUsage {
    pub node: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// One container's reading at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Nanoseconds of CPU the container has used, ever.
    pub cpu_total: u64,
    /// Nanoseconds of CPU the machine has used, ever (all cores).
    pub system_total: u64,
    pub online_cpus: u32,
    /// Memory in use without the page cache, as `docker stats` counts it.
    pub memory_bytes: u64,
}

impl Reading {
    fn of(stats: &bollard::models::ContainerStatsResponse) -> Option<Reading> {
        let cpu = stats.cpu_stats.as_ref()?;
        let memory = stats.memory_stats.as_ref()?;
        let usage = memory.usage.unwrap_or(0);
        // cgroup v2 calls the page cache inactive_file, v1 calls it cache.
        let cache = memory.stats.as_ref().and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
                .or_else(|| s.get("cache"))
                .copied()
        });
        Some(Reading {
            cpu_total: cpu.cpu_usage.as_ref()?.total_usage?,
            system_total: cpu.system_cpu_usage?,
            online_cpus: cpu.online_cpus.unwrap_or(1).max(1),
            memory_bytes: usage.saturating_sub(cache.unwrap_or(0)),
        })
    }

    /// CPU since `before`, in percent of one core (200 % is two busy cores).
    pub fn cpu_percent_since(&self, before: &Reading) -> Option<f64> {
        let cpu = self.cpu_total.checked_sub(before.cpu_total)?;
        let system = self.system_total.checked_sub(before.system_total)?;
        if system == 0 {
            return None;
        }
        Some(cpu as f64 / system as f64 * f64::from(self.online_cpus) * 100.0)
    }
}

/// The task a container runs, as `SERVICE.SLOT`, from its Swarm label.
pub fn task_name(label: &str) -> String {
    match label.rsplit_once('.') {
        Some((task, _id)) if task.contains('.') => task.to_string(),
        _ => label.to_string(),
    }
}

/// Samples every node once a second into `resources` until dropped.
pub async fn sample(nodes: Vec<(String, Docker)>, resources: Arc<Mutex<Resources>>) {
    let mut before: HashMap<String, Reading> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let rounds = join_all(nodes.iter().map(|(hostname, docker)| async move {
            let readings = tokio::time::timeout(ROUND_TIMEOUT, read_node(docker))
                .await
                .unwrap_or_default();
            (hostname, readings)
        }))
        .await;
        let mut resources = resources.lock().expect("no panics while sampling");
        for (hostname, readings) in rounds {
            if readings.is_empty() {
                continue;
            }
            let (mut node_cpu, mut node_memory, mut node_has_cpu) = (0.0, 0.0, false);
            for (id, task, reading) in readings {
                let memory = reading.memory_bytes as f64 / 1_048_576.0;
                node_memory += memory;
                let cpu = before
                    .insert(id, reading)
                    .and_then(|b| reading.cpu_percent_since(&b));
                if let Some(cpu) = cpu {
                    node_cpu += cpu;
                    node_has_cpu = true;
                }
                if let Some(task) = task {
                    let entry = resources.tasks.entry(task).or_default();
                    entry.node = hostname.clone();
                    entry.usage.memory_mib.add(memory);
                    if let Some(cpu) = cpu {
                        entry.usage.cpu_percent.add(cpu);
                    }
                }
            }
            let node = resources.nodes.entry(hostname.clone()).or_default();
            node.memory_mib.add(node_memory);
            if node_has_cpu {
                node.cpu_percent.add(node_cpu);
            }
        }
    }
}

/// (container id, task, reading) of every running container on a node.
async fn read_node(docker: &Docker) -> Vec<(String, Option<String>, Reading)> {
    let Ok(containers) = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().build()))
        .await
    else {
        return Vec::new();
    };
    let reads = containers.into_iter().filter_map(|c| {
        let id = c.id?;
        let task = c
            .labels
            .as_ref()
            .and_then(|l| l.get(TASK_LABEL))
            .map(|l| task_name(l));
        Some(async move {
            let options = StatsOptionsBuilder::default()
                .stream(false)
                .one_shot(true)
                .build();
            let stats = docker.stats(&id, Some(options)).next().await?.ok()?;
            Some((id, task, Reading::of(&stats)?))
        })
    });
    join_all(reads).await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_share_of_the_machine_times_its_cores() {
        let before = Reading {
            cpu_total: 1_000,
            system_total: 10_000,
            online_cpus: 2,
            memory_bytes: 0,
        };
        let after = Reading {
            cpu_total: 2_000,
            system_total: 20_000,
            ..before
        };
        // A tenth of all CPU time on 2 cores is a fifth of one core.
        assert_eq!(after.cpu_percent_since(&before), Some(20.0));
        assert_eq!(before.cpu_percent_since(&after), None);
    }

    #[test]
    fn measures_keep_peak_and_mean() {
        let mut m = Measure::default();
        for v in [1.0, 5.0, 3.0] {
            m.add(v);
        }
        assert_eq!((m.peak, m.mean), (5.0, 3.0));
    }

    #[test]
    fn tasks_are_named_by_service_and_slot() {
        assert_eq!(
            task_name("accountservice.1.x8k2l0p9q3mz"),
            "accountservice.1"
        );
        assert_eq!(task_name("edge"), "edge");
    }
}
