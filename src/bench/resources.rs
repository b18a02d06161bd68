//! What the lab spent while under load: every second, each node's and each
//! Swarm task's CPU and memory, as `docker stats` shows them. The blog read
//! `docker stats` by hand after its Gatling run; here the peak and mean per
//! task land in the report.
//!
//! The engine's stats API is asked first. Some engines answer it without
//! metrics (`docker stats` then shows `0B / 0%`: containerd's shim cannot
//! load the container's cgroup, as on cgroup v1 hybrid hosts), so a node
//! whose engine does that is read from the cgroup files instead, the very
//! counters the engine would have reported, with one shell command a second
//! through the lab's provider. The node's own figure always comes from that
//! command: a VM's or host's kernel counters, or a dind node's own cgroup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{Task, TaskState};
use bollard::query_parameters::{
    ListContainersOptions, ListNodesOptions, ListServicesOptions, ListTasksOptionsBuilder,
    StatsOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::Serialize;

use crate::lab::state::NodeState;
use crate::provider::{MachineScope, Provider};

/// How long one node's command or the manager may take before that second
/// is skipped for it: a node stopped by `--kill` must not hold up the others.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// The engine's stats are asked beside the command; a one-shot answer
/// takes half a second on a busy 2-core machine. Slower, and that second's
/// task figures come from the command's cgroup reading instead.
const ENGINE_TIMEOUT: Duration = Duration::from_millis(1500);
const MIB: f64 = 1_048_576.0;

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
        self.peak = if self.samples == 0 {
            value
        } else {
            self.peak.max(value)
        };
        self.sum += value;
        self.samples += 1;
        self.mean = self.sum / self.samples as f64;
    }
}

/// Where a figure was read: the engine's stats API, the container's cgroup
/// files, or (for a whole VM or host) the kernel's `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Engine,
    Cgroup,
    Proc,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Engine => "engine",
            Source::Cgroup => "cgroup",
            Source::Proc => "proc",
        }
    }
}

/// A task's or a node's use of CPU (percent of one core, so two busy cores
/// are 200 %) and memory (MiB without the page cache, as `docker stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Memory readings taken; CPU needs two, so it has one fewer.
    pub samples: u64,
    pub cpu_percent: Measure,
    pub memory_mib: Measure,
    pub source: Source,
    /// Every reading, for the HTML report's charts over time.
    pub timeline: Vec<Point>,
}

/// One reading, at seconds since the sampler started (with the load).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub at_s: f64,
    pub cpu_percent: Option<f64>,
    pub memory_mib: f64,
}

impl Usage {
    fn new(source: Source) -> Self {
        Usage {
            samples: 0,
            cpu_percent: Measure::default(),
            memory_mib: Measure::default(),
            source,
            timeline: Vec::new(),
        }
    }

    fn add(&mut self, at: Duration, sample: Sample) {
        let memory_mib = sample.memory_bytes as f64 / MIB;
        self.samples += 1;
        self.memory_mib.add(memory_mib);
        if let Some(cpu) = sample.cpu_percent {
            self.cpu_percent.add(cpu);
        }
        self.source = sample.source;
        self.timeline.push(Point {
            at_s: at.as_secs_f64(),
            cpu_percent: sample.cpu_percent,
            memory_mib,
        });
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskUsage {
    pub service: String,
    /// `SERVICE.SLOT`, as `docker service ps` names it.
    pub task: String,
    pub task_id: String,
    pub node: String,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeUsage {
    pub node: String,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Every task that ran during the load, by service and slot.
    pub tasks: Vec<TaskUsage>,
    /// Every node: its engine, its containers and (a VM) its whole kernel.
    pub nodes: Vec<NodeUsage>,
    /// Task or node readings that failed and were left out (a stopped node,
    /// a slow answer).
    pub skipped: u64,
}

/// One reading of one task or node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    cpu_percent: Option<f64>,
    memory_bytes: u64,
    source: Source,
}

/// One container's reading from its engine's stats API.
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
    /// None when the engine answered without metrics: a zero `read`
    /// time, empty `memory_stats`, zero CPU totals.
    pub fn of(stats: &bollard::models::ContainerStatsResponse) -> Option<Reading> {
        let cpu = stats.cpu_stats.as_ref()?;
        let memory = stats.memory_stats.as_ref()?;
        let usage = memory.usage?;
        // cgroup v2 calls the page cache inactive_file, v1 total_inactive_file.
        let cache = memory.stats.as_ref().and_then(|s| {
            s.get("total_inactive_file")
                .or_else(|| s.get("inactive_file"))
                .copied()
        });
        let system_total = cpu.system_cpu_usage.filter(|&s| s > 0)?;
        Some(Reading {
            cpu_total: cpu.cpu_usage.as_ref()?.total_usage?,
            system_total,
            online_cpus: cpu.online_cpus.unwrap_or(1).max(1),
            memory_bytes: usage.saturating_sub(cache.unwrap_or(0)),
        })
    }

    /// CPU since `before`, in percent of one core.
    pub fn cpu_percent_since(&self, before: &Reading) -> Option<f64> {
        let cpu = self.cpu_total.checked_sub(before.cpu_total)?;
        let system = self.system_total.checked_sub(before.system_total)?;
        if system == 0 {
            return None;
        }
        Some(cpu as f64 / system as f64 * f64::from(self.online_cpus) * 100.0)
    }
}

/// A cgroup's counters as its files hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `cpuacct.usage` (v1) or `cpu.stat`'s `usage_usec` (v2), in ns.
    pub cpu_ns: Option<u64>,
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2).
    pub usage: Option<u64>,
    /// `memory.stat`'s `total_inactive_file` (v1, with its children).
    pub total_inactive_file: Option<u64>,
    /// `memory.stat`'s `inactive_file` (v2; v1's own pages only).
    pub inactive_file: Option<u64>,
}

