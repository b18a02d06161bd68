//! The provisioner: from "a machine exists at ADDRESS" to "its Docker
//! engine answers with TLS on ADDRESS:2376 and trusts the lab registry".
//!
//! docker-machine split the work the same way (`libmachine/provision`):
//! the driver makes the machine, the provisioner configures its engine
//! through whatever way in the driver offers. Here that way is
//! `Provider::put_files` and `Provider::run`, so the same code configures a
//! Docker-in-Docker node and a real host over SSH. Certificates are made
//! for the address the provider reported once the machine existed, never
//! for one chosen beforehand, and `reissue` makes them again when it moves.

use std::net::Ipv4Addr;

use std::time::Duration;

use futures_util::future::{join_all, try_join_all};

use crate::error::{Error, Result};
use crate::lab::state::{LabState, NodeState, Role};
use crate::pki::Authority;
use crate::provider::{EngineSetup, NodeFile, Provider, Removed, DOCKER_TLS_PORT};
use crate::ui::Ui;

/// Where the lab's files live on a machine; `deprovision` removes it whole.
pub const LAB_DIR: &str = "/etc/goblog-lab";
const TLS_DIR: &str = "/etc/goblog-lab/tls";
/// Drop-ins apply in name order and the last `ExecStart` wins: the name
/// sorts after a host's own `override.conf`.
const DROP_IN: &str = "/etc/systemd/system/docker.service.d/zz-goblog-lab.conf";
const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// The host's own daemon.json, kept byte for byte while the lab replaces it.
const DAEMON_JSON_BACKUP: &str = "/etc/goblog-lab/backup/daemon.json";

/// Debian's docker.service allows 3 starts in 60 s (`StartLimitBurst`);
/// a create, a rollback and a second try can exceed that, and systemd then
/// refuses the start with "attempted too often".
const RESTART_DOCKER: &str =
    "systemctl daemon-reload && systemctl reset-failed docker.service && systemctl restart docker.service";

/// The oldest engine with what the lab uses (Swarm configs with data,
/// dnsrr with host-mode ports): Docker 19.03, API 1.40.
const MIN_DOCKER: (u32, u32) = (19, 3);

/// Everything a node's engine needs from the lab.
pub struct EngineConfig<'a> {
    pub authority: &'a Authority,
    /// `MANAGER_IP:5000`, the registry every node pulls from, and with a
    /// registry on every manager each manager's own
    /// (`steps::registry::addresses`).
    pub registries: Vec<String>,
    /// The lab's virtual `$ManagerIP`, which every manager may come to
    /// hold: their certificates name it and their engines answer on it.
    pub vip: Option<Ipv4Addr>,
}

impl EngineConfig<'_> {
    /// Where `node`'s engine listens for TLS: its own address, or every
    /// address of a manager that may hold the virtual one (dockerd cannot
    /// bind an address its machine does not hold yet). Still TLS with the
    /// lab's client certificates only.
    fn listen_on(&self, node: &NodeState) -> Ipv4Addr {
        match self.vip {
            Some(_) if node.role == Role::Manager => Ipv4Addr::UNSPECIFIED,
            _ => node.address,
        }
    }

    /// The addresses `node`'s certificate names.
    fn names(&self, node: &NodeState) -> Vec<std::net::IpAddr> {
        let mut names = vec![node.address.into(), Ipv4Addr::LOCALHOST.into()];
        if let (Some(vip), Role::Manager) = (self.vip, node.role) {
            names.push(vip.into());
        }
        names
    }
}

/// Configures a node's engine and, where the engine was already running,
/// restarts it. Running it again changes nothing that is already right.
pub async fn provision(
    provider: &dyn Provider,
    node: &NodeState,
    config: &EngineConfig<'_>,
) -> Result<()> {
    let mut files = tls_files(node, config)?;
    match provider.engine_setup() {
        EngineSetup::DaemonJson => {
            // The node waits for this file, then starts dockerd with it.
            files.push(NodeFile::new(
                DAEMON_JSON,
                serde_json::to_vec_pretty(&daemon_json(config.listen_on(node))).expect("json"),
                0o644,
            ));
            provider.put_files(node, &files).await
        }
        EngineSetup::SystemdDropIn => {
            set_aside_conflicting_daemon_json(provider, node).await?;
            let dockerd = check(provider, node, "command -v dockerd").await?;
            let containerd = provider
                .run(node, "test -S /run/containerd/containerd.sock")
                .await?
                .status
                == 0;
            files.push(NodeFile::new(
                DROP_IN,
                drop_in(dockerd.trim(), containerd, config.listen_on(node)),
                0o644,
            ));
            provider.put_files(node, &files).await?;
            check(provider, node, RESTART_DOCKER).await.map(drop)
        }
    }
}

