//! The command line: what each command takes, and its `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCandidates;

use crate::lab::name::DEFAULT as DEFAULT_LAB;
use crate::routing::RoutingChoice;

#[derive(Debug, Parser)]
#[command(
    name = "goblog-lab",
    version,
    about = "A real multi-node Docker Swarm on this machine, for the Go microservices blog series",
    long_about = "A real multi-node Docker Swarm on this machine, for the Go microservices blog series.\n\n\
        `create` starts Swarm nodes as Docker-in-Docker containers, forms the Swarm, makes the\n\
        overlay network `my_network` and a local registry, and deploys the accountservice on\n\
        $ManagerIP:6767 and the quotes-service it calls. `eval \"$(goblog-lab env)\"` then points\n\
        your own `docker` and `curl` at the lab, the way `docker-machine env` did.",
    after_help = "Quick start:\n  goblog-lab doctor\n  goblog-lab create --workers 2\n  eval \"$(goblog-lab env)\"\n  docker node ls\n  curl $ManagerIP:6767/accounts/10000\n  goblog-lab destroy"
)]
pub struct Cli {
    /// Print no progress lines (errors and data still print).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print timed details inside each step (which node started, which image was pushed).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a lab: nodes, Swarm, my_network, registry, and the deployed services.
    Create(CreateArgs),
    /// Tell whether this machine can run a lab, before anything is made.
    #[command(
        long_about = "Tell whether this machine can run a lab, before anything is made.\n\n\
        One line per thing `create` depends on: what was found, ok / warn / blocking, and what\n\
        goblog-lab will do about it. The Docker engine and its API version, --privileged or the\n\
        capability fallback, cgroup v1/v2, IPVS (routing mesh or edge proxy, and why), whether\n\
        this machine reaches container addresses, free disk and memory, the node image or\n\
        debootstrap to build it, the ports 6767 and 6969; and for --driver qemu: QEMU, KVM or\n\
        TCG (as probed before; doctor boots no VM) and root, which never block the default\n\
        driver. Nothing is created, started or left behind.\n\n\
        `create` runs the same checks first and stops on a blocking one with the same line.",
        after_help = "Exit status: 0 when `goblog-lab create` (dind driver) will work here, 1 when it\n\
        cannot; the first blocking reason is then the last line, on stderr.\n\n\
        Example:\n  goblog-lab doctor\n  goblog-lab doctor -o json | jq .ready"
    )]
    Doctor(DoctorArgs),
    /// Build every image a lab needs (node, registry, edge, services) ahead of time.
    #[command(
        long_about = "Build every image a lab needs ahead of time: the node image (debootstrap, about a\n\
        minute, once), the registry and edge images, and the services built from source.\n\
        A workshop leader runs it once on each laptop; every `create` after it starts at once."
    )]
    Prepare(PrepareArgs),
    /// Print the shell commands that point `docker` and `$ManagerIP` at a lab.
    Env(EnvArgs),
    /// Show a lab's nodes, services and where each task runs.
    Status(StatusArgs),
    /// List the labs on this machine.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Rebuild a service from source and roll it out with no failed request (replaces copyall.sh).
    #[command(
        long_about = "Rebuild a service from source and roll it out with no failed request.\n\n\
        Compiles the service from the checkout the lab was created from (cargo's `deploy`\n\
        profile: seconds after an edit; `create` ships the smaller `image` profile), tags the\n\
        image by its content, pushes it to the lab registry and updates the Swarm service two\n\
        tasks at a time, each new task healthy before an old one stops. Waits until every replica\n\
        runs the new image, then prints where they run. When the sources are unchanged since the\n\
        running image was built, it says so and does nothing."
    )]
    Deploy(DeployArgs),
    /// Scale a service and wait until Swarm converges: `scale accountservice=5`.
    Scale(ScaleArgs),
    /// A service's logs from every node, each line prefixed by task and node.
    Logs(LogsArgs),
    /// Serve a live picture of the Swarm (nodes, services, tasks) on http://127.0.0.1:6969.
    #[command(
        long_about = "Serve a live picture of the Swarm, in the spirit of dvizz.\n\n\
        Nodes, services and tasks as a graph, tasks coloured by state, updated within a second of\n\
        every change (Server-Sent Events). The page is built into goblog-lab and needs no internet.\n\
        GET /api/state returns the same model as JSON, for scripts."
    )]
    Viz(VizArgs),
    /// Load-test the lab through $ManagerIP: the blog's Gatling run, built in.
    #[command(
        long_about = "Load-test the lab through $ManagerIP: the blog's Gatling run (part 5), built in.\n\n\
        By default 1000 virtual users each call GET /accounts/{id} (ids from a circular feed),\n\
        wait for the answer and pause 1s, all starting within a 10s ramp, for 30s. --rate R\n\
        sends R requests a second instead, whatever the answers do (open loop). Latency counts\n\
        from when each request was due, so a stalled server cannot hide its stall.\n\n\
        Only the lab's own addresses are called, and every run stops by itself: after\n\
        --duration, plus at most one --timeout for the last answers. Ctrl-C stops early and\n\
        still prints the report. The report (stdout): requests, failures by kind, throughput,\n\
        latency percentiles, a per-second timeline and which replica (servedBy) answered how many.\n\n\
        --kill NODE@T stops a node T into the run through the provider that made it (a worker;\n\
        any node, managers too, when the lab has 3 managers and so a virtual $ManagerIP), and\n\
        --heal-after D starts it again; the report marks both and gives the failover window\n\
        and how many of its seconds were disturbed.\n\n\
        -o html FILE also writes the report as one self-contained page (charts of latency\n\
        percentiles and throughput per second, kill and heal marked) for a workshop screen;\n\
        it opens in any browser with no network.",
        after_help = "Examples:\n  goblog-lab bench                                  # the blog's scenario\n  goblog-lab bench --rate 200 --duration 10s -o json\n  goblog-lab bench --users 50 --pause 0s --duration 10s   # closed loop, as fast as it answers\n  goblog-lab bench --rate 50 --duration 25s --kill swarm-worker-0@3s --heal-after 5s\n  goblog-lab bench --rate 200 --duration 30s --kill swarm-manager-0@10s   # a lab made with --managers 3\n  goblog-lab bench --rate 100 --duration 20s -o html report.html"
    )]
    Bench(BenchArgs),
    /// Run a command inside a node: `exec swarm-worker-0 -- docker ps`.
    Exec(ExecArgs),
    /// An interactive shell inside a node.
    Shell(ShellArgs),
    /// Stop a lab's nodes and registry, keeping everything for `start`.
    Stop(LifecycleArgs),
    /// Start a stopped lab again and wait until its services answer.
    Start(LifecycleArgs),
    /// Remove a lab: containers, volumes, networks, registry and saved state.
    Destroy(DestroyArgs),
    /// A classroom: one lab per learner on this server, each learner's terminal and lab in a browser.
    #[command(
        long_about = "A classroom: one lab per learner on this server, and a web front that gives each\n\
        learner a terminal into their own console (docker CLI, curl, jq, an editor, pointed at their\n\
        lab) and the live picture of their lab, behind a link with their own token; the instructor\n\
        gets a board with every lab's state and a reset button, and printable cards with QR codes.\n\n\
        Security: Docker-in-Docker nodes are privileged, so a learner who can run containers in their\n\
        lab can reach this host. A dind class is for learners you trust with this server;\n\
        --driver qemu keeps each lab in its own VMs (about 30 s a lab with KVM, minutes under TCG).",
        after_help = "Example:\n  goblog-lab class create --learners 20 --name monday\n  goblog-lab class serve --name monday            # Ctrl-C stops serving; the labs stay\n  goblog-lab class status --name monday -o json   # every learner's link, for scripts\n  goblog-lab class destroy --name monday"
    )]
    Class(ClassArgs),
    /// Print the script that makes your shell complete goblog-lab's commands, flags and lab names.
    #[command(
        long_about = "Print the script that makes your shell complete goblog-lab's commands, flags and\n\
        the names of the labs on this machine (for --name). The script asks goblog-lab itself\n\
        at each Tab, so new labs complete at once.",
        after_help = "Install:\n  bash:  echo 'source <(goblog-lab completion bash)' >> ~/.bashrc\n  zsh:   echo 'source <(goblog-lab completion zsh)' >> ~/.zshrc\n  fish:  goblog-lab completion fish > ~/.config/fish/completions/goblog-lab.fish"
    )]
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

