//! The edge proxy: how `$ManagerIP:6767` reaches every replica on a kernel
//! without IPVS.
//!
//! Swarm's routing mesh and VIPs are IPVS. Where the kernel lacks it, the
//! lab runs its services in dnsrr mode and puts HAProxy on every manager,
//! published in host mode. HAProxy asks Docker's embedded DNS for
//! `tasks.SERVICE` four times a second (every second on emulated VMs) and
//! health-checks each task, so replicas that come, go or roll over are
//! followed without a reload.

use std::collections::HashMap;
use std::fmt::Write;

use base64::Engine;
use bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec,
    EndpointSpecModeEnum, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1,
    TaskSpecPlacement,
};
use bollard::Docker;
use sha2::{Digest, Sha256};

use crate::docker::LABEL_LAB;
use crate::error::{Context, Result};
use crate::steps::deploy::Pace;

pub const SERVICE_NAME: &str = "edge";
/// Room for scaling: HAProxy keeps this many server slots per service.
const MAX_TASKS: u32 = 64;
/// Where the proxy serves its statistics (`/stats;csv`): every server slot's
/// address and counters, which `viz` turns into per-task request rates.
pub const STATS_PORT: u16 = 8404;
pub const STATS_PATH: &str = "/stats;csv";

/// A published service behind the edge.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: String,
    pub port: u16,
    pub health_path: Option<String>,
}

/// How the proxy reacts to a task that stops answering, by how fast the
/// machines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failover {
    /// How long the proxy waits for a task to accept a connection.
    connect_ms: u64,
    /// A new connection to the task for every request.
    connection_per_request: bool,
    /// What one failed connection does to the task (`observe layer4`).
    on_error: &'static str,
    /// How often the proxy asks Docker's DNS for the tasks.
    resolve_ms: u64,
}

impl Failover {
    fn of(pace: Pace) -> Failover {
        match pace {
            // A live task on the overlay accepts within a millisecond (the
            // kernel answers the SYN however busy the service is); a task on
            // a killed node never does. So the first connect that times out
            // takes the task out, and every request sent its way in those
            // 250 ms goes to another task. Before a request is sent over an
            // idle connection to a killed node, where it would wait for
            // `timeout server`: a connection per request. `bench/failover.sh`
            // (200 req/s, a worker killed; docs/load-test.md, "Failover under load"): 35
            // failed requests a run with 2 s, kept-alive connections and
            // `on-error fastinter`, 0 with these.
            Pace::Native => Failover {
                connect_ms: 250,
                connection_per_request: true,
                on_error: "mark-down",
                // A new task waits for the next question before it gets
                // traffic: `create`'s first answer waited up to a second for
                // it at 1 s. An idle lab (`bench/lab.sh --idle`, 3 samples
                // each) took 3.2 % of a core at 250 ms, 3.9 % at 500 ms and
                // 2.6 % at 1 s: within what the same run varies by on this
                // shared machine.
                resolve_ms: 250,
            },
            // Under TCG a busy VM can take a second to answer a SYN, and a
            // short timeout would take healthy tasks out: the 2 s of before
            // the tuning, kept-alive connections (each new one costs emulated
            // CPU), and a failed connection only hastens the task's checks.
            Pace::Emulated => Failover {
                connect_ms: 2000,
                connection_per_request: false,
                on_error: "fastinter",
                // Every question costs emulated CPU.
                resolve_ms: 1000,
            },
        }
    }
}

/// The HAProxy configuration for `routes`.
pub fn haproxy_config(routes: &[Route], pace: Pace) -> String {
    let failover = Failover::of(pace);
    let mut cfg = format!(
        "# Written by goblog-lab: the lab's edge proxy (see src/steps/edge.rs).
global
    # Inside a node the FD limit is the nested one (no CAP_SYS_RESOURCE to raise
    # it); 4096 connections need ~8200 descriptors.
    maxconn 4096

defaults
    mode http
    timeout connect {connect_ms}ms
    timeout check {check_ms}ms
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
",
        connect_ms = failover.connect_ms,
        check_ms = failover.connect_ms * 4,
    );
    if failover.connection_per_request {
        cfg.push_str(
            "    # A connection per request to the task, so no request is sent over an
    # idle connection to a task whose node just died (src/steps/edge.rs).
    option http-server-close
",
        );
    }
    cfg.push_str(
        "    # Every retry goes to another task at once (a retry to the same task
    # waits a second first). A task that is stopping may close a connection
    # the proxy just picked; GETs are safe to send again.
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response response-timeout
",
    );
    let _ = write!(
        cfg,
        "
# Docker's embedded DNS, asked again every {resolve_ms} ms (after a valid
# answer `hold valid`, after any other `timeout resolve`), so new tasks get
# traffic that soon after their name exists, and stopped ones lose it
# within a second or two.
resolvers docker
    nameserver dns 127.0.0.11:53
    resolve_retries 3
    timeout resolve {resolve_ms}ms
    timeout retry 1s
    hold other 1s
    hold refused 1s
    hold nx 1s
    hold timeout 1s
    hold valid {resolve_ms}ms
    hold obsolete 1s
    accepted_payload_size 8192
",
        resolve_ms = failover.resolve_ms,
    );
    for route in routes {
        let name = format!("{}_{}", route.service, route.port);
        let _ = write!(
            cfg,
            "
frontend {name}
    bind :{port}
    default_backend {name}

backend {name}
    balance roundrobin
",
            port = route.port
        );
        if let Some(path) = &route.health_path {
            // A task that is up but says it is degraded (`X-Degraded`, as
            // the accountservice does while its quote breaker is open)
            // leaves that text as the check's `last_chk`, which viz shows.
            let _ = writeln!(
                cfg,
                "    option httpchk GET {path}\n    http-check expect status 200 on-success \"%[res.hdr(x-degraded)]\""
            );
        }
        // A healthy task is checked every 5 s, one that just failed a check
        // every 500 ms and a down one every second, so an idle lab is not
        // kept busy by its own proxy. A connection a task does not accept
        // acts at once (observe layer4: `Failover::on_error`), and the
        // request goes to another task (retry-on); a healthy task's HTTP
        // errors do not count, only its connections. One good check (a
        // second later) brings a task back.
        let _ = writeln!(
            cfg,
            "    default-server inter 5s fastinter 500ms downinter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error {on_error} check resolvers docker init-addr none resolve-prefer ipv4
    server-template task 1-{MAX_TASKS} tasks.{service}:{port}",
            on_error = failover.on_error,
            service = route.service,
            port = route.port
        );
    }
    cfg.push_str(&stats_section());
    cfg
}

