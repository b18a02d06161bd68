//! `goblog-lab create`: from nothing to the accountservice answering on
//! `$ManagerIP:6767`.
//!
//! Like kind's `create/actions`, a create is an ordered list of small
//! steps over one context ([`Lab`]), each with its own status line: images,
//! machines (from the provider), engines (the provisioner), the Swarm with
//! the registry beside it, the deploy, routing, and the wait for answers.
//! Only the machines step and the provisioner know which provider made the
//! nodes. If any step fails or the user presses Ctrl-C, what was made is
//! removed again, unless `--retain` asks to keep it for inspection.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::future::try_join_all;
use serde::Serialize;

use crate::cli::{CreateArgs, Output, PublishChoice};
use crate::docker::{self, Labelled};
use crate::error::{Error, Result};
use crate::lab::name;
use crate::lab::spec::{self, LoadedSpec};
use crate::lab::state::{
    Endpoint, LabDir, LabState, NodeState, Publish, RegistryState, Role, Routing, ServiceState,
    SshState,
};
use crate::pki::Authority;
use crate::provider::dind::DindProvider;
use crate::provider::docker_machine;
use crate::provider::qemu::QemuProvider;
use crate::provider::ssh::SshProvider;
use crate::provider::{MachinePlan, Provider, ProviderKind, Reached};
use crate::provision::{self, EngineConfig};
use crate::routing::{IpvsProbe, RoutingChoice, RoutingDecision};
use crate::steps::{deploy, edge, engines, images, node_image, registry, swarm, wait};
use crate::ui::{seconds, Ui};

/// What `create` prints when it is done (as text or JSON).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub name: String,
    /// The provider that made the machines: dind or ssh.
    pub driver: String,
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

pub async fn run(args: CreateArgs, ui: &Ui) -> Result<()> {
    name::validate(&args.name)?;
    let mut loaded = spec::load(args.file.as_deref())?;
    apply_flags(&mut loaded, &args)?;
    if let Some(warning) = spec::even_managers_warning(loaded.spec.managers) {
        ui.warn(warning);
    }
    registry::check_port_free(loaded.spec.registry.port)?;
    if loaded.spec.driver == Some(ProviderKind::Qemu) {
        // Before anything else: without root or QEMU nothing can be made.
        crate::provider::qemu::preflight()?;
    }

    let checks_started = Instant::now();
    let host = docker::connect_host().await?;
    preflight(&host, &loaded, &args).await?;
    ui.detail(format!(
        "checked this machine in {} ms (`goblog-lab doctor` shows every finding)",
        checks_started.elapsed().as_millis()
    ));
    let dir = LabDir::new(&args.name);
    if dir.exists() || !Labelled::of_lab(&host, &args.name).await?.is_empty() {
        return Err(Error::LabExists(args.name.clone()));
    }
    let (provider, own_keys) = make_provider(&host, &loaded, &args, &dir, ui)?;
    let mut lab = Lab {
        name: args.name.clone(),
        host,
        dir,
        loaded,
        args,
        ui: ui.clone(),
        provider,
        own_keys,
        node_image: String::new(),
        built: None,
        revisions: BTreeMap::new(),
        authority: None,
        engines: Vec::new(),
        state: None,
        pulled: BTreeMap::new(),
        pushing: None,
        edge_image: None,
        skipped: Vec::new(),
        routing: Routing::Edge,
        routing_why: String::new(),
        services: Vec::new(),
    };

    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = lab.run_steps() => outcome,
        () = interrupted() => Err(Error::Interrupted),
    };
    match outcome {
        Ok(()) => {
            let summary = lab.summary(started.elapsed());
            print_summary(&summary, lab.args.output);
            Ok(())
        }
        Err(err) => {
            if lab.args.retain {
                ui.warn(format!(
                    "--retain: keeping the partial lab; `goblog-lab destroy --name {}` removes it",
                    lab.name
                ));
            } else {
                roll_back(&lab, ui).await;
            }
            Err(err)
        }
    }
}

