//! The lab's host-only network, as VirtualBox's was: a Linux bridge with
//! this host at 192.168.X.1 and one tap device per VM.
//!
//! The first VM lab gets 192.168.99.0/24, the blog's network, so its manager
//! is 192.168.99.100 as in the blog; the next lab takes the next /24 that no
//! interface of this machine uses. Two rules make it work and keep it
//! private (measured, `docker-on-this-machine.md`, "Three VMs forming a
//! Swarm"): Docker sets the FORWARD policy to DROP and bridged frames pass
//! through iptables, so VM-to-VM traffic is accepted explicitly, or `swarm
//! join` times out; and nothing is forwarded between the bridge and any
//! other interface, so the VMs are reachable from this host only. Every
//! device carries the alias `goblog-lab:LAB` and every rule that comment,
//! so a lab's network is found (and removed) without its state file.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use tokio::process::Command;

use super::image::run;
use crate::error::{Error, Result};

/// The third octet of the first lab's network: the blog's 192.168.99.0/24.
pub const FIRST_OCTET: u8 = 99;
/// The manager's host number, as docker-machine's first VirtualBox VM got it.
pub const FIRST_HOST: u8 = 100;

/// One lab's host-only network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOnly {
    pub octet: u8,
}

impl HostOnly {
    pub fn bridge(self) -> String {
        format!("goblog{}", self.octet)
    }

    /// The tap of VM `index` (interface names hold 15 bytes: "goblog254t99").
    pub fn tap(self, index: usize) -> String {
        format!("goblog{}t{index}", self.octet)
    }

    /// The /24: 192.168.OCTET.0/24, VirtualBox's host-only shape.
    pub fn subnet(self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(192, 168, self.octet, 0), 24).expect("24 is a valid prefix")
    }

    /// This host's address on the network, the VMs' gateway.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.octet, 1)
    }

    /// VM `index`'s address: .100, .101, ... in plan order, managers first.
    pub fn address(self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.octet, FIRST_HOST + index as u8)
    }
}

fn alias(lab: &str) -> String {
    format!("goblog-lab:{lab}")
}

#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

/// Every network device of this machine with its alias (`ip -j address`
/// leaves aliases out, so they are read from sysfs).
fn devices() -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            let alias = std::fs::read_to_string(entry.path().join("ifalias")).unwrap_or_default();
            (
                entry.file_name().to_string_lossy().into_owned(),
                alias.trim().to_string(),
            )
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct AddrInfo {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: String,
}

async fn links() -> Result<Vec<Link>> {
    let json = run(
        Command::new("ip").args(["-j", "address", "show"]),
        "ip address show",
    )
    .await?;
    Ok(serde_json::from_str(&json).unwrap_or_default())
}

/// The first /24 from 192.168.99.0 up that no interface of this machine
/// uses and no device is named for.
pub fn first_free(links_in_use: &[(String, Vec<Ipv4Addr>)]) -> Option<HostOnly> {
    (FIRST_OCTET..=254)
        .map(|octet| HostOnly { octet })
        .find(|net| {
            !links_in_use.iter().any(|(name, addresses)| {
                *name == net.bridge() || addresses.iter().any(|a| net.subnet().contains(a))
            })
        })
}

/// Makes the lab's bridge (on the first free /24) and one tap per VM, and
/// the forwarding rules. Callers hold [`lock`] so two labs do not pick the
/// same network.
pub async fn create(lab: &str, taps: usize) -> Result<HostOnly> {
    let in_use: Vec<(String, Vec<Ipv4Addr>)> = links()
        .await?
        .into_iter()
        .map(|link| {
            let addresses = link
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .filter_map(|a| a.local.parse().ok())
                .collect();
            (link.ifname, addresses)
        })
        .collect();
    let net = first_free(&in_use).ok_or(Error::NoFreeVmNetwork)?;
    add_bridge(lab, net).await?;
    for index in 0..taps {
        add_tap(lab, net, index).await?;
    }
    Ok(net)
}

