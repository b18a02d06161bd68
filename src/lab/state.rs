//! What a running lab is made of, saved so that `env`, `status` and
//! `destroy` can find it again.
//!
//! The state is a convenience, never the source of truth for cleaning up:
//! every Docker object also carries the lab's label, so `destroy` works when
//! this file is gone. Writes are atomic (temp file + rename) so a crash
//! cannot leave half a file behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::spec::BuildSpec;

const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

/// How `$ManagerIP:6767` reaches the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Swarm's ingress routing mesh (needs IPVS in the kernel).
    Mesh,
    /// dnsrr services behind an HAProxy published in host mode on the manager.
    Edge,
}

/// How this host reaches the lab's machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// At their lab addresses: this host routes to them (Linux, and labs
    /// made before the other mode existed).
    #[default]
    Direct,
    /// Through ports published on 127.0.0.1: Docker Desktop and other
    /// engines whose container addresses this host cannot route to.
    Localhost,
}

impl Publish {
    pub fn as_str(self) -> &'static str {
        match self {
            Publish::Direct => "direct",
            Publish::Localhost => "localhost",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// The driver's handle for the node (a container name for dind).
    pub id: String,
    /// What `docker node ls` shows: swarm-manager-0, swarm-worker-1, ...
    pub hostname: String,
    pub role: Role,
    pub address: Ipv4Addr,
    /// The node's Docker API, TLS with client certificates.
    pub docker_port: u16,
    /// Ports of the machine published on this host's 127.0.0.1, by the
    /// machine's port: how this host reaches a machine whose lab address
    /// it cannot route to. Empty when it routes to the lab address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<u16, u16>,
}

impl NodeState {
    /// Where this host reaches `port` of the machine: its published port on
    /// 127.0.0.1 when it has one, else the lab address. Only for talking
    /// from this host: the machines reach each other at `address`.
    pub fn endpoint(&self, port: u16) -> SocketAddr {
        match self.published.get(&port) {
            Some(&local) => SocketAddr::from((Ipv4Addr::LOCALHOST, local)),
            None => SocketAddr::from((self.address, port)),
        }
    }

    /// The address this host calls the machine by (`$ManagerIP` for the
    /// first manager).
    pub fn reached_at(&self) -> IpAddr {
        if self.published.is_empty() {
            self.address.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        }
    }

    /// The node's Docker API as this host reaches it.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.endpoint(self.docker_port))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Where the registry container runs.
    #[serde(default)]
    pub runs_on: RegistryHost,
    pub container: String,
    /// Labs made before the registry moved to the manager: `127.0.0.1:PORT`,
    /// where this machine pushes. Empty now: pushes go through a relay
    /// opened for the push (`Provider::forward`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub push_address: String,
    /// Where the nodes pull: `MANAGER_IP:5000` over TLS with the lab CA (or,
    /// for older labs, `NAME:5000` on the lab's bridge).
    pub pull_address: String,
}

/// Where a lab's registry runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryHost {
    /// On this machine's engine, published on 127.0.0.1: labs made before
    /// providers (state files without this field).
    #[default]
    HostEngine,
    /// On the first manager's engine, on its lab address, over TLS.
    Manager,
    /// On every manager's engine, on every address of its machine, over
    /// TLS: a lab with a virtual `$ManagerIP`, whose nodes pull through
    /// that address from whichever manager holds it, and whose pushes go
    /// to each manager (`steps::registry::managers_of`).
    EveryManager,
}