/// Named as clap_complete names them (`Shells::completer`), so the value
/// typed is the name looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Tab's candidates for an argument that names a lab: the labs saved here.
fn lab_names() -> Vec<clap_complete::CompletionCandidate> {
    crate::lab::state::saved_labs()
        .into_iter()
        .map(clap_complete::CompletionCandidate::new)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Table,
    /// One JSON document on stdout, for scripts.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishChoice {
    /// localhost on Docker Desktop, or when this host has no route to the manager's address; else direct.
    Auto,
    /// Each node's Docker API, 6767 and the registry published on 127.0.0.1; $ManagerIP is 127.0.0.1.
    Localhost,
    /// This host reaches the nodes at their addresses on the lab's bridge (Linux).
    Direct,
}

impl PublishChoice {
    /// The mode asked for, or none to find out.
    pub fn forced(self) -> Option<crate::lab::state::Publish> {
        match self {
            PublishChoice::Auto => None,
            PublishChoice::Localhost => Some(crate::lab::state::Publish::Localhost),
            PublishChoice::Direct => Some(crate::lab::state::Publish::Direct),
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the lab: 1-24 lowercase letters, digits or '-'.
    #[arg(long, default_value = DEFAULT_LAB)]
    pub name: String,

    /// Number of worker nodes, 0 to 20 [default: from the lab file, 2].
    #[arg(long)]
    pub workers: Option<u32>,

    /// Number of manager nodes, 1 to 7 [default: from the lab file, 1].
    #[arg(long)]
    pub managers: Option<u32>,

    /// Lab definition (TOML) [default: the built-in lab/goblog.toml].
    #[arg(long, value_name = "SPEC.toml")]
    pub file: Option<PathBuf>,

    /// Stop after the Swarm, network and registry: build and deploy nothing.
    #[arg(long)]
    pub no_deploy: bool,

    /// On failure or Ctrl-C, keep what was made (to inspect it) instead of rolling back.
    #[arg(long)]
    pub retain: bool,

    /// Port on 127.0.0.1 for the lab registry [default: from the lab file; 0 = any free port].
    #[arg(long, value_name = "PORT")]
    pub registry_port: Option<u16>,

    /// How $ManagerIP:PORT reaches the replicas.
    #[arg(long, value_enum, default_value_t = RoutingChoice::Auto)]
    pub routing: RoutingChoice,

    /// How this host reaches the dind nodes: at their container addresses, or through ports published on 127.0.0.1 (Docker Desktop).
    #[arg(long, value_enum, default_value_t = PublishChoice::Auto)]
    pub publish: PublishChoice,

    /// What the nodes are: dind containers, existing ssh hosts, qemu VMs (root; 192.168.99.0/24 as in the blog), or docker-machine machines [default: from the lab file, else dind].
    #[arg(long, value_enum, help_heading = "Machines")]
    pub driver: Option<crate::lab::kind::ProviderKind>,

    /// --driver ssh: a manager host, USER@HOST[:PORT] (repeat for more managers).
    #[arg(
        long = "manager",
        value_name = "USER@HOST[:PORT]",
        help_heading = "Machines"
    )]
    pub ssh_managers: Vec<String>,