/// Makes the bridge and VM `index`'s tap again if they are gone (this host
/// rebooted since the lab was made). Callers hold [`lock`].
pub async fn ensure(lab: &str, net: HostOnly, index: usize) -> Result<()> {
    let names: Vec<String> = devices().into_iter().map(|(name, _)| name).collect();
    if !names.contains(&net.bridge()) {
        add_bridge(lab, net).await?;
    }
    if !names.contains(&net.tap(index)) {
        add_tap(lab, net, index).await?;
    }
    Ok(())
}

async fn add_bridge(lab: &str, net: HostOnly) -> Result<()> {
    let bridge = net.bridge();
    ip(&["link", "add", &bridge, "type", "bridge"]).await?;
    ip(&["link", "set", &bridge, "alias", &alias(lab)]).await?;
    ip(&[
        "address",
        "add",
        &format!("{}/24", net.gateway()),
        "dev",
        &bridge,
    ])
    .await?;
    ip(&["link", "set", &bridge, "up"]).await?;
    for rule in rules(&bridge, lab) {
        iptables("-I", &rule).await?;
    }
    Ok(())
}

async fn add_tap(lab: &str, net: HostOnly, index: usize) -> Result<()> {
    let tap = net.tap(index);
    ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]).await?;
    ip(&["link", "set", &tap, "alias", &alias(lab)]).await?;
    ip(&["link", "set", &tap, "master", &net.bridge()]).await?;
    ip(&["link", "set", &tap, "up"]).await
}

/// The FORWARD rules of a lab's bridge, in the order they are inserted at
/// the top (so the last is first): VM to VM accepted, anything else in or
/// out of the bridge dropped.
fn rules(bridge: &str, lab: &str) -> Vec<Vec<String>> {
    let comment = alias(lab);
    let rule = |words: &[&str]| -> Vec<String> {
        let mut rule: Vec<String> = vec!["FORWARD".into()];
        rule.extend(words.iter().map(|w| w.to_string()));
        rule.extend(["-m", "comment", "--comment", &comment].map(String::from));
        rule
    };
    vec![
        rule(&["-i", bridge, "-j", "DROP"]),
        rule(&["-o", bridge, "-j", "DROP"]),
        rule(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"]),
    ]
}

/// Lets containers of this machine at `addresses` (a learner's console)
/// reach the lab's VMs through its bridge, and their answers come back;
/// everything else in or out of the bridge stays dropped. The rules carry
/// the lab's comment, so [`remove`] takes them away with the rest.
pub async fn admit(lab: &str, net: HostOnly, addresses: &[Ipv4Addr]) -> Result<()> {
    let bridge = net.bridge();
    for &address in addresses {
        for rule in admit_rules(&bridge, lab, address) {
            iptables("-I", &rule).await?;
        }
    }
    Ok(())
}

fn admit_rules(bridge: &str, lab: &str, address: Ipv4Addr) -> [Vec<String>; 2] {
    let comment = alias(lab);
    let host = format!("{address}/32");
    let rule = |words: &[&str]| -> Vec<String> {
        let mut rule: Vec<String> = vec!["FORWARD".into()];
        rule.extend(words.iter().map(|w| w.to_string()));
        rule.extend(["-m", "comment", "--comment", &comment].map(String::from));
        rule.extend(["-j", "ACCEPT"].map(String::from));
        rule
    };
    [
        rule(&["-s", &host, "-o", bridge]),
        rule(&[
            "-i",
            bridge,
            "-d",
            &host,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
        ]),
    ]
}

/// Every FORWARD rule that carries the lab's comment, as `iptables -D`
/// arguments, from `iptables -S FORWARD`'s lines.
fn commented_rules(listing: &str, lab: &str) -> Vec<Vec<String>> {
    let comment = alias(lab);
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            (words.first().map(String::as_str) == Some("-A") && words.contains(&comment))
                .then(|| words[1..].to_vec())
        })
        .collect()
}

