//! What a lab depends on, checked before anything is made.
//!
//! `goblog-lab doctor` shows every finding; `create` runs the ones its
//! driver needs and stops on the first blocking one with the same line, so
//! a machine that cannot run a lab says so in a second, not after half a
//! lab was made and rolled back. Gathering (engine calls, files, statvfs)
//! is kept apart from judging: the judgements and the routing decision are
//! plain functions of plain data, tested without a machine.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bollard::Docker;
use serde::Serialize;

use crate::error::Error;
use crate::lab::state::Routing;
use crate::routing::{decide_routing, IpvsProbe, RoutingChoice};

/// The node image plus the volumes of a default lab (measured: 406 MiB
/// image, about 1 GiB of images and layers across three node volumes).
pub const ENGINE_DISK_NEEDED: u64 = 1536 << 20;
/// debootstrap's tree is built under the lab home before it is imported.
const HOME_DISK_TO_BUILD: u64 = 512 << 20;
/// Certificates, state and logs.
const HOME_DISK_TO_RUN: u64 = 64 << 20;
/// Three idle nodes measured 62-77 MiB each; the registry, the services and
/// the edge proxy add less than that again.
const MEMORY_NEEDED: u64 = 512 << 20;
const MEMORY_COMFORTABLE: u64 = 1024 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Blocking,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Blocking => "blocking",
        }
    }
}

/// One thing a lab depends on: what was found and what goblog-lab does
/// about it.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub name: &'static str,
    pub found: String,
    pub status: Status,
    pub action: String,
    /// The error `create` stops with, for a blocking finding.
    #[serde(skip)]
    pub error: Option<Error>,
}

impl Finding {
    fn new(
        name: &'static str,
        status: Status,
        found: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Finding {
            name,
            found: found.into(),
            status,
            action: action.into(),
            error: None,
        }
    }

    fn ok(name: &'static str, found: impl Into<String>, action: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, found, action)
    }

    fn warn(name: &'static str, found: impl Into<String>, action: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, found, action)
    }

    /// A finding that stops `create`; `error` is the line it stops with.
    fn blocking(name: &'static str, found: impl Into<String>, error: Error) -> Self {
        let mut finding = Self::new(name, Status::Blocking, found, error.to_string());
        finding.error = Some(error);
        finding
    }
}

/// The first blocking finding, as the error `create` and `doctor` end with.
pub fn first_blocking(findings: &mut [Finding]) -> Option<Error> {
    findings
        .iter_mut()
        .find(|f| f.status == Status::Blocking)
        .map(|f| {
            f.error
                .take()
                .unwrap_or_else(|| Error::NotReady(f.action.clone()))
        })
}

/// What this machine can tell about IPVS without making a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostIpvs {
    /// As good as a node's probe: the engine runs on this kernel.
    Known(IpvsProbe),
    /// The module is on disk; `create` loads it in a node.
    Loadable { module: String },
    /// Only a node can tell (the engine runs elsewhere, or the module list
    /// is unreadable).
    Unknown { why: String },
}

/// Judges IPVS on this machine's kernel: loaded (`/proc/net/ip_vs`), on
/// disk under `modules/RELEASE` (modules.dep), or absent.
pub fn host_ipvs(loaded: bool, modules: &Path, release: &str) -> HostIpvs {
    if loaded {
        return HostIpvs::Known(IpvsProbe::Loaded);
    }
    let dir = modules.join(release);
    if !dir.is_dir() {
        return HostIpvs::Known(IpvsProbe::Missing {
            why: format!(
                "modprobe ip_vs: no {} on this machine, so no module to load",
                dir.display()
            ),
        });
    }
    let Ok(deps) = std::fs::read_to_string(dir.join("modules.dep")) else {
        return HostIpvs::Unknown {
            why: format!("{} has no modules.dep", dir.display()),
        };
    };
    match module_in_dep(&deps, "ip_vs") {
        Some(module) => HostIpvs::Loadable { module },
        None => HostIpvs::Known(IpvsProbe::Missing {
            why: format!(
                "modprobe ip_vs: module ip_vs not found in {}",
                dir.display()
            ),
        }),
    }
}