impl Counters {
    /// Memory as `docker stats` counts it: usage less the page cache that
    /// could be dropped.
    pub fn memory_bytes(&self) -> Option<u64> {
        let cache = self.total_inactive_file.or(self.inactive_file);
        Some(self.usage?.saturating_sub(cache.unwrap_or(0)))
    }
}

/// The whole kernel's CPU, from `/proc/stat`'s first lines, in jiffies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCpu {
    pub busy: u64,
    pub total: u64,
    pub cpus: u32,
}

/// What the node command printed, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReadings {
    /// `/proc/uptime`: the clock the cgroup counters are divided by.
    pub uptime_ns: Option<u64>,
    pub containers: HashMap<String, Counters>,
    /// The node container's own cgroup (dind).
    pub own: Counters,
    /// The own cgroup is its namespace's root, so the containers are
    /// inside it and already counted.
    pub own_holds_containers: bool,
    pub kernel_cpu: Option<KernelCpu>,
    /// `MemTotal - MemAvailable`.
    pub kernel_memory: Option<u64>,
}

/// Lines `parse` keeps: bare numbers (one-value files), the memory.stat and
/// cpu.stat entries, `/proc/uptime`, `/proc/stat`'s cpu lines and meminfo's.
const KEPT: &str = "^([0-9]+|usage_usec [0-9]+|(total_)?inactive_file [0-9]+|[0-9.]+ [0-9.]+|cpu[0-9]* .*|Mem(Total|Available): .*)$";

/// The one shell command that reads a node's counters: a single `grep`
/// over the files of every layout docker uses (cgroup v1 and v2, cgroupfs
/// and systemd drivers); the ones that do not exist are silently skipped.
pub fn script(scope: MachineScope, containers: &[String]) -> String {
    let ids: Vec<&str> = containers
        .iter()
        .map(String::as_str)
        // Ids go into a shell line: only hex ever does.
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    let mut script = String::from("P=/sys/fs/cgroup; set --\n");
    if !ids.is_empty() {
        script.push_str(&format!(
            "for id in {}; do for d in docker/$id system.slice/docker-$id.scope; do \
             set -- \"$@\" $P/cpuacct/$d/cpuacct.usage $P/memory/$d/memory.usage_in_bytes \
             $P/memory/$d/memory.stat $P/$d/cpu.stat $P/$d/memory.current $P/$d/memory.stat; \
             done; done\n",
            ids.join(" ")
        ));
    }
    match scope {
        MachineScope::Whole => script.push_str("set -- \"$@\" /proc/stat /proc/meminfo\n"),
        MachineScope::OwnCgroup => script.push_str(
            "M=; C=; U=\n\
             while IFS=: read -r _ ctl path; do case \",$ctl,\" in \
             *,memory,*) M=$path ;; *,cpuacct,*) C=$path ;; ,,) U=$path ;; esac; \
             done < /proc/1/cgroup\n\
             echo \"own ${M:-$U}\"\n\
             set -- \"$@\" $P/memory$M/memory.usage_in_bytes $P/memory$M/memory.stat \
             $P/cpuacct$C/cpuacct.usage $P$U/cpu.stat $P$U/memory.current $P$U/memory.stat\n",
        ),
    }
    script.push_str(&format!("grep -sHE '{KEPT}' /proc/uptime \"$@\"\n"));
    script
}