    /// --driver ssh: a worker host, USER@HOST[:PORT] (repeat for each worker).
    #[arg(
        long = "worker",
        value_name = "USER@HOST[:PORT]",
        help_heading = "Machines"
    )]
    pub ssh_workers: Vec<String>,

    /// --driver ssh: a private key to try after ssh-agent [default: ~/.ssh/id_ed25519, ~/.ssh/id_rsa].
    #[arg(long, value_name = "PATH", help_heading = "Machines")]
    pub ssh_key: Option<PathBuf>,

    /// --driver ssh with 3 or more --manager hosts: a free address on the hosts' network for the virtual $ManagerIP, which keepalived moves to a healthy manager (dind and qemu labs pick their own).
    #[arg(long, value_name = "ADDR", help_heading = "Machines")]
    pub vip: Option<std::net::Ipv4Addr>,

    /// --driver ssh: trust and record the key of a host never seen before (OpenSSH's accept-new), in the lab's own known_hosts. A changed key is always refused.
    #[arg(long, help_heading = "Machines")]
    pub accept_new_host_keys: bool,

    /// --driver ssh: install Debian's or Ubuntu's docker.io on hosts that have no Docker.
    #[arg(long, help_heading = "Machines")]
    pub install_docker: bool,

    /// --driver qemu: memory of each VM, in MiB [default: from the lab file, else 512].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(256..=65536), help_heading = "Machines")]
    pub memory: Option<u32>,

    /// --driver docker-machine: the machines to adopt, managers first, by their docker-machine names (NAME,NAME,...); --managers says how many lead [default: 1].
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        help_heading = "Machines"
    )]
    pub machines: Vec<String>,

    /// Format of the summary on stdout.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Format of the findings on stdout: a table, or JSON (`findings` and `ready`).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Lab definition whose services to build [default: the built-in lab/goblog.toml].
    #[arg(long, value_name = "SPEC.toml")]
    pub file: Option<PathBuf>,

    /// Also build what this driver's labs boot: `qemu` builds the VM image
    /// (debootstrap with a kernel; about two minutes, once).
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub driver: Option<crate::lab::kind::ProviderKind>,

    /// Format of the list of images on stdout.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Name of the lab.
    #[arg(long, default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,

    /// Syntax of the printed commands [default: from $SHELL, else bash].
    #[arg(long, value_enum)]
    pub shell: Option<Shell>,

    /// Print commands that unset the variables instead.
    #[arg(short, long)]
    pub unset: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,

    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service to rebuild [default: every service the lab builds from source].
    pub service: Option<String>,

    /// Also set the number of replicas (0 to 64).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=MAX_REPLICAS))]
    pub replicas: Option<u64>,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,

    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// SERVICE=REPLICAS, as in `docker service scale`.
    #[arg(value_name = "SERVICE=N", value_parser = parse_scale)]
    pub target: (String, u64),

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,

    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The most replicas `scale` accepts: the edge proxy keeps 64 server slots.
