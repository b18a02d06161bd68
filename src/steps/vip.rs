//! The lab's virtual `$ManagerIP`: why three managers are worth having.
//!
//! With one address that belongs to the first manager, killing that
//! manager took the whole lab with it even though Raft still had a
//! majority (issue 23). A lab with 3 or more managers therefore gets one
//! more address on the lab network, held by one healthy manager at a time
//! through VRRP, as the Swarms people run in production do it: Debian's
//! keepalived, in a small container on every manager's engine, on the
//! node's own network (`images/vip/Dockerfile`). This step only talks to
//! the managers' engines; the provider chose the address.
//!
//! - Every manager routes the published ports (the edge runs on each,
//!   `steps::edge`), and keepalived checks them: a manager whose ports do
//!   not accept a connection gives the address up (`track_script`, weight
//!   0 puts it in FAULT).
//! - Adverts every 300 ms (VRRPv3 allows fractions), so a dead holder is
//!   noticed after 3 missed adverts plus the skew: about a second.
//! - Unicast between the managers, not multicast: a shared LAN (SSH
//!   hosts) sees nothing, and VM bridges need not forward multicast.
//! - `nopreempt`: a manager that comes back (`goblog-lab start`) does not
//!   take the address back, so healing costs no second outage.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::docker::{tolerate, GONE, LABEL_LAB, LABEL_ROLE};
use crate::error::{Context, Result};
use crate::lab::state::{LabState, Role};
use crate::steps::images::LocalImage;

pub const CONTAINER: &str = "goblog-lab-vip";
/// How often the holder tells the others it is alive. 3 missed adverts and
/// the skew make the failover time: about 1 s at 300 ms.
const ADVERT_MS: u32 = 300;

/// One manager as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub hostname: String,
    pub address: Ipv4Addr,
}

/// The lab's managers, in the order their keepalived configurations and
/// engines are given.
pub fn managers(state: &LabState) -> Vec<Manager> {
    state
        .nodes
        .iter()
        .filter(|n| n.role == Role::Manager)
        .map(|n| Manager {
            hostname: n.hostname.clone(),
            address: n.address,
        })
        .collect()
}

/// What every manager's keepalived is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub lab: &'a str,
    /// Added as a /32: the kernel answers ARP for it on the lab interface
    /// all the same, and the node's own address stays the source of
    /// everything it sends, whatever the network's prefix.
    pub vip: Ipv4Addr,
    pub managers: &'a [Manager],
    /// The published ports a holder must route (empty with `--no-deploy`).
    pub ports: &'a [u16],
}

/// The VRRP router id: one per lab, from its name, so two labs on one LAN
/// never answer each other's adverts (1 to 255).
pub fn router_id(lab: &str) -> u8 {
    let digest = Sha256::digest(lab.as_bytes());
    (digest[0] % 255) + 1
}

