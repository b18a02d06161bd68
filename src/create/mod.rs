//! Creating a lab, as a library call: from a lab spec to its services
//! answering on `$ManagerIP:6767`, or an error with nothing left behind.
//!
//! It exists apart from the `create` command so that a caller can run
//! several creates at once in one process (a classroom's server), each
//! reporting to its own [`Ui`] sink: [`create`] takes a [`Request`] (the
//! spec and the create's choices, no flags) and returns the [`Created`]
//! lab's state and summary; the command maps flags to a request and prints
//! the summary.
//!
//! Like kind's `create/actions`, a create is an ordered list of small
//! steps, each with its own status line: the node image, the machines
//! (from the provider), the engines (the provisioner), the Swarm with the
//! registry beside it, the deploy, the replicas with routing beside them,
//! and the wait for answers. Each step is given what it needs as a value
//! and returns what it made; where two steps overlap, the code says so
//! once, with [`overlap`] or a join. Only the provider knows which kind of
//! machine it made. If any step fails or `stop` resolves, what was made is
//! removed again, unless `retain` keeps it for inspection.

pub mod plan;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::try_join_all;
use serde::Serialize;

use crate::docker::{self, Labelled};
use crate::error::{Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::name;
use crate::lab::spec::{self, LabSpec, LoadedSpec};
use crate::lab::state::{
    Endpoint, LabDir, LabState, NodeState, Publish, RegistryState, Routing, ServiceState,
};
use crate::pki::Authority;
use crate::provider::{self, Choices, Provider};
use crate::provision::{self, EngineConfig};
use crate::routing::{IpvsProbe, RoutingChoice, RoutingDecision};
use crate::steps::{deploy, edge, engines, images, node_image, registry, swarm, wait};
use crate::ui::Ui;

/// A lab to make: its name, its spec, and the create's choices.
pub struct Request {
    pub name: String,
    pub loaded: LoadedSpec,
    pub options: Options,
}

/// The create's choices besides the spec.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep a failed create's machines for inspection.
    pub retain: bool,
    /// Machines, engines, Swarm and registry only.
    pub no_deploy: bool,
    pub routing: RoutingChoice,
    /// Install Docker on adopted hosts that lack it.
    pub install_docker: bool,
    /// What the provider is opened with.
    pub machines: Choices,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retain: false,
            no_deploy: false,
            routing: RoutingChoice::Auto,
            install_docker: false,
            machines: Choices::default(),
        }
    }
}

/// A lab that is up: its state (as saved) and what `create` reports.
pub struct Created {
    pub state: LabState,
    pub summary: Summary,
}

/// What `create` reports when it is done (as text or JSON).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    /// The provider that made the machines.
    pub driver: ProviderKind,
    pub manager_ip: String,
    pub managers: u32,
    pub workers: u32,
    pub registry: String,
    pub routing: Routing,
    /// Why that routing: what the IPVS probe found, or the flag.
    pub routing_why: String,
    /// How this host reaches the machines: `direct`, or `localhost`
    /// through ports published on 127.0.0.1.
    pub publish: Publish,
    /// Every port of a machine this host calls, and where.
    pub endpoints: Vec<Endpoint>,
    /// VM labs: how QEMU runs the guests, `kvm` or `tcg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
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

