//! Services on the Swarm: the blog's `docker service create`, with the
//! image from the lab registry and the publishing mode the kernel allows.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, Limit, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListTasksOptions, UpdateServiceOptions};
use bollard::Docker;
use serde::Serialize;

use crate::docker::{has_status, GONE, LABEL_LAB};
use crate::error::{Context, Error, Result};
use crate::lab::state::{LabState, Routing};

const SECOND: i64 = 1_000_000_000;

/// One service to run, resolved from the lab definition.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    pub image: String,
    pub replicas: u64,
    pub ports: Vec<u16>,
    pub env: Vec<String>,
    pub network: String,
    pub pace: Pace,
    /// The most CPU a task may use, in cores.
    pub cpus: Option<f64>,
}

pub async fn create(
    docker: &Docker,
    lab: &str,
    deployment: &Deployment,
    routing: Routing,
) -> Result<()> {
    docker
        .create_service(spec(lab, deployment, routing), None)
        .await
        .with_context(|| format!("creating service {}", deployment.name))?;
    Ok(())
}

/// How fast the machines run a task's health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Containers and VMs with hardware virtualisation.
    Native,
    /// VMs under software emulation (QEMU's TCG). Each health check is a
    /// process started in the container (`runc exec`), which cost a VM here
    /// seconds of emulated CPU: with checks every second, Swarm killed
    /// healthy tasks for timing out, and with patient ones a task waited
    /// 30-70 s in "Starting" for its first check while the checks kept
    /// three idle VMs busy. So emulated labs run no container health check:
    /// a task is ready when its process runs (the accountservice listens
    /// within a second of starting).
    Emulated,
}

impl Pace {
    pub fn of(lab: &LabState) -> Pace {
        match &lab.vm {
            Some(vm) if vm.accel == "tcg" => Pace::Emulated,
            _ => Pace::Native,
        }
    }

    /// How long to wait for what takes `native` on native machines: on
    /// emulated VMs a task took 129 s from `service create` to its first
    /// answer in the probe (`docker-on-this-machine.md`), so three times
    /// longer.
    pub fn patience(self, native: std::time::Duration) -> std::time::Duration {
        match self {
            Pace::Native => native,
            Pace::Emulated => native * 3,
        }
    }

    /// How long to wait for replicas whose images are pulled: on emulated
    /// VMs each layer is gunzipped under TCG, so six times longer (a clean-
    /// clone CI run saw a VM lab's two replicas at 0/2 after three times).
    pub fn patience_for_pulls(self, native: std::time::Duration) -> std::time::Duration {
        match self {
            Pace::Native => native,
            Pace::Emulated => native * 6,
        }
    }
}

/// The container health check a lab's service tasks run, which is also
/// Swarm's readiness gate: a task with a check joins the service's DNS and
/// load balancing only once it is healthy (moby's executor activates the
/// service binding on `health_status: healthy`), and the engine (20.10 here,
/// no `start_interval` before API 1.44) runs the first check one interval
/// after the start. Hence the choices:
/// - mesh routing: IPVS sends connections to any bound task and never
///   retries, so a task must prove it serves before it gets traffic: the
///   image's check every second, so a new task serves within a second or two.
/// - edge routing: HAProxy checks every task itself and sends a refused or
///   empty request again to another task (src/steps/edge.rs), so the
///   container check gates nothing. Every check is a process started in the
///   container: at one a second, an idle default lab took 20 % of a core
///   with them and 4 % without (CPU time of every process of its nodes over
///   60 s, as bench/lab.sh's idle figure counts it). A task is ready when
///   its process runs; the accountservice listens within milliseconds, and
///   the proxy's retries cover the gap.
/// - emulated VMs: each check cost seconds of emulated CPU; Swarm killed
///   healthy tasks for timing out. No check either.
pub fn health_check(pace: Pace, routing: Routing) -> HealthConfig {
    match (pace, routing) {
        (Pace::Native, Routing::Mesh) => HealthConfig {
            interval: Some(SECOND),
            timeout: Some(2 * SECOND),
            retries: Some(3),
            ..Default::default()
        },
        (Pace::Emulated, _) | (_, Routing::Edge) => HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        },
    }
}

/// A running service's spec as the engine holds it, to change and send back.
pub struct Running {
    pub spec: ServiceSpec,
    version: u64,
}