pub const MAX_REPLICAS: u64 = 64;

fn parse_scale(text: &str) -> Result<(String, u64), String> {
    let (service, replicas) = text
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=N, e.g. accountservice=3, not {text:?}"))?;
    if service.is_empty() {
        return Err("the service name is empty".into());
    }
    let replicas: u64 = replicas
        .parse()
        .map_err(|_| format!("{replicas:?} is not a number of replicas"))?;
    if replicas > MAX_REPLICAS {
        return Err(format!(
            "{replicas} replicas is more than the lab's edge proxy routes to ({MAX_REPLICAS})"
        ));
    }
    Ok((service.to_string(), replicas))
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service, e.g. accountservice.
    pub service: String,

    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct VizArgs {
    /// Port to serve on; 0 takes any free port.
    #[arg(long, default_value_t = 6969)]
    pub port: u16,

    /// Address to listen on. Anything but loopback lets other machines read the lab's state.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub address: std::net::IpAddr,

    /// Also open the page in the default browser ($BROWSER, else xdg-open).
    #[arg(long)]
    pub open: bool,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Virtual users, each requesting, waiting for the answer, then pausing (the blog's Gatling model).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::bench::plan::MAX_USERS)), conflicts_with = "rate", help_heading = "Load")]
    pub users: u32,

    /// Each user's pause after an answer; 0s makes a closed loop as fast as the lab answers.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = crate::bench::plan::parse_duration, conflicts_with = "rate", help_heading = "Load")]
    pub pause: std::time::Duration,

    /// Time over which the users start, evenly.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = crate::bench::plan::parse_duration, conflicts_with = "rate", help_heading = "Load")]
    pub ramp: std::time::Duration,

    /// Open loop instead of users: this many requests a second, at fixed times, for the whole run.
    #[arg(long, value_name = "R", value_parser = crate::bench::plan::parse_rate, help_heading = "Load")]
    pub rate: Option<f64>,

    /// How long requests are sent (at most 1h); the run then waits at most one --timeout for the last answers.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::bench::plan::parse_run_duration, allow_hyphen_values = true, help_heading = "Load")]
    pub duration: std::time::Duration,

    /// Keep-alive connections to spread the requests over [default: one per user, up to 1000; 50 with --rate].
    #[arg(long, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=10_000), help_heading = "Load")]
    pub connections: Option<u32>,

    /// A request not answered this long after it was due counts as a timeout.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = crate::bench::plan::parse_run_duration, help_heading = "Load")]
    pub timeout: std::time::Duration,

    /// Path to call; {id} takes the next id of --ids.
    #[arg(long, default_value = "/accounts/{id}", value_parser = crate::bench::plan::parse_path, help_heading = "Target")]
    pub path: String,

    /// Account ids FIRST..LAST (inclusive), handed out in turn and round again.
    #[arg(long, default_value = "10000..10099", value_name = "FIRST..LAST", value_parser = crate::bench::plan::parse_ids, help_heading = "Target")]
    pub ids: crate::bench::plan::IdRange,

    /// Call this node's address instead of $ManagerIP (routing mesh labs answer on every node).
    #[arg(long, value_name = "NODE", help_heading = "Target")]
    pub node: Option<String>,

    /// Port to call [default: the accountservice's published port, 6767].
    #[arg(long, value_name = "PORT", help_heading = "Target")]
    pub port: Option<u16>,

    /// Stop this node (by hostname) this long into the run, through the provider that made it, to watch the failover.
    #[arg(long, value_name = "NODE@TIME", value_parser = crate::bench::plan::parse_kill, help_heading = "Failover")]
    pub kill: Option<crate::bench::plan::KillSpec>,

    /// Start the killed node again this long after the kill (within the run).
    #[arg(long, value_name = "DURATION", value_parser = crate::bench::plan::parse_duration, requires = "kill", help_heading = "Failover")]
    pub heal_after: Option<std::time::Duration>,

    /// Leave out the per-task CPU and memory. Where the engines give no stats (as on cgroup v1 hybrid hosts) they are read with a command in each node every second, which costs CPU on a small machine beside the load.
    #[arg(long, help_heading = "Report")]
    pub no_resources: bool,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,

    /// What to print: the table, JSON, or with `-o html FILE` also one self-contained page of charts written to FILE.
    #[arg(short, long, value_enum, default_value_t = BenchOutput::Table)]
    pub output: BenchOutput,

    /// The page `-o html` writes (overwritten), also when Ctrl-C ends the run.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOutput {
    /// Human-readable text.
    Table,
    /// One JSON document on stdout, for scripts.
    Json,
    /// The table on stdout, and the report as one HTML page with charts in FILE (no network needed to view it).
    Html,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The node, by the hostname `docker node ls` shows (swarm-worker-0).
    pub node: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The node, by the hostname `docker node ls` shows (swarm-manager-0).
    pub node: String,

    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Name of the lab [default: $GOBLOG_LAB_NAME, else goblog].
    #[arg(long, env = "GOBLOG_LAB_NAME", default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names))]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Name of the lab to remove.
    #[arg(long, default_value = DEFAULT_LAB, add = ArgValueCandidates::new(lab_names), conflicts_with = "all")]
    pub name: String,

    /// Remove every lab on this machine.
    #[arg(long)]
    pub all: bool,

    /// Forget the lab here even when some of its hosts cannot be given back (they are gone or unreachable); what the lab left on them stays.
    #[arg(long)]
    pub force: bool,
}

/// A clap usage error as one line: its message, with the list clap puts
/// under it (the missing arguments' names), its tip, and where the help is.
/// `args` are the words typed (without the program): clap renders no usage
/// line for a value that fails validation (`create --memory 1`), so the
/// subcommand to point at is read from them.
pub fn usage_error_line(rendered: &str, args: &[String]) -> String {
    let mut message = String::new();
    let mut listed = Vec::new();
    let mut tip = String::new();
    let mut help = format!("{} --help", command_path(args));
    let mut in_list = false;
    for line in rendered.lines() {
        let trimmed = line.trim();
        if message.is_empty() {
            if !trimmed.is_empty() {
                message = trimmed.trim_start_matches("error: ").to_string();
                in_list = message.ends_with(':');
            }
        } else if in_list && line.starts_with(' ') && !trimmed.is_empty() {
            listed.push(trimmed.to_string());
        } else if let Some(usage) = trimmed.strip_prefix("Usage: ") {
            in_list = false;
            // "goblog-lab exec <NODE> -- <CMD>..." names its command before
            // the first argument.
            let command: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['<', '[', '-']))
                .collect();
            help = format!("{} --help", command.join(" "));
        } else if trimmed.starts_with("tip:") {
            in_list = false;
            tip = format!(" ({trimmed})");
        } else {
            in_list = false;
        }
    }
    if message.is_empty() {
        message = "invalid arguments".into();
    }
    if !listed.is_empty() {
        message = format!("{} {}", message, listed.join(", "));
    }
    format!("{message}{tip}; see '{help}'")
}