/// A node certificate for the node's current address, after it moved.
pub async fn reissue(
    provider: &dyn Provider,
    node: &NodeState,
    config: &EngineConfig<'_>,
) -> Result<()> {
    provider.put_files(node, &tls_files(node, config)?).await?;
    match provider.engine_setup() {
        // dockerd reads its certificate at start: restart the node.
        EngineSetup::DaemonJson => {
            provider.stop(node).await?;
            provider.start(node).await.map(drop)
        }
        EngineSetup::SystemdDropIn => check(provider, node, RESTART_DOCKER).await.map(drop),
    }
}

/// Takes a lab off its machines, what `destroy` and a failed `create` both
/// do: adopted hosts are given back as they were (by the provisioner,
/// which knows what it set up on them), then the provider removes what it
/// made. Works twice in a row.
pub async fn remove_lab(
    provider: &dyn Provider,
    state: Option<&LabState>,
    ui: &Ui,
) -> Result<Removed> {
    // After a failure or Ctrl-C, what was already sent to a machine must
    // land before it is undone (a known_hosts line written into the lab's
    // directory, a drop-in), even when the lab got no state yet.
    if !crate::ssh::settle(SETTLE_TIMEOUT).await {
        ui.warn("some SSH commands were still running after 120 s; removing anyway");
    }
    let mut removed = Removed::default();
    if provider.adopts_hosts() {
        if let Some(state) = state {
            removed = give_back_hosts(provider, state, ui).await?;
        }
    }
    removed.add(&provider.remove(state).await?);
    Ok(removed)
}

/// How long a removal waits for SSH work still running (a create
/// abandoned mid-command): each command's own deadline is 120 s.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Gives every host of `state` back: workers first, side by side, then the
/// managers (a manager that leaves first strands the workers). Every host
/// is tried, whatever happened to another.
async fn give_back_hosts(provider: &dyn Provider, state: &LabState, ui: &Ui) -> Result<Removed> {
    let (managers, workers): (Vec<&NodeState>, Vec<&NodeState>) =
        state.nodes.iter().partition(|n| n.role == Role::Manager);
    let mut failed = Vec::new();
    for wave in [workers, managers] {
        let results = join_all(wave.iter().map(|node| async {
            give_back(provider, node, state).await?;
            ui.detail(format!("{} ({}) given back", node.hostname, node.id));
            Ok::<_, Error>(())
        }))
        .await;
        failed.extend(
            results
                .into_iter()
                .filter_map(|r| r.err())
                .map(|e| e.to_string()),
        );
    }
    if !failed.is_empty() {
        return Err(Error::HostsNotGivenBack {
            lab: state.name.clone(),
            failed: failed.len(),
            total: state.nodes.len(),
            first: failed.swap_remove(0),
        });
    }
    Ok(Removed {
        items: vec![(state.nodes.len(), "host given back")],
    })
}

