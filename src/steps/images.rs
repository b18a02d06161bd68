//! Images the nodes run as services: the edge proxy and the services of the
//! lab definition that are built from this repository.
//!
//! Each is tagged with a hash of exactly what went into it, so an unchanged
//! service is not rebuilt, and a changed one gets a new tag that Swarm sees
//! as a new image to roll out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use futures_util::future::try_join_all;
use sha2::{Digest, Sha256};

use crate::docker::drain;
use crate::error::{Context, Error, Result};
use crate::lab::spec::{BuildSpec, ServiceSpec};

const EDGE_DOCKERFILE: &str = include_str!("../../images/edge/Dockerfile");
const REGISTRY_DOCKERFILE: &str = include_str!("../../images/registry/Dockerfile");
const VIP_DOCKERFILE: &str = include_str!("../../images/vip/Dockerfile");

/// An image on the host engine: `repository:tag`.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub repository: String,
    pub tag: String,
}

impl LocalImage {
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
    /// The name under the lab registry: `goblog-lab/accountservice` becomes `accountservice`.
    pub fn short_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// Splits `registry:5000/name:tag`; no tag means `latest`.
    pub fn parse(reference: &str) -> LocalImage {
        let reference = without_digest(reference);
        let slash = reference.rfind('/').map_or(0, |i| i + 1);
        match reference[slash..].rsplit_once(':') {
            Some((name, tag)) => LocalImage {
                repository: format!("{}{name}", &reference[..slash]),
                tag: tag.to_string(),
            },
            None => LocalImage {
                repository: reference.to_string(),
                tag: "latest".into(),
            },
        }
    }
}

/// `name:tag@sha256:...` → `name:tag`: Swarm may pin a digest to what it
/// was given, and comparisons are by tag.
pub fn without_digest(reference: &str) -> &str {
    reference.split('@').next().unwrap_or(reference)
}

/// The image a task template runs, without a pinned digest.
pub fn template_image(template: Option<&bollard::models::TaskSpec>) -> Option<&str> {
    let image = template?.container_spec.as_ref()?.image.as_deref()?;
    Some(without_digest(image))
}

/// A prebuilt image, made ready for the lab registry: the host engine's
/// copy when it has one (so a workshop can `docker pull` once, before going
/// offline), else pulled by the host engine now. The error says why not.
pub async fn prebuilt(docker: &Docker, reference: &str) -> Result<LocalImage> {
    let image = LocalImage::parse(reference);
    if docker.inspect_image(&image.reference()).await.is_ok() {
        return Ok(image);
    }
    let options = CreateImageOptionsBuilder::default()
        .from_image(&image.repository)
        .tag(&image.tag)
        .build();
    let action = format!("pulling {}", image.reference());
    let pull = drain(docker.create_image(Some(options), None, None), &action);
    match tokio::time::timeout(Duration::from_secs(120), pull).await {
        Ok(pulled) => pulled.map(|_| image),
        Err(_) => Err(Error::failed(format!(
            "pulling {} took over 2 minutes",
            image.reference()
        ))),
    }
}

/// The edge proxy image, built from the node image (no registry needed).
pub async fn edge(docker: &Docker, node_image: &str) -> Result<LocalImage> {
    from_node_image(docker, "goblog-lab/edge", EDGE_DOCKERFILE, node_image).await
}

/// The lab registry's image: docker-registry alone, out of the node image.
pub async fn registry(docker: &Docker, node_image: &str) -> Result<LocalImage> {
    from_node_image(
        docker,
        "goblog-lab/registry",
        REGISTRY_DOCKERFILE,
        node_image,
    )
    .await
}

/// The virtual address's image: keepalived alone, out of the node image.
pub async fn vip(docker: &Docker, node_image: &str) -> Result<LocalImage> {
    from_node_image(docker, "goblog-lab/vip", VIP_DOCKERFILE, node_image).await
}

