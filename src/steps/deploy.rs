//! Services on the Swarm: the blog's `docker service create`, with the
//! image from the lab registry and the publishing mode the kernel allows.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::Docker;

use crate::docker::LABEL_LAB;
use crate::error::{Context, Result};
use crate::lab::state::Routing;

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

/// The image's HEALTHCHECK command, checked every second rather than every
/// three, so a new task serves sooner.
pub fn health_check() -> HealthConfig {
    HealthConfig {
        interval: Some(SECOND),
        timeout: Some(2 * SECOND),
        retries: Some(3),
        ..Default::default()
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
                health_check: Some(health_check()),
                stop_grace_period: Some(10 * SECOND),
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
        // so a client hammering $ManagerIP sees no failed request.
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
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
        }
    }

    #[test]
    fn edge_routing_uses_dnsrr_and_publishes_nothing() {
        let spec = spec("goblog", &deployment(), Routing::Edge);
        let endpoint = spec.endpoint_spec.unwrap();
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        assert!(endpoint.ports.is_none());
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