/// "goblog-lab create" for `create --memory 1`: the program and the
/// subcommands that `args` name, up to the first word that is not one.
fn command_path(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut path = vec![command.get_name().to_string()];
    for arg in args {
        if arg.starts_with('-') {
            continue;
        }
        let Some(sub) = command.find_subcommand(arg).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    path.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let err = Cli::try_parse_from(args).expect_err("a usage error");
        let typed: Vec<String> = args[1..].iter().map(|a| a.to_string()).collect();
        usage_error_line(&err.render().to_string(), &typed)
    }

    #[test]
    fn a_value_that_fails_validation_points_at_its_commands_help() {
        let line = usage_error(&["goblog-lab", "create", "--memory", "1"]);
        assert!(
            line.starts_with("invalid value '1' for '--memory <MIB>'"),
            "{line}"
        );
        assert!(line.ends_with("; see 'goblog-lab create --help'"), "{line}");
        let line = usage_error(&["goblog-lab", "-q", "list", "--bogus"]);
        assert!(line.ends_with("; see 'goblog-lab ls --help'"), "{line}");
    }

    #[test]
    fn usage_errors_keep_the_missing_arguments_names() {
        assert_eq!(
            usage_error(&["goblog-lab", "exec"]),
            "the following required arguments were not provided: <NODE>, <CMD>...; see 'goblog-lab exec --help'"
        );
        let unknown = usage_error(&["goblog-lab", "create", "--wrokers", "2"]);
        assert!(
            unknown.starts_with("unexpected argument '--wrokers' found (tip: a similar argument exists: '--workers')"),
            "{unknown}"
        );
        assert!(
            unknown.ends_with("; see 'goblog-lab create --help'"),
            "{unknown}"
        );
    }
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scale_targets_parse_like_docker_service_scale() {
        assert_eq!(
            parse_scale("accountservice=5"),
            Ok(("accountservice".into(), 5))
        );
        assert_eq!(
            parse_scale("accountservice=0"),
            Ok(("accountservice".into(), 0))
        );
        assert!(parse_scale("accountservice")
            .unwrap_err()
            .contains("SERVICE=N"));
        assert!(parse_scale("accountservice=five")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_scale("accountservice=-1").is_err());
        assert!(parse_scale("=3").is_err());
        assert!(parse_scale("accountservice=65").unwrap_err().contains("64"));
    }
}