/// What [`script`] prints, read here from this machine's own files for a
/// node whose first process is `pid` on this kernel (a dind node): nothing
/// is started in the node. With a `docker exec` of the script a node a
/// second, the readings themselves moved the p99 they sat beside: 8.04 ms
/// against 2.68 ms without them at 200 req/s, and 2.84 against 2.65 ms
/// read here (`bench/readings.sh`, medians of 3).
pub fn read_local(pid: u32, containers: &[String]) -> Option<String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (mut memory, mut cpuacct, mut unified) = (None, None, None);
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let controllers: Vec<&str> = controllers.split(',').collect();
        if controllers.contains(&"memory") {
            memory = Some(path);
        } else if controllers.contains(&"cpuacct") {
            cpuacct = Some(path);
        } else if controllers == [""] {
            unified = Some(path);
        }
    }
    let root = "/sys/fs/cgroup";
    let files_of = |memory_dir: &str, cpu_dir: &str, unified_dir: &str| {
        [
            format!("{root}/cpuacct{cpu_dir}/cpuacct.usage"),
            format!("{root}/memory{memory_dir}/memory.usage_in_bytes"),
            format!("{root}/memory{memory_dir}/memory.stat"),
            format!("{root}{unified_dir}/cpu.stat"),
            format!("{root}{unified_dir}/memory.current"),
            format!("{root}{unified_dir}/memory.stat"),
        ]
    };
    let mut out = String::new();
    let mut add = |path: &str| -> bool {
        let Ok(text) = std::fs::read_to_string(path) else {
            return false;
        };
        for line in text.lines() {
            out.push_str(path);
            out.push(':');
            out.push_str(line);
            out.push('\n');
        }
        true
    };
    // The node's containers sit beside it (docker/ID) when it shares this
    // machine's cgroup namespace, or under its own cgroup when it has its
    // own namespace; then its own figure holds them, as `script` says "/".
    let mut nested = false;
    for id in containers
        .iter()
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let beside = [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
        ];
        for dir in &beside {
            for file in files_of(dir, dir, dir) {
                add(&file);
            }
        }
        let under =
            |own: Option<&str>| format!("{}/docker/{id}", own.unwrap_or("").trim_end_matches('/'));
        for file in files_of(&under(memory), &under(cpuacct), &under(unified)) {
            nested |= add(&file);
        }
    }
    let own_memory = memory.or(unified).unwrap_or("/");
    let own_line = if nested { "/" } else { own_memory };
    let mut text = format!("own {own_line}\n");
    for file in files_of(
        memory.unwrap_or("/"),
        cpuacct.unwrap_or("/"),
        unified.unwrap_or("/"),
    ) {
        add(&file);
    }
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    text.push_str(&format!("/proc/uptime:{}\n", uptime.trim()));
    text.push_str(&out);
    Some(text)
}

/// Reads what `script` printed; `containers` are the ids it was given.
pub fn parse(output: &str, containers: &[String]) -> NodeReadings {
    let mut readings = NodeReadings::default();
    for line in output.lines() {
        if let Some(own) = line.strip_prefix("own ") {
            readings.own_holds_containers = own.trim() == "/";
            continue;
        }
        let Some((path, value)) = line.split_once(':') else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or_default();
        let number = |text: &str| text.split_whitespace().next()?.parse::<u64>().ok();
        if path.starts_with("/proc/") {
            parse_kernel(&mut readings, file, value);
            continue;
        }
        let counters = match containers.iter().find(|id| path.contains(id.as_str())) {
            Some(id) => readings.containers.entry(id.clone()).or_default(),
            None => &mut readings.own,
        };
        let entry = value.split_once(' ');
        match (file, entry) {
            ("cpuacct.usage", None) => counters.cpu_ns = number(value),
            ("cpu.stat", Some(("usage_usec", n))) => {
                counters.cpu_ns = number(n).map(|us| us * 1000)
            }
            ("memory.usage_in_bytes" | "memory.current", None) => counters.usage = number(value),
            ("memory.stat", Some(("total_inactive_file", n))) => {
                counters.total_inactive_file = number(n)
            }
            ("memory.stat", Some(("inactive_file", n))) => counters.inactive_file = number(n),
            _ => {}
        }
    }
    readings
}

