//! `goblog-lab create`: from nothing to the accountservice answering on
//! `$ManagerIP:6767`.
//!
//! The order of the steps follows what each needs: images before nodes,
//! engines before the Swarm, the registry (started while the engines boot)
//! before the deploy, and the deploy before the probe. If any step fails or
//! the user presses Ctrl-C, everything labelled with the lab is removed
//! again, unless `--retain` asks to keep it for inspection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::try_join_all;
use serde::Serialize;

use crate::cli::{CreateArgs, Output, RoutingChoice};
use crate::docker::{self, Labelled};
use crate::driver::dind::DindDriver;
use crate::driver::{Driver, LabNetwork, NodeFile, NodePlan};
use crate::error::{Error, Result};
use crate::lab::name;
use crate::lab::spec::{self, LoadedSpec};
use crate::lab::state::{LabDir, LabState, Role, Routing, ServiceState};
use crate::pki::Authority;
use crate::steps::{deploy, edge, engines, images, node_image, registry, swarm, wait};
use crate::ui::{seconds, Ui};

/// What `create` prints when it is done (as text or JSON).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    pub manager_ip: String,
    pub managers: u32,
    pub workers: u32,
    pub registry: String,
    pub routing: Routing,
    pub services: Vec<ServiceSummary>,
    /// Optional services left out, and why.
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub replicas: u64,
    pub url: Option<String>,
    pub served_by: Vec<String>,
}

pub async fn run(args: CreateArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let mut loaded = spec::load(args.file.as_deref())?;
    if let Some(workers) = args.workers {
        loaded.spec.workers = workers;
    }
    if let Some(managers) = args.managers {
        loaded.spec.managers = managers;
    }
    if let Some(port) = args.registry_port {
        loaded.spec.registry.port = port;
    }
    spec::check_counts(loaded.spec.managers, loaded.spec.workers)?;
    registry::check_port_free(loaded.spec.registry.port)?;

    let host = docker::connect_host().await?;
    let dir = LabDir::new(&args.name);
    if dir.exists() || !Labelled::of_lab(&host, &args.name).await?.is_empty() {
        return Err(Error::LabExists(args.name.clone()));
    }

    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = build_lab(&host, &dir, &loaded, &args, ui) => outcome,
        () = interrupted() => Err(Error::Interrupted),
    };
    match outcome {
        Ok(mut summary) => {
            summary.seconds = started.elapsed().as_secs_f64();
            print_summary(&summary, args.output);
            Ok(())
        }
        Err(err) => {
            if args.retain {
                ui.warn(format!(
                    "--retain: keeping the partial lab; `goblog-lab destroy --name {}` removes it",
                    args.name
                ));
            } else {
                roll_back(&host, &dir, ui).await;
            }
            Err(err)
        }
    }
}