/// The path of `name`'s module file in a modules.dep, if listed.
fn module_in_dep(deps: &str, name: &str) -> Option<String> {
    deps.lines()
        .filter_map(|line| line.split(':').next())
        .find(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split('.').next() == Some(name) && file.contains(".ko")
        })
        .map(str::to_string)
}

// ---------------------------------------------------------------------------
// Facts: what was gathered, with no judgement yet.

/// What the engine said about itself.
#[derive(Debug, Clone, Default)]
pub struct EngineFacts {
    pub address: String,
    pub version: String,
    pub api: String,
    pub id: String,
    pub os: String,
    pub kernel: String,
    pub cgroup_version: String,
    pub cgroup_driver: String,
    pub root_dir: String,
    /// The default bridge's gateway: an address of the engine's host.
    pub bridge_gateway: Option<Ipv4Addr>,
    pub node_image: Option<String>,
}

impl EngineFacts {
    /// The engine runs on this machine's kernel (not in Docker Desktop's
    /// VM, not on another host), so this machine's files speak for it.
    pub fn is_local(&self, this_kernel: &str) -> bool {
        !crate::docker::is_docker_desktop(&self.os) && self.kernel == this_kernel
    }
}

/// The default bridge's gateway: the one its IPAM config names, else the
/// first host address of its subnet, which is what dockerd gives docker0
/// when no gateway is configured. A new machine's dockerd (Debian's 20.10,
/// first start, 2026-12-05) reports `{"Subnet":"172.17.0.0/16"}` with no
/// `Gateway` while docker0 holds 172.17.0.1.
fn bridge_gateway(gateway: Option<&str>, subnet: Option<&str>) -> Option<Ipv4Addr> {
    if let Some(gateway) = gateway.and_then(|g| g.parse().ok()) {
        return Some(gateway);
    }
    subnet?.parse::<ipnet::Ipv4Net>().ok()?.hosts().next()
}

pub async fn engine_facts(docker: &Docker) -> EngineFacts {
    let api = docker.client_version();
    let image = crate::steps::node_image::tag();
    let (info, bridge, cached) = tokio::join!(
        docker.info(),
        docker.inspect_network("bridge", None),
        docker.inspect_image(&image),
    );
    let info = info.unwrap_or_default();
    let bridge_gateway = bridge
        .ok()
        .and_then(|n| n.ipam)
        .and_then(|ipam| ipam.config)
        .into_iter()
        .flatten()
        .find_map(|c| bridge_gateway(c.gateway.as_deref(), c.subnet.as_deref()));
    let text = |v: Option<String>| v.unwrap_or_default();
    EngineFacts {
        address: crate::docker::host_address(),
        version: text(info.server_version),
        api: format!("{}.{}", api.major_version, api.minor_version),
        id: text(info.id),
        os: text(info.operating_system),
        kernel: text(info.kernel_version),
        cgroup_version: info
            .cgroup_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        cgroup_driver: info
            .cgroup_driver
            .map(|v| v.to_string())
            .unwrap_or_default(),
        root_dir: text(info.docker_root_dir),
        bridge_gateway,
        node_image: cached.is_ok().then_some(image),
    }
}

/// What this machine is, apart from its engine.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub kernel: String,
    pub ipvs: Option<HostIpvs>,
    pub modules: PathBuf,
    pub modules_present: bool,
    /// Free bytes where the engine keeps its data, when it is on this machine.
    pub engine_free: Option<u64>,
    pub home: PathBuf,
    pub home_free: Option<u64>,
    pub memory_available: Option<u64>,
    pub debootstrap: bool,
    pub root: bool,
    pub qemu: Option<String>,
    pub kvm_device: bool,
    /// How QEMU ran guests here (`kvm`/`tcg`) and why, once probed.
    pub kvm_cached: Option<(String, String)>,
    /// Ports this machine's lab tools bind on 127.0.0.1, and whether free.
    pub ports: Vec<(u16, bool)>,
    /// The engine refused --privileged before (remembered per engine ID).
    pub refused_privileged: bool,
}