fn parse_kernel(readings: &mut NodeReadings, file: &str, value: &str) {
    let mut fields = value.split_whitespace();
    match (file, fields.next()) {
        ("uptime", Some(seconds)) => {
            readings.uptime_ns = seconds
                .parse::<f64>()
                .ok()
                .map(|s| (s * 1e9).round() as u64)
        }
        ("stat", Some("cpu")) => {
            let jiffies: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal; guest time is
            // already inside user and nice.
            let total: u64 = jiffies.iter().take(8).sum();
            let idle = jiffies.get(3).unwrap_or(&0) + jiffies.get(4).unwrap_or(&0);
            let cpu = readings.kernel_cpu.get_or_insert_with(Default::default);
            cpu.total = total;
            cpu.busy = total.saturating_sub(idle);
        }
        ("stat", Some(_per_cpu)) => {
            readings
                .kernel_cpu
                .get_or_insert_with(Default::default)
                .cpus += 1;
        }
        ("meminfo", Some(key)) => {
            let kib: u64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let bytes = kib * 1024;
            let memory = readings.kernel_memory.get_or_insert(0);
            match key {
                "MemTotal:" => *memory += bytes,
                "MemAvailable:" => *memory = memory.saturating_sub(bytes),
                _ => {}
            }
        }
        _ => {}
    }
}

/// Percent of one core between two readings of a CPU counter (ns) against
/// the clock (ns).
fn cpu_percent(before: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let cpu = now.0.checked_sub(before.0)?;
    let wall = now.1.checked_sub(before.1).filter(|&w| w > 0)?;
    Some(cpu as f64 / wall as f64 * 100.0)
}

/// The task a Swarm task is, as `docker service ps` names it.
fn task_name(service: &str, task: &Task) -> String {
    match (task.slot, &task.node_id) {
        (Some(slot), _) => format!("{service}.{slot}"),
        // A global service's task is named by its node.
        (None, Some(node)) => format!("{service}.{node}"),
        (None, None) => service.to_string(),
    }
}

/// A lab node as the sampler reaches it.
pub struct Machine {
    pub node: NodeState,
    /// Its engine, when it answered at the start.
    pub engine: Option<Docker>,
}

/// A running task the manager placed on a machine.
struct Placed {
    id: String,
    service: String,
    name: String,
    container: String,
    machine: usize,
}

/// What one round read on one machine.
#[derive(Default)]
struct MachineRound {
    readings: Option<NodeReadings>,
    /// By container: the engine's reading, or `None` when it answered
    /// without metrics.
    engine: HashMap<String, Option<Reading>>,
    /// Its counters were to be read here and could not be.
    local_failed: bool,
}

/// Reads the lab once a second; `run` publishes into a shared report.
pub struct Sampler {
    manager: Docker,
    provider: Box<dyn Provider>,
    machines: Vec<Machine>,
    /// Per machine: false once its engine answered stats without metrics.
    engine_has_stats: Vec<bool>,
    /// Per machine: its first process on this kernel, when its counters
    /// can be read here ([`read_local`]); asked again after a failed read.
    local: Vec<Option<Option<u32>>>,
    services: HashMap<String, String>,
    swarm_nodes: HashMap<String, usize>,
    /// The last CPU counter and clock by container or node key.
    counters: HashMap<String, (u64, u64)>,
    engine_before: HashMap<String, Reading>,
    tasks: BTreeMap<(String, String), TaskUsage>,
    nodes: BTreeMap<String, Usage>,
    skipped: u64,
    started: tokio::time::Instant,
}

impl Sampler {
    pub fn new(manager: Docker, provider: Box<dyn Provider>, machines: Vec<Machine>) -> Self {
        Sampler {
            engine_has_stats: machines.iter().map(|m| m.engine.is_some()).collect(),
            local: vec![None; machines.len()],
            manager,
            provider,
            machines,
            services: HashMap::new(),
            swarm_nodes: HashMap::new(),
            counters: HashMap::new(),
            engine_before: HashMap::new(),
            tasks: BTreeMap::new(),
            nodes: BTreeMap::new(),
            skipped: 0,
            started: tokio::time::Instant::now(),
        }
    }