async fn build_lab(
    host: &Docker,
    dir: &LabDir,
    loaded: &LoadedSpec,
    args: &CreateArgs,
    ui: &Ui,
) -> Result<Summary> {
    let spec = &loaded.spec;
    let lab = args.name.as_str();

    // 1. The node image: built with debootstrap once, then cached. On that
    //    first run the services compile meanwhile; later runs compile them
    //    while the nodes start.
    let (node_image, prebuilt) = if node_image::is_cached(host).await {
        let step = ui.step("Ensuring the node image 🖼");
        let node_image = node_image::ensure(host).await?;
        step.done_with(format!("{node_image} (cached)"));
        (node_image, None)
    } else {
        let step = ui.step("Building the node image with debootstrap, and the services 🖼 (once; about two minutes)");
        let (node_image, built) = tokio::try_join!(
            node_image::ensure(host),
            build_services(host, loaded, args.no_deploy)
        )?;
        step.done_with(node_image.clone());
        (node_image, Some(built))
    };

    // 2. The nodes start while the registry starts and the images the
    //    nodes will pull (edge proxy, services) are built.
    let step = ui.step(format!(
        "Starting nodes 📦 ({} manager{}, {} worker{}) and the lab registry",
        spec.managers,
        plural(spec.managers),
        spec.workers,
        plural(spec.workers)
    ));
    let driver = DindDriver::new(host.clone(), lab, ui.clone());
    let network = driver.create_network().await?;
    let authority = Authority::create(lab)?;
    authority.save(dir)?;
    let plans = node_plans(
        spec.managers,
        spec.workers,
        &network,
        &authority,
        &registry::container_name(lab),
    )?;
    let (nodes, (registry_state, (images, skipped))) =
        tokio::try_join!(driver.create_nodes(&network, &node_image, &plans), async {
            tokio::try_join!(
                registry::start(host, lab, &network, &node_image, spec.registry.port),
                build_images(host, loaded, &node_image, args.no_deploy, prebuilt, ui),
            )
        })?;
    let mut state = LabState::new(
        lab,
        driver.name(),
        network.state.clone(),
        &spec.network,
        registry_state,
    );
    state.nodes = nodes.clone();
    state.project_root = Some(loaded.project_root.clone());
    dir.save(&state)?;
    step.done();

    // 3-4. The pushes go on while the engines come up and form the Swarm;
    //      only the deploy needs them.
    let pushes = push_all(host, &state.registry, &images, ui);
    let swarm_formed = async {
        let step = ui.step("Waiting for the node engines 🐳");
        let certs = dir.client_certs();
        let engines = try_join_all(
            nodes
                .iter()
                .map(|node| engines::wait_for_engine(ui, &driver, node, &certs)),
        )
        .await?;
        step.done();

        let step = ui.step(format!(
            "Forming the Swarm 🐝 (init, {} join{}, {})",
            nodes.len() - 1,
            plural(nodes.len() as u32 - 1),
            spec.network
        ));
        let leader = &nodes[0];
        let manager = &engines[0];
        let routing = match args.routing {
            RoutingChoice::Mesh => Routing::Mesh,
            RoutingChoice::Edge => Routing::Edge,
            RoutingChoice::Auto if driver.has_ipvs(leader).await? => Routing::Mesh,
            RoutingChoice::Auto => Routing::Edge,
        };
        let tokens = swarm::init(manager, leader, dir).await?;
        if routing == Routing::Edge {
            swarm::remove_ingress(manager).await?;
        }
        try_join_all(
            nodes
                .iter()
                .zip(&engines)
                .skip(1)
                .map(|(node, engine)| async {
                    swarm::join(engine, node, leader, &tokens).await?;
                    ui.detail(format!("{} joined", node.hostname));
                    driver.ensure_running(node).await
                }),
        )
        .await?;
        swarm::create_overlay(manager, &spec.network, lab).await?;
        step.done();
        Ok::<_, Error>((engines, routing))
    };
    let (pulled, (engines, routing)) = tokio::try_join!(pushes, swarm_formed)?;
    let leader = &nodes[0];
    let manager = &engines[0];
    state.routing = routing;

    let mut summary = Summary {
        name: lab.to_string(),
        manager_ip: leader.address.to_string(),
        managers: spec.managers,
        workers: spec.workers,
        registry: state.registry.push_address.clone(),
        routing,
        services: Vec::new(),
        skipped: skipped.clone(),
        seconds: 0.0,
    };
    if args.no_deploy {
        dir.save(&state)?;
        return Ok(summary);
    }

    // 5. The services, from the lab registry.
    let services: Vec<&spec::ServiceSpec> = spec
        .services
        .iter()
        .filter(|s| !skipped.iter().any(|skip| skip.name == s.name))
        .collect();
    let step = ui.step(format!(
        "Deploying {} 🚀",
        services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for service in &services {
        let image = pulled
            .get(&service.name)
            .cloned()
            .expect("every deployed service's image was pushed");
        let deployment = deploy::Deployment {
            name: service.name.clone(),
            image,
            replicas: service.replicas.map_or(nodes.len() as u64, u64::from),
            ports: service.ports.clone(),
            env: service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            network: spec.network.clone(),
        };
        deploy::create(manager, lab, &deployment, routing).await?;
        state.services.push(ServiceState {
            name: deployment.name,
            image: deployment.image,
            replicas: deployment.replicas,
            ports: deployment.ports,
            probe: service.probe.clone(),
            build: service.build.clone(),
        });
    }
    dir.save(&state)?;
    step.done();

    let routes: Vec<edge::Route> = services
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(move |&port| edge::Route {
                service: s.name.clone(),
                port,
                health_path: s.health_path.clone(),
            })
        })
        .collect();
    if routing == Routing::Edge && !routes.is_empty() {
        let step = ui.step(format!(
            "Routing $ManagerIP to the replicas through HAProxy on {} 🔀 (no IPVS in this kernel)",
            leader.hostname
        ));
        let edge_image = &pulled[edge::SERVICE_NAME];
        edge::deploy(
            manager,
            lab,
            edge_image,
            &spec.network,
            &leader.hostname,
            &routes,
        )
        .await?;
        step.done();
    }

    // 6. Up means every replica running and the service answering through
    //    $ManagerIP, as the tutorial will call it.
    for service in &services {
        let replicas = state
            .services
            .iter()
            .find(|s| s.name == service.name)
            .map_or(1, |s| s.replicas);
        let step = ui.step(format!(
            "Waiting for {} replicas of {} ⏳",
            replicas, service.name
        ));
        wait::until_converged(
            manager,
            ui,
            &service.name,
            replicas,
            None,
            Duration::from_secs(180),
        )
        .await?;
        step.done();
        let (Some(&port), Some(probe)) = (service.ports.first(), service.probe.as_ref()) else {
            summary.services.push(ServiceSummary {
                name: service.name.clone(),
                replicas,
                url: None,
                served_by: Vec::new(),
            });
            continue;
        };
        let url = format!("http://{}:{port}{probe}", leader.address);
        let step = ui.step(format!(
            "Waiting for {} to answer on {url} ⏳",
            service.name
        ));
        let answer = wait::until_answers(ui, &url, replicas, Duration::from_secs(120)).await?;
        step.done();
        summary.services.push(ServiceSummary {
            name: service.name.clone(),
            replicas,
            url: Some(url),
            served_by: answer.served_by.into_iter().collect(),
        });
    }
    Ok(summary)
}