/// Takes everything of the lab off one host: its Swarm and the task
/// containers it leaves behind (the host was in no Swarm before the lab,
/// so every one is the lab's), the registry (named in the lab's state) and
/// the images pulled from it, then the engine configuration.
async fn give_back(provider: &dyn Provider, node: &NodeState, state: &LabState) -> Result<()> {
    let registry = &state.registry;
    let container = crate::ssh::shell_quote(&registry.container);
    let vip = crate::steps::vip::CONTAINER;
    let pull = &registry.pull_address;
    // keepalived takes the virtual address off when stopped (SIGTERM), not
    // when killed; whatever is left of it goes after.
    let drop_vip = match state.vip {
        Some(address) => format!(
            "docker stop -t 5 {vip} >/dev/null 2>&1 || true
ip -o -4 addr show | while read -r _ dev _ held _; do if [ \"$held\" = {address}/32 ]; then ip addr del {address}/32 dev \"$dev\"; fi; done
"
        ),
        None => String::new(),
    };
    let lab_images = format!(
        "{drop_vip}docker swarm leave --force >/dev/null 2>&1 || true
docker ps -aq --filter label=com.docker.swarm.task.id | xargs -r docker rm -f >/dev/null 2>&1 || true
docker rm -f {container} {vip} >/dev/null 2>&1 || true
docker volume rm {container} >/dev/null 2>&1 || true
docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep -E '^({pull}/|goblog-lab/(registry|vip):)' | xargs -r docker rmi -f >/dev/null 2>&1 || true",
    );
    provider.run(node, &lab_images).await?;
    deprovision(provider, node, &crate::steps::registry::addresses(state)).await
}

/// Gives a host back as it was before the lab: the drop-in and the lab's
/// files go, a daemon.json the lab set aside comes back byte for byte, and
/// dockerd restarts as the host had it. Returns once that dockerd answers
/// outside any Swarm and the Swarm's ports are free: a create straight
/// after a destroy of the same host once met 2377 still taken (one create
/// in about ten of `bench/ssh.sh`, issue 23).
pub async fn deprovision(
    provider: &dyn Provider,
    node: &NodeState,
    registries: &[String],
) -> Result<()> {
    let certs_d: Vec<String> = registries
        .iter()
        .map(|r| format!("'/etc/docker/certs.d/{r}'"))
        .collect();
    let certs_d = certs_d.join(" ");
    let script = format!(
        "set -e
if [ -f {DAEMON_JSON_BACKUP} ]; then cp -p {DAEMON_JSON_BACKUP} {DAEMON_JSON}; fi
rm -f {DROP_IN}
rmdir --ignore-fail-on-non-empty /etc/systemd/system/docker.service.d 2>/dev/null || true
rm -rf {LAB_DIR} {certs_d}
rmdir --ignore-fail-on-non-empty /etc/docker/certs.d 2>/dev/null || true
{RESTART_DOCKER}
{given_back}",
        given_back = wait_given_back(SWARM_PORTS_WAIT_S)
    );
    check(provider, node, &script).await.map(drop)
}

/// How long a host may take to let go of the Swarm's ports.
const SWARM_PORTS_WAIT_S: u32 = 30;

/// Perl that prints each port of its arguments it cannot bind as dockerd
/// would (any address, SO_REUSEADDR, so TIME_WAIT does not count): `N` for
/// TCP, `N/udp` for UDP. perl-base is on every Debian and Ubuntu.
const BIND_PROBE: &str = "perl -MIO::Socket::INET -e 'for (@ARGV) { my ($p, $u) = split m{/}; my $s = $u ? IO::Socket::INET->new(LocalPort=>$p,Proto=>\"udp\",ReuseAddr=>1) : IO::Socket::INET->new(LocalPort=>$p,Listen=>1,ReuseAddr=>1); print \"$_\\n\" unless $s }'";

/// A shell loop that waits up to `seconds` for dockerd to answer outside
/// any Swarm and for 2377, 7946 and 4789/udp to be free, else fails
/// naming what is still held.
fn wait_given_back(seconds: u32) -> String {
    let tries = seconds * 5;
    format!(
        "i=0; while :; do
  state=$(docker info --format '{{{{.Swarm.LocalNodeState}}}}' 2>/dev/null || echo unanswered)
  held=$({BIND_PROBE} 2377 7946 4789/udp | tr '\\n' ' ')
  [ \"$state\" = inactive ] && [ -z \"$held\" ] && break
  i=$((i+1)); [ $i -ge {tries} ] && {{ echo \"after {seconds} s dockerd is $state and the Swarm ports ${{held:-none}} are still held\"; exit 1; }}
  sleep 0.2
done"
    )
}

/// Tries to load IPVS, which Swarm's routing mesh needs, on a node. On a
/// host, dockerd would load it itself; a dind node shares this machine's
/// kernel and loads it from the host's /lib/modules, mounted read-only.
pub async fn probe_ipvs(
    provider: &dyn Provider,
    node: &NodeState,
) -> Result<crate::routing::IpvsProbe> {
    let probe = provider.run(node, crate::routing::IPVS_PROBE).await?;
    Ok(crate::routing::IpvsProbe::from_output(
        probe.status,
        &probe.output,
    ))
}

/// A port the lab will listen on at its first manager, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerPort {
    pub port: u16,
    pub purpose: String,
}

/// What an ssh lab checks on its hosts before it changes anything: each
/// failure is one line naming the host and the cause. `manager_ports` must
/// be free on the first manager.
pub async fn preflight(
    provider: &dyn Provider,
    nodes: &[NodeState],
    manager_ports: &[ManagerPort],
) -> Result<()> {
    try_join_all(nodes.iter().map(|node| preflight_host(provider, node))).await?;
    if let Some(manager) = nodes.first() {
        ports_free(provider, manager, manager_ports).await?;
    }
    swarm_ports_open(provider, nodes).await
}

/// How long the preflight waits for a manager's port to be let go.
const PORT_RELEASE_WAIT_S: u32 = 10;

/// Refuses a manager where something still listens on a port the lab
/// needs after [`PORT_RELEASE_WAIT_S`]. Found late, it is a registry that never answers, or a service
/// whose tasks stay pending for two minutes with "port already in use".
/// The probe binds each port as dockerd would (any address, SO_REUSEADDR,
/// so sockets in TIME_WAIT do not count) and lets go at once; perl-base is
/// on every Debian and Ubuntu, as for the Swarm port probe.
async fn ports_free(
    provider: &dyn Provider,
    node: &NodeState,
    ports: &[ManagerPort],
) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
    // A port let go a moment ago (a lab destroyed just before) gets a
    // bounded wait before it is called taken.
    let tries = PORT_RELEASE_WAIT_S * 5;
    let script = format!(
        "i=0; while taken=$({BIND_PROBE} {ports}); [ -n \"$taken\" ] && [ $i -lt {tries} ]; do i=$((i+1)); sleep 0.2; done; echo \"$taken\"",
        ports = list.join(" ")
    );
    let taken = check(provider, node, &script).await?;
    let taken: Vec<u16> = taken
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    match ports.iter().find(|p| taken.contains(&p.port)) {
        None => Ok(()),
        Some(ManagerPort { port, purpose }) => Err(Error::HostUnfit {
            host: node.id.clone(),
            reason: format!(
                "port {port}/tcp is already in use there, and the lab's manager needs it for {purpose}: stop what listens on it (`ss -ltnp 'sport = :{port}'` shows it), or make another host the manager"
            ),
        }),
    }
}

/// The Swarm ports each node must accept from the others: 7946 on every
/// node (gossip), 2377 on managers (joins, Raft).
fn swarm_ports(node: &NodeState) -> &'static [u16] {
    match node.role {
        Role::Manager => &[2377, 7946],
        Role::Worker => &[7946],
    }
}

/// Proves that no firewall blocks the Swarm's TCP ports between the hosts.
/// Nothing listens there before the Swarm exists, so each host opens
/// short-lived listeners for the probe, which are closed again whatever
/// the outcome: a listener left on 2377 would make `swarm init` fail.
async fn swarm_ports_open(provider: &dyn Provider, nodes: &[NodeState]) -> Result<()> {
    let listeners = try_join_all(nodes.iter().map(|node| listen(provider, node))).await?;
    let probes = try_join_all(nodes.iter().flat_map(|target| {
        nodes
            .iter()
            .filter(move |from| from.id != target.id)
            .flat_map(move |from| {
                swarm_ports(target)
                    .iter()
                    .map(move |&port| port_probe(provider, from, target, port))
            })
    }))
    .await;
    // The Swarm binds these ports next: each listener is waited out, not
    // only signalled (a signalled perl may hold 2377 a moment longer).
    for (node, pids) in nodes.iter().zip(listeners) {
        let ports: Vec<String> = swarm_ports(node).iter().map(u16::to_string).collect();
        provider
            .run(
                node,
                &format!(
                    "kill {pids} 2>/dev/null; i=0; while [ -n \"$({BIND_PROBE} {ports})\" ] && [ $i -lt 50 ]; do i=$((i+1)); sleep 0.1; done; true",
                    ports = ports.join(" ")
                ),
            )
            .await?;
    }
    probes.map(drop)
}

/// Starts a listener on each Swarm port of `node`; returns their PIDs.
async fn listen(provider: &dyn Provider, node: &NodeState) -> Result<String> {
    // perl-base is essential in Debian and Ubuntu; nc and socat are not.
    // A port something already listens on needs no listener of ours.
    let script: String = swarm_ports(node)
        .iter()
        .map(|port| {
            format!(
                "nohup timeout 30 perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>\"{addr}\",LocalPort=>{port},Listen=>16,ReuseAddr=>1) or exit 0; while($c=$s->accept){{close $c}}' >/dev/null 2>&1 & echo $!\n",
                addr = node.address
            )
        })
        .collect();
    let started = check(provider, node, &script).await?;
    Ok(started.split_whitespace().collect::<Vec<_>>().join(" "))
}

async fn preflight_host(provider: &dyn Provider, node: &NodeState) -> Result<()> {
    let unfit = |reason: String| Error::HostUnfit {
        host: node.id.clone(),
        reason,
    };
    let os = provider.run(node, "cat /etc/os-release").await?;
    let os_name = os_release_field(&os.output, "PRETTY_NAME").unwrap_or_else(|| "unknown".into());
    let systemd = provider.run(node, "test -d /run/systemd/system").await?;
    if systemd.status != 0 {
        return Err(unfit(format!(
            "{os_name} does not run systemd, which goblog-lab configures dockerd through"
        )));
    }
    let version = provider
        .run(node, "docker version --format '{{.Server.Version}}'")
        .await?;
    if version.status != 0 {
        let installed = provider.run(node, "command -v dockerd").await?.status == 0;
        return Err(unfit(if installed {
            "Docker is installed but its engine does not answer: `sudo systemctl start docker` there".into()
        } else {
            format!("Docker is not installed on {os_name}: install it (Debian/Ubuntu: `apt-get install docker.io`), or pass --install-docker")
        }));
    }
    let found = version.output.trim().to_string();
    if !docker_version_ok(&found) {
        return Err(unfit(format!(
            "Docker {found} is too old: the lab needs {}.{:02} or newer",
            MIN_DOCKER.0, MIN_DOCKER.1
        )));
    }
    let swarm = provider
        .run(node, "docker info --format '{{.Swarm.LocalNodeState}}'")
        .await?;
    let swarm = swarm.output.trim();
    if swarm != "inactive" {
        return Err(unfit(format!(
            "already in a Swarm (state {swarm}): run `docker swarm leave` there first, or choose another host"
        )));
    }
    Ok(())
}

/// Installs Debian's or Ubuntu's docker.io on a host that has no Docker.
pub async fn install_docker(provider: &dyn Provider, node: &NodeState) -> Result<()> {
    if provider.run(node, "command -v dockerd").await?.status == 0 {
        return Ok(());
    }
    let os = provider.run(node, "cat /etc/os-release").await?;
    let family = format!(
        "{} {}",
        os_release_field(&os.output, "ID").unwrap_or_default(),
        os_release_field(&os.output, "ID_LIKE").unwrap_or_default()
    );
    if !family.contains("debian") && !family.contains("ubuntu") {
        return Err(Error::HostUnfit {
            host: node.id.clone(),
            reason: "--install-docker knows Debian and Ubuntu only: install Docker there by hand"
                .into(),
        });
    }
    check(
        provider,
        node,
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq docker.io && systemctl enable --now docker",
    )
    .await
    .map(drop)
}

/// Connects from `from` to `port` on `target`, where `listen` opened a
/// listener: proves the port is not blocked between the two.
async fn port_probe(
    provider: &dyn Provider,
    from: &NodeState,
    target: &NodeState,
    port: u16,
) -> Result<()> {
    let connect = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do timeout 1 bash -c 'exec 3<>/dev/tcp/{}/{port}' 2>/dev/null && exit 0; sleep 0.3; done; exit 1",
        target.address
    );
    let probe = provider.run(from, &connect).await?;
    if probe.status != 0 {
        return Err(Error::HostUnfit {
            host: from.id.clone(),
            reason: format!(
                "cannot reach {} at {}:{port}/tcp: open the Swarm ports between the hosts (2377/tcp, 7946/tcp+udp, 4789/udp)",
                target.id, target.address
            ),
        });
    }
    Ok(())
}

