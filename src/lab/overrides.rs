//! What `create`'s command line changes in a lab file, and which flag goes
//! with which driver.
//!
//! The rules are the model's, not the CLI's: they say which fields of a
//! spec a driver reads (hosts for `ssh`, machine names for
//! `docker-machine`, memory for `qemu`) and how a lab's node counts follow
//! from them. Kept pure, so every rule is a unit test.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::spec::{self, LabSpec, MachinesSpec};

/// The overrides given on the command line; `None`/empty leaves the lab
/// file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub driver: Option<ProviderKind>,
    pub workers: Option<u32>,
    pub managers: Option<u32>,
    pub registry_port: Option<u16>,
    /// `--manager USER@HOST[:PORT]`, repeated.
    pub ssh_managers: Vec<String>,
    /// `--worker USER@HOST[:PORT]`, repeated.
    pub ssh_workers: Vec<String>,
    pub ssh_key: Option<PathBuf>,
    /// `--vip ADDR`: the virtual `$ManagerIP` of an ssh lab.
    pub vip: Option<std::net::Ipv4Addr>,
    /// `--machines NAME,...`.
    pub machines: Vec<String>,
    /// `--memory MIB`.
    pub memory: Option<u32>,
    /// `--publish localhost`: publishing nodes' ports is for containers.
    pub publish_localhost: bool,
    /// `--install-docker` or `--accept-new-host-keys`: for adopted hosts.
    pub adopting_flags: bool,
}

/// Applies `flags` to `spec`, refusing a flag the driver does not read and
/// counts that contradict the hosts or machines given.
pub fn apply(spec: &mut LabSpec, flags: &Overrides) -> Result<()> {
    if let Some(workers) = flags.workers {
        spec.workers = workers;
    }
    if let Some(managers) = flags.managers {
        spec.managers = managers;
    }
    if let Some(port) = flags.registry_port {
        spec.registry.port = port;
    }
    if let Some(driver) = flags.driver {
        spec.driver = Some(driver);
    }
    let driver = spec.driver.unwrap_or_default();
    let hosts_given = !flags.ssh_managers.is_empty() || !flags.ssh_workers.is_empty();
    if driver != ProviderKind::Ssh && (hosts_given || flags.ssh_key.is_some()) {
        return Err(Error::usage(
            "--manager, --worker and --ssh-key name SSH hosts: add --driver ssh",
        ));
    }
    if driver != ProviderKind::Ssh && flags.vip.is_some() {
        return Err(Error::usage(
            "--vip names a free address on SSH hosts' network: add --driver ssh (dind and qemu labs with 3 managers pick their own)",
        ));
    }
    if driver != ProviderKind::DockerMachine && !flags.machines.is_empty() {
        return Err(Error::usage(
            "--machines names docker-machine machines: add --driver docker-machine",
        ));
    }
    if driver != ProviderKind::Dind && flags.publish_localhost {
        return Err(Error::usage(
            "--publish localhost is for dind labs, whose nodes are containers: VMs and hosts are reached at their own addresses",
        ));
    }
    if driver != ProviderKind::Qemu && flags.memory.is_some() {
        return Err(Error::usage("--memory sizes VMs: add --driver qemu"));
    }
    let adopts = matches!(driver, ProviderKind::Ssh | ProviderKind::DockerMachine);
    if !adopts && flags.adopting_flags {
        return Err(Error::usage(
            "--install-docker and --accept-new-host-keys are for hosts the lab adopts: add --driver ssh or --driver docker-machine",
        ));
    }
    match driver {
        ProviderKind::Dind => {}
        ProviderKind::Qemu => {
            let vm = spec.vm.get_or_insert_with(Default::default);
            if let Some(memory) = flags.memory {
                vm.memory = memory;
            }
        }
        ProviderKind::Ssh => {
            let ssh = spec.ssh.get_or_insert_with(Default::default);
            if hosts_given {
                ssh.managers = flags.ssh_managers.clone();
                ssh.workers = flags.ssh_workers.clone();
            }
            if let Some(key) = &flags.ssh_key {
                ssh.key = Some(key.clone());
            }
            if let Some(vip) = flags.vip {
                ssh.vip = Some(vip);
            }
            if ssh.vip.is_some() && ssh.managers.len() < 3 {
                return Err(Error::usage(format!(
                    "--vip needs 3 or more --manager hosts ({} given): with fewer, losing one loses the Swarm's quorum and the address has nowhere to go",
                    ssh.managers.len()
                )));
            }

            if ssh.managers.is_empty() {
                return Err(Error::usage(
                    "--driver ssh needs at least one --manager USER@HOST[:PORT] (and a --worker for each worker)",
                ));
            }
            if flags.workers.is_some() || flags.managers.is_some() {
                return Err(Error::usage(
                    "--driver ssh counts the hosts given with --manager and --worker: drop --workers/--managers",
                ));
            }
            spec.managers = ssh.managers.len() as u32;
            spec.workers = ssh.workers.len() as u32;
        }
        ProviderKind::DockerMachine => {
            if !flags.machines.is_empty() {
                spec.docker_machine = Some(MachinesSpec {
                    machines: flags.machines.clone(),
                });
            }
            let machines = spec.docker_machine.as_ref().map_or(0, |m| m.machines.len());
            if machines == 0 {
                return Err(Error::usage(
                    "--driver docker-machine needs --machines NAME,NAME,... (managers first; `docker-machine ls` lists them)",
                ));
            }
            if flags.workers.is_some() {
                return Err(Error::usage(
                    "--driver docker-machine counts the machines given with --machines: drop --workers",
                ));
            }
            let managers = flags.managers.unwrap_or(1);
            if managers as usize > machines {
                return Err(Error::usage(format!(
                    "--managers {managers} is more than the {machines} machines given"
                )));
            }
            spec.managers = managers;
            spec.workers = machines as u32 - managers;
        }
    }
    spec::check_counts(spec.managers, spec.workers)
}