/// Everything cheap: files and statvfs. With `programs` (doctor), also
/// QEMU's version and the listening ports, which `create` does not need.
pub async fn host_facts(engine: Option<&EngineFacts>, programs: bool) -> HostFacts {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let modules = crate::routing::host_modules();
    let remembered = crate::provider::remembered(engine.map(|e| e.id.as_str()));
    let local = engine.filter(|e| e.is_local(&kernel));
    let ipvs = match (engine, local) {
        (None, _) => None,
        (Some(_), Some(_)) => Some(host_ipvs(
            Path::new("/proc/net/ip_vs").exists() || Path::new("/sys/module/ip_vs").exists(),
            &modules,
            &kernel,
        )),
        (Some(e), None) => Some(HostIpvs::Unknown {
            why: format!("the engine runs on another kernel ({})", e.kernel),
        }),
    };
    let home = crate::lab::state::home();
    let qemu = if programs { qemu_version().await } else { None };
    HostFacts {
        ipvs,
        modules_present: modules.is_dir(),
        modules,
        engine_free: local.and_then(|e| free_bytes(Path::new(&e.root_dir))),
        home_free: free_bytes(&home),
        home,
        memory_available: memory_available(),
        debootstrap: crate::rootfs::which("debootstrap").is_some(),
        root: crate::rootfs::is_root(),
        qemu,
        kvm_device: Path::new("/dev/kvm").exists(),
        kvm_cached: remembered.vm_acceleration,
        ports: if programs {
            let listening = listening_ports();
            [6767, 6969]
                .into_iter()
                .map(|port| (port, !listening.contains(&port)))
                .collect()
        } else {
            Vec::new()
        },
        refused_privileged: remembered.refused_privileged,
        kernel,
    }
}

async fn qemu_version() -> Option<String> {
    let output = tokio::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next()?;
    Some(
        line.split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .unwrap_or(line)
            .to_string(),
    )
}