/// An image made by copying a program out of the node image, tagged by
/// the Dockerfile and the node image it came from.
async fn from_node_image(
    docker: &Docker,
    repository: &str,
    dockerfile: &str,
    node_image: &str,
) -> Result<LocalImage> {
    let mut hash = Sha256::new();
    hash.update(dockerfile);
    hash.update(node_image);
    let image = LocalImage {
        repository: repository.into(),
        tag: hex::encode(hash.finalize())[..12].to_string(),
    };
    if docker.inspect_image(&image.reference()).await.is_ok() {
        return Ok(image);
    }
    let context = tar_context(&[("Dockerfile".into(), dockerfile.as_bytes().to_vec(), 0o644)])?;
    build_image(
        docker,
        &image,
        context,
        HashMap::from([("BASE".to_string(), node_image.to_string())]),
    )
    .await?;
    Ok(image)
}

/// Copies an image from one engine to another (`docker save | docker
/// load`), for the one image the lab registry cannot serve: its own.
pub async fn copy(from: &Docker, to: &Docker, image: &LocalImage) -> Result<()> {
    use futures_util::StreamExt;
    if to.inspect_image(&image.reference()).await.is_ok() {
        return Ok(());
    }
    let reference = image.reference();
    let saved = from.export_image(&reference);
    let to = to.clone().with_timeout(IMAGE_TRANSFER_TIMEOUT);
    let mut loading = to.import_image_stream(
        bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build(),
        saved,
        None,
    );
    while let Some(progress) = loading.next().await {
        progress.with_context(|| format!("copying {reference} to the manager's engine"))?;
    }
    Ok(())
}

/// How long one image may take to load into a node's engine. A node
/// client's requests time out after 120 s (`docker::node_client`), which a
/// VM under TCG, beside a busy clean-clone CI run, missed while importing the
/// registry's image (`copying goblog-lab/registry:… to the manager's engine:
/// Timeout error`, 2026-12-06); a load that is only slow is waited for.
const IMAGE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Images larger than this are left to the lab registry: each node would
/// load the uncompressed image from this machine, where a pull moves it
/// compressed over the lab's own network.
const PRELOAD_MAX_BYTES: i64 = 32 << 20;

/// Loads `image` from this machine's engine into each of `engines`, named
/// there `as_reference` (what a Swarm task pulls), while the Swarm forms.
///
/// A task still pulls before it starts (moby's executor always does for a
/// reference by tag), but a pull whose manifest names an image config the
/// engine has already stops after the manifest (`pullSchema2Layers` in
/// moby's distribution/pull_v2.go): one request instead of the layers,
/// their decompression and extraction, on every node at once, on the way
/// from `service create` to the first answer. If the registry does not
/// have the image yet the pull fails, which the executor only logs, and the
/// task starts from the loaded image.
///
/// Best effort: on any failure the nodes pull from the registry as before;
/// says which, in `-v`. Returns whether every engine has the image.
pub async fn preload(
    ui: &crate::ui::Ui,
    from: &Docker,
    image: &LocalImage,
    as_reference: &str,
    engines: &[Docker],
) -> bool {
    let started = std::time::Instant::now();
    match try_preload(from, image, as_reference, engines).await {
        Ok(true) => {
            ui.detail(format!(
                "loaded {as_reference} into {} engine{} ({} ms)",
                engines.len(),
                if engines.len() == 1 { "" } else { "s" },
                started.elapsed().as_millis()
            ));
            true
        }
        Ok(false) => false,
        Err(err) => {
            ui.detail(format!("{as_reference} is left to the registry: {err}"));
            false
        }
    }
}

async fn try_preload(
    from: &Docker,
    image: &LocalImage,
    as_reference: &str,
    engines: &[Docker],
) -> Result<bool> {
    let reference = image.reference();
    let size = from
        .inspect_image(&reference)
        .await
        .with_context(|| format!("inspecting {reference}"))?
        .size
        .unwrap_or(i64::MAX);
    if size > PRELOAD_MAX_BYTES {
        return Ok(false);
    }
    load_as(from, image, as_reference, engines).await?;
    Ok(true)
}

