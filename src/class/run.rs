//! Making, resetting and removing a class, lab by lab.
//!
//! `create` builds every image once, saves the class (so that anything
//! interrupted can be found and removed), then makes the labs a few at a
//! time with [`crate::create::create`], each reporting to its own line of
//! the class's progress. A lab that fails is retried once; one that fails
//! again is reported and the others stay usable. Ctrl-C rolls the whole
//! class back.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bollard::Docker;
use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;

use crate::class::capacity::{self, Facts, Fit, Footprint};
use crate::class::console::{self, ConsoleSpec};
use crate::class::state::{self, ClassDir, ClassState, Learner, LearnerStatus};
use crate::class::token::Token;
use crate::create::{self, Options, Request};
use crate::error::{Context, Error, Result};
use crate::lab::kind::ProviderKind;
use crate::lab::spec::{self, LoadedSpec};
use crate::lab::state::{LabDir, LabState};
use crate::ui::Ui;

/// What `class create` is asked for.
pub struct ClassRequest {
    pub name: String,
    pub learners: u32,
    pub driver: Option<ProviderKind>,
    /// Labs made at once.
    pub parallel: usize,
}

/// How a class's creates report: one [`Ui`] per lab, and each lab's end.
pub trait Progress: Send + Sync {
    /// The lines of lab `lab`'s create.
    fn lab_ui(&self, lab: &str) -> Ui;
    /// A lab failed once and is made again.
    fn retrying(&self, lab: &str, error: &str);
    /// A lab is done: up, or failed for good with this error.
    fn finished(&self, lab: &str, outcome: std::result::Result<(), &str>);
}