/// TCP ports something listens on here, read from /proc rather than by
/// binding them: a probe bind could steal a port from a `viz` starting at
/// the same moment.
fn listening_ports() -> std::collections::BTreeSet<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // State 0A is LISTEN.
                    if fields.get(3) != Some(&"0A") {
                        return None;
                    }
                    let port = fields.get(1)?.rsplit(':').next()?;
                    u16::from_str_radix(port, 16).ok()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Free bytes for an unprivileged writer on the file system of `path` (or
/// of its nearest existing parent: the lab home may not exist yet).
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs the call fills in.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------
// Judging: facts in, findings out.

/// Every finding, in the order doctor prints them. `engine` is the engine
/// connection's outcome; without an engine, what depends on it is unknown.
pub fn judge_all(
    engine: std::result::Result<&EngineFacts, Error>,
    host: &HostFacts,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let engine = match engine {
        Ok(engine) => {
            findings.push(Finding::ok(
                "engine",
                format!(
                    "Docker {}, API {} at {}",
                    engine.version, engine.api, engine.address
                ),
                "uses it (needs API 1.40+)",
            ));
            Some(engine)
        }
        Err(err) => {
            findings.push(Finding::blocking("engine", "no usable engine", err));
            None
        }
    };
    match engine {
        Some(engine) => {
            findings.push(privileged(host));
            findings.push(cgroup(engine));
            findings.push(routing(host.ipvs.as_ref(), host));
            findings.push(reach(engine));
            findings.push(engine_disk(engine, host));
        }
        None => {
            for name in ["privileged", "cgroup", "routing", "reach", "disk (engine)"] {
                findings.push(Finding::warn(
                    name,
                    "unknown: no engine",
                    "checked once the engine answers",
                ));
            }
        }
    }
    findings.push(home_disk(engine, host));
    findings.push(memory(host));
    findings.push(node_image(engine, host));
    findings.extend(vm_findings(host));
    findings.extend(ports(host));
    findings
}

/// The findings `create` stops on (the engine itself was judged by
/// connecting to it): disk, memory, the node image, and a mesh asked for
/// where there is no IPVS, when the machines share this kernel
/// (`Provider::shares_this_kernel`).
pub fn judge_for_create(
    engine: &EngineFacts,
    host: &HostFacts,
    shares_this_kernel: bool,
    routing: RoutingChoice,
) -> Vec<Finding> {
    let mut findings = vec![
        engine_disk(engine, host),
        home_disk(Some(engine), host),
        memory(host),
        node_image(Some(engine), host),
    ];
    // Other machines have kernels of their own, probed once they exist.
    if shares_this_kernel && routing == RoutingChoice::Mesh {
        if let Some(HostIpvs::Known(probe)) = &host.ipvs {
            if let Err(err) = decide_routing(routing, probe) {
                findings.push(Finding::blocking("routing", "no IPVS", err));
            }
        }
    }
    findings
}

fn privileged(host: &HostFacts) -> Finding {
    if host.refused_privileged {
        Finding::ok(
            "privileged",
            "refused by this engine (remembered from an earlier create)",
            "nodes get every capability but CAP_SYS_RESOURCE instead",
        )
    } else {
        Finding::ok(
            "privileged",
            "not yet known: create finds out",
            "tries --privileged, falls back to every capability but CAP_SYS_RESOURCE",
        )
    }
}

fn cgroup(engine: &EngineFacts) -> Finding {
    let found = format!(
        "v{} ({} driver)",
        if engine.cgroup_version.is_empty() {
            "1"
        } else {
            &engine.cgroup_version
        },
        engine.cgroup_driver
    );
    let action = if engine.cgroup_version == "2" {
        "nothing: nodes get cgroup namespaces"
    } else {
        "nothing: nodes share /sys/fs/cgroup (the capability fallback binds it)"
    };
    Finding::ok("cgroup", found, action)
}

fn routing(ipvs: Option<&HostIpvs>, host: &HostFacts) -> Finding {
    let mount = if host.modules_present {
        format!("mounts {} read-only into nodes; ", host.modules.display())
    } else {
        String::new()
    };
    match ipvs {
        Some(HostIpvs::Known(probe)) => {
            let decision = decide_routing(RoutingChoice::Auto, probe).expect("auto never refuses");
            let status = if decision.routing == Routing::Mesh {
                Status::Ok
            } else {
                Status::Warn
            };
            let action = match decision.routing {
                Routing::Mesh => format!("{mount}create uses the routing mesh"),
                Routing::Edge => format!(
                    "{mount}create routes $ManagerIP through HAProxy (dnsrr services); --routing mesh is refused"
                ),
            };
            Finding::new("routing", status, decision.to_string(), action)
        }
        Some(HostIpvs::Loadable { module }) => Finding::ok(
            "routing",
            format!("mesh: IPVS module on disk ({module}), not loaded yet"),
            format!("{mount}create loads it in a node (modprobe ip_vs), edge if that fails"),
        ),
        Some(HostIpvs::Unknown { why }) => Finding::ok(
            "routing",
            format!("decided at create: {why}"),
            "create tries modprobe ip_vs in a node: mesh if it loads, else edge",
        ),
        None => Finding::warn(
            "routing",
            "unknown: no engine",
            "checked once the engine answers",
        ),
    }
}

fn reach(engine: &EngineFacts) -> Finding {
    let local_gateway = engine
        .bridge_gateway
        .filter(|gw| std::net::UdpSocket::bind((*gw, 0)).is_ok());
    let desktop = crate::docker::is_docker_desktop(&engine.os);
    match local_gateway {
        Some(gw) if !desktop => Finding::ok(
            "reach",
            format!("reachable: container networks are routed here (bridge gateway {gw} is local)"),
            "talks to nodes on their own addresses",
        ),
        _ => Finding::warn(
            "reach",
            if desktop {
                format!("not reachable: {} keeps containers in its VM", engine.os)
            } else {
                "not reachable: the engine's bridge gateway is not an address of this machine"
                    .into()
            },
            "create would publish on 127.0.0.1 (--publish localhost)",
        ),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn engine_disk(engine: &EngineFacts, host: &HostFacts) -> Finding {
    match host.engine_free {
        None => Finding::warn(
            "disk (engine)",
            format!("unknown: {} is not on this machine", engine.root_dir),
            format!("needs about {} there", gib(ENGINE_DISK_NEEDED)),
        ),
        Some(free) if free < ENGINE_DISK_NEEDED => Finding::blocking(
            "disk (engine)",
            format!("{} free at {}", gib(free), engine.root_dir),
            Error::NotReady(format!(
                "only {} free at {} where the engine keeps images and volumes; a lab needs about {}: free some space (`docker image prune`, `goblog-lab destroy --all`)",
                gib(free),
                engine.root_dir,
                gib(ENGINE_DISK_NEEDED)
            )),
        ),
        Some(free) => Finding::ok(
            "disk (engine)",
            format!("{} free at {}", gib(free), engine.root_dir),
            format!("a lab takes about {}", gib(ENGINE_DISK_NEEDED)),
        ),
    }
}

fn home_disk(engine: Option<&EngineFacts>, host: &HostFacts) -> Finding {
    let builds = engine.is_none_or(|e| e.node_image.is_none());
    let needed = if builds {
        HOME_DISK_TO_BUILD
    } else {
        HOME_DISK_TO_RUN
    };
    let place = host.home.display();
    match host.home_free {
        Some(free) if free < needed => Finding::blocking(
            "disk (lab home)",
            format!("{} free at {place}", gib(free)),
            Error::NotReady(format!(
                "only {} free at {place}, the lab home; it needs {} (set GOBLOG_LAB_HOME to a roomier place)",
                gib(free),
                gib(needed)
            )),
        ),
        Some(free) => Finding::ok(
            "disk (lab home)",
            format!("{} free at {place}", gib(free)),
            if builds {
                "builds the node image there once (about 0.5 GiB, removed after)"
            } else {
                "keeps certificates and state there"
            },
        ),
        None => Finding::warn("disk (lab home)", format!("unknown at {place}"), "needs a few MiB there"),
    }
}

fn memory(host: &HostFacts) -> Finding {
    match host.memory_available {
        Some(free) if free < MEMORY_NEEDED => Finding::blocking(
            "memory",
            format!("{} available", gib(free)),
            Error::NotReady(format!(
                "only {} of memory available; a lab of three nodes needs about {}: close something, or --workers 0",
                gib(free),
                gib(MEMORY_NEEDED)
            )),
        ),
        Some(free) if free < MEMORY_COMFORTABLE => Finding::warn(
            "memory",
            format!("{} available", gib(free)),
            "enough for a small lab; keep --workers low",
        ),
        Some(free) => Finding::ok("memory", format!("{} available", gib(free)), "a lab takes about 0.5 GiB"),
        None => Finding::warn("memory", "unknown (no /proc/meminfo)", "a lab takes about 0.5 GiB"),
    }
}

fn node_image(engine: Option<&EngineFacts>, host: &HostFacts) -> Finding {
    if let Some(image) = engine.and_then(|e| e.node_image.as_ref()) {
        return Finding::ok(
            "node image",
            format!("{image} is built"),
            "uses it: debootstrap not needed",
        );
    }
    let found = format!(
        "not built; debootstrap {}, {}",
        if host.debootstrap {
            "present"
        } else {
            "missing"
        },
        if host.root { "root" } else { "not root" }
    );
    match crate::rootfs::preflight("node") {
        Ok(()) => Finding::ok(
            "node image",
            found,
            "create builds it first with debootstrap (about a minute, once)",
        ),
        Err(err) => Finding::blocking("node image", found, err),
    }
}

/// QEMU, KVM and root: what `--driver qemu` needs. Never blocking here:
/// the default driver needs none of them.
fn vm_findings(host: &HostFacts) -> Vec<Finding> {
    let qemu = match &host.qemu {
        Some(version) => Finding::ok(
            "qemu",
            format!("qemu-system-x86_64 {version}"),
            "for --driver qemu: boots VMs with it",
        ),
        None => Finding::warn(
            "qemu",
            "qemu-system-x86_64 not found",
            "for --driver qemu: `apt-get install qemu-system-x86 qemu-utils`",
        ),
    };
    let kvm = match (&host.kvm_cached, host.kvm_device) {
        (Some((accel, why)), _) => Finding::ok(
            "kvm",
            format!("{} ({why}, probed before)", accel),
            "for --driver qemu: runs VMs that way",
        ),
        (None, true) => Finding::ok(
            "kvm",
            "/dev/kvm present, not yet probed",
            "for --driver qemu: the first VM lab probes it (a guest kernel under KVM), else TCG",
        ),
        (None, false) => Finding::warn(
            "kvm",
            "no /dev/kvm",
            "for --driver qemu: TCG, software emulation (minutes, not seconds)",
        ),
    };
    let root = if host.root {
        Finding::ok(
            "root",
            "running as root",
            "for --driver qemu: makes the bridge and taps",
        )
    } else {
        Finding::warn(
            "root",
            "not root",
            "for --driver qemu: run it with sudo (bridge and taps)",
        )
    };
    vec![qemu, kvm, root]
}

fn ports(host: &HostFacts) -> Vec<Finding> {
    host.ports
        .iter()
        .map(|&(port, free)| {
            let (name, user) = match port {
                6767 => (
                    "port 6767",
                    "--publish localhost serves the accountservice there",
                ),
                _ => ("port 6969", "`goblog-lab viz` serves there"),
            };
            if free {
                Finding::ok(name, "free on 127.0.0.1", user)
            } else {
                Finding::warn(
                    name,
                    "in use on 127.0.0.1",
                    match port {
                        6767 => "--publish localhost could not use it: free it",
                        _ => "`goblog-lab viz --port N` picks another",
                    },
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bridge_gateway_is_the_named_one_else_the_subnets_first_host() {
        use super::bridge_gateway;
        assert_eq!(
            bridge_gateway(Some("172.17.0.1"), Some("172.17.0.0/16")),
            Some("172.17.0.1".parse().unwrap())
        );
        // A new machine's dockerd names no gateway.
        assert_eq!(
            bridge_gateway(None, Some("172.17.0.0/16")),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(bridge_gateway(None, Some("fd00::/64")), None);
        assert_eq!(bridge_gateway(None, None), None);
    }

    use super::*;

    #[test]
    fn host_ipvs_reads_modules_dep() {
        let dir = std::env::temp_dir().join(format!("goblog-lab-modules-{}", std::process::id()));
        let release = "6.1.0-test";
        assert!(matches!(
            host_ipvs(false, &dir, release),
            HostIpvs::Known(IpvsProbe::Missing { why }) if why.contains("no ") && why.contains(release)
        ));
        assert_eq!(
            host_ipvs(true, &dir, release),
            HostIpvs::Known(IpvsProbe::Loaded)
        );
        std::fs::create_dir_all(dir.join(release)).unwrap();
        assert!(matches!(
            host_ipvs(false, &dir, release),
            HostIpvs::Unknown { .. }
        ));
        std::fs::write(
            dir.join(release).join("modules.dep"),
            "kernel/net/netfilter/xt_nat.ko.xz:\nkernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n",
        )
        .unwrap();
        assert!(matches!(
            host_ipvs(false, &dir, release),
            HostIpvs::Known(IpvsProbe::Missing { why }) if why.contains("module ip_vs not found")
        ));
        std::fs::write(
            dir.join(release).join("modules.dep"),
            "kernel/net/netfilter/ipvs/ip_vs_rr.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko.xz\nkernel/net/netfilter/ipvs/ip_vs.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz\n",
        )
        .unwrap();
        assert_eq!(
            host_ipvs(false, &dir, release),
            HostIpvs::Loadable {
                module: "kernel/net/netfilter/ipvs/ip_vs.ko.xz".into()
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vm_findings_never_block() {
        let host = HostFacts::default();
        assert!(vm_findings(&host)
            .iter()
            .all(|f| f.status != Status::Blocking));
    }

    #[test]
    fn the_first_blocking_finding_is_the_error() {
        let mut findings = vec![
            Finding::warn("a", "x", "y"),
            Finding::blocking("b", "x", Error::NotReady("first".into())),
            Finding::blocking("c", "x", Error::NotReady("second".into())),
        ];
        assert_eq!(first_blocking(&mut findings).unwrap().to_string(), "first");
        let mut fine = vec![Finding::ok("a", "x", "y")];
        assert!(first_blocking(&mut fine).is_none());
    }
}