fn tls_files(node: &NodeState, config: &EngineConfig<'_>) -> Result<Vec<NodeFile>> {
    let server = config
        .authority
        .server(&[node.hostname.as_str(), "localhost"], &config.names(node))?;
    // The registry answers only clients of the lab CA.
    let registry_client = config.authority.client()?;
    let ca = config.authority.cert_pem().as_bytes().to_vec();
    // How dockerd trusts a registry and shows it a certificate: files per
    // registry address, read at each pull, no restart.
    let mut files = vec![
        NodeFile::new(format!("{TLS_DIR}/ca.pem"), ca.clone(), 0o644),
        NodeFile::new(format!("{TLS_DIR}/cert.pem"), server.cert_pem, 0o644),
        NodeFile::new(format!("{TLS_DIR}/key.pem"), server.key_pem, 0o600),
    ];
    for registry in &config.registries {
        let certs_d = format!("/etc/docker/certs.d/{registry}");
        files.extend([
            NodeFile::new(format!("{certs_d}/ca.crt"), ca.clone(), 0o644),
            NodeFile::new(
                format!("{certs_d}/client.cert"),
                registry_client.cert_pem.clone(),
                0o644,
            ),
            NodeFile::new(
                format!("{certs_d}/client.key"),
                registry_client.key_pem.clone(),
                0o600,
            ),
        ]);
    }
    Ok(files)
}

