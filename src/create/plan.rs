//! The pure part of a create: which machines a spec asks for, and which of
//! the first manager's ports the lab needs. Decided from the spec alone,
//! before anything is made, so each rule is a unit test.

use crate::lab::spec::{LabSpec, ServiceSpec};
use crate::lab::state::{RegistryState, Role};
use crate::provider::{MachinePlan, Reached};
use crate::provision::ManagerPort;
use crate::steps::edge;

/// Nodes are named as in the blog: swarm-manager-0, swarm-worker-0, ...
/// (a provider that adopts hosts keeps the hosts' own names). This host
/// calls the first manager on the services' ports (`$ManagerIP:6767`), on
/// the registry's, where it pushes, and on the edge proxy's stats port.
pub fn machine_plans(spec: &LabSpec) -> Vec<MachinePlan> {
    let on_leader: Vec<Reached> = spec
        .services
        .iter()
        .flat_map(|s| &s.ports)
        .map(|&port| Reached {
            port,
            same_number: true,
        })
        .chain([
            Reached {
                port: RegistryState::PORT,
                same_number: false,
            },
            // The edge proxy's stats, which `viz` reads for per-task rates.
            Reached {
                port: edge::STATS_PORT,
                same_number: false,
            },
        ])
        .collect();
    (0..spec.managers)
        .map(|i| (Role::Manager, i))
        .chain((0..spec.workers).map(|i| (Role::Worker, i)))
        .enumerate()
        .map(|(n, (role, index))| MachinePlan {
            hostname: format!("swarm-{}-{index}", role.as_str()),
            role,
            reached: if n == 0 {
                on_leader.clone()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// Whether `$ManagerIP` is a virtual address that moves between the
/// managers (`steps::vip`): only a Swarm that keeps its quorum when it
/// loses a manager has somewhere to move it, and Raft needs 3 for that.
pub fn moves_manager_ip(spec: &LabSpec) -> bool {
    spec.managers >= 3
}

/// The ports the services publish on `$ManagerIP`, each once.
pub fn published_ports(spec: &LabSpec) -> Vec<u16> {
    let mut ports: Vec<u16> = spec
        .services
        .iter()
        .flat_map(|s| s.ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The ports the lab listens on at its first manager: the registry's, and
/// those the services publish (the tutorial's `$ManagerIP:6767`) unless
/// nothing is deployed. An adopted host where one is taken is refused.
pub fn manager_ports(spec: &LabSpec, no_deploy: bool) -> Vec<ManagerPort> {
    let registry = ManagerPort {
        port: RegistryState::PORT,
        purpose: "the lab registry".into(),
    };
    if no_deploy {
        return vec![registry];
    }
    let published = spec.services.iter().flat_map(|service| {
        service.ports.iter().map(|&port| ManagerPort {
            port,
            purpose: format!("the {} service it publishes", service.name),
        })
    });
    std::iter::once(registry).chain(published).collect()
}

/// The services to deploy: the spec's, less those skipped.
pub fn deployed<'a>(spec: &'a LabSpec, skipped: &[String]) -> Vec<&'a ServiceSpec> {
    spec.services
        .iter()
        .filter(|s| !skipped.contains(&s.name))
        .collect()
}

/// How many replicas a service gets: its own count, else one per node.
pub fn replicas(service: &ServiceSpec, nodes: usize) -> u64 {
    service.replicas.map_or(nodes as u64, u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spec::DEFAULT_SPEC;

    fn spec(managers: u32, workers: u32) -> LabSpec {
        let mut spec = LabSpec::parse(DEFAULT_SPEC, "built in").unwrap();
        spec.managers = managers;
        spec.workers = workers;
        spec
    }

    #[test]
    fn machines_are_named_as_in_the_blog_managers_first() {
        let plans = machine_plans(&spec(3, 2));
        let names: Vec<(&str, Role)> = plans
            .iter()
            .map(|p| (p.hostname.as_str(), p.role))
            .collect();
        assert_eq!(
            names,
            [
                ("swarm-manager-0", Role::Manager),
                ("swarm-manager-1", Role::Manager),
                ("swarm-manager-2", Role::Manager),
                ("swarm-worker-0", Role::Worker),
                ("swarm-worker-1", Role::Worker),
            ]
        );
        assert_eq!(machine_plans(&spec(1, 0)).len(), 1);
    }

    #[test]
    fn only_the_first_manager_is_reached_on_the_services_registry_and_stats() {
        let plans = machine_plans(&spec(2, 1));
        let ports: Vec<(u16, bool)> = plans[0]
            .reached
            .iter()
            .map(|r| (r.port, r.same_number))
            .collect();
        // The built-in lab publishes 6767 (accountservice); the tutorial's
        // `curl $ManagerIP:6767` wants that number kept.
        assert!(ports.contains(&(6767, true)), "{ports:?}");
        assert!(ports.contains(&(RegistryState::PORT, false)), "{ports:?}");
        assert!(ports.contains(&(edge::STATS_PORT, false)), "{ports:?}");
        assert!(plans[1..].iter().all(|p| p.reached.is_empty()));
    }

    #[test]
    fn the_manager_needs_the_registry_port_and_the_published_ones_when_deploying() {
        let spec = spec(1, 2);
        let deploying: Vec<u16> = manager_ports(&spec, false).iter().map(|p| p.port).collect();
        assert_eq!(deploying[0], RegistryState::PORT);
        assert!(deploying.contains(&6767), "{deploying:?}");
        let bare: Vec<u16> = manager_ports(&spec, true).iter().map(|p| p.port).collect();
        assert_eq!(bare, [RegistryState::PORT]);
        assert!(manager_ports(&spec, false)
            .iter()
            .any(|p| p.purpose == "the accountservice service it publishes"));
    }

    #[test]
    fn skipped_services_are_not_deployed_and_replicas_default_to_one_per_node() {
        let spec = spec(1, 2);
        let all: Vec<&str> = deployed(&spec, &[])
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert!(all.contains(&"accountservice"), "{all:?}");
        let skipped = vec!["accountservice".to_string()];
        assert!(deployed(&spec, &skipped)
            .iter()
            .all(|s| s.name != "accountservice"));
        let mut service = spec.services[0].clone();
        service.replicas = None;
        assert_eq!(replicas(&service, 3), 3);
        service.replicas = Some(1);
        assert_eq!(replicas(&service, 3), 1);
    }
}