/// A class that exists now, and which of its labs failed.
pub struct Made {
    pub state: ClassState,
    pub fit: Fit,
    pub seconds: f64,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The spec every lab of a class is made from, with the driver applied;
/// and the footprint of one lab for the capacity check.
fn class_spec(driver: Option<ProviderKind>) -> Result<(LoadedSpec, Footprint)> {
    let mut loaded = spec::load(None)?;
    let vm_memory = crate::lab::overrides::for_class(&mut loaded.spec, driver)?;
    let mut footprint = capacity::DIND_LAB;
    if let Some(memory) = vm_memory {
        footprint.memory = memory;
    }
    Ok((loaded, footprint))
}

/// Checks what can be checked before anything is made: the name, the
/// count against this machine, and that neither the class nor any of its
/// labs exists.
pub async fn preflight(request: &ClassRequest) -> Result<(LoadedSpec, Fit)> {
    state::validate_name(&request.name)?;
    let (loaded, footprint) = class_spec(request.driver)?;
    let host = crate::docker::connect_host().await?;
    let engine = crate::preflight::engine_facts(&host).await;
    let facts = crate::preflight::host_facts(Some(&engine), false).await;
    let fit = capacity::check(request.learners, &Facts::of(&facts), &footprint)?;
    let dir = ClassDir::new(&request.name);
    if dir.exists() {
        return Err(Error::usage(format!(
            "class '{0}' already exists: use it, or remove it with `goblog-lab class destroy --name {0}`",
            request.name
        )));
    }
    for number in 1..=request.learners {
        let lab = state::lab_name(&request.name, number);
        if LabDir::new(&lab).exists() {
            return Err(Error::usage(format!(
                "lab '{lab}' already exists and would be learner {number}'s: pick another class name, or `goblog-lab destroy --name {lab}`"
            )));
        }
    }
    Ok((loaded, fit))
}

/// Makes the class. Returns once every lab is up or failed twice; `stop`
/// (Ctrl-C) rolls everything back and returns [`Error::Interrupted`].
pub async fn create(
    request: ClassRequest,
    ui: &Ui,
    progress: &dyn Progress,
    stop: impl Future<Output = ()>,
) -> Result<Made> {
    let started = Instant::now();
    let (loaded, fit) = preflight(&request).await?;
    ui.warn(loaded.spec.driver.unwrap_or_default().class_isolation());
    let host = crate::docker::connect_host().await?;
    let dir = ClassDir::new(&request.name);
    let mut learners = Vec::new();
    for number in 1..=request.learners {
        learners.push(Learner {
            number,
            name: format!("learner-{number}"),
            lab: state::lab_name(&request.name, number),
            token: Token::generate()?,
            status: LearnerStatus::Creating,
            error: None,
            last_deploy_unix: None,
        });
    }
    let class = ClassState {
        name: request.name.clone(),
        driver: loaded.spec.driver.unwrap_or_default(),
        created_unix: now_unix(),
        board_token: Token::generate()?,
        learners,
    };
    // Saved before anything is made: an interrupted create leaves a class
    // that `class destroy` knows.
    dir.save(&class)?;
    let shared = Arc::new(Mutex::new(class));
    let (stopping, stopped) = watch::channel(false);
    let work = async {
        let images = crate::steps::images::prepare(&host, &loaded, ui).await?;
        if *stopped.borrow() {
            return Err(Error::Interrupted);
        }
        let step = ui.step(format!(
            "Making {} labs, {} at a time 🏫",
            request.learners, request.parallel
        ));
        let seats: Vec<Learner> = shared.lock().unwrap().learners.clone();
        let class_name = request.name.as_str();
        let deploy_url = format!(
            "http://{}:{}",
            console::ensure_class_network(&host, class_name).await?,
            console::DEPLOY_PORT
        );
        let deploy_url = deploy_url.as_str();
        stream::iter(seats)
            .map(|seat| {
                let number = seat.number;
                let shared = shared.clone();
                let loaded = &loaded;
                let node = &images.node;
                let host = &host;
                let dir = &dir;
                let stopped = stopped.clone();
                async move {
                    let outcome = make_learner(
                        class_name, &seat, deploy_url, loaded, node, host, progress, stopped,
                    )
                    .await;
                    let mut class = shared.lock().unwrap();
                    let learner = &mut class.learners[number as usize - 1];
                    match &outcome {
                        Ok(()) => learner.status = LearnerStatus::Ready,
                        Err(err) => {
                            learner.status = LearnerStatus::Failed;
                            learner.error = Some(err.to_string());
                        }
                    }
                    dir.save(&class)?;
                    match outcome {
                        Err(Error::Interrupted) => Err(Error::Interrupted),
                        _ => Ok(()),
                    }
                }
            })
            .buffer_unordered(request.parallel.max(1))
            .collect::<Vec<Result<()>>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        step.done();
        Ok::<_, Error>(())
    };
    // On Ctrl-C each lab's create is told to stop and rolls itself back
    // (its own requests in flight included); then the class goes.
    tokio::pin!(work);
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = stop => {
            stopping.send_replace(true);
            let _ = work.await;
            Err(Error::Interrupted)
        }
    };
    if let Err(err) = outcome {
        stopping.send_replace(true);
        let step = ui.step(format!("Rolling back class '{}' 🧹", request.name));
        destroy(&request.name, ui).await?;
        step.done();
        return Err(err);
    }
    let state = shared.lock().unwrap().clone();
    if state
        .learners
        .iter()
        .all(|l| l.status == LearnerStatus::Failed)
    {
        let why = state.learners[0].error.clone().unwrap_or_default();
        destroy(&request.name, ui).await?;
        return Err(Error::failed(format!(
            "no lab of class '{}' came up; the first said: {why}",
            request.name
        )));
    }
    Ok(Made {
        state,
        fit,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One learner's lab and console; the lab is tried twice.
#[allow(clippy::too_many_arguments)]
async fn make_learner(
    class: &str,
    seat: &Learner,
    deploy_url: &str,
    loaded: &LoadedSpec,
    node_image: &str,
    host: &Docker,
    progress: &dyn Progress,
    stopped: watch::Receiver<bool>,
) -> Result<()> {
    let number = seat.number;
    let lab = state::lab_name(class, number);
    if *stopped.borrow() {
        return Err(Error::Interrupted);
    }
    let ui = progress.lab_ui(&lab);
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        let request = Request {
            name: lab.clone(),
            loaded: loaded.clone(),
            options: Options::default(),
        };
        let mut stopped = stopped.clone();
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let outcome = match create::create(request, &ui, stop).await {
            Ok(created) => {
                let place = Place {
                    class,
                    seat,
                    deploy_url,
                    node_image,
                    host,
                    loaded,
                };
                add_console(&place, created.state, &ui).await
            }
            Err(err) => Err(err),
        };
        match outcome {
            Err(err) if attempt == 1 && !matches!(err, Error::Interrupted) => {
                progress.retrying(&lab, &err.to_string());
                // What the failed create left (its console, say) goes first.
                let _ = console::remove(host, class, number).await;
                let _ = crate::destroy::lab(&lab, &ui).await;
            }
            outcome => break outcome,
        }
    };
    match &outcome {
        Ok(()) => progress.finished(&lab, Ok(())),
        Err(err) => progress.finished(&lab, Err(&err.to_string())),
    }
    outcome
}

/// What a learner's console is made from, besides their lab.
struct Place<'a> {
    class: &'a str,
    seat: &'a Learner,
    deploy_url: &'a str,
    node_image: &'a str,
    host: &'a Docker,
    loaded: &'a LoadedSpec,
}

/// The learner's copy of the services' workspace, where their deploys
/// build from: `classes/CLASS/work/N`, made once (a reset keeps it) by
/// `scripts/service-workspace.sh`, the same copy the tests edit.
fn learner_workspace(place: &Place) -> Result<std::path::PathBuf> {
    let dir = ClassDir::new(place.class)
        .root
        .join("work")
        .join(place.seat.number.to_string());
    if !dir.join("Cargo.toml").exists() {
        let script = place
            .loaded
            .project_root
            .join("scripts/service-workspace.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|err| Error::failed(format!("running {}: {err}", script.display())))?;
        if !output.status.success() {
            return Err(Error::failed(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        stamp_version(&dir, place.class, place.seat.number)?;
    }
    Ok(dir)
}

/// Gives the learner's accountservice a version of its own
/// (`0.1.0+CLASS-N`): cargo names a path package's compiled units by name
/// and version, not by path, so the learners' copies and the checkout,
/// sharing one build cache, would otherwise take one another's builds for
/// their own whenever their files are older (a deploy answered "up to
/// date" for an edit so, in `tests/class.rs`). Deps stay shared.
pub fn stamp_version(workspace: &std::path::Path, class: &str, number: u32) -> Result<()> {
    let path = workspace.join("accountservice/Cargo.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| Error::failed(format!("reading {}: {err}", path.display())))?;
    let mut manifest: toml::Table = text
        .parse()
        .map_err(|err| Error::failed(format!("{}: {err}", path.display())))?;
    let package = manifest
        .get_mut("package")
        .and_then(|p| p.as_table_mut())
        .ok_or_else(|| Error::failed(format!("{} has no [package]", path.display())))?;
    let version = package
        .get("version")
        .and_then(|v| v.as_str())
        .unwrap_or("0.1.0")
        .split('+')
        .next()
        .unwrap_or("0.1.0")
        .to_string();
    package.insert(
        "version".into(),
        toml::Value::String(format!("{version}+{class}-{number}")),
    );
    let text = toml::to_string(&manifest).expect("a parsed manifest serialises");
    std::fs::write(&path, text)
        .map_err(|err| Error::failed(format!("writing {}: {err}", path.display())))
}

/// The learner's console beside their lab, and their workspace, which the
/// lab's state names as where its services are built from.
async fn add_console(place: &Place<'_>, mut lab: LabState, ui: &Ui) -> Result<()> {
    let step = ui.step("Starting the learner's console 🖥");
    let dir = LabDir::new(&lab.name);
    let workspace = learner_workspace(place)?;
    lab.project_root = Some(workspace);
    dir.save(&lab)?;
    let provider = crate::provider::for_lab(&lab, &dir, ui).await?;
    let leader = lab.leader()?;
    let certs = dir.client_certs();
    let source = place.loaded.project_root.join("accountservice");
    let class_network = console::class_network(place.class);
    let spec = ConsoleSpec {
        class: place.class,
        number: place.seat.number,
        image: place.node_image,
        network: provider.host_network(),
        docker_host: format!("tcp://{}:{}", leader.address, leader.docker_port),
        manager_ip: leader.address.to_string(),
        certs: &certs,
        source: &source,
        class_network: &class_network,
        deploy_url: place.deploy_url.to_string(),
        token: &place.seat.token,
    };
    let name = console::create(place.host, &spec).await?;
    // A provider that fences its machines off (qemu's bridge) lets this
    // console through, on every address it has.
    let inspect = place
        .host
        .inspect_container(&name, None)
        .await
        .with_context(|| format!("inspecting console {name}"))?;
    let addresses: Vec<std::net::Ipv4Addr> = inspect
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .values()
        .filter_map(|e| e.ip_address.as_deref()?.parse().ok())
        .collect();
    provider.admit(&addresses).await?;
    step.done();
    Ok(())
}

/// Destroys learner `who`'s lab and makes it again, console included (the
/// source volume, with the learner's edits, is kept). The other labs are
/// not touched.
pub async fn reset(class_name: &str, who: &str, ui: &Ui) -> Result<f64> {
    let started = Instant::now();
    state::validate_name(class_name)?;
    let dir = ClassDir::new(class_name);
    let class = dir.load()?;
    let learner = class.learner(who).cloned().ok_or_else(|| {
        Error::usage(format!(
            "class '{class_name}' has no learner {who:?}: give a number 1-{}, or a name from `goblog-lab class status`",
            class.learners.len()
        ))
    })?;
    set_status(&dir, learner.number, LearnerStatus::Resetting, None)?;
    let host = crate::docker::connect_host().await?;
    let outcome = async {
        let (loaded, _) = class_spec(Some(class.driver))?;
        let step = ui.step(format!(
            "Removing {}'s lab '{}' 🔥",
            learner.name, learner.lab
        ));
        console::remove(&host, class_name, learner.number).await?;
        crate::destroy::lab(&learner.lab, ui).await?;
        step.done();
        let node = crate::steps::node_image::ensure(&host).await?;
        let request = Request {
            name: learner.lab.clone(),
            loaded: loaded.clone(),
            options: Options::default(),
        };
        let created = create::create(request, ui, std::future::pending()).await?;
        let deploy_url = format!(
            "http://{}:{}",
            console::ensure_class_network(&host, class_name).await?,
            console::DEPLOY_PORT
        );
        let place = Place {
            class: class_name,
            seat: &learner,
            deploy_url: &deploy_url,
            node_image: &node,
            host: &host,
            loaded: &loaded,
        };
        add_console(&place, created.state, ui).await
    }
    .await;
    match &outcome {
        Ok(()) => set_status(&dir, learner.number, LearnerStatus::Ready, None)?,
        Err(err) => set_status(
            &dir,
            learner.number,
            LearnerStatus::Failed,
            Some(err.to_string()),
        )?,
    }
    outcome.map(|()| started.elapsed().as_secs_f64())
}

/// Records a learner's status in the saved class (read again first: the
/// server and the command line may both be changing it).
pub fn set_status(
    dir: &ClassDir,
    number: u32,
    status: LearnerStatus,
    error: Option<String>,
) -> Result<()> {
    let mut class = dir.load()?;
    if let Some(learner) = class.learners.iter_mut().find(|l| l.number == number) {
        learner.status = status;
        learner.error = error;
    }
    dir.save(&class)
}

/// Records that learner `number` just deployed.
pub fn deployed_now(class_name: &str, number: u32) -> Result<()> {
    let dir = ClassDir::new(class_name);
    let mut class = dir.load()?;
    if let Some(learner) = class.learners.iter_mut().find(|l| l.number == number) {
        learner.last_deploy_unix = Some(now_unix());
    }
    dir.save(&class)
}

/// What `class destroy` removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Removed {
    pub labs: usize,
    pub consoles: usize,
    pub volumes: usize,
}

/// Removes every console, source volume and lab of the class, and its
/// files; works on a class whose state is gone (by label and lab name),
/// and twice in a row.
pub async fn destroy(class_name: &str, ui: &Ui) -> Result<Removed> {
    state::validate_name(class_name)?;
    let dir = ClassDir::new(class_name);
    let host = crate::docker::connect_host().await?;
    let (consoles, volumes) = console::remove_class(&host, class_name).await?;
    let mut labs: Vec<String> = match dir.load() {
        Ok(class) => class.learners.into_iter().map(|l| l.lab).collect(),
        Err(_) => Vec::new(),
    };
    // Labs of the class whose entries are gone: CLASS-N by name.
    let ours = |lab: &str| {
        lab.strip_prefix(class_name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let mut found: Vec<String> = crate::lab::state::saved_labs();
    found.extend(
        crate::docker::Labelled::of_all_labs(&host)
            .await?
            .lab_names(),
    );
    for lab in found {
        if ours(&lab) && !labs.contains(&lab) {
            labs.push(lab);
        }
    }
    let mut removed = Removed {
        consoles,
        volumes,
        ..Removed::default()
    };
    let results = futures_util::future::join_all(
        labs.iter()
            .map(|lab| async move { crate::destroy::lab(lab, ui).await }),
    )
    .await;
    for result in results {
        if let crate::destroy::Gone::Removed(_) = result? {
            removed.labs += 1;
        }
    }
    dir.remove()?;
    Ok(removed)
}