fn daemon_json(address: Ipv4Addr) -> serde_json::Value {
    serde_json::json!({
        "hosts": ["unix:///var/run/docker.sock", format!("tcp://{address}:{DOCKER_TLS_PORT}")],
        "tls": true,
        "tlsverify": true,
        "tlscacert": format!("{TLS_DIR}/ca.pem"),
        "tlscert": format!("{TLS_DIR}/cert.pem"),
        "tlskey": format!("{TLS_DIR}/key.pem"),
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
    })
}

/// The systemd drop-in that adds the lab's TLS listener to the host's
/// dockerd. `-H` flags and a daemon.json `hosts` key cannot both be set,
/// hence `set_aside_conflicting_daemon_json`.
fn drop_in(dockerd: &str, containerd: bool, address: Ipv4Addr) -> String {
    let containerd = if containerd {
        " --containerd=/run/containerd/containerd.sock"
    } else {
        ""
    };
    format!(
        "# Written by goblog-lab; `goblog-lab destroy` removes it.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart={dockerd} -H fd://{containerd} -H tcp://{address}:{DOCKER_TLS_PORT} --tlsverify \
         --tlscacert={TLS_DIR}/ca.pem --tlscert={TLS_DIR}/cert.pem --tlskey={TLS_DIR}/key.pem\n"
    )
}