impl RegistryState {
    /// The registry's port on the manager, for the push relay.
    pub const PORT: u16 = 5000;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub image: String,
    pub replicas: u64,
    pub ports: Vec<u16>,
    /// What `create` and `start` call through `$ManagerIP` to know it is up.
    #[serde(default)]
    pub probe: Option<String>,
    /// How `deploy` rebuilds it; none for a prebuilt image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSpec>,
    /// The revision of the sources the running image was built from
    /// (`images::Revision`); none for a prebuilt image and in labs made
    /// before images had their own profile, whose tags tell it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    pub driver: ProviderKind,
    pub created_unix: u64,
    pub overlay_network: String,
    pub nodes: Vec<NodeState>,
    pub registry: RegistryState,
    pub routing: Routing,
    /// How this host reaches the machines; labs made before there was a
    /// choice reached them directly.
    #[serde(default)]
    pub publish: Publish,
    pub services: Vec<ServiceState>,
    /// The checkout the built services come from, so `deploy` rebuilds the
    /// same sources `create` built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_root: Option<PathBuf>,
    /// How an ssh lab reaches its hosts again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshState>,
    /// How a qemu lab boots its VMs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmState>,
    /// Set by `stop` and cleared by `start`, so commands that need the
    /// engines say the lab is stopped instead of failing to reach them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The virtual `$ManagerIP` of a lab with 3 or more managers, held by
    /// one healthy manager at a time (`steps::vip`); none in other labs,
    /// whose `$ManagerIP` is the first manager's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
}

/// What `start` needs to boot a qemu lab's VMs as `create` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    pub memory_mib: u32,
    /// `kvm` or `tcg`, as probed at create.
    pub accel: String,
    /// The third octet of the lab's host-only network, 192.168.X.0/24.
    pub network_octet: u8,
    /// The VM image's fingerprint, so `start` boots the kernel it was made with.
    pub image: String,
}

/// What an ssh lab needs to reach its hosts again (the hosts themselves
/// are the nodes' ids, `user@host:port`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshState {
    /// `--ssh-key`, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Keys of single hosts, by node id: docker-machine makes one per machine.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keys: std::collections::BTreeMap<String, PathBuf>,
}

impl LabState {
    pub fn new(name: &str, driver: ProviderKind, overlay: &str, registry: RegistryState) -> Self {
        LabState {
            version: STATE_VERSION,
            name: name.to_string(),
            driver,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            overlay_network: overlay.to_string(),
            nodes: Vec::new(),
            registry,
            routing: Routing::Edge,
            publish: Publish::Direct,
            services: Vec::new(),
            project_root: None,
            ssh: None,
            vm: None,
            stopped: false,
            vip: None,
        }
    }

    /// What the tutorial calls `$ManagerIP`: the lab's virtual address
    /// when it has one, else the first manager as this host reaches it
    /// (127.0.0.1 when its ports are published there).
    pub fn manager_ip(&self) -> Result<IpAddr> {
        match self.vip {
            Some(vip) => Ok(vip.into()),
            None => Ok(self.leader()?.reached_at()),
        }
    }

    /// Where this host reaches `port` of `$ManagerIP`: a published service,
    /// the edge's statistics, the managers' Docker API.
    pub fn entry(&self, port: u16) -> Result<SocketAddr> {
        match self.vip {
            Some(vip) => Ok(SocketAddr::new(vip.into(), port)),
            None => Ok(self.leader()?.endpoint(port)),
        }
    }

    /// `DOCKER_HOST` for the Swarm: whichever manager holds `$ManagerIP`.
    pub fn docker_host(&self) -> Result<String> {
        match self.vip {
            Some(vip) => Ok(format!("tcp://{vip}:{}", crate::provider::DOCKER_TLS_PORT)),
            None => Ok(self.leader()?.docker_host()),
        }
    }

    /// Every port of a machine that this host calls, and where it reaches
    /// it: each Docker API, the first manager's services and registry.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let endpoint = |node: &NodeState, what: &str, port: u16| Endpoint {
            node: node.hostname.clone(),
            what: what.to_string(),
            port,
            reached_at: node.endpoint(port).to_string(),
        };
        let mut found: Vec<Endpoint> = self
            .nodes
            .iter()
            .map(|n| endpoint(n, "docker", n.docker_port))
            .collect();
        if let Ok(leader) = self.leader() {
            let front = |what: &str, port: u16| match self.vip {
                Some(vip) => Endpoint {
                    node: "$ManagerIP".into(),
                    what: what.to_string(),
                    port,
                    reached_at: SocketAddr::new(vip.into(), port).to_string(),
                },
                None => endpoint(leader, what, port),
            };
            found.extend(
                self.services
                    .iter()
                    .flat_map(|s| s.ports.iter().map(|&port| front(&s.name, port))),
            );
            if self.registry.runs_on != RegistryHost::HostEngine {
                found.push(front("registry", RegistryState::PORT));
            }
        }
        found
    }

    /// The node whose address the tutorial calls `$ManagerIP`.
    pub fn leader(&self) -> Result<&NodeState> {
        self.nodes
            .iter()
            .find(|n| n.role == Role::Manager)
            .ok_or_else(|| {
                Error::failed(format!("lab '{}' has no manager in its state", self.name))
            })
    }
}