/// Makes the lab `request` asks for, reporting each step to `ui`. When a
/// step fails or `stop` resolves first (Ctrl-C), what was made is removed
/// again (unless `retain`) and the error is returned:
/// [`Error::Interrupted`] for `stop`.
pub async fn create(request: Request, ui: &Ui, stop: impl Future<Output = ()>) -> Result<Created> {
    let Request {
        name,
        loaded,
        options,
    } = request;
    name::validate(&name)?;
    if let Some(warning) = spec::even_managers_warning(loaded.spec.managers) {
        ui.warn(warning);
    }
    registry::check_port_free(loaded.spec.registry.port)?;
    let host = docker::connect_host().await?;
    let dir = LabDir::new(&name);
    let provider =
        provider::for_spec(&name, &loaded.spec, &options.machines, &dir, &host, ui).await?;
    // Before anything else: what the provider needs of this machine.
    provider.pre_create_check().await?;
    let checks_started = Instant::now();
    check_this_machine(&host, provider.shares_this_kernel(), options.routing).await?;
    ui.detail(format!(
        "checked this machine in {} ms (`goblog-lab doctor` shows every finding)",
        checks_started.elapsed().as_millis()
    ));
    if dir.exists() || !Labelled::of_lab(&host, &name).await?.is_empty() {
        return Err(Error::LabExists(name));
    }
    let lab = Lab {
        name,
        host,
        dir,
        spec: loaded.spec,
        project_root: loaded.project_root,
        options,
        ui: ui.clone(),
        provider,
    };
    let outcome = tokio::select! {
        outcome = lab.run() => outcome,
        () = stop => Err(Error::Interrupted),
    };
    if outcome.is_err() {
        if lab.options.retain {
            ui.warn(format!(
                "--retain: keeping the partial lab; `goblog-lab destroy --name {}` removes it",
                lab.name
            ));
        } else {
            lab.roll_back().await;
        }
    }
    outcome
}