const DEFAULT_CLASS: &str = crate::class::state::DEFAULT_NAME;

#[derive(Debug, Args)]
pub struct ClassArgs {
    #[command(subcommand)]
    pub command: ClassCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClassCommand {
    /// Make one lab per learner, a console beside each, and print the links.
    #[command(
        long_about = "Make one full default lab per learner (nodes, Swarm, my_network, registry, services)\n\
        and a console container beside each. The images are built once for the class; the labs are\n\
        made a few at a time, each with its own progress line. A lab that fails is made again once,\n\
        then reported; the others are usable. Before anything is made, this machine's memory, disk\n\
        and cores are checked against the number of learners. Ctrl-C rolls the whole class back."
    )]
    Create(ClassCreateArgs),
    /// Serve the learners' pages, the board and the cards (foreground; Ctrl-C stops, the labs stay).
    Serve(ClassServeArgs),
    /// Each learner's lab, state and link, and the board's link.
    Status(ClassNameArgs),
    /// List the classes on this machine.
    Ls(ClassLsArgs),
    /// Make one learner's lab again from nothing (their source volume is kept); the others are untouched.
    Reset(ClassResetArgs),
    /// Remove every lab, console, volume and file of the class.
    Destroy(ClassDestroyArgs),
}

#[derive(Debug, Args)]
pub struct ClassCreateArgs {
    /// How many learners, one lab each.
    #[arg(long, value_name = "N")]
    pub learners: u32,