/// The spec of each lab of a class: `driver` applied, and refused in one
/// line when it adopts hosts (a class makes one lab per learner from
/// nothing). Returns the memory one lab's machines take, when the driver
/// gives each machine its own (VMs).
pub fn for_class(spec: &mut LabSpec, driver: Option<ProviderKind>) -> Result<Option<u64>> {
    if let Some(driver) = driver {
        spec.driver = Some(driver);
    }
    let driver = spec.driver.unwrap_or_default();
    if !driver.makes_machines() {
        return Err(Error::usage(format!(
            "--driver {} adopts hosts it is given; a class makes one lab per learner: use --driver dind or --driver qemu",
            driver.as_str()
        )));
    }
    let machines = u64::from(spec.managers + spec.workers);
    let vm_memory = u64::from(spec.vm.clone().unwrap_or_default().memory) << 20;
    Ok((driver == ProviderKind::Qemu).then_some(machines * vm_memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::spec::DEFAULT_SPEC;

    fn default_spec() -> LabSpec {
        LabSpec::parse(DEFAULT_SPEC, "built in").unwrap()
    }

    fn applied(flags: Overrides) -> Result<LabSpec> {
        let mut spec = default_spec();
        apply(&mut spec, &flags).map(|()| spec)
    }

    fn refusal(flags: Overrides) -> String {
        applied(flags).unwrap_err().to_string()
    }

    #[test]
    fn counts_and_the_registry_port_override_the_file() {
        let spec = applied(Overrides {
            workers: Some(5),
            managers: Some(3),
            registry_port: Some(0),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((spec.managers, spec.workers, spec.registry.port), (3, 5, 0));
        assert_eq!(spec.driver, None, "dind by default, unnamed");
        let untouched = applied(Overrides::default()).unwrap();
        assert_eq!(untouched, default_spec());
    }

    #[test]
    fn counts_out_of_range_are_refused() {
        assert!(refusal(Overrides {
            workers: Some(21),
            ..Overrides::default()
        })
        .contains("--workers 21 is out of range"));
    }

    #[test]
    fn a_flag_for_another_driver_names_the_driver_it_needs() {
        let cases = [
            (
                Overrides {
                    ssh_managers: vec!["root@h".into()],
                    ..Overrides::default()
                },
                "add --driver ssh",
            ),
            (
                Overrides {
                    machines: vec!["m1".into()],
                    ..Overrides::default()
                },
                "add --driver docker-machine",
            ),
            (
                Overrides {
                    memory: Some(1024),
                    ..Overrides::default()
                },
                "add --driver qemu",
            ),
            (
                Overrides {
                    adopting_flags: true,
                    driver: Some(ProviderKind::Qemu),
                    ..Overrides::default()
                },
                "for hosts the lab adopts",
            ),
            (
                Overrides {
                    publish_localhost: true,
                    driver: Some(ProviderKind::Ssh),
                    ssh_managers: vec!["root@h".into()],
                    ..Overrides::default()
                },
                "--publish localhost is for dind labs",
            ),
        ];
        for (flags, needle) in cases {
            let err = refusal(flags.clone());
            assert!(err.contains(needle), "{flags:?}: {err}");
        }
    }

    #[test]
    fn vip_is_for_three_or_more_ssh_managers() {
        let vip: std::net::Ipv4Addr = "10.0.0.254".parse().unwrap();
        let hosts = |n: usize| (0..n).map(|i| format!("root@10.0.0.{}", 10 + i)).collect();
        let spec = applied(Overrides {
            driver: Some(ProviderKind::Ssh),
            ssh_managers: hosts(3),
            vip: Some(vip),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(spec.ssh.unwrap().vip, Some(vip));
        assert!(refusal(Overrides {
            driver: Some(ProviderKind::Ssh),
            ssh_managers: hosts(2),
            vip: Some(vip),
            ..Overrides::default()
        })
        .contains("--vip needs 3 or more --manager hosts (2 given)"));
        assert!(refusal(Overrides {
            vip: Some(vip),
            ..Overrides::default()
        })
        .contains("--vip names a free address on SSH hosts' network: add --driver ssh"));
    }

    #[test]
    fn an_ssh_lab_counts_its_hosts() {
        let spec = applied(Overrides {
            driver: Some(ProviderKind::Ssh),
            ssh_managers: vec!["root@a".into()],
            ssh_workers: vec!["root@b".into(), "root@c:2222".into()],
            ssh_key: Some("/k".into()),
            adopting_flags: true,
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((spec.managers, spec.workers), (1, 2));
        let ssh = spec.ssh.unwrap();
        assert_eq!(ssh.workers, ["root@b", "root@c:2222"]);
        assert_eq!(ssh.key, Some(PathBuf::from("/k")));

        assert!(refusal(Overrides {
            driver: Some(ProviderKind::Ssh),
            ..Overrides::default()
        })
        .contains("needs at least one --manager"));
        assert!(refusal(Overrides {
            driver: Some(ProviderKind::Ssh),
            ssh_managers: vec!["root@a".into()],
            workers: Some(2),
            ..Overrides::default()
        })
        .contains("drop --workers/--managers"));
    }

    #[test]
    fn a_docker_machine_lab_counts_its_machines_managers_first() {
        let spec = applied(Overrides {
            driver: Some(ProviderKind::DockerMachine),
            machines: vec!["m1".into(), "m2".into(), "m3".into()],
            managers: Some(2),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((spec.managers, spec.workers), (2, 1));
        assert_eq!(spec.docker_machine.unwrap().machines, ["m1", "m2", "m3"]);

        let none = refusal(Overrides {
            driver: Some(ProviderKind::DockerMachine),
            ..Overrides::default()
        });
        assert!(none.contains("needs --machines"), "{none}");
        let too_many = refusal(Overrides {
            driver: Some(ProviderKind::DockerMachine),
            machines: vec!["m1".into()],
            managers: Some(2),
            ..Overrides::default()
        });
        assert!(
            too_many.contains("--managers 2 is more than the 1 machines"),
            "{too_many}"
        );
    }

    #[test]
    fn a_vm_lab_takes_its_memory() {
        let spec = applied(Overrides {
            driver: Some(ProviderKind::Qemu),
            memory: Some(1024),
            workers: Some(1),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(spec.vm.unwrap().memory, 1024);
        assert_eq!(spec.workers, 1);
    }
}