/// `doctor`'s checks that matter for this driver, before anything is
/// made: the first blocking one is the error, word for word.
async fn preflight(host: &Docker, loaded: &LoadedSpec, args: &CreateArgs) -> Result<()> {
    let engine = crate::preflight::engine_facts(host).await;
    let machine = crate::preflight::host_facts(Some(&engine), false).await;
    let driver = loaded.spec.driver.unwrap_or(ProviderKind::Dind);
    let mut findings = crate::preflight::judge_for_create(&engine, &machine, driver, args.routing);
    match crate::preflight::first_blocking(&mut findings) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// The command line's overrides of the lab file, and their consistency.
fn apply_flags(loaded: &mut LoadedSpec, args: &CreateArgs) -> Result<()> {
    let spec = &mut loaded.spec;
    if let Some(workers) = args.workers {
        spec.workers = workers;
    }
    if let Some(managers) = args.managers {
        spec.managers = managers;
    }
    if let Some(port) = args.registry_port {
        spec.registry.port = port;
    }
    if let Some(driver) = args.driver {
        spec.driver = Some(driver);
    }
    let driver = spec.driver.unwrap_or(ProviderKind::Dind);
    let hosts_given = !args.ssh_managers.is_empty() || !args.ssh_workers.is_empty();
    if driver != ProviderKind::Ssh && (hosts_given || args.ssh_key.is_some()) {
        return Err(Error::usage(
            "--manager, --worker and --ssh-key name SSH hosts: add --driver ssh",
        ));
    }
    if driver != ProviderKind::DockerMachine && !args.machines.is_empty() {
        return Err(Error::usage(
            "--machines names docker-machine machines: add --driver docker-machine",
        ));
    }
    if driver != ProviderKind::Dind && args.publish == PublishChoice::Localhost {
        return Err(Error::usage(
            "--publish localhost is for dind labs, whose nodes are containers: VMs and hosts are reached at their own addresses",
        ));
    }
    if driver != ProviderKind::Qemu && args.memory.is_some() {
        return Err(Error::usage("--memory sizes VMs: add --driver qemu"));
    }
    let adopts = matches!(driver, ProviderKind::Ssh | ProviderKind::DockerMachine);
    if !adopts && (args.install_docker || args.accept_new_host_keys) {
        return Err(Error::usage(
            "--install-docker and --accept-new-host-keys are for hosts the lab adopts: add --driver ssh or --driver docker-machine",
        ));
    }
    match driver {
        ProviderKind::Dind => {}
        ProviderKind::Qemu => {
            let vm = spec.vm.get_or_insert_with(Default::default);
            if let Some(memory) = args.memory {
                vm.memory = memory;
            }
        }
        ProviderKind::Ssh => {
            let ssh = spec.ssh.get_or_insert_with(Default::default);
            if hosts_given {
                ssh.managers = args.ssh_managers.clone();
                ssh.workers = args.ssh_workers.clone();
            }
            if let Some(key) = &args.ssh_key {
                ssh.key = Some(key.clone());
            }
            if ssh.managers.is_empty() {
                return Err(Error::usage(
                    "--driver ssh needs at least one --manager USER@HOST[:PORT] (and a --worker for each worker)",
                ));
            }
            if args.workers.is_some() || args.managers.is_some() {
                return Err(Error::usage(
                    "--driver ssh counts the hosts given with --manager and --worker: drop --workers/--managers",
                ));
            }
            spec.managers = ssh.managers.len() as u32;
            spec.workers = ssh.workers.len() as u32;
        }
        ProviderKind::DockerMachine => {
            if args.machines.is_empty() {
                return Err(Error::usage(
                    "--driver docker-machine needs --machines NAME,NAME,... (managers first; `docker-machine ls` lists them)",
                ));
            }
            if args.workers.is_some() {
                return Err(Error::usage(
                    "--driver docker-machine counts the machines given with --machines: drop --workers",
                ));
            }
            let managers = args.managers.unwrap_or(1);
            if managers as usize > args.machines.len() {
                return Err(Error::usage(format!(
                    "--managers {managers} is more than the {} machines given",
                    args.machines.len()
                )));
            }
            spec.managers = managers;
            spec.workers = (args.machines.len() as u32) - managers;
        }
    }
    spec::check_counts(spec.managers, spec.workers)
}

fn make_provider(
    host: &Docker,
    loaded: &LoadedSpec,
    args: &CreateArgs,
    dir: &LabDir,
    ui: &Ui,
) -> Result<(Box<dyn Provider>, BTreeMap<String, PathBuf>)> {
    let mut own_keys = BTreeMap::new();
    let provider: Box<dyn Provider> = match loaded.spec.driver.unwrap_or(ProviderKind::Dind) {
        ProviderKind::Dind => Box::new(
            DindProvider::new(host.clone(), &args.name, ui.clone())
                .publishing(args.publish.forced()),
        ),
        ProviderKind::Qemu => Box::new(QemuProvider::new(
            &args.name,
            dir,
            loaded.spec.vm.as_ref().map_or(512, |vm| vm.memory),
            ui.clone(),
        )?),
        ProviderKind::DockerMachine => {
            let machines =
                docker_machine::read_all(&docker_machine::storage_path(), &args.machines)?;
            let hosts: Vec<String> = machines.iter().map(|m| m.ssh_target()).collect();
            own_keys = machines
                .iter()
                .map(|m| (m.ssh_target(), m.ssh_key.clone()))
                .collect();
            for machine in &machines {
                ui.detail(format!(
                    "{} ({} driver): {} with {}",
                    machine.name,
                    machine.driver,
                    machine.ssh_target(),
                    machine.ssh_key.display()
                ));
            }
            Box::new(
                SshProvider::new(dir, &hosts, None, args.accept_new_host_keys, ui.clone())?
                    .with_own_keys(&own_keys),
            )
        }
        ProviderKind::Ssh => {
            let ssh = loaded.spec.ssh.as_ref().expect("checked by apply_flags");
            let hosts: Vec<String> = ssh.managers.iter().chain(&ssh.workers).cloned().collect();
            Box::new(SshProvider::new(
                dir,
                &hosts,
                ssh.key.clone(),
                args.accept_new_host_keys,
                ui.clone(),
            )?)
        }
    };
    Ok((provider, own_keys))
}

/// One create in progress: what the steps share, filled in as they run.
struct Lab {
    name: String,
    host: Docker,
    dir: LabDir,
    loaded: LoadedSpec,
    args: CreateArgs,
    ui: Ui,
    provider: Box<dyn Provider>,
    /// docker-machine's key of each adopted machine, by `user@host:port`.
    own_keys: BTreeMap<String, PathBuf>,
    node_image: String,
    /// Services compiled while the node image was built (a cold create).
    built: Option<BTreeMap<String, images::BuiltService>>,
    /// The source revision of each service built from source.
    revisions: BTreeMap<String, images::Revision>,
    authority: Option<Authority>,
    /// Each node's engine, in the order of `nodes`.
    engines: Vec<Docker>,
    state: Option<LabState>,
    /// What the nodes pull, by service name.
    pulled: BTreeMap<String, String>,
    /// The way into the registry while images are still to be pushed.
    pushing: Option<Pushing>,
    /// The edge proxy's image, pushed while the replicas start.
    edge_image: Option<images::LocalImage>,
    skipped: Vec<Skipped>,
    routing: Routing,
    routing_why: String,
    services: Vec<ServiceSummary>,
}

impl Lab {
    /// The steps, in order.
    async fn run_steps(&mut self) -> Result<()> {
        self.ensure_node_image().await?;
        let images = self.make_machines().await?;
        self.provision_engines().await?;
        self.engines_swarm_and_registry(images).await?;
        if self.args.no_deploy {
            return Ok(());
        }
        self.deploy_services().await?;
        self.converge_and_route().await?;
        self.wait_for_answers().await
    }

    /// True when the machines are hosts that exist already and are given
    /// back on destroy (they are checked before anything changes on them).
    fn adopts_hosts(&self) -> bool {
        matches!(
            self.provider.kind(),
            ProviderKind::Ssh | ProviderKind::DockerMachine
        )
    }

    /// How fast the machines are: emulated VMs get patient health checks
    /// and waits.
    fn pace(&self) -> deploy::Pace {
        self.state
            .as_ref()
            .map_or(deploy::Pace::Native, deploy::Pace::of)
    }

    /// How long to wait for replicas and answers (`Pace::patience`).
    fn patience(&self, native: Duration) -> Duration {
        self.pace().patience(native)
    }

    /// The machines, managers first, as the provider made them.
    fn nodes(&self) -> &[NodeState] {
        self.state.as_ref().map_or(&[], |state| &state.nodes)
    }

    fn spec(&self) -> &spec::LabSpec {
        &self.loaded.spec
    }

    fn state(&mut self) -> &mut LabState {
        self.state.as_mut().expect("saved once the machines exist")
    }

    /// 1. The node image: built with debootstrap once, then cached. On that
    ///    first run the services compile meanwhile; later runs compile them
    ///    while the machines start.
    async fn ensure_node_image(&mut self) -> Result<()> {
        if node_image::is_cached(&self.host).await {
            let step = self.ui.step("Ensuring the node image 🖼");
            self.node_image = node_image::ensure(&self.host).await?;
            step.done_with(format!("{} (cached)", self.node_image));
            return Ok(());
        }
        let step = self.ui.step("Building the node image with debootstrap, and the services 🖼 (once; about two minutes)");
        let (node_image, built) = tokio::try_join!(
            node_image::ensure(&self.host),
            build_services(&self.host, &self.loaded, self.args.no_deploy)
        )?;
        step.done_with(node_image.clone());
        self.node_image = node_image;
        self.built = Some(built);
        Ok(())
    }

    /// 2. The machines, from the provider, while this machine builds the
    ///    images they will pull. Returns those images.
    async fn make_machines(&mut self) -> Result<Images> {
        let spec = self.spec();
        let step = self.ui.step(format!(
            "{} 📦 ({} manager{}, {} worker{})",
            match self.provider.kind() {
                ProviderKind::Dind => "Starting nodes",
                ProviderKind::Ssh | ProviderKind::DockerMachine => {
                    "Connecting to the hosts and checking them"
                }
                ProviderKind::Qemu => "Booting VMs",
            },
            spec.managers,
            plural(spec.managers),
            spec.workers,
            plural(spec.workers)
        ));
        let plans = machine_plans(spec);
        let adopts_hosts = self.adopts_hosts();
        let manager_ports = self.manager_ports();
        let (nodes, images) = tokio::try_join!(
            async {
                let nodes = self.provider.create(&plans).await?;
                if adopts_hosts {
                    if self.args.install_docker {
                        try_join_all(
                            nodes
                                .iter()
                                .map(|n| provision::install_docker(&*self.provider, n)),
                        )
                        .await?;
                    }
                    provision::preflight(&*self.provider, &nodes, &manager_ports).await?;
                }
                Ok::<_, Error>(nodes)
            },
            build_images(
                &self.host,
                &self.loaded,
                &self.node_image,
                self.args.no_deploy,
                self.built.take(),
                &self.ui,
            )
        )?;
        let mut state = LabState::new(
            &self.name,
            self.provider.kind().as_str(),
            &self.spec().network,
            registry::on_manager(nodes[0].address),
        );
        if self.adopts_hosts() {
            state.ssh = Some(SshState {
                key: self.spec().ssh.as_ref().and_then(|s| s.key.clone()),
                keys: self.own_keys.clone(),
            });
        }
        state.vm = self.provider.vm_state();
        state.publish = self.provider.publish();
        state.nodes = nodes;
        state.project_root = Some(self.loaded.project_root.clone());
        self.dir.save(&state)?;
        self.state = Some(state);
        self.revisions = images.revisions;
        self.skipped = images.skipped;
        step.done();
        Ok(images.images)
    }

    /// 3. Each engine configured for the address its machine reported.
    async fn provision_engines(&mut self) -> Result<()> {
        let step = self.ui.step("Configuring the engines for TLS on :2376 🔐");
        let authority = Authority::create(&self.name)?;
        authority.save(&self.dir)?;
        let registry = self.state().registry.pull_address.clone();
        let config = EngineConfig {
            authority: &authority,
            registry: &registry,
        };
        try_join_all(
            self.nodes()
                .iter()
                .map(|node| provision::provision(&*self.provider, node, &config)),
        )
        .await?;
        self.authority = Some(authority);
        step.done();
        Ok(())
    }

    /// 4-5. Every engine answering over TLS, then the Swarm. Meanwhile, as
    ///      soon as the manager's engine answers, the registry starts there
    ///      and the images go into it: only the deploy needs them.
    async fn engines_swarm_and_registry(&mut self, mut images: Images) -> Result<()> {
        // The edge proxy is pushed while the replicas start: only the last
        // step, the answer through $ManagerIP, needs it.
        self.edge_image = images.remove(edge::SERVICE_NAME);
        let certs = self.dir.client_certs();
        let provider = &*self.provider;
        let leader = &self.nodes()[0];
        let registry_ready = std::sync::atomic::AtomicBool::new(false);
        let registry_filled = async {
            let manager = engines::wait_for_engine(&self.ui, leader, &certs, || {
                provider.ensure_running(leader)
            })
            .await?;
            let filled = self.fill_registry(&manager, images).await?;
            registry_ready.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(filled)
        };
        let swarm_formed = async {
            let step = self.ui.step("Waiting for the node engines 🐳");
            let engines = try_join_all(self.nodes().iter().map(|node| {
                engines::wait_for_engine(&self.ui, node, &certs, || provider.ensure_running(node))
            }))
            .await?;
            step.done();
            let routing = self.form_swarm(&engines).await?;
            // The registry's own line, for the time it still takes once the
            // Swarm is up (on VMs under TCG, a minute and more), so the wait
            // has a name.
            let registry_step =
                (!registry_ready.load(std::sync::atomic::Ordering::SeqCst)).then(|| {
                    self.ui.step(format!(
                        "Starting the lab registry on {} and pushing the images 📦",
                        leader.hostname
                    ))
                });
            Ok::<_, Error>((engines, routing, registry_step))
        };
        let ((pulled, pushing), (engines, routing, registry_step)) =
            tokio::try_join!(registry_filled, swarm_formed)?;
        if let Some(step) = registry_step {
            step.done();
        }
        self.pulled = pulled;
        self.pushing = pushing;
        self.engines = engines;
        self.routing = routing.routing;
        self.routing_why = routing.why;
        let state = self.state.as_mut().expect("saved");
        state.routing = self.routing;
        self.dir.save(state)
    }

    /// Starts the registry on the manager and pushes `images` to it;
    /// returns what the nodes pull, and the way in for later pushes.
    async fn fill_registry(
        &self,
        manager: &Docker,
        images: Images,
    ) -> Result<(BTreeMap<String, String>, Option<Pushing>)> {
        let leader = &self.nodes()[0];
        let registry_image = images::registry(&self.host, &self.node_image).await?;
        images::copy(&self.host, manager, &registry_image).await?;
        let tls = self
            .authority
            .as_ref()
            .expect("made by provision_engines")
            .server(&[leader.hostname.as_str()], &[leader.address.into()])?;
        let authority = self.authority.as_ref().expect("made by provision_engines");
        let registry = registry::start(
            manager,
            &self.name,
            leader.address,
            &registry_image,
            &tls,
            authority.cert_pem(),
        )
        .await?;
        if images.is_empty() && self.edge_image.is_none() {
            return Ok((BTreeMap::new(), None));
        }
        let relay = self
            .provider
            .forward(leader, RegistryState::PORT, 0)
            .await?;
        let gateway = registry::gateway(
            relay.local,
            self.spec().registry.port,
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
        Ok((pushed.into_iter().collect(), Some(pushing)))
    }

    async fn form_swarm(&self, engines: &[Docker]) -> Result<RoutingDecision> {
        let step = self.ui.step(format!(
            "Forming the Swarm 🐝 (init, {} join{}, {})",
            self.nodes().len() - 1,
            plural(self.nodes().len() as u32 - 1),
            self.spec().network
        ));
        let leader = &self.nodes()[0];
        let manager = &engines[0];
        let decision = self.decide_routing(leader).await?;
        let routing = decision.routing;
        let tokens = swarm::init(manager, leader, &self.dir).await?;
        if routing == Routing::Edge {
            swarm::remove_ingress(manager).await?;
        }
        try_join_all(
            self.nodes()
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
        swarm::create_overlay(manager, &self.spec().network, &self.name).await?;
        step.done();
        Ok(decision)
    }

    /// Mesh or edge, from what the manager found when it tried to load
    /// IPVS (a dind node through the host's /lib/modules, mounted in).
    async fn decide_routing(&self, leader: &NodeState) -> Result<RoutingDecision> {
        let probe = if self.args.routing == RoutingChoice::Edge {
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
        crate::routing::decide_routing(self.args.routing, &probe)
    }

    /// 6. The services, from the lab registry.
    async fn deploy_services(&mut self) -> Result<()> {
        let services: Vec<spec::ServiceSpec> = self.deployed_specs();
        let step = self.ui.step(format!(
            "Deploying {} 🚀",
            services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let manager = self.engines[0].clone();
        for service in &services {
            let image = self
                .pulled
                .get(&service.name)
                .cloned()
                .expect("every deployed service's image was pushed");
            let deployment = deploy::Deployment {
                name: service.name.clone(),
                image,
                replicas: service
                    .replicas
                    .map_or(self.nodes().len() as u64, u64::from),
                ports: service.ports.clone(),
                env: service
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                network: self.spec().network.clone(),
                pace: self.pace(),
            };
            deploy::create(&manager, &self.name, &deployment, self.routing).await?;
            let revision = self.revisions.get(&service.name).map(|r| r.0.clone());
            self.state().services.push(ServiceState {
                name: deployment.name,
                image: deployment.image,
                replicas: deployment.replicas,
                ports: deployment.ports,
                probe: service.probe.clone(),
                build: service.build.clone(),
                revision,
            });
        }
        let state = self.state.as_ref().expect("saved");
        self.dir.save(state)?;
        step.done();
        Ok(())
    }

    /// The ports the lab listens on at its first manager: the registry's,
    /// and those the services publish (the tutorial's `$ManagerIP:6767`).
    fn manager_ports(&self) -> Vec<provision::ManagerPort> {
        let registry = provision::ManagerPort {
            port: RegistryState::PORT,
            purpose: "the lab registry".into(),
        };
        if self.args.no_deploy {
            return vec![registry];
        }
        let published = self.spec().services.iter().flat_map(|service| {
            service.ports.iter().map(|&port| provision::ManagerPort {
                port,
                purpose: format!("the {} service it publishes", service.name),
            })
        });
        std::iter::once(registry).chain(published).collect()
    }

    fn deployed_specs(&self) -> Vec<spec::ServiceSpec> {
        self.spec()
            .services
            .iter()
            .filter(|s| !self.skipped.iter().any(|skip| skip.name == s.name))
            .cloned()
            .collect()
    }

    /// 7-8. Every replica running while, without IPVS, HAProxy on the
    /// manager is pushed and set to stand in for the routing mesh.
    async fn converge_and_route(&mut self) -> Result<()> {
        let routes = self.edge_routes();
        let services = self.deployed_specs();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let mut line = format!("Waiting for the replicas of {} ⏳", names.join(", "));
        if routes.is_some() {
            line += &format!(
                " (and routing $ManagerIP to them through HAProxy on {})",
                self.nodes()[0].hostname
            );
        }
        let step = self.ui.step(line);
        let converged = try_join_all(services.iter().map(|service| {
            wait::until_converged(
                &self.engines[0],
                &self.ui,
                &service.name,
                self.replicas_of(&service.name),
                None,
                self.patience(Duration::from_secs(180)),
            )
        }));
        let routed = async {
            match &routes {
                Some(routes) => self.route_edge(routes).await,
                None => Ok(()),
            }
        };
        tokio::try_join!(converged, routed)?;
        step.done();
        // The gateway and relay are not needed past here.
        self.pushing = None;
        Ok(())
    }

    /// The edge proxy's routes, when the lab routes through it.
    fn edge_routes(&self) -> Option<Vec<edge::Route>> {
        let routes: Vec<edge::Route> = self
            .deployed_specs()
            .iter()
            .flat_map(|s| {
                s.ports.iter().map(move |&port| edge::Route {
                    service: s.name.clone(),
                    port,
                    health_path: s.health_path.clone(),
                })
            })
            .collect();
        (self.routing == Routing::Edge && !routes.is_empty()).then_some(routes)
    }

    async fn route_edge(&self, routes: &[edge::Route]) -> Result<()> {
        let image = self.edge_image.as_ref().expect("built with the services");
        let pushing = self.pushing.as_ref().expect("opened with the registry");
        let pulled = pushing.push(self, image).await?;
        let leader = &self.nodes()[0];
        edge::deploy(
            &self.engines[0],
            &self.name,
            &pulled,
            &self.spec().network,
            &leader.hostname,
            routes,
            self.pace(),
        )
        .await
    }

    fn replicas_of(&self, service: &str) -> u64 {
        self.state
            .as_ref()
            .and_then(|state| state.services.iter().find(|s| s.name == service))
            .map_or(1, |s| s.replicas)
    }

    /// 9. Up means the services answering through `$ManagerIP`, as the
    ///    tutorial will call them, from every replica.
    async fn wait_for_answers(&mut self) -> Result<()> {
        let leader = self.nodes()[0].clone();
        for service in self.deployed_specs() {
            let replicas = self.replicas_of(&service.name);
            let (Some(&port), Some(probe)) = (service.ports.first(), service.probe.as_ref()) else {
                self.services.push(ServiceSummary {
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
            let answer = wait::until_answers(&self.ui, &url, replicas, self.pace()).await?;
            step.done();
            self.services.push(ServiceSummary {
                name: service.name.clone(),
                replicas,
                url: Some(url),
                served_by: answer.served_by.into_iter().collect(),
            });
        }
        Ok(())
    }

    fn summary(&mut self, took: Duration) -> Summary {
        let leader = &self.nodes()[0];
        let state = self.state.as_ref().expect("saved once the machines exist");
        Summary {
            name: self.name.clone(),
            driver: self.provider.kind().as_str().to_string(),
            manager_ip: leader.reached_at().to_string(),
            managers: self.spec().managers,
            workers: self.spec().workers,
            registry: registry::pull_address(leader.address),
            routing: self.routing,
            routing_why: self.routing_why.clone(),
            publish: state.publish,
            endpoints: state.endpoints(),
            accel: self
                .state
                .as_ref()
                .and_then(|s| s.vm.as_ref())
                .map(|vm| vm.accel.clone()),
            services: std::mem::take(&mut self.services),
            skipped: self.skipped.clone(),
            seconds: took.as_secs_f64(),
        }
    }
}

/// The images the nodes pull, by service name.
type Images = BTreeMap<String, images::LocalImage>;

/// The lab registry, reachable from this machine's engine for as long as
/// this is held: its gateway on 127.0.0.1 and the provider's forward.
struct Pushing {
    registry: RegistryState,
    gateway: registry::Gateway,
    _relay: crate::provider::Forward,
}

impl Pushing {
    async fn push(&self, lab: &Lab, image: &images::LocalImage) -> Result<String> {
        let push_address = self.gateway.local.to_string();
        let pulled = registry::push(&lab.host, &push_address, &self.registry, image).await?;
        lab.ui.detail(format!("pushed {pulled}"));
        Ok(pulled)
    }
}

/// The services built from this repository (cargo, then their images).
async fn build_services(
    host: &Docker,
    loaded: &LoadedSpec,
    no_deploy: bool,
) -> Result<BTreeMap<String, images::BuiltService>> {
    if no_deploy {
        return Ok(BTreeMap::new());
    }
    let built = images::built_services(host, &loaded.project_root, &loaded.spec.services).await?;
    Ok(built.into_iter().collect())
}

/// What step 2 readies besides the machines.
#[derive(Default)]
struct LabImages {
    /// What the nodes pull from the lab registry, by service name: the
    /// edge proxy, the built services and the prebuilt ones.
    images: Images,
    /// The source revision of each built service, for `deploy`.
    revisions: BTreeMap<String, images::Revision>,
    /// The optional services left out, with why.
    skipped: Vec<Skipped>,
}

/// The images of the lab, the built services among them unless step 1
/// built them already.
async fn build_images(
    host: &Docker,
    loaded: &LoadedSpec,
    node_image: &str,
    no_deploy: bool,
    built: Option<BTreeMap<String, images::BuiltService>>,
    ui: &Ui,
) -> Result<LabImages> {
    if no_deploy {
        return Ok(LabImages::default());
    }
    let services = async {
        match built {
            Some(built) => Ok(built),
            None => build_services(host, loaded, no_deploy).await,
        }
    };
    let (edge, built, (prebuilt, skipped)) = tokio::try_join!(
        images::edge(host, node_image),
        services,
        prebuilt_images(host, loaded, ui)
    )?;
    let mut made = LabImages {
        skipped,
        ..LabImages::default()
    };
    for (name, service) in built {
        made.images.insert(name.clone(), service.image);
        made.revisions.insert(name, service.revision);
    }
    made.images.insert(edge::SERVICE_NAME.to_string(), edge);
    made.images.extend(prebuilt);
    Ok(made)
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
                // One short line: offline, the pull's error is a long DNS
                // failure, and it would be printed here and in the summary.
                let reason =
                    format!("{reference} is not on this machine's engine and could not be pulled");
                ui.detail(format!("pulling {reference}: {err}"));
                ui.warn(format!(
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

/// Nodes are named as in the blog: swarm-manager-0, swarm-worker-0, ...
/// (a provider that adopts hosts keeps the hosts' own names). This host
/// calls the first manager on the services' ports (`$ManagerIP:6767`), on
/// the registry's, where it pushes, and on the edge proxy's stats port.
fn machine_plans(spec: &spec::LabSpec) -> Vec<MachinePlan> {
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

/// Removes what the failed create made. A request that was in flight when
/// the create was abandoned can still land a moment later, so it sweeps
/// until a pass finds nothing.
async fn roll_back(lab: &Lab, ui: &Ui) {
    let step = ui.step(format!("Rolling back lab '{}'", lab.name));
    let mut failures = Vec::new();
    let passes = if lab.provider.kind() == ProviderKind::Dind {
        6
    } else {
        1
    };
    for pass in 0..passes {
        match lab.provider.remove(lab.state.as_ref()).await {
            Ok(removed) if removed.is_empty() && pass > 0 => break,
            Ok(_) => {}
            Err(err) => failures.push(err.to_string()),
        }
        if passes > 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if let Err(err) = lab.dir.remove() {
        failures.push(err.to_string());
    }
    if failures.is_empty() {
        step.done();
    } else {
        drop(step);
        ui.warn(format!(
            "rollback incomplete ({}); `goblog-lab destroy --name {}` retries it",
            failures.join("; "),
            lab.name
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
        Routing::Edge => "edge proxy on the first manager",
    };
    let routing = format!("{routing}: {}", summary.routing_why);
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
    println!(
        "  registry   {} (TLS with the lab CA; push with the `docker` of `goblog-lab env`)",
        summary.registry
    );
    println!("  routing    {routing}");
    if summary.publish == Publish::Localhost {
        println!("  published  on 127.0.0.1 only (--publish localhost):");
        for e in &summary.endpoints {
            println!("               {:<16} {}", e.node, e.describe());
        }
    }
    if let Some(accel) = &summary.accel {
        println!(
            "  VMs        {}",
            if accel == "kvm" {
                "KVM"
            } else {
                "TCG, software emulation (no working KVM here): expect minutes, not seconds"
            }
        );
    }
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