/// Loads `image` from this machine's engine into each of `engines`, named
/// there `as_reference` only (as if each had pulled it by that name).
pub async fn load_as(
    from: &Docker,
    image: &LocalImage,
    as_reference: &str,
    engines: &[Docker],
) -> Result<()> {
    use futures_util::TryStreamExt;
    let reference = image.reference();
    let saved: Vec<bytes::Bytes> = from
        .export_image(&reference)
        .try_collect()
        .await
        .with_context(|| format!("saving {reference}"))?;
    let named = LocalImage::parse(as_reference);
    try_join_all(engines.iter().map(|engine| {
        let chunks = saved.clone();
        let (reference, named) = (&reference, &named);
        async move {
            let loading = engine
                .clone()
                .with_timeout(IMAGE_TRANSFER_TIMEOUT)
                .import_image_stream(
                    bollard::query_parameters::ImportImageOptionsBuilder::default()
                        .quiet(true)
                        .build(),
                    futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)),
                    None,
                );
            drain(loading, &format!("loading {reference} into a node")).await?;
            engine
                .tag_image(
                    reference,
                    Some(
                        bollard::query_parameters::TagImageOptionsBuilder::default()
                            .repo(&named.repository)
                            .tag(&named.tag)
                            .build(),
                    ),
                )
                .await
                .with_context(|| format!("tagging {reference} as {as_reference} on a node"))?;
            // Only the registry's name stays, as if the node had pulled it.
            engine
                .remove_image(
                    reference,
                    Some(
                        bollard::query_parameters::RemoveImageOptionsBuilder::default()
                            .noprune(true)
                            .build(),
                    ),
                    None,
                )
                .await
                .with_context(|| format!("untagging {reference} on a node"))?;
            Ok::<_, Error>(())
        }
    }))
    .await?;
    Ok(())
}

/// The workspace's cargo profiles a service binary can come from
/// (`Cargo.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// Size-optimised with one whole-program link: the images `create`
    /// ships, for the smallest resident set (code pages are most of it).
    Image,
    /// Optimised, but incremental and in many codegen units: an edit
    /// rebuilds in seconds, so `deploy` builds this one.
    Deploy,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Image => "image",
            Profile::Deploy => "deploy",
        }
    }
}

/// A service image built from source, and the revision of the sources it
/// was built from.
#[derive(Debug, Clone)]
pub struct BuiltService {
    pub image: LocalImage,
    pub revision: Revision,
}

/// What identifies a service's sources: a hash of its deploy-profile
/// binary, which cargo rebuilds exactly when something that goes into it
/// changed. The image `create` ships comes from another profile, so its own
/// tag cannot tell `deploy` whether the sources moved since; this can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision(pub String);

impl Revision {
    fn of(deploy_binary: &[u8]) -> Revision {
        Revision(hex::encode(Sha256::digest(deploy_binary))[..12].to_string())
    }
}

/// A service compiled with the deploy profile: what `deploy` compares
/// with the lab's record before it builds an image.
pub struct DeployBuild {
    binary: Vec<u8>,
    pub revision: Revision,
}

/// Compiles `package` (with the lab's other packages, see
/// [`built_services`]) in the deploy profile.
pub async fn deploy_build(
    project_root: &Path,
    cache: &Path,
    package: &str,
    lab_packages: &[&str],
) -> Result<DeployBuild> {
    let binary =
        cargo_build_static(project_root, cache, package, lab_packages, Profile::Deploy).await?;
    let revision = Revision::of(&binary);
    Ok(DeployBuild { binary, revision })
}

/// The image of a deploy build.
pub async fn deploy_image(
    docker: &Docker,
    project_root: &Path,
    service: &str,
    build: &BuildSpec,
    compiled: DeployBuild,
) -> Result<BuiltService> {
    let image = image_with(docker, project_root, service, build, compiled.binary).await?;
    Ok(BuiltService {
        image,
        revision: compiled.revision,
    })
}

/// Compiles `build.package` statically in the image profile and builds its
/// image; the deploy build beside it gives the revision (and warms the
/// first `deploy`, which would otherwise compile every dependency anew).
///
/// `lab_packages` are all the packages the lab builds, compiled in the same
/// cargo run: one run keeps both cores busy where one run per package would
/// queue on the build lock. Cargo unifies the features of the packages it
/// builds together, so the set must be the same on every build of a lab,
/// or an unchanged service would get a new binary and a needless rollout.
pub async fn service(
    docker: &Docker,
    project_root: &Path,
    service: &str,
    build: &BuildSpec,
    lab_packages: &[&str],
) -> Result<BuiltService> {
    let cache = target_dir(project_root);
    let shipped = cargo_build_static(
        project_root,
        &cache,
        &build.package,
        lab_packages,
        Profile::Image,
    )
    .await?;
    let compiled = deploy_build(project_root, &cache, &build.package, lab_packages).await?;
    let image = image_with(docker, project_root, service, build, shipped).await?;
    Ok(BuiltService {
        image,
        revision: compiled.revision,
    })
}