/// The services built from this repository (cargo, then their images).
async fn build_services(
    host: &Docker,
    loaded: &LoadedSpec,
    no_deploy: bool,
) -> Result<BTreeMap<String, images::LocalImage>> {
    if no_deploy {
        return Ok(BTreeMap::new());
    }
    let built = try_join_all(loaded.spec.services.iter().filter_map(|service| {
        let build = service.build.as_ref()?;
        Some(async move {
            let image = images::service(host, &loaded.project_root, &service.name, build).await?;
            Ok::<_, Error>((service.name.clone(), image))
        })
    }))
    .await?;
    Ok(built.into_iter().collect())
}

/// The images the nodes pull from the lab registry, by service name: the
/// edge proxy, the built services (unless step 1 built them already) and
/// the prebuilt ones; and the optional services left out, with why.
async fn build_images(
    host: &Docker,
    loaded: &LoadedSpec,
    node_image: &str,
    no_deploy: bool,
    built: Option<BTreeMap<String, images::LocalImage>>,
    ui: &Ui,
) -> Result<(BTreeMap<String, images::LocalImage>, Vec<Skipped>)> {
    if no_deploy {
        return Ok((BTreeMap::new(), Vec::new()));
    }
    let services = async {
        match built {
            Some(built) => Ok(built),
            None => build_services(host, loaded, no_deploy).await,
        }
    };
    let (edge, mut all, (prebuilt, skipped)) = tokio::try_join!(
        images::edge(host, node_image),
        services,
        prebuilt_images(host, loaded, ui)
    )?;
    all.insert(edge::SERVICE_NAME.to_string(), edge);
    all.extend(prebuilt);
    Ok((all, skipped))
}

/// The services that run a prebuilt image; an optional one that cannot be
/// had is skipped with one line, a required one fails the create.
async fn prebuilt_images(
    host: &Docker,
    loaded: &LoadedSpec,
    ui: &Ui,
) -> Result<(BTreeMap<String, images::LocalImage>, Vec<Skipped>)> {
    let mut found = BTreeMap::new();
    let mut skipped = Vec::new();
    for service in &loaded.spec.services {
        let Some(reference) = &service.image else {
            continue;
        };
        match images::prebuilt(host, reference).await {
            Ok(image) => {
                found.insert(service.name.clone(), image);
            }
            Err(err) if service.optional => {
                let reason = format!("{reference} is not on this machine's engine, and {err}");
                ui.warn(format!("skipping the optional {}: {reason}", service.name));
                skipped.push(Skipped {
                    name: service.name.clone(),
                    reason,
                });
            }
            Err(err) => return Err(err),
        }
    }
    Ok((found, skipped))
}

/// Pushes every image to the lab registry; returns what the nodes pull, by
/// service name.
async fn push_all(
    host: &Docker,
    registry: &crate::lab::state::RegistryState,
    images: &BTreeMap<String, images::LocalImage>,
    ui: &Ui,
) -> Result<BTreeMap<String, String>> {
    let pushed = try_join_all(images.iter().map(|(service, image)| async move {
        let pulled = registry::push(host, registry, image).await?;
        ui.detail(format!("pushed {pulled}"));
        Ok::<_, Error>((service.clone(), pulled))
    }))
    .await?;
    Ok(pushed.into_iter().collect())
}