    /// Name of the class; its labs are CLASS-1, CLASS-2, ...
    #[arg(long, default_value = DEFAULT_CLASS)]
    pub name: String,

    /// What each lab's nodes are: Docker-in-Docker containers (privileged), or QEMU VMs.
    #[arg(long, value_enum)]
    pub driver: Option<crate::lab::kind::ProviderKind>,

    /// Labs made at the same time.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub parallel: u16,

    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ClassServeArgs {
    /// Address and port to listen on. Off loopback, TLS is on (the class's own CA) unless --tls-cert or --insecure-plain-http.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// A certificate (PEM) to serve TLS with instead of the class's own CA.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Serve plain HTTP off loopback: anyone on the network path can read every learner's token and keystrokes.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_plain_http: bool,

    /// The host name the links and cards carry [default: the listen address].
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,

    /// Where @xterm/xterm and @xterm/addon-fit are [default: this checkout's web/node_modules].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<std::path::PathBuf>,

    #[arg(long, default_value = DEFAULT_CLASS)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ClassNameArgs {
    #[arg(long, default_value = DEFAULT_CLASS)]
    pub name: String,

    /// The links' base, as `class serve` prints it [default: http://127.0.0.1:8080].
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ClassLsArgs {
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ClassResetArgs {
    /// The learner: their number, `learner-N`, or their lab's name.
    pub learner: String,

    #[arg(long, default_value = DEFAULT_CLASS)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ClassDestroyArgs {
    #[arg(long, default_value = DEFAULT_CLASS)]
    pub name: String,
}