/// Removes the lab's taps, bridge and rules, whichever exist; what it
/// removed, counted as (taps, bridges).
pub async fn remove(lab: &str) -> Result<(usize, usize)> {
    let alias = alias(lab);
    let mut taps = 0;
    let mut bridges = Vec::new();
    for (name, device_alias) in devices() {
        if device_alias != alias {
            continue;
        }
        let is_bridge = std::path::Path::new("/sys/class/net")
            .join(&name)
            .join("bridge")
            .exists();
        if is_bridge {
            bridges.push(name);
        } else {
            ip(&["link", "delete", &name]).await?;
            taps += 1;
        }
    }
    // The bridge's own rules and any console's let in by `admit`.
    let listing = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for rule in commented_rules(&listing, lab) {
        let _ = iptables("-D", &rule).await;
    }
    for bridge in &bridges {
        for rule in rules(bridge, lab) {
            while iptables("-D", &rule).await.is_ok() {}
        }
        ip(&["link", "delete", bridge]).await?;
    }
    Ok((taps, bridges.len()))
}

/// The labs whose devices exist on this machine, by the alias they carry.
pub fn labs_with_devices() -> Vec<String> {
    let mut labs: Vec<String> = devices()
        .into_iter()
        .filter_map(|(_, alias)| alias.strip_prefix("goblog-lab:").map(String::from))
        .collect();
    labs.sort();
    labs.dedup();
    labs
}

/// Serialises the choice of a network between labs made at once.
pub async fn lock() -> Result<std::fs::File> {
    crate::rootfs::build_lock("vm-network.lock").await
}

async fn ip(args: &[&str]) -> Result<()> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
    .await
    .map(drop)
}

async fn iptables(op: &str, rule: &[String]) -> Result<()> {
    let mut command = Command::new("iptables");
    command.arg("-w").arg(op).args(rule);
    run(&mut command, &format!("iptables {op} {}", rule.join(" ")))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labs_commented_rules_are_found_for_deletion_and_no_other_labs() {
        let listing = "-P FORWARD DROP
-A FORWARD -s 172.17.0.2/32 -o goblog99 -m comment --comment \"goblog-lab:qc-1\" -j ACCEPT
-A FORWARD -i goblog99 -o goblog99 -m comment --comment \"goblog-lab:qc-1\" -j ACCEPT
-A FORWARD -i goblog98 -o goblog98 -m comment --comment \"goblog-lab:qc-10\" -j ACCEPT
-A FORWARD -j DOCKER-USER
";
        let found = commented_rules(listing, "qc-1");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0].join(" "),
            "FORWARD -s 172.17.0.2/32 -o goblog99 -m comment --comment goblog-lab:qc-1 -j ACCEPT"
        );
        let admitted = admit_rules("goblog99", "qc-1", Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(admitted[0], found[0], "what admit adds, remove finds");
    }

    #[test]
    fn the_first_lab_gets_the_blogs_network() {
        let net = first_free(&[("eth0".into(), vec![Ipv4Addr::new(10, 0, 0, 2)])]).unwrap();
        assert_eq!(net.octet, 99);
        assert_eq!(net.address(0), Ipv4Addr::new(192, 168, 99, 100));
        assert_eq!(net.address(2), Ipv4Addr::new(192, 168, 99, 102));
        assert_eq!(net.gateway(), Ipv4Addr::new(192, 168, 99, 1));
    }

    #[test]
    fn a_network_in_use_is_skipped() {
        let in_use = [
            ("goblog99".to_string(), vec![]),
            ("wlan0".to_string(), vec![Ipv4Addr::new(192, 168, 100, 7)]),
        ];
        assert_eq!(first_free(&in_use).unwrap().octet, 101);
    }

    #[test]
    fn device_names_fit_the_kernels_limit() {
        let net = HostOnly { octet: 254 };
        assert!(net.tap(99).len() <= 15 && net.bridge().len() <= 15);
    }

    #[test]
    fn the_bridge_is_closed_to_other_interfaces() {
        let rules = rules("goblog99", "default");
        // Inserted at the top in this order: the ACCEPT ends up first.
        assert_eq!(
            rules.last().unwrap()[1..7],
            ["-i", "goblog99", "-o", "goblog99", "-j", "ACCEPT"]
        );
        assert!(rules
            .iter()
            .all(|r| r.ends_with(&["--comment".into(), "goblog-lab:default".into()])));
    }
}