    /// Samples every second into `report` until the task is aborted; each
    /// round lands whole, so an abort mid-round loses only that round.
    pub async fn run(mut self, report: Arc<Mutex<Resources>>) {
        self.started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // A slow round (the first also learns the names) is followed by the
        // next at once, not by a skipped second: a short run needs them all.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round().await;
            *report.lock().expect("no panics while sampling") = self.resources();
        }
    }

    fn resources(&self) -> Resources {
        Resources {
            tasks: self.tasks.values().cloned().collect(),
            nodes: self
                .nodes
                .iter()
                .map(|(node, usage)| NodeUsage {
                    node: node.clone(),
                    usage: usage.clone(),
                })
                .collect(),
            skipped: self.skipped,
        }
    }

    async fn round(&mut self) {
        let placed = match tokio::time::timeout(ROUND_TIMEOUT, self.running_tasks()).await {
            Ok(Some(placed)) => placed,
            // The manager did not answer: this second is lost for every task.
            _ => {
                self.skipped += self.tasks.len().max(1) as u64;
                return;
            }
        };
        let scope = self.provider.machine_scope();
        let asked = join_all(
            self.machines
                .iter()
                .zip(&self.local)
                .map(|(machine, local)| async {
                    match local {
                        Some(known) => *known,
                        None => self.provider.local_pid(&machine.node).await,
                    }
                }),
        )
        .await;
        self.local = asked.iter().copied().map(Some).collect();
        let reads = self.machines.iter().enumerate().map(|(index, machine)| {
            let containers: Vec<String> = placed
                .iter()
                .filter(|p| p.machine == index)
                .map(|p| p.container.clone())
                .collect();
            let ask_engine = self.engine_has_stats[index];
            let provider = self.provider.as_ref();
            read_machine(
                provider,
                scope,
                machine,
                containers,
                ask_engine,
                asked[index],
            )
        });
        let rounds = join_all(reads).await;
        for (index, round) in rounds.into_iter().enumerate() {
            if round.local_failed || round.readings.is_none() {
                // Restarted (a new pid), stopped, or back from a stop:
                // asked again next round.
                self.local[index] = None;
            }
            self.apply(index, round, &placed, scope);
        }
    }

    /// The manager's running tasks, each with its container and machine.
    async fn running_tasks(&mut self) -> Option<Vec<Placed>> {
        let filters = HashMap::from([("desired-state", vec!["running"])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        let tasks = self.manager.list_tasks(Some(options)).await.ok()?;
        let unknown = |t: &Task| {
            t.service_id
                .as_ref()
                .is_some_and(|s| !self.services.contains_key(s))
                || t.node_id
                    .as_ref()
                    .is_some_and(|n| !self.swarm_nodes.contains_key(n))
        };
        if tasks.iter().any(unknown) {
            self.learn_names().await;
        }
        Some(
            tasks
                .iter()
                .filter_map(|task| {
                    let status = task.status.as_ref()?;
                    if status.state != Some(TaskState::RUNNING) {
                        return None;
                    }
                    let service = self.services.get(task.service_id.as_ref()?)?;
                    Some(Placed {
                        id: task.id.clone()?,
                        service: service.clone(),
                        name: task_name(service, task),
                        container: status.container_status.as_ref()?.container_id.clone()?,
                        machine: *self.swarm_nodes.get(task.node_id.as_ref()?)?,
                    })
                })
                .collect(),
        )
    }

    /// Service names by id, and which lab machine each Swarm node is (by
    /// its address, else its hostname).
    async fn learn_names(&mut self) {
        if let Ok(services) = self
            .manager
            .list_services(None::<ListServicesOptions>)
            .await
        {
            self.services = services
                .into_iter()
                .filter_map(|s| Some((s.id?, s.spec?.name?)))
                .collect();
        }
        if let Ok(nodes) = self.manager.list_nodes(None::<ListNodesOptions>).await {
            self.swarm_nodes = nodes
                .into_iter()
                .filter_map(|n| {
                    let address = n.status.as_ref().and_then(|s| s.addr.clone());
                    let hostname = n.description.as_ref().and_then(|d| d.hostname.clone());
                    let machine = self.machines.iter().position(|m| {
                        address.as_deref() == Some(m.node.address.to_string().as_str())
                    });
                    let machine = machine.or_else(|| {
                        self.machines
                            .iter()
                            .position(|m| hostname.as_deref() == Some(m.node.hostname.as_str()))
                    })?;
                    Some((n.id?, machine))
                })
                .collect();
        }
    }

    fn apply(&mut self, index: usize, round: MachineRound, placed: &[Placed], scope: MachineScope) {
        let hostname = self.machines[index].node.hostname.clone();
        let at = self.started.elapsed();
        if round.engine.values().any(Option::is_none) {
            // Answered, but without metrics: its cgroups from now on.
            self.engine_has_stats[index] = false;
        }
        for task in placed.iter().filter(|p| p.machine == index) {
            let sample = self.task_sample(task, &round);
            let key = (task.name.clone(), task.id.clone());
            let Some(sample) = sample else {
                self.skipped += 1;
                continue;
            };
            self.tasks
                .entry(key)
                .or_insert_with(|| TaskUsage {
                    service: task.service.clone(),
                    task: task.name.clone(),
                    task_id: task.id.clone(),
                    node: hostname.clone(),
                    usage: Usage::new(sample.source),
                })
                .usage
                .add(at, sample);
        }
        match round
            .readings
            .as_ref()
            .and_then(|r| self.node_sample(&hostname, r, scope))
        {
            Some(sample) => self
                .nodes
                .entry(hostname)
                .or_insert_with(|| Usage::new(sample.source))
                .add(at, sample),
            None => self.skipped += 1,
        }
    }

    fn task_sample(&mut self, task: &Placed, round: &MachineRound) -> Option<Sample> {
        if let Some(Some(reading)) = round.engine.get(&task.container) {
            let cpu = self
                .engine_before
                .insert(task.container.clone(), *reading)
                .and_then(|before| reading.cpu_percent_since(&before));
            return Some(Sample {
                cpu_percent: cpu,
                memory_bytes: reading.memory_bytes,
                source: Source::Engine,
            });
        }
        let readings = round.readings.as_ref()?;
        let counters = readings.containers.get(&task.container)?;
        Some(Sample {
            cpu_percent: self.cgroup_cpu(&task.container, counters, readings.uptime_ns),
            memory_bytes: counters.memory_bytes()?,
            source: Source::Cgroup,
        })
    }

    /// A cgroup's CPU since the last round, remembering this one.
    fn cgroup_cpu(&mut self, key: &str, counters: &Counters, clock: Option<u64>) -> Option<f64> {
        let now = (counters.cpu_ns?, clock?);
        let before = self.counters.insert(key.to_string(), now)?;
        cpu_percent(before, now)
    }

    fn node_sample(
        &mut self,
        hostname: &str,
        readings: &NodeReadings,
        scope: MachineScope,
    ) -> Option<Sample> {
        match scope {
            MachineScope::Whole => {
                let cpu = readings.kernel_cpu?;
                let before = self
                    .counters
                    .insert(format!("node {hostname}"), (cpu.busy, cpu.total));
                Some(Sample {
                    cpu_percent: before.and_then(|b| {
                        cpu_percent(b, (cpu.busy, cpu.total)).map(|p| p * f64::from(cpu.cpus))
                    }),
                    memory_bytes: readings.kernel_memory?,
                    source: Source::Proc,
                })
            }
            MachineScope::OwnCgroup => {
                let mut memory = readings.own.memory_bytes()?;
                let mut cpu = self.cgroup_cpu(
                    &format!("node {hostname}"),
                    &readings.own,
                    readings.uptime_ns,
                );
                if !readings.own_holds_containers {
                    for (id, counters) in &readings.containers {
                        memory += counters.memory_bytes().unwrap_or(0);
                        // Its own key: the task rows keep theirs by id.
                        let key = format!("node {hostname} {id}");
                        let container = self.cgroup_cpu(&key, counters, readings.uptime_ns);
                        cpu = cpu.map(|c| c + container.unwrap_or(0.0));
                    }
                }
                Some(Sample {
                    cpu_percent: cpu,
                    memory_bytes: memory,
                    source: Source::Cgroup,
                })
            }
        }
    }
}

/// One machine's round: its engine's stats for the task containers (while
/// it gives them) and the one command over every container it runs.
async fn read_machine(
    provider: &dyn Provider,
    scope: MachineScope,
    machine: &Machine,
    tasks: Vec<String>,
    ask_engine: bool,
    local: Option<u32>,
) -> MachineRound {
    let mut containers = tasks.clone();
    if let Some(engine) = &machine.engine {
        // The registry and any other container count toward the node too.
        let list = engine.list_containers(None::<ListContainersOptions>);
        if let Ok(Ok(list)) = tokio::time::timeout(ENGINE_TIMEOUT, list).await {
            let known: HashSet<String> = containers.iter().cloned().collect();
            containers.extend(
                list.into_iter()
                    .filter_map(|c| c.id)
                    .filter(|id| !known.contains(id)),
            );
        }
    }
    if let Some(pid) = local {
        // The same counters the engine's stats and the script would give.
        if let Some(text) = read_local(pid, &containers) {
            return MachineRound {
                readings: Some(parse(&text, &containers)),
                engine: HashMap::new(),
                local_failed: false,
            };
        }
    }
    let command = script(scope, &containers);
    let engine_stats = async {
        let (Some(engine), true) = (&machine.engine, ask_engine) else {
            return HashMap::new();
        };
        let asked = join_all(tasks.iter().map(|id| async move {
            let options = StatsOptionsBuilder::default()
                .stream(false)
                .one_shot(true)
                .build();
            let stats = engine.stats(id, Some(options)).next().await?.ok()?;
            Some((id.clone(), Reading::of(&stats)))
        }));
        match tokio::time::timeout(ENGINE_TIMEOUT, asked).await {
            Ok(answers) => answers.into_iter().flatten().collect(),
            Err(_) => HashMap::new(),
        }
    };
    let command = tokio::time::timeout(ROUND_TIMEOUT, provider.run(&machine.node, &command));
    let (engine, output) = tokio::join!(engine_stats, command);
    MachineRound {
        readings: output
            .ok()
            .and_then(Result::ok)
            .map(|o| parse(&o.output, &containers)),
        engine,
        local_failed: local.is_some(),
    }
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
    fn an_engine_answer_without_metrics_is_no_reading() {
        // What dockerd 20.10 answers here when the shim has no metrics.
        let empty: bollard::models::ContainerStatsResponse = serde_json::from_str(
            r#"{"read":"0001-01-01T00:00:00Z","memory_stats":{},
                "cpu_stats":{"cpu_usage":{"total_usage":0},"system_cpu_usage":0}}"#,
        )
        .unwrap();
        assert_eq!(Reading::of(&empty), None);
        let full: bollard::models::ContainerStatsResponse = serde_json::from_str(
            r#"{"read":"2026-11-27T05:00:00Z",
                "memory_stats":{"usage":3145728,"stats":{"total_inactive_file":1048576}},
                "cpu_stats":{"cpu_usage":{"total_usage":5},"system_cpu_usage":10,"online_cpus":2}}"#,
        )
        .unwrap();
        assert_eq!(Reading::of(&full).unwrap().memory_bytes, 2 * 1_048_576);
    }

    #[test]
    fn measures_keep_peak_and_mean() {
        let mut m = Measure::default();
        for v in [1.0, 5.0, 3.0] {
            m.add(v);
        }
        assert_eq!((m.peak, m.mean), (5.0, 3.0));
    }

    const A: &str = "647b309fc78272391d951ee455b64a2e002b1cb4eb9471ed3a72f847acadaa25";
    const B: &str = "a13a2598ed8fa9f467c52f51e62cb5e3ff6a70bfccba1bd478d4eb5698f854fb";

    #[test]
    fn cgroup_v1_files_of_a_dind_node_are_read_like_docker_stats() {
        // As grep printed it in a dind node on a cgroup v1 hybrid host.
        let output = format!(
            "own /docker/5c5cfa03610d\n\
             /proc/uptime:1234.56 2000.00\n\
             /sys/fs/cgroup/cpuacct/docker/{A}/cpuacct.usage:32459388\n\
             /sys/fs/cgroup/memory/docker/{A}/memory.usage_in_bytes:794624\n\
             /sys/fs/cgroup/memory/docker/{A}/memory.stat:inactive_file 4096\n\
             /sys/fs/cgroup/memory/docker/{A}/memory.stat:total_inactive_file 24576\n\
             /sys/fs/cgroup/memory/docker/5c5cfa03610d/memory.usage_in_bytes:183513088\n\
             /sys/fs/cgroup/memory/docker/5c5cfa03610d/memory.stat:total_inactive_file 1000\n\
             /sys/fs/cgroup/cpuacct/docker/5c5cfa03610d/cpuacct.usage:4518687548\n"
        );
        let readings = parse(&output, &[A.to_string(), B.to_string()]);
        assert_eq!(readings.uptime_ns, Some(1_234_560_000_000));
        assert!(!readings.own_holds_containers);
        let a = &readings.containers[A];
        assert_eq!(a.cpu_ns, Some(32_459_388));
        // total_inactive_file, not the cgroup's own inactive_file.
        assert_eq!(a.memory_bytes(), Some(794_624 - 24_576));
        assert!(!readings.containers.contains_key(B), "B had no files");
        assert_eq!(readings.own.cpu_ns, Some(4_518_687_548));
        assert_eq!(readings.own.memory_bytes(), Some(183_512_088));
    }

    #[test]
    fn cgroup_v2_files_are_read_too() {
        let output = format!(
            "own /\n\
             /sys/fs/cgroup/system.slice/docker-{A}.scope/cpu.stat:usage_usec 1500\n\
             /sys/fs/cgroup/system.slice/docker-{A}.scope/memory.current:8192\n\
             /sys/fs/cgroup/system.slice/docker-{A}.scope/memory.stat:inactive_file 4096\n"
        );
        let readings = parse(&output, &[A.to_string()]);
        assert!(readings.own_holds_containers);
        let a = &readings.containers[A];
        assert_eq!(a.cpu_ns, Some(1_500_000));
        assert_eq!(a.memory_bytes(), Some(4096));
    }

    #[test]
    fn a_whole_machine_is_read_from_proc() {
        let output = "/proc/uptime:100.00 150.00\n\
             /proc/stat:cpu  100 0 50 800 50 0 0 0 0 0\n\
             /proc/stat:cpu0 50 0 25 400 25 0 0 0 0 0\n\
             /proc/stat:cpu1 50 0 25 400 25 0 0 0 0 0\n\
             /proc/meminfo:MemTotal:        2048 kB\n\
             /proc/meminfo:MemAvailable:    1024 kB\n";
        let readings = parse(output, &[]);
        assert_eq!(
            readings.kernel_cpu,
            Some(KernelCpu {
                busy: 150,
                total: 1000,
                cpus: 2
            })
        );
        assert_eq!(readings.kernel_memory, Some(1024 * 1024));
    }

    #[test]
    fn cgroup_cpu_is_percent_of_one_core_over_the_clock() {
        // 0.5 s of CPU over 1 s of uptime.
        assert_eq!(
            cpu_percent((1_000_000_000, 0), (1_500_000_000, 1_000_000_000)),
            Some(50.0)
        );
        assert_eq!(cpu_percent((5, 10), (6, 10)), None, "no time passed");
        assert_eq!(cpu_percent((5, 10), (4, 20)), None, "a counter reset");
    }

    #[test]
    fn the_script_names_every_layout_and_only_hex_ids() {
        let script = script(
            MachineScope::OwnCgroup,
            &[A.to_string(), "x; rm -rf /".to_string()],
        );
        assert!(script.contains(A), "{script}");
        assert!(!script.contains("rm -rf"), "{script}");
        assert!(script.contains("system.slice/docker-$id.scope"));
        assert!(script.contains("/proc/1/cgroup"));
        assert!(!script.contains("/proc/meminfo"));
        assert!(super::script(MachineScope::Whole, &[]).contains("/proc/meminfo"));
    }

    #[test]
    fn the_script_runs_and_parses_here() {
        // This machine's own /proc and cgroups, through a real shell.
        let output = std::process::Command::new("sh")
            .args(["-c", &script(MachineScope::Whole, &[])])
            .output()
            .expect("sh runs");
        let readings = parse(&String::from_utf8_lossy(&output.stdout), &[]);
        assert!(readings.uptime_ns.unwrap() > 0, "{readings:?}");
        let cpu = readings.kernel_cpu.unwrap();
        assert!(cpu.cpus >= 1 && cpu.busy > 0 && cpu.total > cpu.busy);
        assert!(readings.kernel_memory.unwrap() > 0);
    }

    #[test]
    fn a_process_here_is_read_from_its_own_files_as_the_script_would() {
        // This test's own process, its cgroup and the script's view of it
        // through a real shell, compared: the same files, the same figures.
        let pid = std::process::id();
        let text = read_local(pid, &[]).expect("this process's files");
        let local = parse(&text, &[]);
        let output = std::process::Command::new("sh")
            .args([
                "-c",
                &script(MachineScope::OwnCgroup, &[]).replace("/proc/1/", &format!("/proc/{pid}/")),
            ])
            .output()
            .expect("sh runs");
        let scripted = parse(&String::from_utf8_lossy(&output.stdout), &[]);
        assert!(local.uptime_ns.unwrap() > 0, "{text}");
        assert_eq!(local.own_holds_containers, scripted.own_holds_containers);
        assert_eq!(
            local.own.usage.is_some(),
            scripted.own.usage.is_some(),
            "{text}"
        );
        assert_eq!(
            local.own.cpu_ns.is_some(),
            scripted.own.cpu_ns.is_some(),
            "{text}"
        );
        assert!(read_local(u32::MAX, &[]).is_none(), "no such process");
    }
}