/// Reads service `name` from the manager; an unknown name is the user's
/// mistake, told with the services the lab does have.
pub async fn running(docker: &Docker, lab: &LabState, name: &str) -> Result<Running> {
    // A Swarm that has just lost its leader (the first manager killed)
    // answers reads with DeadlineExceeded until it elects another: 10 to 20
    // s here (`kill`, then `deploy` at once, on a 3-manager lab).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    let service = loop {
        match docker.inspect_service(name, None).await {
            Ok(service) => break service,
            Err(err) if has_status(&err, GONE) => return Err(no_such_service(lab, name)),
            Err(err)
                if crate::steps::wait::manager_too_busy(&err)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("reading service {name}")),
        }
    };
    let mut spec = service.spec.unwrap_or_default();
    // bollard's model names the field `HealthCheck` where the engine sends
    // `Healthcheck`, so the override `create` set is lost on the way in.
    // Sent back without it, Swarm would see a new task template and roll
    // every task instead of only adding or removing some.
    if let Some(container) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        if container.health_check.is_none() && lab.services.iter().any(|s| s.name == name) {
            container.health_check = Some(health_check(Pace::of(lab), lab.routing));
        }
    }
    Ok(Running {
        spec,
        version: service.version.and_then(|v| v.index).unwrap_or_default(),
    })
}

pub fn no_such_service(lab: &LabState, name: &str) -> Error {
    let names: Vec<&str> = lab.services.iter().map(|s| s.name.as_str()).collect();
    Error::usage(format!(
        "no service '{name}' in lab '{}' (it has: {})",
        lab.name,
        names.join(", ")
    ))
}

impl Running {
    /// The image reference the tasks run, without a digest Swarm may have pinned.
    pub fn image(&self) -> Option<&str> {
        crate::steps::images::template_image(self.spec.task_template.as_ref())
    }

    pub fn set_image(&mut self, image: &str) {
        let container = self
            .spec
            .task_template
            .get_or_insert_with(Default::default)
            .container_spec
            .get_or_insert_with(Default::default);
        container.image = Some(image.to_string());
    }

    /// None for a global service, which runs one task per node.
    pub fn replicas(&self) -> Option<u64> {
        let replicas = self.spec.mode.as_ref()?.replicated.as_ref()?.replicas?;
        Some(replicas.max(0) as u64)
    }

    pub fn set_replicas(&mut self, replicas: u64) -> Result<()> {
        if self.replicas().is_none() {
            return Err(Error::usage(format!(
                "service '{}' is global: it runs one task per node and cannot be scaled",
                self.spec.name.as_deref().unwrap_or("?")
            )));
        }
        self.spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas as i64),
            }),
            ..Default::default()
        });
        Ok(())
    }

    /// Sends the changed spec; Swarm refuses it if someone else changed the
    /// service since it was read.
    pub async fn update(self, docker: &Docker, what: &str) -> Result<()> {
        let name = self.spec.name.clone().unwrap_or_default();
        docker
            .update_service(
                &name,
                self.spec,
                UpdateServiceOptions {
                    version: self.version as i32,
                    ..Default::default()
                },
                None,
            )
            .await
            .with_context(|| format!("{what} {name}"))?;
        Ok(())
    }
}

/// Where one running task of a service runs.
#[derive(Debug, Serialize)]
pub struct Placement {
    pub task: String,
    pub node: String,
}

/// Which node runs each running task of `service`, by task slot.
pub async fn placement(docker: &Docker, service: &str) -> Result<Vec<Placement>> {
    let hostname = crate::steps::swarm::node_hostnames(docker).await?;
    let filters = HashMap::from([
        ("service".to_string(), vec![service.to_string()]),
        ("desired-state".to_string(), vec!["running".to_string()]),
    ]);
    let mut tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .context("listing tasks")?;
    tasks.retain(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING));
    tasks.sort_by_key(|t| t.slot.unwrap_or_default());
    Ok(tasks
        .into_iter()
        .map(|t| Placement {
            task: format!("{service}.{}", t.slot.unwrap_or_default()),
            node: t
                .node_id
                .and_then(|id| hostname.get(&id).cloned())
                .unwrap_or_else(|| "?".into()),
        })
        .collect())
}