/// Nodes are named as in the blog: swarm-manager-0, swarm-worker-0, ...
fn node_plans(
    managers: u32,
    workers: u32,
    network: &LabNetwork,
    authority: &Authority,
    registry: &str,
) -> Result<Vec<NodePlan>> {
    let roles = (0..managers)
        .map(|i| (Role::Manager, i))
        .chain((0..workers).map(|i| (Role::Worker, i)));
    roles
        .map(|(role, index)| {
            let hostname = format!("swarm-{}-{index}", role.as_str());
            let address = network.node_address(role, index);
            let server = authority.server(&[hostname.as_str(), "localhost"], &[IpAddr::V4(address), IpAddr::from([127, 0, 0, 1])])?;
            let daemon = serde_json::json!({
                "hosts": ["unix:///var/run/docker.sock", format!("tcp://{address}:{}", crate::driver::DOCKER_TLS_PORT)],
                "tls": true,
                "tlsverify": true,
                "tlscacert": "/etc/docker/tls/ca.pem",
                "tlscert": "/etc/docker/tls/cert.pem",
                "tlskey": "/etc/docker/tls/key.pem",
                "insecure-registries": [format!("{registry}:5000")],
                "log-driver": "json-file",
                "log-opts": {"max-size": "10m", "max-file": "2"},
            });
            let file = |path: &str, contents: Vec<u8>, mode: u32| NodeFile {
                path: path.to_string(),
                contents,
                mode,
            };
            Ok(NodePlan {
                hostname,
                role,
                address,
                files: vec![
                    file("/etc/docker/daemon.json", serde_json::to_vec_pretty(&daemon).expect("json"), 0o644),
                    file("/etc/docker/tls/ca.pem", authority.cert_pem().as_bytes().to_vec(), 0o644),
                    file("/etc/docker/tls/cert.pem", server.cert_pem.into_bytes(), 0o644),
                    file("/etc/docker/tls/key.pem", server.key_pem.into_bytes(), 0o600),
                ],
            })
        })
        .collect()
}

/// Removes what the failed create made. A request that was in flight when
/// the create was abandoned can still land a moment later, so it sweeps
/// until a pass finds nothing.
async fn roll_back(host: &Docker, dir: &LabDir, ui: &Ui) {
    let step = ui.step(format!("Rolling back lab '{}'", dir.name));
    let mut failures = Vec::new();
    for pass in 0..6 {
        match DindDriver::new(host.clone(), &dir.name, ui.clone())
            .destroy()
            .await
        {
            Ok(removed) if removed.is_empty() && pass > 0 => break,
            Ok(_) => {}
            Err(err) => failures.push(err.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Err(err) = dir.remove() {
        failures.push(err.to_string());
    }
    if failures.is_empty() {
        step.done();
    } else {
        drop(step);
        ui.warn(format!(
            "rollback incomplete ({}); `goblog-lab destroy --name {}` retries it",
            failures.join("; "),
            dir.name
        ));
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handlers install");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_summary(summary: &Summary, output: Output) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).expect("summary serialises")
        );
        return;
    }
    let routing = match summary.routing {
        Routing::Mesh => "Swarm routing mesh",
        Routing::Edge => "edge proxy on swarm-manager-0 (this kernel has no IPVS)",
    };
    let flag = if summary.name == name::DEFAULT {
        String::new()
    } else {
        format!(" --name {}", summary.name)
    };
    println!();
    println!(
        "Lab '{}' is ready in {}: {} manager{}, {} worker{}.",
        summary.name,
        seconds(Duration::from_secs_f64(summary.seconds)),
        summary.managers,
        plural(summary.managers),
        summary.workers,
        plural(summary.workers)
    );
    println!();
    println!("  ManagerIP  {}", summary.manager_ip);
    println!("  registry   {} (push from this machine)", summary.registry);
    println!("  routing    {routing}");
    for skipped in &summary.skipped {
        println!("  skipped    {} ({})", skipped.name, skipped.reason);
    }
    for service in &summary.services {
        let seen = if service.served_by.is_empty() {
            String::new()
        } else {
            format!(", answered from {}", service.served_by.join(", "))
        };
        println!(
            "  service    {} ({} replica{}{seen})",
            service.name,
            service.replicas,
            plural(service.replicas as u32)
        );
    }
    println!();
    println!("Point your shell at it:");
    println!("  eval \"$(goblog-lab env{flag})\"");
    println!("  docker node ls");
    if let Some(url) = summary.services.iter().find_map(|s| s.url.as_ref()) {
        let path = url.splitn(4, '/').nth(3).unwrap_or("");
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .unwrap_or("6767");
        println!("  curl $ManagerIP:{port}/{path}");
    }
    println!("When done:");
    println!("  goblog-lab destroy{flag}");
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
