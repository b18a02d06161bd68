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
//! (from the provider), the engines (the provisioner), the Swarm while the
//! images go into the nodes, the deploy, the replicas with routing beside
//! them, and the wait for answers; the lab registry starts and is filled
//! beside all of that. Each step is given what it needs as a value
//! and returns what it made; where two steps overlap, the code says so
//! once, with [`overlap`] or a join. Only the provider knows which kind of
//! machine it made. If any step fails or `stop` resolves, what was made is
//! removed again, unless `retain` keeps it for inspection.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::{join_all, try_join_all};
use serde::Serialize;
use tokio::sync::watch;

use crate::docker::{self, Labelled};
use crate::error::{Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::name;
use crate::lab::spec::{self, LabSpec, LoadedSpec};
use crate::lab::state::{
    Endpoint, LabDir, LabState, NodeState, Publish, RegistryState, Role, Routing, ServiceState,
};
use crate::pki::Authority;
use crate::provider::{self, Choices, Provider};
use crate::provision::{self, EngineConfig};
use crate::routing::{IpvsProbe, RoutingChoice, RoutingDecision};
use crate::steps::{deploy, edge, engines, images, node_image, registry, swarm, vip, wait};
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
    /// `$ManagerIP` is virtual: held by one healthy manager at a time.
    pub manager_ip_moves: bool,
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
    let dir = LabDir::new(&name);
    let provider = provider::for_spec(&name, &loaded.spec, &options.machines, &dir, ui).await?;
    // Before anything else, the engine included: what the provider needs of
    // this machine (QEMU and root for VMs).
    provider.pre_create_check().await?;
    let host = docker::connect_host().await?;
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
    /// keepalived, for a lab whose `$ManagerIP` moves (`plan::moves_manager_ip`).
    vip: Option<images::LocalImage>,
    /// The source revision of each built service, for `deploy`.
    revisions: BTreeMap<String, images::Revision>,
    /// The optional services left out, with why.
    skipped: Vec<Skipped>,
}

/// What the nodes pull each service's image by from the lab registry, and
/// whether the registry has them all yet.
struct Pulls {
    by_service: BTreeMap<String, String>,
    pushed: watch::Receiver<bool>,
}

/// What the registry's line of work hears and says: which services the
/// nodes have loaded (once the Swarm is formed), and when the registry has
/// every image.
struct RegistrySignals {
    loaded: watch::Receiver<Option<BTreeSet<String>>>,
    pushed: watch::Sender<bool>,
}

impl Pulls {
    /// The reference a deploy of `service` names, as soon as its tasks can
    /// start: at once when the nodes have the image loaded (a pull that
    /// fails meanwhile is only logged by the engine, which then starts the
    /// loaded image: moby's `controller.go`, Prepare), else once the
    /// registry has it.
    async fn for_service(&self, service: &str, loaded: &BTreeSet<String>) -> Result<String> {
        let reference = self
            .by_service
            .get(service)
            .cloned()
            .ok_or_else(|| Error::failed(format!("no image was built for {service}")))?;
        if !loaded.contains(service) {
            self.pushed
                .clone()
                .wait_for(|pushed| *pushed)
                .await
                .map_err(|_| Error::failed("the lab registry stopped before it had every image"))?;
        }
        Ok(reference)
    }
}