/// keepalived's configuration for the `me`th manager. `@INTERFACE@` is
/// left for the container's entrypoint, which finds the interface that
/// holds the manager's address.
pub fn keepalived_config(plan: &Plan<'_>, me: usize) -> String {
    let own = &plan.managers[me];
    // The first manager starts as the holder, as `$ManagerIP` always was;
    // after that, whoever holds it keeps it (`nopreempt`).
    let priority = 200 - 10 * me.min(15) as u32;
    let mut cfg = format!(
        "# Written by goblog-lab: the lab's virtual $ManagerIP (src/steps/vip.rs).
global_defs {{
    router_id {hostname}
    script_user root
    enable_script_security
    vrrp_version 3
    # Real-time scheduling, so a busy node (a class on two cores) does not
    # miss its adverts and hand the address over for nothing.
    max_auto_priority
}}
",
        hostname = own.hostname
    );
    if !plan.ports.is_empty() {
        let _ = write!(
            cfg,
            "
vrrp_script routes {{
    script \"/etc/goblog-lab/routes\"
    interval 1
    timeout 1
    fall 2
    rise 1
}}
"
        );
    }
    let _ = write!(
        cfg,
        "
vrrp_instance lab {{
    state BACKUP
    nopreempt
    interface @INTERFACE@
    virtual_router_id {id}
    priority {priority}
    advert_int {advert}
    unicast_src_ip {address}
    check_unicast_src
    unicast_peer {{
",
        id = router_id(plan.lab),
        advert = f64::from(ADVERT_MS) / 1000.0,
        address = own.address,
    );
    for (i, peer) in plan.managers.iter().enumerate() {
        if i != me {
            let _ = writeln!(cfg, "        {}", peer.address);
        }
    }
    let _ = write!(
        cfg,
        "    }}
    virtual_ipaddress {{
        {vip}/32 dev @INTERFACE@
    }}
",
        vip = plan.vip,
    );
    if !plan.ports.is_empty() {
        cfg.push_str("    track_script {\n        routes\n    }\n");
    }
    cfg.push_str("}\n");
    cfg
}

/// The check keepalived runs each second: every published port accepts a
/// connection on this manager's own address, where the edge (or the
/// routing mesh) listens.
pub fn routes_check(address: Ipv4Addr, ports: &[u16]) -> String {
    let mut script = String::from(
        "#!/bin/bash\n# Written by goblog-lab: does this manager route the lab's published ports?\n",
    );
    for port in ports {
        let _ = writeln!(
            script,
            "exec 3<>/dev/tcp/{address}/{port} || exit 1\nexec 3>&-"
        );
    }
    script
}

/// Starts keepalived on one manager's engine (the image already there),
/// replacing one left from an earlier run of this step.
pub async fn start(engine: &Docker, plan: &Plan<'_>, me: usize, image: &LocalImage) -> Result<()> {
    let own = &plan.managers[me];
    let labels = HashMap::from([
        (LABEL_LAB.to_string(), plan.lab.to_string()),
        (LABEL_ROLE.to_string(), "vip".to_string()),
    ]);
    tolerate(
        engine
            .remove_container(
                CONTAINER,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await,
        GONE,
    )
    .with_context(|| format!("removing the old keepalived on {}", own.hostname))?;
    // On the node's own network: the address goes on its lab interface.
    let body = ContainerCreateBody {
        image: Some(image.reference()),
        labels: Some(labels),
        env: Some(vec![format!("NODE_ADDRESS={}", own.address)]),
        host_config: Some(HostConfig {
            cap_add: Some(vec![
                "NET_ADMIN".into(),
                "NET_RAW".into(),
                "NET_BROADCAST".into(),
                "SYS_NICE".into(),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = keepalived_config(plan, me);
    let check = routes_check(own.address, plan.ports);
    crate::docker::run_on_node(
        engine,
        CONTAINER,
        body,
        &[
            ("etc/goblog-lab/keepalived.conf", config.as_bytes(), 0o644),
            ("etc/goblog-lab/routes", check.as_bytes(), 0o755),
        ],
        &format!("keepalived on {}", own.hostname),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers() -> Vec<Manager> {
        (0..3)
            .map(|i| Manager {
                hostname: format!("swarm-manager-{i}"),
                address: Ipv4Addr::new(172, 28, 3, 10 + i),
            })
            .collect()
    }

    #[test]
    fn each_manager_advertises_to_the_others_only() {
        let managers = managers();
        let plan = Plan {
            lab: "goblog",
            vip: Ipv4Addr::new(172, 28, 3, 254),
            managers: &managers,
            ports: &[6767],
        };
        let cfg = keepalived_config(&plan, 1);
        assert!(cfg.contains("unicast_src_ip 172.28.3.11\n"), "{cfg}");
        assert!(
            cfg.contains("        172.28.3.10\n        172.28.3.12\n"),
            "{cfg}"
        );
        assert!(!cfg.contains("        172.28.3.11\n"), "{cfg}");
        assert!(cfg.contains("172.28.3.254/32 dev @INTERFACE@"), "{cfg}");
        assert!(cfg.contains("advert_int 0.3\n"), "{cfg}");
        assert!(cfg.contains("nopreempt"), "{cfg}");
        assert!(
            cfg.contains("track_script {\n        routes\n    }"),
            "{cfg}"
        );
        assert!(cfg.contains(&format!("virtual_router_id {}\n", router_id("goblog"))));
    }

    #[test]
    fn the_first_manager_starts_as_the_holder() {
        let managers = managers();
        let plan = Plan {
            lab: "goblog",
            vip: Ipv4Addr::new(172, 28, 3, 254),
            managers: &managers,
            ports: &[],
        };
        let priority = |me| {
            let cfg = keepalived_config(&plan, me);
            cfg.lines()
                .find_map(|l| l.trim().strip_prefix("priority "))
                .unwrap()
                .parse::<u32>()
                .unwrap()
        };
        assert!(priority(0) > priority(1) && priority(1) > priority(2));
        // Nothing to route: nothing to check.
        assert!(!keepalived_config(&plan, 0).contains("track_script"));
    }

    #[test]
    fn the_check_tries_every_published_port_on_the_managers_own_address() {
        let check = routes_check(Ipv4Addr::new(172, 28, 3, 11), &[6767, 8080]);
        assert!(check.starts_with("#!/bin/bash\n"));
        assert!(check.contains("/dev/tcp/172.28.3.11/6767 || exit 1"));
        assert!(check.contains("/dev/tcp/172.28.3.11/8080 || exit 1"));
    }

    #[test]
    fn router_ids_are_valid_and_differ_by_lab() {
        for lab in ["goblog", "a", "class-1", "x-very-long-lab-name"] {
            assert!(router_id(lab) >= 1);
        }
        assert_ne!(router_id("goblog"), router_id("goblog2"));
    }
}