/// Prints a placement as `docker service ps` would line it up.
pub fn print_placement(placement: &[Placement]) {
    for p in placement {
        println!("{:<24} {}", p.task, p.node);
    }
}

fn spec(lab: &str, d: &Deployment, routing: Routing) -> ServiceSpec {
    let endpoint_spec = match routing {
        // The ingress mesh publishes on every node and balances by VIP.
        Routing::Mesh => EndpointSpec {
            mode: Some(EndpointSpecModeEnum::VIP),
            ports: Some(
                d.ports
                    .iter()
                    .map(|&port| EndpointPortConfig {
                        target_port: Some(port.into()),
                        published_port: Some(port.into()),
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::INGRESS),
                        ..Default::default()
                    })
                    .collect(),
            ),
        },
        // Without IPVS a VIP never answers; the edge proxy finds the tasks
        // through DNS (`tasks.NAME`) and publishes the port itself.
        Routing::Edge => EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: None,
        },
    };
    ServiceSpec {
        name: Some(d.name.clone()),
        labels: Some(HashMap::from([(LABEL_LAB.to_string(), lab.to_string())])),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(d.replicas as i64),
            }),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(d.image.clone()),
                env: Some(d.env.clone()),
                health_check: Some(health_check(d.pace, routing)),
                stop_grace_period: Some(10 * SECOND),
                ..Default::default()
            }),
            resources: d.cpus.map(|cpus| TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: Some((cpus * 1e9).round() as i64),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(SECOND),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(d.network.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        // Rolling updates start the new task before stopping the old one,
        // so a client hammering $ManagerIP sees no failed request. Two at a
        // time: one by one took 12 s to roll 3 replicas, two by two 9.8 s
        // (bench/redeploy.sh), and start-first never lowers capacity.
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(2),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(2 * SECOND),
            ..Default::default()
        }),
        endpoint_spec: Some(endpoint_spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Deployment {
        Deployment {
            name: "accountservice".into(),
            image: "goblog-registry:5000/accountservice:abc".into(),
            replicas: 3,
            ports: vec![6767],
            env: vec![],
            network: "my_network".into(),
            pace: Pace::Native,
            cpus: None,
        }
    }

    #[test]
    fn a_cpu_limit_becomes_the_tasks_nano_cpus_and_none_leaves_no_resources() {
        let limited = spec(
            "goblog",
            &Deployment {
                cpus: Some(0.25),
                ..deployment()
            },
            Routing::Edge,
        );
        let limits = limited
            .task_template
            .unwrap()
            .resources
            .unwrap()
            .limits
            .unwrap();
        assert_eq!(limits.nano_cpus, Some(250_000_000));
        let free = spec("goblog", &deployment(), Routing::Edge);
        assert!(free.task_template.unwrap().resources.is_none());
    }

    #[test]
    fn edge_routing_uses_dnsrr_and_publishes_nothing() {
        let spec = spec("goblog", &deployment(), Routing::Edge);
        let endpoint = spec.endpoint_spec.unwrap();
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        assert!(endpoint.ports.is_none());
    }

    fn checks(pace: Pace, routing: Routing) -> Option<Vec<String>> {
        let spec = spec(
            "goblog",
            &Deployment {
                pace,
                ..deployment()
            },
            routing,
        );
        spec.task_template?.container_spec?.health_check?.test
    }

    #[test]
    fn only_native_mesh_tasks_run_a_container_check() {
        let none = Some(vec!["NONE".to_string()]);
        // No test: the image's own HEALTHCHECK command, at our interval.
        assert_eq!(checks(Pace::Native, Routing::Mesh), None);
        assert_eq!(
            health_check(Pace::Native, Routing::Mesh).interval,
            Some(SECOND)
        );
        assert_eq!(checks(Pace::Native, Routing::Edge), none);
        assert_eq!(checks(Pace::Emulated, Routing::Mesh), none);
        assert_eq!(checks(Pace::Emulated, Routing::Edge), none);
    }

    #[test]
    fn mesh_routing_publishes_through_ingress() {
        let spec = spec("goblog", &deployment(), Routing::Mesh);
        let ports = spec.endpoint_spec.unwrap().ports.unwrap();
        assert_eq!(ports[0].published_port, Some(6767));
        assert_eq!(
            ports[0].publish_mode,
            Some(EndpointPortConfigPublishModeEnum::INGRESS)
        );
    }
}
