//! Rebuilding a service from source and rolling it out with no failed
//! request, as a library call: `goblog-lab deploy` and a class learner's
//! `deploy` from their console both use it.
//!
//! It tags the image by its content, pushes it to the lab registry and
//! lets Swarm roll it out start-first: each new task is healthy before an
//! old one stops, so a client hammering `$ManagerIP` sees no failed
//! request. The content tag is also how it knows there is nothing to do.

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use serde::Serialize;

use crate::error::{Context, Error, Result};
use crate::lab::spec::BuildSpec;
use crate::lab::state::{LabState, RegistryHost, RegistryState};
use crate::open::OpenLab;
use crate::pki::Bundle;
use crate::provider;
use crate::steps::deploy::{self, Placement};
use crate::steps::{images, registry, wait};
use crate::ui::Ui;

/// What one service's deploy did, as printed (text or JSON).
#[derive(Debug, Serialize)]
pub struct Deployed {
    pub service: String,
    /// The image tag that ran before.
    pub from: Option<String>,
    pub to: String,
    pub changed: bool,
    pub replicas: u64,
    pub seconds: Timings,
    pub placement: Vec<Placement>,
}

/// Where the time went: the share of the build is what a workshop asks
/// about first.
#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub build: f64,
    pub push: f64,
    pub rollout: f64,
    /// From the command to every replica serving the new image.
    pub serving: f64,
    /// Also until the old tasks are gone.
    pub total: f64,
}

/// Pushes through a relay to the registry on the manager, held open for
/// the push; an older lab's registry on this machine takes it directly.
/// Where every manager runs a registry, each that answers gets the image:
/// one is enough for the rollout, and a manager that was down is named.
async fn push(host: &Docker, lab: &OpenLab, image: &images::LocalImage, ui: &Ui) -> Result<()> {
    let registry = &lab.state.registry;
    if registry.runs_on == RegistryHost::HostEngine {
        return registry::push(host, &registry.push_address, registry, image)
            .await
            .map(drop);
    }
    let provider = provider::for_lab(&lab.state, &lab.dir, ui).await?;
    let certs = lab.dir.client_certs();
    let read = |name: &str| {
        std::fs::read_to_string(certs.join(name))
            .with_context(|| format!("reading {}", certs.join(name).display()))
    };
    let ca = read("ca.pem")?;
    let client = Bundle {
        cert_pem: read("cert.pem")?,
        key_pem: read("key.pem")?,
    };
    let hosts = registry::hosts(&lab.state);
    let pushed = futures_util::future::join_all(hosts.iter().map(|node| {
        let (provider, ca, client) = (&provider, &ca, &client);
        let several = hosts.len() > 1;
        async move {
            let relay = provider.forward(node, RegistryState::PORT, 0).await?;
            let gateway = registry::gateway(relay.local, 0, node.address, ca, client).await?;
            if several {
                registry::answers(&gateway).await?;
            }
            registry::push(host, &gateway.local.to_string(), registry, image)
                .await
                .map(drop)
        }
    }))
    .await;
    let mut first_error = None;
    let mut any = false;
    for (node, result) in hosts.iter().zip(pushed) {
        match result {
            Ok(()) => any = true,
            Err(err) if hosts.len() > 1 => {
                ui.warn(format!(
                    "{}'s registry did not get {}: {err}",
                    node.hostname,
                    image.reference()
                ));
                first_error.get_or_insert(err);
            }
            Err(err) => return Err(err),
        }
    }
    match (any, first_error) {
        (false, Some(err)) => Err(err),
        _ => Ok(()),
    }
}