/// The keys of a host's daemon.json that fight the drop-in's flags.
const CONFLICTING_KEYS: [&str; 6] = [
    "hosts",
    "tls",
    "tlsverify",
    "tlscacert",
    "tlscert",
    "tlskey",
];

/// A daemon.json that sets what the drop-in sets would stop dockerd from
/// starting. It is kept byte for byte and replaced by a copy without those
/// keys; `deprovision` puts the original back.
async fn set_aside_conflicting_daemon_json(
    provider: &dyn Provider,
    node: &NodeState,
) -> Result<()> {
    let current = provider
        .run(node, &format!("cat {DAEMON_JSON} 2>/dev/null"))
        .await?;
    if current.status != 0 {
        return Ok(());
    }
    let Some(stripped) = without_conflicting_keys(&current.output) else {
        return Ok(());
    };
    // Re-running keeps the first backup: that one is the host's own.
    check(
        provider,
        node,
        &format!(
            "mkdir -p {LAB_DIR}/backup && chmod 0700 {LAB_DIR}/backup && {{ test -f {DAEMON_JSON_BACKUP} || cp -p {DAEMON_JSON} {DAEMON_JSON_BACKUP}; }}"
        ),
    )
    .await?;
    provider
        .put_files(node, &[NodeFile::new(DAEMON_JSON, stripped, 0o644)])
        .await
}

/// The daemon.json without the keys the drop-in sets, or None when it has
/// none of them (or is not JSON, which dockerd would refuse anyway).
fn without_conflicting_keys(text: &str) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = value.as_object_mut()?;
    let before = object.len();
    object.retain(|key, _| !CONFLICTING_KEYS.contains(&key.as_str()));
    (object.len() != before).then(|| serde_json::to_vec_pretty(&value).expect("json"))
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().trim_matches('"').to_string())
}