/// A port of a machine that this host calls, and where it reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The machine's hostname.
    pub node: String,
    /// What listens there: `docker`, `registry`, or a service's name.
    pub what: String,
    /// The port on the machine.
    pub port: u16,
    /// Where this host reaches it: `LAB_ADDRESS:PORT`, or `127.0.0.1:PORT`
    /// when the machine's ports are published there.
    pub reached_at: String,
}

impl Endpoint {
    /// `accountservice 6767 → 127.0.0.1:6767`, for text output.
    pub fn describe(&self) -> String {
        format!("{} {} → {}", self.what, self.port, self.reached_at)
    }
}

/// The files of one lab, under `$GOBLOG_LAB_HOME/labs/NAME`.
#[derive(Debug, Clone)]
pub struct LabDir {
    pub name: String,
    pub root: PathBuf,
}

/// Where goblog-lab keeps its files: `$GOBLOG_LAB_HOME`, else the user's
/// local data directory (`~/.local/share/goblog-lab` on Linux).
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("GOBLOG_LAB_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::data_local_dir()
        .or_else(dirs::home_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("goblog-lab")
}

impl LabDir {
    pub fn new(name: &str) -> Self {
        LabDir {
            name: name.to_string(),
            root: home().join("labs").join(name),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// What DOCKER_CERT_PATH names: ca.pem, cert.pem, key.pem, as docker-machine laid them out.
    /// The lab's own directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The key the lab logs in to its VMs with (qemu labs).
    pub fn ssh_key(&self) -> PathBuf {
        self.root.join("id_ed25519")
    }
    pub fn client_certs(&self) -> PathBuf {
        self.root.join("certs")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }
    /// Host keys accepted with `--accept-new-host-keys`, for this lab only.
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
    pub fn join_token(&self, role: Role) -> PathBuf {
        self.root.join(format!("swarm-{}.token", role.as_str()))
    }

    pub fn exists(&self) -> bool {
        self.state_file().exists()
    }

    pub fn load(&self) -> Result<LabState> {
        let text = match fs::read_to_string(self.state_file()) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::LabNotFound(self.name.clone()))
            }
            Err(err) => {
                return Err(err).context(format!("reading {}", self.state_file().display()))
            }
        };
        serde_json::from_str(&text).map_err(|err| {
            Error::failed(format!(
                "{} is damaged ({err}): `goblog-lab destroy --name {}` still removes the lab",
                self.state_file().display(),
                self.name
            ))
        })
    }

    pub fn save(&self, state: &LabState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).expect("lab state always serialises");
        write_atomic(&self.state_file(), &json, 0o644)
    }

    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).context(format!("removing {}", self.root.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Lists the labs that have a state directory.
pub fn saved_labs() -> Vec<String> {
    saved_in(&home().join("labs"), "state.json")
}

/// The names of the directories under `root` that hold a `file`, sorted.
pub fn saved_in(root: &Path, file: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(file).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Writes `bytes` to `path` by way of a temp file in the same directory, so
/// readers see the old file or the new one, never a torn one. `mode` is set
/// at creation, so a secret is never readable by others, not even briefly.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}

/// Secrets (keys, join tokens): 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> LabState {
        let mut state = LabState::new(
            "goblog",
            ProviderKind::Dind,
            "my_network",
            RegistryState {
                runs_on: RegistryHost::Manager,
                container: "goblog-registry".into(),
                push_address: String::new(),
                pull_address: "172.28.3.10:5000".into(),
            },
        );
        state.nodes.push(NodeState {
            id: "goblog-swarm-manager-0".into(),
            hostname: "swarm-manager-0".into(),
            role: Role::Manager,
            address: "172.28.3.10".parse().unwrap(),
            docker_port: 2376,
            published: BTreeMap::new(),
        });
        state.services.push(ServiceState {
            name: "accountservice".into(),
            image: "goblog-registry:5000/accountservice:abc".into(),
            replicas: 3,
            ports: vec![6767],
            probe: Some("/accounts/10000".into()),
            build: Some(BuildSpec {
                package: "accountservice".into(),
                context: "images/accountservice".into(),
            }),
            revision: Some("0123456789ab".into()),
        });
        state.project_root = Some("/src/goblog".into());
        state
    }

    #[test]
    fn the_driver_is_typed_and_reads_the_names_old_states_hold() {
        let mut json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["driver"], "dind", "written as it always was");
        for (name, kind) in [
            ("dind", ProviderKind::Dind),
            ("ssh", ProviderKind::Ssh),
            ("qemu", ProviderKind::Qemu),
            ("docker-machine", ProviderKind::DockerMachine),
        ] {
            json["driver"] = name.into();
            let state: LabState = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(state.driver, kind);
            assert_eq!(kind.as_str(), name);
        }
        json["driver"] = "virtualbox".into();
        let err = serde_json::from_value::<LabState>(json).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `virtualbox`"),
            "{err}"
        );
    }

    #[test]
    fn state_round_trips_through_disk() {
        let dir = tempdir();
        let lab = LabDir {
            name: "goblog".into(),
            root: dir.join("labs/goblog"),
        };
        let state = sample();
        lab.save(&state).unwrap();
        assert_eq!(lab.load().unwrap(), state);
        assert_eq!(
            lab.load().unwrap().leader().unwrap().docker_host(),
            "tcp://172.28.3.10:2376"
        );
        // No temp file is left next to it.
        let names: Vec<_> = fs::read_dir(&lab.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        lab.remove().unwrap();
        assert!(matches!(lab.load(), Err(Error::LabNotFound(_))));
        lab.remove().unwrap();
    }

    #[test]
    fn localhost_labs_are_reached_through_their_published_ports() {
        let mut state = sample();
        assert_eq!(state.manager_ip().unwrap().to_string(), "172.28.3.10");
        state.publish = Publish::Localhost;
        state.nodes[0].published = [(2376, 49153), (6767, 6767), (5000, 49154)].into();
        let leader = state.leader().unwrap();
        assert_eq!(leader.docker_host(), "tcp://127.0.0.1:49153");
        assert_eq!(leader.endpoint(6767).to_string(), "127.0.0.1:6767");
        // The machines still reach each other at the lab address.
        assert_eq!(leader.address.to_string(), "172.28.3.10");
        assert_eq!(state.manager_ip().unwrap().to_string(), "127.0.0.1");
        let seen: Vec<String> = state.endpoints().iter().map(Endpoint::describe).collect();
        assert_eq!(
            seen,
            [
                "docker 2376 → 127.0.0.1:49153",
                "accountservice 6767 → 127.0.0.1:6767",
                "registry 5000 → 127.0.0.1:49154"
            ]
        );
    }

    #[test]
    fn states_saved_before_publishing_load_as_direct() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("publish");
        assert!(json["nodes"][0].get("published").is_none());
        let state: LabState = serde_json::from_value(json).unwrap();
        assert_eq!(state.publish, Publish::Direct);
        assert!(state.nodes[0].published.is_empty());
        assert_eq!(
            state.leader().unwrap().docker_host(),
            "tcp://172.28.3.10:2376"
        );
    }

    #[test]
    fn secrets_are_0600_and_replace_atomically() {
        let dir = tempdir();
        let path = dir.join("t/swarm-worker.token");
        write_secret(&path, b"SWMTKN-1-old").unwrap();
        write_secret(&path, b"SWMTKN-1-new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"SWMTKN-1-new");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn damaged_state_says_how_to_recover() {
        let dir = tempdir();
        let lab = LabDir {
            name: "x".into(),
            root: dir.join("labs/x"),
        };
        write_atomic(&lab.state_file(), b"{not json", 0o644).unwrap();
        let err = lab.load().unwrap_err().to_string();
        assert!(err.contains("destroy --name x"), "{err}");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "goblog-lab-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