/// The image of `binary`: `build.context` with the binary dropped in at
/// its root, tagged by a hash of all of it.
async fn image_with(
    docker: &Docker,
    project_root: &Path,
    service: &str,
    build: &BuildSpec,
    binary: Vec<u8>,
) -> Result<LocalImage> {
    let context_dir = project_root.join(&build.context);
    let mut files = read_context(&context_dir)?;
    files.push((build.package.clone(), binary, 0o755));
    let context = tar_context(&files)?;
    let image = LocalImage {
        repository: format!("goblog-lab/{service}"),
        tag: hex::encode(Sha256::digest(&context))[..12].to_string(),
    };
    if docker.inspect_image(&image.reference()).await.is_err() {
        build_image(docker, &image, context, HashMap::new()).await?;
    }
    Ok(image)
}

/// Every service of a lab definition built from source, by name: the
/// binaries compiled in one cargo run per profile, then the images in
/// parallel.
pub async fn built_services(
    docker: &Docker,
    project_root: &Path,
    services: &[ServiceSpec],
) -> Result<Vec<(String, BuiltService)>> {
    let packages: Vec<&str> = services
        .iter()
        .filter_map(|s| Some(s.build.as_ref()?.package.as_str()))
        .collect();
    let packages = &packages;
    try_join_all(services.iter().filter_map(|spec| {
        let build = spec.build.as_ref()?;
        Some(async move {
            let built = service(docker, project_root, &spec.name, build, packages).await?;
            Ok::<_, Error>((spec.name.clone(), built))
        })
    }))
    .await
}

/// Removes the host engine's copy of a built service image that no saved
/// lab runs any more. Every deploy makes a new tag; without this, a day of
/// workshop edits leaves dozens behind. Best effort: an image still in use
/// (a container, another tag) stays.
pub async fn forget_if_unused(docker: &Docker, service: &str, tag: &str) {
    let suffix = format!("/{service}:{tag}");
    let in_use = crate::lab::state::saved_labs().iter().any(|lab| {
        crate::lab::state::LabDir::new(lab)
            .load()
            .is_ok_and(|state| state.services.iter().any(|s| s.image.ends_with(&suffix)))
    });
    if !in_use {
        let _ = docker
            .remove_image(
                &format!("goblog-lab/{service}:{tag}"),
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

/// Where the services of the checkout at `project_root` compile: its
/// `target/goblog-lab`, or `GOBLOG_LAB_TARGET_DIR`. A class's learners'
/// copies build there too, so their dependencies are compiled once.
pub fn target_dir(project_root: &Path) -> PathBuf {
    std::env::var_os("GOBLOG_LAB_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root.join("target").join("goblog-lab"))
}

/// The static binary of `package`, built with `together` in one cargo run
/// and read into memory. Uses its own target directory so it never waits on
/// (or invalidates) the build of goblog-lab itself; `GOBLOG_LAB_TARGET_DIR`
/// moves it, e.g. to share compiled dependencies between checkouts.
/// Checkouts sharing it write the same output path, so a lock spans the
/// build and the read; whoever takes the lock second finds the shared
/// packages built and cargo returns at once.
async fn cargo_build_static(
    project_root: &Path,
    target_dir: &Path,
    package: &str,
    together: &[&str],
    profile: Profile,
) -> Result<Vec<u8>> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if !project_root.join("Cargo.toml").is_file() {
        return Err(Error::NotACheckout {
            package: package.to_string(),
            root: project_root.display().to_string(),
        });
    }
    std::fs::create_dir_all(target_dir)
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let lock = std::fs::File::create(target_dir.join("goblog-lab-build.lock"))
        .context("creating the service build lock")?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
        .await
        .expect("the lock task does not panic")
        .context("waiting for the service build lock")?;
    let mut packages: Vec<&str> = together.iter().copied().chain([package]).collect();
    packages.sort_unstable();
    packages.dedup();
    let output = tokio::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            profile.name(),
            "--target",
            &triple,
        ])
        .args(packages.iter().flat_map(|p| ["--package", p]))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(project_root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Would override RUSTFLAGS if an outer cargo exported it.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running cargo (is Rust installed? https://rustup.rs)")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_else(|| stderr.lines().last().unwrap_or("no output"));
        return Err(Error::ServiceBuild {
            packages: packages.join(", "),
            profile: profile.name(),
            first_error: first_error.to_string(),
            diagnostics: stderr.trim_end().to_string(),
        });
    }
    let binary = target_dir.join(&triple).join(profile.name()).join(package);
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    drop(lock);
    Ok(bytes)
}

fn read_context(dir: &Path) -> Result<Vec<(String, Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading the image context {}", current.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = entry
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                pending.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .expect("inside the context")
                    .display()
                    .to_string();
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                files.push((name, bytes, meta.permissions().mode() & 0o777));
            }
        }
    }
    Ok(files)
}