fn docker_version_ok(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_DOCKER,
        _ => false,
    }
}

/// Runs a command that must succeed; returns its output.
async fn check(provider: &dyn Provider, node: &NodeState, command: &str) -> Result<String> {
    let output = provider.run(node, command).await?;
    if output.status != 0 {
        return Err(Error::Remote {
            node: node.id.clone(),
            command: command.lines().next().unwrap_or(command).to_string(),
            status: output.status,
            output: output
                .output
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    Ok(output.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bind_probe_names_held_ports_tcp_and_udp_and_not_free_ones() {
        // Real sockets on this machine, the probe through a real shell.
        let tcp = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let free = std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (held_tcp, held_udp) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let output = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("{BIND_PROBE} {held_tcp} {free} {held_udp}/udp {free}/udp"),
            ])
            .output()
            .expect("sh runs");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            printed,
            format!("{held_tcp}\n{held_udp}/udp\n"),
            "{output:?}"
        );
    }

    #[test]
    fn the_given_back_wait_is_one_valid_shell_script() {
        let output = std::process::Command::new("sh")
            .args(["-n", "-c", &wait_given_back(SWARM_PORTS_WAIT_S)])
            .output()
            .expect("sh runs");
        assert!(output.status.success(), "{output:?}");
    }

    #[test]
    fn node_certificates_answer_to_the_lab_address_and_to_loopback() {
        // In localhost mode this host calls every engine at 127.0.0.1:PORT.
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName};
        let authority = Authority::create("t").unwrap();
        let node = NodeState {
            id: "t-swarm-manager-0".into(),
            hostname: "swarm-manager-0".into(),
            role: Role::Manager,
            address: "172.28.0.10".parse().unwrap(),
            docker_port: DOCKER_TLS_PORT,
            published: [(DOCKER_TLS_PORT, 49153)].into(),
        };
        let config = EngineConfig {
            authority: &authority,
            registries: vec!["172.28.0.10:5000".into()],
            vip: None,
        };
        let files = tls_files(&node, &config).unwrap();
        let pem = files
            .iter()
            .find(|f| f.path == format!("{TLS_DIR}/cert.pem"))
            .unwrap();
        let der = CertificateDer::from_pem_slice(&pem.contents).unwrap();
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        for name in ["127.0.0.1", "localhost", "172.28.0.10", "swarm-manager-0"] {
            let name = ServerName::try_from(name).unwrap();
            assert!(
                cert.verify_is_valid_for_subject_name(&name).is_ok(),
                "{name:?}"
            );
        }
        let other = ServerName::try_from("172.28.0.11").unwrap();
        assert!(cert.verify_is_valid_for_subject_name(&other).is_err());
    }

    #[test]
    fn docker_versions_are_judged_by_major_and_minor() {
        assert!(docker_version_ok("20.10.24+dfsg1"));
        assert!(docker_version_ok("19.03.0"));
        assert!(docker_version_ok("28.2.2"));
        assert!(!docker_version_ok("18.09.7"));
        assert!(!docker_version_ok("garbage"));
    }

    #[test]
    fn only_daemon_json_keys_that_fight_the_drop_in_are_set_aside() {
        assert_eq!(without_conflicting_keys(r#"{"log-level": "warn"}"#), None);
        assert_eq!(without_conflicting_keys("not json"), None);
        let stripped = without_conflicting_keys(
            r#"{"hosts": ["unix:///var/run/docker.sock"], "log-level": "warn", "tlsverify": false}"#,
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&stripped).unwrap();
        assert_eq!(value, serde_json::json!({"log-level": "warn"}));
    }

    #[test]
    fn the_drop_in_replaces_exec_start_and_listens_on_the_lab_address() {
        let text = drop_in("/usr/sbin/dockerd", true, "10.1.0.5".parse().unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "[Service]");
        assert_eq!(lines[2], "ExecStart=");
        assert!(lines[3].starts_with("ExecStart=/usr/sbin/dockerd -H fd:// --containerd="));
        assert!(lines[3].contains("-H tcp://10.1.0.5:2376 --tlsverify"));
    }

    #[test]
    fn os_release_fields_lose_their_quotes() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            os_release_field(text, "PRETTY_NAME").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release_field(text, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release_field(text, "ID_LIKE"), None);
    }
}