impl Lab {
    /// The steps, in order, each handing the next what it made. From the
    /// engines on, two lines of work overlap: on one the Swarm, the deploy
    /// and the waits; on the other the registry starting on the manager
    /// and the services' images pushed into it, which the nodes need only
    /// for images that could not be loaded into them while the Swarm formed.
    async fn run(&self) -> Result<Created> {
        let started = Instant::now();
        let node_image = self.node_image().await?;
        let (mut state, images) = self.machines(node_image).await?;
        let authority = self.engines(&state).await?;
        let LabImages {
            node,
            services: service_images,
            edge: edge_image,
            vip: vip_image,
            revisions,
            skipped,
        } = images;
        let (pushed, pulls) = pulls(&state.registry, &service_images);
        let leader = state.nodes[0].clone();
        let registry_state = state.registry.clone();
        // What the nodes have loaded, once the Swarm is formed: those the
        // manager pushes itself, the rest this machine pushes.
        let (loaded_tx, loaded_rx) = watch::channel(None);
        // The registries' line of work reads the lab as it is now, while
        // the rest goes on recording what it deploys.
        let as_made = state.clone();
        let registry = self.fill_registry(
            &as_made,
            &authority,
            &node,
            &service_images,
            RegistrySignals {
                loaded: loaded_rx,
                pushed,
            },
        );
        let lab = async {
            let (engines, routing) =
                tokio::try_join!(self.wait_for_engines(&state), self.decide_routing(&leader))?;
            // The edge proxy's image goes into the manager, only when it
            // routes, beside the Swarm and the deploy: only the answer
            // through $ManagerIP needs it.
            let edge_image = edge_image.filter(|_| routing.routing == Routing::Edge);
            let managers: Vec<Docker> = state
                .nodes
                .iter()
                .zip(&engines)
                .filter(|(node, _)| node.role == Role::Manager)
                .map(|(_, engine)| engine.clone())
                .collect();
            let (vip_at, vip_managers) = (state.vip, vip::managers(&state));
            let edge = async {
                let loaded = match &edge_image {
                    Some(image) => Some(self.load_edge(&registry_state, &managers, image).await?),
                    None => None,
                };
                if let (Some(vip), Some(image)) = (vip_at, &vip_image) {
                    self.move_manager_ip(&vip_managers, vip, &managers, image)
                        .await?;
                }
                Ok::<_, Error>(loaded)
            };
            let deployed = async {
                let loaded = self
                    .swarm(&state, &engines, routing.routing, &service_images)
                    .await?;
                loaded_tx.send_replace(Some(loaded.clone()));
                state.routing = routing.routing;
                self.dir.save(&state)?;
                if self.options.no_deploy {
                    return Ok(Vec::new());
                }
                let skipped: Vec<String> = skipped.iter().map(|s| s.name.clone()).collect();
                let deployed: Vec<spec::ServiceSpec> = plan::deployed(&self.spec, &skipped)
                    .into_iter()
                    .cloned()
                    .collect();
                self.deploy(
                    &mut state,
                    &deployed,
                    &engines[0],
                    routing.routing,
                    &pulls,
                    &loaded,
                    &revisions,
                )
                .await?;
                Ok(deployed)
            };
            let (edge, deployed) = tokio::try_join!(edge, deployed)?;
            if self.options.no_deploy {
                return Ok((routing, Vec::new()));
            }
            let edge = edge.map(|image| (image, edge_routes(&deployed)));
            self.replicas_beside_routing(&state, &deployed, &engines[0], edge)
                .await?;
            let answered = self.wait_for_answers(&state, &deployed).await?;
            Ok((routing, answered))
        };
        // The registry's own line, for the time it still takes once the
        // rest is done (on VMs under TCG, a minute and more), so the wait
        // has a name.
        let on = if as_made.vip.is_some() {
            "every manager".to_string()
        } else {
            leader.hostname.clone()
        };
        let ((routing, services), ()) = overlap(&self.ui, lab, registry, || {
            format!("Starting the lab registry on {on} and pushing the images 📦")
        })
        .await?;
        let summary = self.summary(&state, &routing, services, skipped, started);
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
        if plan::moves_manager_ip(&self.spec) {
            let managers: Vec<NodeState> = nodes
                .iter()
                .filter(|n| n.role == Role::Manager)
                .cloned()
                .collect();
            state.vip = provider.virtual_ip(&managers);
        }
        if let Some(vip) = state.vip {
            if let Some(holder) = nodes.iter().find(|n| n.address == vip) {
                return Err(Error::usage(format!(
                    "--vip {vip} is {}'s own address: give one that no machine holds",
                    holder.hostname
                )));
            }
            state.registry = registry::on_every_manager(vip);
        }
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
            registries: registry::addresses(state),
            vip: state.vip,
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

    /// Every engine answering over TLS.
    async fn wait_for_engines(&self, state: &LabState) -> Result<Vec<Docker>> {
        let certs = self.dir.client_certs();
        let provider = &*self.provider;
        let step = self.ui.step("Waiting for the node engines 🐳");
        let engines = try_join_all(state.nodes.iter().map(|node| {
            engines::wait_for_engine(&self.ui, node, &certs, Self::pace(state), || {
                provider.ensure_running(node)
            })
        }))
        .await?;
        step.done();
        Ok(engines)
    }

    /// The Swarm, while the services' images go into the nodes; returns the
    /// services whose images went in.
    async fn swarm(
        &self,
        state: &LabState,
        engines: &[Docker],
        routing: Routing,
        images: &BTreeMap<String, images::LocalImage>,
    ) -> Result<BTreeSet<String>> {
        // Not into emulated VMs: there every byte a guest's engine unpacks,
        // and every layer the manager would compress for its own push, costs
        // emulated CPU, so VM labs keep the path `docs/vm-labs.md` measured
        // (the nodes pull what this machine pushed; the deploy waits for
        // it). Loaded, the manager's own push of them timed out in its TLS
        // handshake under TCG (`create --driver qemu --workers 1 -v`,
        // 2026-12-06); pulled, the replicas take long to start (133 s
        // alone), which the replicas' wait allows for.
        let load = async {
            match Self::pace(state) {
                deploy::Pace::Native => self.load_images(&state.registry, engines, images).await,
                deploy::Pace::Emulated => BTreeSet::new(),
            }
        };
        let (formed, loaded) = tokio::join!(self.form_swarm(state, engines, routing), load);
        formed?;
        Ok(loaded)
    }

    /// Loads each service's image into every node under the name it is
    /// pulled by; returns the services whose images went in
    /// (`images::preload`, best effort: the others come from the registry).
    async fn load_images(
        &self,
        registry: &RegistryState,
        engines: &[Docker],
        images: &BTreeMap<String, images::LocalImage>,
    ) -> BTreeSet<String> {
        join_all(images.iter().map(|(service, image)| async move {
            let pulled = registry::pull_reference(registry, image);
            images::preload(&self.ui, &self.host, image, &pulled, engines)
                .await
                .then(|| service.clone())
        }))
        .await
        .into_iter()
        .flatten()
        .collect()
    }

    /// Loads the edge proxy's image into the managers, the nodes that run
    /// it, under a name of the lab registry; returns that name. Like
    /// the registry's own image it never goes through the registry: its
    /// task's pull is refused there (`manifest unknown`), which the engine
    /// only logs before it starts the loaded image (moby's `controller.go`,
    /// Prepare), and nothing else ever pulls it.
    async fn load_edge(
        &self,
        registry: &RegistryState,
        managers: &[Docker],
        image: &images::LocalImage,
    ) -> Result<String> {
        let started = Instant::now();
        let pulled = registry::pull_reference(registry, image);
        images::load_as(&self.host, image, &pulled, managers).await?;
        self.ui.detail(format!(
            "loaded {pulled} into {} manager{} ({} ms)",
            managers.len(),
            plural(managers.len() as u32),
            started.elapsed().as_millis()
        ));
        Ok(pulled)
    }

    /// keepalived on every manager, for the virtual `$ManagerIP`
    /// (`steps::vip`), checking the ports the lab publishes.
    async fn move_manager_ip(
        &self,
        managers: &[vip::Manager],
        vip: std::net::Ipv4Addr,
        engines: &[Docker],
        image: &images::LocalImage,
    ) -> Result<()> {
        let started = Instant::now();
        let ports: Vec<u16> = if self.options.no_deploy {
            Vec::new()
        } else {
            plan::published_ports(&self.spec)
        };
        let plan = vip::Plan {
            lab: &self.name,
            vip,
            managers,
            ports: &ports,
        };
        let plan = &plan;
        try_join_all(engines.iter().enumerate().map(|(me, engine)| async move {
            images::copy(&self.host, engine, image).await?;
            vip::start(engine, plan, me, image).await
        }))
        .await?;
        self.ui.detail(format!(
            "keepalived on {} managers for {vip} ({} ms)",
            managers.len(),
            started.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Starts the registry on the manager (on every manager, where
    /// `$ManagerIP` is virtual) as soon as its engine answers, and fills
    /// each with the services' images: those the nodes have loaded
    /// (`loaded`, once known) pushed by the manager's own engine, any other
    /// from this machine's through a gateway. Says so on `pushed` when the
    /// registries have them all.
    async fn fill_registry(
        &self,
        state: &LabState,
        authority: &Authority,
        node_image: &str,
        images: &BTreeMap<String, images::LocalImage>,
        signals: RegistrySignals,
    ) -> Result<()> {
        let RegistrySignals { loaded, pushed } = signals;
        let hosts = registry::hosts(state);
        let pace = Self::pace(state);
        let registry_image = images::registry(&self.host, node_image).await?;
        let engines = try_join_all(hosts.iter().map(|host| {
            let registry_image = &registry_image;
            async move {
                let engine = engines::wait_for_engine(
                    &self.ui,
                    host,
                    &self.dir.client_certs(),
                    pace,
                    || self.provider.ensure_running(host),
                )
                .await?;
                images::copy(&self.host, &engine, registry_image).await?;
                let mut addresses = vec![host.address.into()];
                addresses.extend(state.vip.map(std::net::IpAddr::from));
                let tls = authority.server(&[host.hostname.as_str()], &addresses)?;
                registry::start(
                    &engine,
                    &self.name,
                    registry::listen(state, host),
                    registry_image,
                    &tls,
                    authority.cert_pem(),
                )
                .await?;
                Ok::<_, Error>(engine)
            }
        }))
        .await?;
        if images.is_empty() {
            pushed.send_replace(true);
            return Ok(());
        }
        let loaded = loaded
            .clone()
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::failed("the Swarm was not formed"))?
            .clone()
            .unwrap_or_default();
        let (on_manager, from_here): (Vec<_>, Vec<_>) = images
            .iter()
            .partition(|(service, _)| loaded.contains(*service));
        let registry = &state.registry;
        let from_managers = try_join_all(hosts.iter().zip(&engines).flat_map(|(host, engine)| {
            on_manager.iter().map(move |(_, image)| async move {
                let to = registry::push_address_on(state, host);
                let pulled = registry::push_loaded(engine, registry, &to, image).await?;
                self.ui
                    .detail(format!("pushed {pulled} from {} to {to}", host.hostname));
                Ok::<_, Error>(())
            })
        }));
        let from_this_machine = try_join_all(hosts.iter().enumerate().map(|(i, host)| {
            let from_here = &from_here;
            async move {
                if from_here.is_empty() {
                    return Ok(());
                }
                let relay = self.provider.forward(host, RegistryState::PORT, 0).await?;
                // A fixed --registry-port for the first gateway only.
                let port = if i == 0 { self.spec.registry.port } else { 0 };
                let gateway = registry::gateway(
                    relay.local,
                    port,
                    host.address,
                    authority.cert_pem(),
                    &authority.client()?,
                )
                .await?;
                registry::wait_ready(&gateway).await?;
                self.ui
                    .detail(format!("registry answers on {}", host.hostname));
                let push_address = gateway.local.to_string();
                try_join_all(from_here.iter().map(|(_, image)| async {
                    let pulled = registry::push(&self.host, &push_address, registry, image).await?;
                    self.ui
                        .detail(format!("pushed {pulled} to {}", host.hostname));
                    Ok::<_, Error>(())
                }))
                .await
                .map(drop)
            }
        }));
        tokio::try_join!(from_managers, from_this_machine)?;
        pushed.send_replace(true);
        Ok(())
    }

    async fn form_swarm<'a>(
        &'a self,
        state: &'a LabState,
        engines: &'a [Docker],
        routing: Routing,
    ) -> Result<()> {
        let joins = state.nodes.len() - 1;
        let step = self.ui.step(format!(
            "Forming the Swarm 🐝 (init, {joins} join{}, {})",
            plural(joins as u32),
            self.spec.network
        ));
        let leader = &state.nodes[0];
        let manager = &engines[0];
        let tokens = swarm::init(manager, leader, &self.dir).await?;
        if routing == Routing::Edge {
            swarm::remove_ingress(manager).await?;
        }
        let join = |node: &'a NodeState, engine: &'a Docker| {
            let tokens = &tokens;
            async move {
                swarm::join(engine, node, leader, tokens).await?;
                self.ui.detail(format!("{} joined", node.hostname));
                self.provider.ensure_running(node).await
            }
        };
        let (managers, workers): (Vec<_>, Vec<_>) = state
            .nodes
            .iter()
            .zip(engines)
            .skip(1)
            .partition(|(node, _)| node.role == Role::Manager);
        // Managers one at a time: each join is a Raft membership change,
        // which Raft makes one at a time. Two at once under TCG timed out
        // in the engine's own join (`create --driver qemu --managers 3
        // --workers 0`, 2026-12-06: "Timeout was reached before node
        // joined"). Workers join meanwhile, together.
        let managers = async {
            for (node, engine) in managers {
                join(node, engine).await?;
            }
            Ok::<_, Error>(())
        };
        let workers = try_join_all(workers.into_iter().map(|(node, engine)| join(node, engine)));
        tokio::try_join!(managers, workers)?;
        swarm::create_overlay(manager, &self.spec.network, &self.name).await?;
        step.done();
        Ok(())
    }

    /// Mesh or edge, from what the manager found when it tried to load
    /// IPVS (a dind node through the host's /lib/modules, mounted in):
    /// asked while the engines start, so that the edge proxy's image goes
    /// to the manager only when it will route.
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

    /// The services, by their names in the lab registry; each recorded in
    /// the state.
    #[allow(clippy::too_many_arguments)]
    async fn deploy(
        &self,
        state: &mut LabState,
        services: &[spec::ServiceSpec],
        manager: &Docker,
        routing: Routing,
        pulls: &Pulls,
        loaded: &BTreeSet<String>,
        revisions: &BTreeMap<String, images::Revision>,
    ) -> Result<()> {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let step = self.ui.step(format!("Deploying {} 🚀", names.join(", ")));
        for service in services {
            let image = pulls.for_service(&service.name, loaded).await?;
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
                cpus: service.cpus,
            };
            deploy::create(manager, &self.name, &deployment, routing).await?;
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
    /// the manager stands in for the routing mesh (`edge`: its image, as
    /// loaded there, and its routes).
    async fn replicas_beside_routing(
        &self,
        state: &LabState,
        services: &[spec::ServiceSpec],
        manager: &Docker,
        edge: Option<(String, Vec<edge::Route>)>,
    ) -> Result<()> {
        let edge = edge.filter(|(_, routes)| !routes.is_empty());
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut line = format!("Waiting for the replicas of {} ⏳", names.join(", "));
        if edge.is_some() {
            line += " (and routing $ManagerIP to them through HAProxy on every manager)";
        }
        let step = self.ui.step(line);
        let converged = try_join_all(services.iter().map(|service| {
            wait::until_converged(
                manager,
                &self.ui,
                &service.name,
                replicas_of(state, &service.name),
                None,
                // Emulated VMs pull every image from the lab registry and
                // gunzip it under TCG: 133 s from the deploy to every
                // replica running alone (2026-12-06), and 0/2 after 540 s beside
                // a busy CI run.
                Self::pace(state).patience_for_pulls(Duration::from_secs(180)),
            )
        }));
        let routed = async {
            let Some((image, routes)) = &edge else {
                return Ok(());
            };
            edge::deploy(
                manager,
                &self.name,
                image,
                &self.spec.network,
                routes,
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
        services: &[spec::ServiceSpec],
    ) -> Result<Vec<ServiceSummary>> {
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
            let url = format!("http://{}{probe}", state.entry(port)?);
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
            manager_ip: state
                .manager_ip()
                .map_or_else(|_| leader.reached_at().to_string(), |ip| ip.to_string()),
            manager_ip_moves: state.vip.is_some(),
            managers: self.spec.managers,
            workers: self.spec.workers,
            registry: state.registry.pull_address.clone(),
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
        let vip = async {
            if plan::moves_manager_ip(&self.spec) {
                images::vip(&self.host, node_image).await.map(Some)
            } else {
                Ok(None)
            }
        };
        if self.options.no_deploy {
            return Ok(LabImages {
                node: node_image.to_string(),
                vip: vip.await?,
                ..LabImages::default()
            });
        }
        let services = async {
            match built {
                Some(built) => Ok(built),
                None => self.build_services().await,
            }
        };
        let (edge, vip, built, (prebuilt, skipped)) = tokio::try_join!(
            images::edge(&self.host, node_image),
            vip,
            services,
            self.prebuilt_images()
        )?;
        let mut made = LabImages {
            node: node_image.to_string(),
            edge: Some(edge),
            vip,
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
fn edge_routes(services: &[spec::ServiceSpec]) -> Vec<edge::Route> {
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

/// Where the nodes pull each service's image from, and the sender that
/// says when the registry has them all.
fn pulls(
    registry: &RegistryState,
    images: &BTreeMap<String, images::LocalImage>,
) -> (watch::Sender<bool>, Pulls) {
    let by_service = images
        .iter()
        .map(|(service, image)| (service.clone(), registry::pull_reference(registry, image)))
        .collect();
    let (pushed, receiver) = watch::channel(false);
    (
        pushed,
        Pulls {
            by_service,
            pushed: receiver,
        },
    )
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