/// `doctor`'s checks that matter for this create, before anything is
/// made: the first blocking one is the error, word for word.
async fn check_this_machine(
    host: &Docker,
    shares_this_kernel: bool,
    routing: RoutingChoice,
) -> Result<()> {
    let engine = crate::preflight::engine_facts(host).await;
    let machine = crate::preflight::host_facts(Some(&engine), false).await;
    let mut findings =
        crate::preflight::judge_for_create(&engine, &machine, shares_this_kernel, routing);
    match crate::preflight::first_blocking(&mut findings) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// One create in progress: what every step reads and none changes.
/// What a step makes, it returns.
struct Lab {
    name: String,
    host: Docker,
    dir: LabDir,
    spec: LabSpec,
    project_root: PathBuf,
    options: Options,
    ui: Ui,
    provider: Box<dyn Provider>,
}

/// The node image, and the services when they were built beside it.
struct NodeImage {
    reference: String,
    built: Option<BTreeMap<String, images::BuiltService>>,
}

/// What the machines step readies besides the machines.
#[derive(Default)]
struct LabImages {
    /// The node image, which the registry's and edge's images build on.
    node: String,
    /// What the nodes pull from the lab registry, by service name: the
    /// built services and the prebuilt ones.
    services: BTreeMap<String, images::LocalImage>,
    /// The edge proxy, pushed while the replicas start: only the last
    /// step, the answer through $ManagerIP, needs it.
    edge: Option<images::LocalImage>,
    /// The source revision of each built service, for `deploy`.
    revisions: BTreeMap<String, images::Revision>,
    /// The optional services left out, with why.
    skipped: Vec<Skipped>,
}

/// The lab registry started and filled.
struct Filled {
    /// What the nodes pull, by service name.
    pulled: BTreeMap<String, String>,
    /// The way in for the edge proxy's push, while there is one to make.
    pushing: Option<Pushing>,
}

/// The Swarm formed, with the registry beside it.
struct Formed {
    /// Each node's engine, in the order of the lab's nodes.
    engines: Vec<Docker>,
    routing: RoutingDecision,
    registry: Filled,
}

impl Lab {
    /// The steps, in order, each handing the next what it made.
    async fn run(&self) -> Result<Created> {
        let started = Instant::now();
        let node_image = self.node_image().await?;
        let (mut state, images) = self.machines(node_image).await?;
        let authority = self.engines(&state).await?;
        let LabImages {
            node,
            services: service_images,
            edge: edge_image,
            revisions,
            skipped,
        } = images;
        let formed = self
            .swarm_beside_registry(
                &state,
                &authority,
                &node,
                service_images,
                edge_image.is_some(),
            )
            .await?;
        state.routing = formed.routing.routing;
        self.dir.save(&state)?;
        let mut services = Vec::new();
        if !self.options.no_deploy {
            let skipped: Vec<String> = skipped.iter().map(|s| s.name.clone()).collect();
            let deployed = plan::deployed(&self.spec, &skipped);
            self.deploy(&mut state, &deployed, &formed, &revisions)
                .await?;
            self.replicas_beside_routing(&state, &deployed, &formed, edge_image.as_ref())
                .await?;
            services = self.wait_for_answers(&state, &deployed).await?;
        }
        let summary = self.summary(&state, &formed.routing, services, skipped, started);
        Ok(Created { state, summary })
    }

    /// How fast the machines are: emulated VMs get patient health checks
    /// and waits.
    fn pace(state: &LabState) -> deploy::Pace {
        deploy::Pace::of(state)
    }

    /// The node image: built with debootstrap once, then cached. On that
    /// first run the services compile meanwhile; later runs compile them
    /// while the machines start.
    async fn node_image(&self) -> Result<NodeImage> {
        if node_image::is_cached(&self.host).await {
            let step = self.ui.step("Ensuring the node image 🖼");
            let reference = node_image::ensure(&self.host).await?;
            step.done_with(format!("{reference} (cached)"));
            return Ok(NodeImage {
                reference,
                built: None,
            });
        }
        let step = self.ui.step("Building the node image with debootstrap, and the services 🖼 (once; about two minutes)");
        let (reference, built) =
            tokio::try_join!(node_image::ensure(&self.host), self.build_services())?;
        step.done_with(reference.clone());
        Ok(NodeImage {
            reference,
            built: Some(built),
        })
    }

    /// The machines, from the provider, while this machine builds the
    /// images they will pull. The lab's state is saved once they exist.
    async fn machines(&self, node_image: NodeImage) -> Result<(LabState, LabImages)> {
        let step = self.ui.step(format!(
            "{} 📦 ({} manager{}, {} worker{})",
            self.provider.making(),
            self.spec.managers,
            plural(self.spec.managers),
            self.spec.workers,
            plural(self.spec.workers)
        ));
        let plans = plan::machine_plans(&self.spec);
        let manager_ports = plan::manager_ports(&self.spec, self.options.no_deploy);
        let provider = &*self.provider;
        let machines = async {
            let nodes = provider.create(&plans, &node_image.reference).await?;
            if provider.adopts_hosts() {
                if self.options.install_docker {
                    try_join_all(nodes.iter().map(|n| provision::install_docker(provider, n)))
                        .await?;
                }
                provision::preflight(provider, &nodes, &manager_ports).await?;
            }
            Ok::<_, Error>(nodes)
        };
        let (nodes, images) = tokio::try_join!(
            machines,
            self.build_images(&node_image.reference, node_image.built)
        )?;
        let mut state = LabState::new(
            &self.name,
            provider.kind(),
            &self.spec.network,
            registry::on_manager(nodes[0].address),
        );
        state.ssh = provider.ssh_state();
        state.vm = provider.vm_state();
        state.publish = provider.publish();
        state.nodes = nodes;
        state.project_root = Some(self.project_root.clone());
        self.dir.save(&state)?;
        step.done();
        Ok((state, images))
    }

    /// Each engine configured for the address its machine reported; returns
    /// the lab's CA, which signed them.
    async fn engines(&self, state: &LabState) -> Result<Authority> {
        let step = self.ui.step("Configuring the engines for TLS on :2376 🔐");
        let authority = Authority::create(&self.name)?;
        authority.save(&self.dir)?;
        let config = EngineConfig {
            authority: &authority,
            registry: &state.registry.pull_address,
        };
        try_join_all(
            state
                .nodes
                .iter()
                .map(|node| provision::provision(&*self.provider, node, &config)),
        )
        .await?;
        step.done();
        Ok(authority)
    }

    /// Every engine answering over TLS, then the Swarm; beside it, as soon
    /// as the manager's engine answers, the registry starts there and the
    /// images go into it: only the deploy needs them.
    async fn swarm_beside_registry(
        &self,
        state: &LabState,
        authority: &Authority,
        node_image: &str,
        images: BTreeMap<String, images::LocalImage>,
        edge_to_push: bool,
    ) -> Result<Formed> {
        let certs = self.dir.client_certs();
        let provider = &*self.provider;
        let leader = &state.nodes[0];
        let registry = async {
            let manager = engines::wait_for_engine(&self.ui, leader, &certs, || {
                provider.ensure_running(leader)
            })
            .await?;
            self.fill_registry(
                leader,
                &manager,
                authority,
                node_image,
                images,
                edge_to_push,
            )
            .await
        };
        let swarm = async {
            let step = self.ui.step("Waiting for the node engines 🐳");
            let engines = try_join_all(state.nodes.iter().map(|node| {
                engines::wait_for_engine(&self.ui, node, &certs, || provider.ensure_running(node))
            }))
            .await?;
            step.done();
            let routing = self.form_swarm(state, &engines).await?;
            Ok((engines, routing))
        };
        // The registry's own line, for the time it still takes once the
        // Swarm is up (on VMs under TCG, a minute and more), so the wait
        // has a name.
        let ((engines, routing), registry) = overlap(&self.ui, swarm, registry, || {
            format!(
                "Starting the lab registry on {} and pushing the images 📦",
                leader.hostname
            )
        })
        .await?;
        Ok(Formed {
            engines,
            routing,
            registry,
        })
    }

    /// Starts the registry on the manager and pushes `images` to it;
    /// keeps the way in open when the edge proxy is still to be pushed.
    async fn fill_registry(
        &self,
        leader: &NodeState,
        manager: &Docker,
        authority: &Authority,
        node_image: &str,
        images: BTreeMap<String, images::LocalImage>,
        edge_to_push: bool,
    ) -> Result<Filled> {
        let registry_image = images::registry(&self.host, node_image).await?;
        images::copy(&self.host, manager, &registry_image).await?;
        let tls = authority.server(&[leader.hostname.as_str()], &[leader.address.into()])?;
        let registry = registry::start(
            manager,
            &self.name,
            leader.address,
            &registry_image,
            &tls,
            authority.cert_pem(),
        )
        .await?;
        if images.is_empty() && !edge_to_push {
            return Ok(Filled {
                pulled: BTreeMap::new(),
                pushing: None,
            });
        }
        let relay = self
            .provider
            .forward(leader, RegistryState::PORT, 0)
            .await?;
        let gateway = registry::gateway(
            relay.local,
            self.spec.registry.port,
            leader.address,
            authority.cert_pem(),
            &authority.client()?,
        )
        .await?;
        registry::wait_ready(&gateway).await?;
        self.ui
            .detail(format!("registry answers on {}", registry.pull_address));
        let pushing = Pushing {
            registry,
            gateway,
            _relay: relay,
        };
        let pushed = try_join_all(images.iter().map(|(service, image)| {
            let pushing = &pushing;
            async move { Ok::<_, Error>((service.clone(), pushing.push(self, image).await?)) }
        }))
        .await?;
        Ok(Filled {
            pulled: pushed.into_iter().collect(),
            pushing: edge_to_push.then_some(pushing),
        })
    }

    async fn form_swarm(&self, state: &LabState, engines: &[Docker]) -> Result<RoutingDecision> {
        let joins = state.nodes.len() - 1;
        let step = self.ui.step(format!(
            "Forming the Swarm 🐝 (init, {joins} join{}, {})",
            plural(joins as u32),
            self.spec.network
        ));
        let leader = &state.nodes[0];
        let manager = &engines[0];
        let decision = self.decide_routing(leader).await?;
        let tokens = swarm::init(manager, leader, &self.dir).await?;
        if decision.routing == Routing::Edge {
            swarm::remove_ingress(manager).await?;
        }
        try_join_all(
            state
                .nodes
                .iter()
                .zip(engines)
                .skip(1)
                .map(|(node, engine)| async {
                    swarm::join(engine, node, leader, &tokens).await?;
                    self.ui.detail(format!("{} joined", node.hostname));
                    self.provider.ensure_running(node).await
                }),
        )
        .await?;
        swarm::create_overlay(manager, &self.spec.network, &self.name).await?;
        step.done();
        Ok(decision)
    }

    /// Mesh or edge, from what the manager found when it tried to load
    /// IPVS (a dind node through the host's /lib/modules, mounted in).
    async fn decide_routing(&self, leader: &NodeState) -> Result<RoutingDecision> {
        let probe = if self.options.routing == RoutingChoice::Edge {
            IpvsProbe::Missing {
                why: "not probed".into(),
            }
        } else {
            let started = Instant::now();
            let probe = provision::probe_ipvs(&*self.provider, leader).await?;
            self.ui.detail(format!(
                "IPVS on {} ({} ms): {probe:?}",
                leader.hostname,
                started.elapsed().as_millis()
            ));
            probe
        };
        crate::routing::decide_routing(self.options.routing, &probe)
    }

    /// The services, from the lab registry; each recorded in the state.
    async fn deploy(
        &self,
        state: &mut LabState,
        services: &[&spec::ServiceSpec],
        formed: &Formed,
        revisions: &BTreeMap<String, images::Revision>,
    ) -> Result<()> {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let step = self.ui.step(format!("Deploying {} 🚀", names.join(", ")));
        let manager = &formed.engines[0];
        for service in services {
            let image = formed
                .registry
                .pulled
                .get(&service.name)
                .cloned()
                .ok_or_else(|| {
                    Error::failed(format!("no image was pushed for {}", service.name))
                })?;
            let deployment = deploy::Deployment {
                name: service.name.clone(),
                image,
                replicas: plan::replicas(service, state.nodes.len()),
                ports: service.ports.clone(),
                env: service
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                network: self.spec.network.clone(),
                pace: Self::pace(state),
            };
            deploy::create(manager, &self.name, &deployment, formed.routing.routing).await?;
            state.services.push(ServiceState {
                name: deployment.name,
                image: deployment.image,
                replicas: deployment.replicas,
                ports: deployment.ports,
                probe: service.probe.clone(),
                build: service.build.clone(),
                revision: revisions.get(&service.name).map(|r| r.0.clone()),
            });
        }
        self.dir.save(state)?;
        step.done();
        Ok(())
    }

    /// Every replica running, while beside it, without IPVS, HAProxy on
    /// the manager is pushed and set to stand in for the routing mesh.
    async fn replicas_beside_routing(
        &self,
        state: &LabState,
        services: &[&spec::ServiceSpec],
        formed: &Formed,
        edge_image: Option<&images::LocalImage>,
    ) -> Result<()> {
        let routes = edge_routes(services);
        let edge = match (
            formed.routing.routing,
            routes.is_empty(),
            edge_image,
            &formed.registry.pushing,
        ) {
            (Routing::Edge, false, Some(image), Some(pushing)) => Some((image, pushing)),
            (Routing::Edge, false, _, _) => {
                return Err(Error::failed(
                    "the edge proxy's image was not built or the registry not opened for it",
                ))
            }
            _ => None,
        };
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut line = format!("Waiting for the replicas of {} ⏳", names.join(", "));
        if edge.is_some() {
            line += &format!(
                " (and routing $ManagerIP to them through HAProxy on {})",
                state.nodes[0].hostname
            );
        }
        let step = self.ui.step(line);
        let manager = &formed.engines[0];
        let converged = try_join_all(services.iter().map(|service| {
            wait::until_converged(
                manager,
                &self.ui,
                &service.name,
                replicas_of(state, &service.name),
                None,
                Self::pace(state).patience(Duration::from_secs(180)),
            )
        }));
        let routed = async {
            let Some((image, pushing)) = edge else {
                return Ok(());
            };
            let pulled = pushing.push(self, image).await?;
            edge::deploy(
                manager,
                &self.name,
                &pulled,
                &self.spec.network,
                &state.nodes[0].hostname,
                &routes,
                Self::pace(state),
            )
            .await
        };
        tokio::try_join!(converged, routed)?;
        step.done();
        Ok(())
    }

    /// Up means the services answering through `$ManagerIP`, as the
    /// tutorial will call them, from every replica.
    async fn wait_for_answers(
        &self,
        state: &LabState,
        services: &[&spec::ServiceSpec],
    ) -> Result<Vec<ServiceSummary>> {
        let leader = &state.nodes[0];
        let mut answered = Vec::new();
        for service in services {
            let replicas = replicas_of(state, &service.name);
            let (Some(&port), Some(probe)) = (service.ports.first(), service.probe.as_ref()) else {
                answered.push(ServiceSummary {
                    name: service.name.clone(),
                    replicas,
                    url: None,
                    served_by: Vec::new(),
                });
                continue;
            };
            let url = format!("http://{}{probe}", leader.endpoint(port));
            let step = self.ui.step(format!(
                "Waiting for {} to answer on {url} ⏳",
                service.name
            ));
            let answer = wait::until_answers(&self.ui, &url, replicas, Self::pace(state)).await?;
            step.done();
            answered.push(ServiceSummary {
                name: service.name.clone(),
                replicas,
                url: Some(url),
                served_by: answer.served_by.into_iter().collect(),
            });
        }
        Ok(answered)
    }

    fn summary(
        &self,
        state: &LabState,
        routing: &RoutingDecision,
        services: Vec<ServiceSummary>,
        skipped: Vec<Skipped>,
        started: Instant,
    ) -> Summary {
        let leader = &state.nodes[0];
        Summary {
            name: self.name.clone(),
            driver: state.driver,
            manager_ip: leader.reached_at().to_string(),
            managers: self.spec.managers,
            workers: self.spec.workers,
            registry: registry::pull_address(leader.address),
            routing: routing.routing,
            routing_why: routing.why.clone(),
            publish: state.publish,
            endpoints: state.endpoints(),
            accel: state.vm.as_ref().map(|vm| vm.accel.clone()),
            services,
            skipped,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The services built from this repository (cargo, then their images).
    async fn build_services(&self) -> Result<BTreeMap<String, images::BuiltService>> {
        if self.options.no_deploy {
            return Ok(BTreeMap::new());
        }
        let built =
            images::built_services(&self.host, &self.project_root, &self.spec.services).await?;
        Ok(built.into_iter().collect())
    }

    /// The images of the lab, the built services among them unless the
    /// node image's step built them already.
    async fn build_images(
        &self,
        node_image: &str,
        built: Option<BTreeMap<String, images::BuiltService>>,
    ) -> Result<LabImages> {
        if self.options.no_deploy {
            return Ok(LabImages {
                node: node_image.to_string(),
                ..LabImages::default()
            });
        }
        let services = async {
            match built {
                Some(built) => Ok(built),
                None => self.build_services().await,
            }
        };
        let (edge, built, (prebuilt, skipped)) = tokio::try_join!(
            images::edge(&self.host, node_image),
            services,
            self.prebuilt_images()
        )?;
        let mut made = LabImages {
            node: node_image.to_string(),
            edge: Some(edge),
            skipped,
            ..LabImages::default()
        };
        for (name, service) in built {
            made.services.insert(name.clone(), service.image);
            made.revisions.insert(name, service.revision);
        }
        made.services.extend(prebuilt);
        Ok(made)
    }

    /// The services that run a prebuilt image; an optional one that cannot
    /// be had is skipped with one line, a required one fails the create.
    async fn prebuilt_images(
        &self,
    ) -> Result<(BTreeMap<String, images::LocalImage>, Vec<Skipped>)> {
        let mut found = BTreeMap::new();
        let mut skipped = Vec::new();
        for service in &self.spec.services {
            let Some(reference) = &service.image else {
                continue;
            };
            match images::prebuilt(&self.host, reference).await {
                Ok(image) => {
                    found.insert(service.name.clone(), image);
                }
                Err(err) if service.optional => {
                    // One short line: offline, the pull's error is a long
                    // DNS failure, and it would be printed here and in the
                    // summary.
                    let reason = format!(
                        "{reference} is not on this machine's engine and could not be pulled"
                    );
                    self.ui.detail(format!("pulling {reference}: {err}"));
                    self.ui.warn(format!(
                        "skipping the optional {}: {reason} (`create -v` says why)",
                        service.name
                    ));
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

    /// Removes what the failed create made, as its saved state (if it got
    /// that far) and the provider's own sweep find it.
    async fn roll_back(&self) {
        let step = self.ui.step(format!("Rolling back lab '{}'", self.name));
        let mut failures = Vec::new();
        let state = self.dir.load().ok();
        if let Err(err) = provision::remove_lab(&*self.provider, state.as_ref(), &self.ui).await {
            failures.push(err.to_string());
        }
        if let Err(err) = self.dir.remove() {
            failures.push(err.to_string());
        }
        if failures.is_empty() {
            step.done();
        } else {
            drop(step);
            self.ui.warn(format!(
                "rollback incomplete ({}); `goblog-lab destroy --name {}` retries it",
                failures.join("; "),
                self.name
            ));
        }
    }
}

/// Runs `main` with `beside` alongside it and returns both. When `main` is
/// done first, the rest of the wait for `beside` gets a status line of its
/// own (`then`), so the wait has a name; either's error ends both.
async fn overlap<A, B>(
    ui: &Ui,
    main: impl Future<Output = Result<A>>,
    beside: impl Future<Output = Result<B>>,
    then: impl FnOnce() -> String,
) -> Result<(A, B)> {
    let mut main = std::pin::pin!(main);
    let mut beside = std::pin::pin!(beside);
    let mut early = None;
    let a = loop {
        tokio::select! {
            b = &mut beside, if early.is_none() => early = Some(b?),
            a = &mut main => break a?,
        }
    };
    let b = match early {
        Some(b) => b,
        None => {
            let step = ui.step(then());
            let b = beside.await?;
            step.done();
            b
        }
    };
    Ok((a, b))
}

/// The edge proxy's routes: every published port of every deployed service.
fn edge_routes(services: &[&spec::ServiceSpec]) -> Vec<edge::Route> {
    services
        .iter()
        .flat_map(|s| {
            s.ports.iter().map(move |&port| edge::Route {
                service: s.name.clone(),
                port,
                health_path: s.health_path.clone(),
            })
        })
        .collect()
}

fn replicas_of(state: &LabState, service: &str) -> u64 {
    state
        .services
        .iter()
        .find(|s| s.name == service)
        .map_or(1, |s| s.replicas)
}

/// The lab registry, reachable from this machine's engine for as long as
/// this is held: its gateway on 127.0.0.1 and the provider's forward.
struct Pushing {
    registry: RegistryState,
    gateway: registry::Gateway,
    _relay: provider::Forward,
}

impl Pushing {
    async fn push(&self, lab: &Lab, image: &images::LocalImage) -> Result<String> {
        let push_address = self.gateway.local.to_string();
        let pulled = registry::push(&lab.host, &push_address, &self.registry, image).await?;
        lab.ui.detail(format!("pushed {pulled}"));
        Ok(pulled)
    }
}

pub fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording() -> (Ui, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            move |line: &str| lines.lock().unwrap().push(line.to_string())
        };
        (Ui::to_sink(Arc::new(sink), false), lines)
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_task_still_running_when_the_main_one_ends_gets_its_own_line() {
        let (ui, lines) = recording();
        let (a, b) = overlap(
            &ui,
            async { Ok(1) },
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok("filled")
            },
            || "Starting the registry".to_string(),
        )
        .await
        .unwrap();
        assert_eq!((a, b), (1, "filled"));
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], " • Starting the registry ...");
        assert!(
            lines[1].starts_with(" ✓ Starting the registry ("),
            "{lines:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_task_done_first_prints_nothing_and_an_error_ends_both() {
        let (ui, lines) = recording();
        let (a, b) = overlap(
            &ui,
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(1)
            },
            async { Ok(2) },
            || unreachable!("no line when the side task is done first"),
        )
        .await
        .unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(lines.lock().unwrap().is_empty());

        let failed = overlap(
            &ui,
            std::future::pending::<Result<()>>(),
            async { Err::<(), _>(Error::failed("the registry did not start")) },
            String::new,
        )
        .await;
        assert!(failed
            .unwrap_err()
            .to_string()
            .contains("the registry did not start"));
    }
}
