//! The lab's base image, built offline from Debian packages.
//!
//! Nothing can be pulled on an offline machine, so the node image is a
//! recipe's tree (`crate::rootfs`) put into the engine with `docker
//! import`. It takes about a minute, once: the image is tagged with a hash
//! of its recipe, and a later run finds it and moves on.

use std::path::Path;
use std::process::Stdio;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;

use crate::docker::drain;
use crate::error::{Context, Error, Result};
use crate::rootfs::{self, Recipe};

pub const RECIPE: &str = include_str!("../../images/node/recipe.toml");
/// Bumped when the way the recipe is turned into an image changes.
const BUILDER_VERSION: &str = "2";
pub const REPOSITORY: &str = "goblog-lab/node";

pub fn tag() -> String {
    format!(
        "{REPOSITORY}:{}",
        rootfs::fingerprint(&[BUILDER_VERSION, RECIPE])
    )
}

pub async fn is_cached(docker: &Docker) -> bool {
    docker.inspect_image(&tag()).await.is_ok()
}

/// Makes sure the node image exists on `docker`; builds it if not.
pub async fn ensure(docker: &Docker) -> Result<String> {
    let tag = tag();
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    // Two creates (or two tests) may need it at once: one builds, the other
    // waits and then finds it.
    let lock = rootfs::build_lock("node-image.lock").await?;
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    build(docker, &tag).await?;
    drop(lock);
    Ok(tag)
}

async fn build(docker: &Docker, tag: &str) -> Result<()> {
    let tree = rootfs::build(&Recipe::parse(RECIPE), "node").await?;
    import(docker, tree.path(), tag).await
}

/// Streams `tar` of the tree straight into the engine: no 400 MiB temp file.
async fn import(docker: &Docker, rootfs: &Path, tag: &str) -> Result<()> {
    let (repo, version) = tag.split_once(':').expect("tag has a version");
    let mut tar = tokio::process::Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("running tar")?;
    let stdout = tar.stdout.take().expect("stdout is piped");
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(stdout));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(vec![
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            format!("LABEL io.goblog-lab.recipe={version}"),
        ])
        .build();
    drain(
        docker.create_image(Some(options), Some(body), None),
        "importing the node image",
    )
    .await?;
    let status = tar.wait().await.context("waiting for tar")?;
    if !status.success() {
        return Err(Error::failed(format!(
            "tar of the node image tree failed ({status})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_stable() {
        assert_eq!(tag(), tag());
        assert!(tag().starts_with("goblog-lab/node:"));
    }
}