fn tar_context(files: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>> {
    crate::tarball::pack(
        files
            .iter()
            .map(|(name, bytes, mode)| (name.as_str(), bytes.as_slice(), *mode)),
    )
}

async fn build_image(
    docker: &Docker,
    image: &LocalImage,
    context: Vec<u8>,
    build_args: HashMap<String, String>,
) -> Result<()> {
    let reference = image.reference();
    let mut labels = HashMap::new();
    labels.insert(
        "io.goblog-lab.image".to_string(),
        image.short_name().to_string(),
    );
    let options = BuildImageOptionsBuilder::default()
        .t(&reference)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .labels(&labels)
        .build();
    drain(
        docker.build_image(options, None, Some(bollard::body_full(context.into()))),
        &format!("building image {reference}"),
    )
    .await?;
    Ok(())
}

/// Every image a lab of `loaded` needs, built ahead of the labs: what
/// `prepare` does, and what a class does once before its labs.
pub struct Prepared {
    pub node: String,
    pub registry: LocalImage,
    pub edge: LocalImage,
    /// Services built from source: name and image reference.
    pub services: Vec<(String, String)>,
}

/// Builds (or finds cached) the node image, the registry's and edge's,
/// and the services from source, each step with its own line on `ui`.
pub async fn prepare(
    docker: &Docker,
    loaded: &crate::lab::spec::LoadedSpec,
    ui: &crate::ui::Ui,
) -> Result<Prepared> {
    let step = ui.step("Building the node image 🖼 (debootstrap; about a minute the first time)");
    let node = crate::steps::node_image::ensure(docker).await?;
    step.done_with(node.clone());
    let step = ui.step("Building the registry and edge images, and the services 🔨");
    let built = async {
        let built = built_services(docker, &loaded.project_root, &loaded.spec.services).await?;
        Ok::<_, Error>(
            built
                .into_iter()
                .map(|(name, built)| (name, built.image.reference()))
                .collect(),
        )
    };
    let (registry, edge, services) =
        tokio::try_join!(registry(docker, &node), edge(docker, &node), built)?;
    step.done();
    Ok(Prepared {
        node,
        registry,
        edge,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repository_and_tag() {
        let split = |r: &str| {
            let image = LocalImage::parse(r);
            (image.repository, image.tag)
        };
        assert_eq!(
            split("eriklupander/quotes-service"),
            ("eriklupander/quotes-service".into(), "latest".into())
        );
        assert_eq!(
            split("debian:bookworm"),
            ("debian".into(), "bookworm".into())
        );
        assert_eq!(
            split("registry:5000/quotes:1"),
            ("registry:5000/quotes".into(), "1".into())
        );
        assert_eq!(
            split("registry:5000/quotes"),
            ("registry:5000/quotes".into(), "latest".into())
        );
        assert_eq!(
            LocalImage::parse("eriklupander/quotes-service").short_name(),
            "quotes-service"
        );
        assert_eq!(
            LocalImage::parse("goblog-registry:5000/accountservice:3f2a9c1d4e5b").tag,
            "3f2a9c1d4e5b"
        );
        assert_eq!(without_digest("quotes:1@sha256:abc"), "quotes:1");
    }
}