/// The services to rebuild: the one named, or every one built from source.
pub fn targets(state: &LabState, named: Option<&str>) -> Result<Vec<(String, BuildSpec)>> {
    let built: Vec<(String, BuildSpec)> = state
        .services
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.build.clone()?)))
        .collect();
    let Some(named) = named else {
        if built.is_empty() {
            return Err(Error::usage(format!(
                "lab '{}' builds no service from source: there is nothing to deploy",
                state.name
            )));
        }
        return Ok(built);
    };
    match state.services.iter().find(|s| s.name == named) {
        None => Err(deploy::no_such_service(state, named)),
        Some(service) => match &service.build {
            Some(build) => Ok(vec![(service.name.clone(), build.clone())]),
            None => Err(Error::usage(format!(
                "service '{named}' runs the prebuilt image {}; deploy rebuilds services built from source ({})",
                service.image,
                built
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// Builds `service` from `project_root` (compiling in `cache`), pushes
/// its image and rolls it out to `lab`, waiting until every replica runs it.
#[allow(clippy::too_many_arguments)]
pub async fn service(
    host: &Docker,
    lab: &mut OpenLab,
    project_root: &Path,
    cache: &Path,
    service: &str,
    build: &BuildSpec,
    replicas: Option<u64>,
    ui: &Ui,
) -> Result<Deployed> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let mut running = deploy::running(&lab.manager, &lab.state, service).await?;
    let previous = running.image().map(str::to_string);
    let replicas_before = running.replicas();

    let step = ui.step(format!(
        "Building {service} from {} 🔨",
        project_root.display()
    ));
    let lab_packages: Vec<String> = lab
        .state
        .services
        .iter()
        .filter_map(|s| Some(s.build.as_ref()?.package.clone()))
        .collect();
    let lab_packages: Vec<&str> = lab_packages.iter().map(String::as_str).collect();
    let compiled = images::deploy_build(project_root, cache, &build.package, &lab_packages).await?;
    let revision = compiled.revision.clone();
    let (target, built) = match runs_revision(&lab.state, service, previous.as_deref(), &revision) {
        Some(running) => (running.to_string(), None),
        None => {
            let built = images::deploy_image(host, project_root, service, build, compiled).await?;
            let target = registry::pull_reference(&lab.state.registry, &built.image);
            (target, Some(built.image))
        }
    };
    let tag = images::LocalImage::parse(&target).tag;
    timings.build = started.elapsed().as_secs_f64();
    step.done_with(tag.clone());

    let wanted = replicas.or(replicas_before).unwrap_or(1);
    let mut deployed = Deployed {
        service: service.to_string(),
        from: previous
            .as_deref()
            .map(|p| images::LocalImage::parse(p).tag),
        to: tag.clone(),
        changed: false,
        replicas: wanted,
        seconds: timings,
        placement: Vec::new(),
    };
    let new_image = previous.as_deref() != Some(target.as_str());
    if !new_image && replicas.is_none_or(|r| Some(r) == replicas_before) {
        // Swarm is the truth; the saved state may lag it after an
        // interrupted deploy.
        remember(lab, service, &target, wanted, &revision)?;
        deployed.seconds.total = started.elapsed().as_secs_f64();
        deployed.placement = deploy::placement(&lab.manager, service).await?;
        return Ok(deployed);
    }

    if let Some(image) = built.as_ref().filter(|_| new_image) {
        let pushing = Instant::now();
        let step = ui.step(format!(
            "Pushing {}:{} to the lab registry 📤",
            service, image.tag
        ));
        push(host, lab, image, ui).await?;
        deployed.seconds.push = pushing.elapsed().as_secs_f64();
        step.done();
    }

    let rolling = Instant::now();
    let plural = if wanted == 1 { "" } else { "s" };
    let step = ui.step(if new_image {
        format!(
            "Rolling out {service}:{tag} to {wanted} replica{plural} 🔄 (new task healthy before an old one stops)"
        )
    } else {
        format!("Scaling {service} to {wanted} replica{plural} ⚖ (the image is unchanged)")
    });
    running.set_image(&target);
    if let Some(replicas) = replicas {
        running.set_replicas(replicas)?;
    }
    running.update(&lab.manager, "updating").await?;
    let serving = wait::until_converged(
        &lab.manager,
        ui,
        service,
        wanted,
        Some(&target),
        Duration::from_secs(300),
    )
    .await?;
    deployed.seconds.serving = serving.duration_since(started).as_secs_f64();
    deployed.seconds.rollout = rolling.elapsed().as_secs_f64();
    step.done();

    remember(lab, service, &target, wanted, &revision)?;
    deployed.changed = true;
    if let Some(from) = deployed.from.as_ref().filter(|_| new_image) {
        images::forget_if_unused(host, service, from).await;
    }
    deployed.placement = deploy::placement(&lab.manager, service).await?;
    deployed.seconds.total = started.elapsed().as_secs_f64();
    Ok(deployed)
}

/// The image Swarm runs, when it was built from the sources of `revision`.
/// The image `create` ships comes from the image profile, so its tag is not
/// the deploy build's: the revision saved beside it says whether the
/// sources moved. An image Swarm runs that the state does not know (an
/// interrupted deploy) counts as changed.
fn runs_revision<'a>(
    state: &LabState,
    service: &str,
    running: Option<&'a str>,
    revision: &images::Revision,
) -> Option<&'a str> {
    running.filter(|running| {
        state.services.iter().any(|saved| {
            saved.name == service
                && saved.image == *running
                && saved.revision.as_deref() == Some(revision.0.as_str())
        })
    })
}

/// Saves what the service now runs, if the state says otherwise.
fn remember(
    lab: &mut OpenLab,
    service: &str,
    image: &str,
    replicas: u64,
    revision: &images::Revision,
) -> Result<()> {
    let Some(saved) = lab.state.services.iter_mut().find(|s| s.name == service) else {
        return Ok(());
    };
    let revision = Some(revision.0.clone());
    if saved.image != image || saved.replicas != replicas || saved.revision != revision {
        saved.image = image.to_string();
        saved.replicas = replicas;
        saved.revision = revision;
        lab.dir.save(&lab.state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::ServiceState;

    fn lab() -> LabState {
        let mut state = LabState::new(
            "goblog",
            Default::default(),
            "my_network",
            RegistryState {
                runs_on: RegistryHost::Manager,
                container: "goblog-lab-registry".into(),
                push_address: String::new(),
                pull_address: "172.28.3.10:5000".into(),
            },
        );
        let service = |name: &str, build: Option<BuildSpec>| ServiceState {
            name: name.into(),
            image: format!("{name}:1"),
            replicas: 1,
            ports: vec![],
            probe: None,
            build,
            revision: None,
        };
        state.services = vec![
            service(
                "accountservice",
                Some(BuildSpec {
                    package: "accountservice".into(),
                    context: "images/accountservice".into(),
                }),
            ),
            service("quotes-service", None),
        ];
        state
    }

    #[test]
    fn the_running_image_is_kept_only_for_the_saved_revision() {
        let mut state = lab();
        state.services[0].revision = Some("aaaaaaaaaaaa".into());
        let same = images::Revision("aaaaaaaaaaaa".into());
        let moved = images::Revision("bbbbbbbbbbbb".into());
        let running = Some("accountservice:1");
        assert_eq!(
            runs_revision(&state, "accountservice", running, &same),
            running
        );
        assert_eq!(
            runs_revision(&state, "accountservice", running, &moved),
            None
        );
        // Swarm runs an image the state does not know: build and roll out.
        assert_eq!(
            runs_revision(&state, "accountservice", Some("accountservice:2"), &same),
            None
        );
        assert_eq!(runs_revision(&state, "accountservice", None, &same), None);
        // A lab saved before revisions were recorded compares image tags.
        state.services[0].revision = None;
        assert_eq!(
            runs_revision(&state, "accountservice", running, &same),
            None
        );
    }

    #[test]
    fn deploy_without_a_name_rebuilds_every_built_service() {
        let targets = targets(&lab(), None).unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].0, "accountservice");
    }

    #[test]
    fn deploy_of_an_unknown_or_prebuilt_service_says_why() {
        let unknown = targets(&lab(), Some("nosuch")).unwrap_err().to_string();
        assert!(unknown.contains("no service 'nosuch'"), "{unknown}");
        assert!(
            unknown.contains("accountservice, quotes-service"),
            "{unknown}"
        );
        let prebuilt = targets(&lab(), Some("quotes-service"))
            .unwrap_err()
            .to_string();
        assert!(
            prebuilt.contains("prebuilt image quotes-service:1"),
            "{prebuilt}"
        );
    }
}