/// The statistics listener, read-only (no admin actions), on the node's own
/// interfaces: published in host mode like the routes, so it answers on the
/// manager's lab address.
fn stats_section() -> String {
    format!(
        "
frontend stats
    bind :{STATS_PORT}
    stats enable
    stats uri /stats
    # Without it the CSV leaves out each server's address, which is how
    # a slot is matched to its task.
    stats show-legends
    no log
"
    )
}

/// Creates the config and the edge service: one task on every manager.
pub async fn deploy(
    docker: &Docker,
    lab: &str,
    image: &str,
    network: &str,
    routes: &[Route],
    pace: Pace,
) -> Result<()> {
    let cfg = haproxy_config(routes, pace);
    // Swarm configs are immutable: a different config gets a different name.
    let config_name = format!("edge-haproxy-{}", &hex::encode(Sha256::digest(&cfg))[..12]);
    let labels = HashMap::from([(LABEL_LAB.to_string(), lab.to_string())]);
    let config = docker
        .create_config(ConfigSpec {
            name: Some(config_name.clone()),
            labels: Some(labels.clone()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(&cfg)),
            ..Default::default()
        })
        .await
        .context("creating the edge proxy's config")?;
    let spec = ServiceSpec {
        name: Some(SERVICE_NAME.to_string()),
        labels: Some(labels),
        // A task on every manager, so whichever holds `$ManagerIP` (the
        // first, or the virtual address's holder, `steps::vip`) routes it,
        // and a manager that comes back gets its task back.
        mode: Some(ServiceSpecMode {
            global: Some(Default::default()),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_string()),
                configs: Some(vec![TaskSpecContainerSpecConfigs {
                    file: Some(TaskSpecContainerSpecFile1 {
                        name: Some("/usr/local/etc/haproxy/haproxy.cfg".into()),
                        uid: Some("0".into()),
                        gid: Some("0".into()),
                        mode: Some(0o444),
                    }),
                    config_id: Some(config.id),
                    config_name: Some(config_name),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(vec!["node.role == manager".into()]),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(
                routes
                    .iter()
                    .map(|r| r.port)
                    .chain([STATS_PORT])
                    .map(|port| EndpointPortConfig {
                        target_port: Some(port.into()),
                        published_port: Some(port.into()),
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }),
        ..Default::default()
    };
    docker
        .create_service(spec, None)
        .await
        .context("creating the edge proxy service")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_a_backend_per_route() {
        let cfg = haproxy_config(
            &[
                Route {
                    service: "accountservice".into(),
                    port: 6767,
                    health_path: Some("/health".into()),
                },
                Route {
                    service: "other".into(),
                    port: 8080,
                    health_path: None,
                },
            ],
            Pace::Native,
        );
        assert!(cfg.contains("bind :6767"));
        assert!(cfg.contains("server-template task 1-64 tasks.accountservice:6767"));
        assert!(cfg.contains("option httpchk GET /health"));
        assert!(cfg.contains("tasks.other:8080"));
        assert_eq!(cfg.matches("option httpchk").count(), 1);
        assert!(cfg.contains("nameserver dns 127.0.0.11:53"));
    }

    #[test]
    fn native_labs_fail_over_fast_and_emulated_ones_patiently() {
        let route = [Route {
            service: "accountservice".into(),
            port: 6767,
            health_path: Some("/health".into()),
        }];
        let native = haproxy_config(&route, Pace::Native);
        assert!(native.contains("timeout connect 250ms\n"), "{native}");
        assert!(native.contains("option http-server-close\n"), "{native}");
        assert!(native.contains("on-error mark-down "), "{native}");
        assert!(native.contains("timeout resolve 250ms\n"), "{native}");
        assert!(native.contains("hold valid 250ms\n"), "{native}");
        let emulated = haproxy_config(&route, Pace::Emulated);
        assert!(emulated.contains("timeout connect 2000ms\n"), "{emulated}");
        assert!(!emulated.contains("http-server-close"), "{emulated}");
        assert!(emulated.contains("on-error fastinter "), "{emulated}");
        assert!(emulated.contains("hold valid 1000ms\n"), "{emulated}");
        for cfg in [native, emulated] {
            assert!(cfg.contains("option redispatch 1\n"), "{cfg}");
        }
    }

    #[test]
    fn config_serves_read_only_stats_on_their_own_port() {
        let cfg = haproxy_config(&[], Pace::Native);
        let stats = cfg
            .split("\nfrontend stats\n")
            .nth(1)
            .expect("a stats frontend");
        assert!(stats.contains(&format!("bind :{STATS_PORT}\n")));
        assert!(stats.contains("stats uri /stats\n"));
        assert!(stats.contains("stats show-legends\n"));
        assert!(STATS_PATH.starts_with("/stats;"));
        // Read-only: nobody on the lab network can disable a server.
        assert!(!stats.contains("stats admin"));
        assert!(!stats.contains("default_backend"));
    }
}
