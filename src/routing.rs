//! How $ManagerIP reaches the services: Swarm's routing mesh where the
//! kernel has IPVS, else the edge proxy (HAProxy over dnsrr services). The
//! probe a node runs and the pure decision live here, so that `doctor`
//! (`preflight`) and `create` (`provision`) judge it the same way.

use crate::error::{Error, Result};
use crate::lab::state::Routing;

/// `--routing`: what the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutingChoice {
    /// The routing mesh where the kernel has IPVS, else the edge proxy.
    Auto,
    /// Swarm's ingress routing mesh (needs IPVS).
    Mesh,
    /// dnsrr services behind HAProxy on the first manager.
    Edge,
}

/// Whether Swarm's routing mesh can work: what a node found when it tried
/// to load IPVS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsProbe {
    /// The kernel had it already.
    Loaded,
    /// `modprobe ip_vs` (and `xt_ipvs`) in a node loaded it.
    LoadedByLab,
    /// No IPVS to be had, and why.
    Missing { why: String },
}

/// The script a node runs: load what can be loaded, then say what there is.
pub const IPVS_PROBE: &str = "if [ -e /proc/net/ip_vs ]; then echo kernel; exit 0; fi
modprobe ip_vs 2>&1 || exit 1
modprobe xt_ipvs 2>&1
[ -e /proc/net/ip_vs ] && echo loaded";

impl IpvsProbe {
    /// Reads what `IPVS_PROBE` printed and how it exited.
    pub fn from_output(status: i64, output: &str) -> Self {
        let last = output.lines().last().unwrap_or("").trim();
        match (status, last) {
            (0, "kernel") => IpvsProbe::Loaded,
            (0, "loaded") => IpvsProbe::LoadedByLab,
            _ => {
                let first = output.lines().map(str::trim).find(|l| !l.is_empty());
                let why = match first {
                    Some(line) if line.contains("modprobe: not found") => {
                        "modprobe ip_vs: modprobe is not in the node image".to_string()
                    }
                    Some(line) => format!(
                        "modprobe ip_vs: {}",
                        line.trim_start_matches("modprobe: ")
                            .trim_start_matches("FATAL: ")
                            .trim_start_matches("ERROR: ")
                    ),
                    None => "modprobe ip_vs loaded nothing".to_string(),
                };
                IpvsProbe::Missing { why }
            }
        }
    }
}

/// Which routing a lab gets, and why, in words for the summary and doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingDecision {
    pub routing: Routing,
    pub why: String,
}

/// "edge: no IPVS (…)": the routing and its reason, as doctor shows them.
impl std::fmt::Display for RoutingDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routing = match self.routing {
            Routing::Mesh => "mesh",
            Routing::Edge => "edge",
        };
        write!(f, "{routing}: {}", self.why)
    }
}

/// Mesh where there is IPVS, else the edge proxy; `--routing` forces one,
/// and a mesh without IPVS is refused (its published ports would answer
/// nothing).
pub fn decide_routing(choice: RoutingChoice, probe: &IpvsProbe) -> Result<RoutingDecision> {
    let mesh = |why: &str| {
        Ok(RoutingDecision {
            routing: Routing::Mesh,
            why: why.to_string(),
        })
    };
    match (choice, probe) {
        (RoutingChoice::Edge, _) => Ok(RoutingDecision {
            routing: Routing::Edge,
            why: "asked for with --routing edge".into(),
        }),
        (_, IpvsProbe::Loaded) => mesh("IPVS is in the kernel"),
        (_, IpvsProbe::LoadedByLab) => mesh("IPVS loaded by goblog-lab (modprobe ip_vs)"),
        (RoutingChoice::Auto, IpvsProbe::Missing { why }) => Ok(RoutingDecision {
            routing: Routing::Edge,
            why: format!("no IPVS ({why})"),
        }),
        (RoutingChoice::Mesh, IpvsProbe::Missing { why }) => {
            Err(Error::NoIpvs { why: why.clone() })
        }
    }
}

/// Where this machine keeps its kernel modules: `/lib/modules`, unless
/// `GOBLOG_LAB_HOST_MODULES` names another place (NixOS keeps them under
/// /run/booted-system/kernel-modules/lib/modules). Whether IPVS can load
/// here is read there, and dind nodes get it mounted to load it themselves.
pub fn host_modules() -> std::path::PathBuf {
    std::env::var_os("GOBLOG_LAB_HOST_MODULES")
        .filter(|v| !v.is_empty())
        .map_or_else(|| "/lib/modules".into(), std::path::PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> IpvsProbe {
        IpvsProbe::Missing {
            why: "modprobe ip_vs: Module ip_vs not found in directory /lib/modules/6.18".into(),
        }
    }

    #[test]
    fn routing_follows_the_probe_for_each_choice() {
        use RoutingChoice::*;
        for probe in [IpvsProbe::Loaded, IpvsProbe::LoadedByLab, missing()] {
            let edge = decide_routing(Edge, &probe).unwrap();
            assert_eq!(edge.routing, Routing::Edge);
            assert!(edge.why.contains("--routing edge"), "{}", edge.why);
        }
        let auto = decide_routing(Auto, &IpvsProbe::Loaded).unwrap();
        assert_eq!(auto.to_string(), "mesh: IPVS is in the kernel");
        let auto = decide_routing(Auto, &IpvsProbe::LoadedByLab).unwrap();
        assert_eq!(auto.routing, Routing::Mesh);
        assert!(auto.why.contains("loaded by goblog-lab"), "{}", auto.why);
        let auto = decide_routing(Auto, &missing()).unwrap();
        assert_eq!(auto.routing, Routing::Edge);
        assert_eq!(
            auto.to_string(),
            "edge: no IPVS (modprobe ip_vs: Module ip_vs not found in directory /lib/modules/6.18)"
        );
        assert_eq!(
            decide_routing(Mesh, &IpvsProbe::Loaded).unwrap().routing,
            Routing::Mesh
        );
        assert_eq!(
            decide_routing(Mesh, &IpvsProbe::LoadedByLab)
                .unwrap()
                .routing,
            Routing::Mesh
        );
        let refused = decide_routing(Mesh, &missing()).unwrap_err().to_string();
        assert!(
            refused.starts_with("--routing mesh needs IPVS"),
            "{refused}"
        );
        assert!(refused.contains("not found in directory"), "{refused}");
    }

    #[test]
    fn the_node_probe_output_is_read() {
        assert_eq!(IpvsProbe::from_output(0, "kernel\n"), IpvsProbe::Loaded);
        assert_eq!(
            IpvsProbe::from_output(0, "loaded\n"),
            IpvsProbe::LoadedByLab
        );
        assert_eq!(
            IpvsProbe::from_output(
                1,
                "modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.18.44\n"
            ),
            IpvsProbe::Missing {
                why: "modprobe ip_vs: Module ip_vs not found in directory /lib/modules/6.18.44"
                    .into()
            }
        );
        assert_eq!(
            IpvsProbe::from_output(127, "sh: 2: modprobe: not found\n"),
            IpvsProbe::Missing {
                why: "modprobe ip_vs: modprobe is not in the node image".into()
            }
        );
        // ip_vs loaded but /proc/net/ip_vs never appeared.
        assert!(matches!(
            IpvsProbe::from_output(1, ""),
            IpvsProbe::Missing { .. }
        ));
    }
}
