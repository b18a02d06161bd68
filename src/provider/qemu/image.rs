//! The VM image: one Debian disk that every VM of every VM lab boots from.
//!
//! Built once, offline, from `images/vm/recipe.toml` (`crate::rootfs`), and
//! cached under goblog-lab's home by a hash of that recipe. The tree becomes
//! an ext4 filesystem (`mkfs.ext4 -d`, no loop device or mount needed) and
//! then a qcow2 base (`qemu-img convert`); a VM boots a copy-on-write
//! overlay of that base, so a node costs what it writes, not 800 MiB. The
//! kernel and initramfs are copied out of the tree's `/boot`, because QEMU
//! boots them directly (`-kernel`): no bootloader in the disk, no wait for
//! one.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::error::{Context, Error, Result};
use crate::lab::state::home;
use crate::rootfs::{self, Recipe};

pub const RECIPE: &str = include_str!("../../../images/vm/recipe.toml");
/// Bumped when the way the recipe becomes a disk changes.
const BUILDER_VERSION: &str = "1";
/// The filesystem's size. The file is sparse, and each VM's overlay holds
/// only its writes (Docker's images and containers), so this is a ceiling,
/// not a cost.
const DISK_SIZE: &str = "10G";

/// A built VM image, ready to boot.
#[derive(Debug, Clone)]
pub struct VmImage {
    pub fingerprint: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The qcow2 base every overlay refers to.
    pub base: PathBuf,
}

impl VmImage {
    fn at(dir: &Path, fingerprint: String) -> Self {
        VmImage {
            fingerprint,
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            base: dir.join("base.qcow2"),
        }
    }
}

pub fn fingerprint() -> String {
    rootfs::fingerprint(&[BUILDER_VERSION, RECIPE])
}

fn cache_dir(fingerprint: &str) -> PathBuf {
    home().join("vm-images").join(fingerprint)
}

/// The cached image, if this recipe was built already.
pub fn cached() -> Option<VmImage> {
    let fingerprint = fingerprint();
    let dir = cache_dir(&fingerprint);
    let image = VmImage::at(&dir, fingerprint);
    (image.base.is_file() && image.kernel.is_file() && image.initrd.is_file()).then_some(image)
}

/// The image, built first if it is not cached.
pub async fn ensure() -> Result<VmImage> {
    if let Some(image) = cached() {
        return Ok(image);
    }
    let lock = rootfs::build_lock("vm-image.lock").await?;
    if let Some(image) = cached() {
        return Ok(image);
    }
    let fingerprint = fingerprint();
    let dir = cache_dir(&fingerprint);
    // Built beside its final place and renamed into it, so an interrupted
    // build never looks like a cached one.
    let building = dir.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).context("creating the VM image directory")?;
    let result = build(&building).await;
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&building);
        return Err(err);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).context("moving the VM image into the cache")?;
    drop(lock);
    Ok(VmImage::at(&dir, fingerprint))
}

async fn build(dir: &Path) -> Result<()> {
    rootfs::require(
        "the VM image",
        &[
            ("mkfs.ext4", "`apt-get install e2fsprogs`"),
            ("qemu-img", "`apt-get install qemu-utils`"),
        ],
    )?;
    let tree = rootfs::build(&Recipe::parse(RECIPE), "vm").await?;
    copy_boot_files(tree.path(), dir)?;
    let raw = dir.join("root.ext4");
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "goblog-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(tree.path())
            .arg(&raw)
            .arg(DISK_SIZE),
        "mkfs.ext4 -d (the VM's root filesystem)",
    )
    .await?;
    drop(tree);
    let partial = dir.join("base.qcow2.partial");
    run(
        Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&partial),
        "qemu-img convert (the VM's qcow2 base)",
    )
    .await?;
    std::fs::remove_file(&raw).context("removing the raw VM disk")?;
    std::fs::rename(&partial, dir.join("base.qcow2")).context("naming the VM's qcow2 base")
}

/// The tree's newest kernel and its initramfs, as the VM boots them.
fn copy_boot_files(tree: &Path, dir: &Path) -> Result<()> {
    let boot = tree.join("boot");
    let mut kernels: Vec<String> = std::fs::read_dir(&boot)
        .context("reading the VM image's /boot")?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    kernels.sort();
    let kernel = kernels.pop().ok_or(Error::MissingProgram {
        what: "the VM image",
        program: "/boot/vmlinuz-*",
        install: "add linux-image-cloud-amd64 to images/vm/recipe.toml",
    })?;
    let version = kernel.trim_start_matches("vmlinuz-");
    std::fs::copy(boot.join(&kernel), dir.join("vmlinuz")).context("copying the VM kernel")?;
    std::fs::copy(
        boot.join(format!("initrd.img-{version}")),
        dir.join("initrd.img"),
    )
    .context("copying the VM initramfs")?;
    Ok(())
}

/// Makes a VM's disk: a qcow2 overlay whose backing file is the base.
pub async fn overlay(image: &VmImage, disk: &Path) -> Result<()> {
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&image.base)
            .arg(disk),
        "qemu-img create (a VM's overlay disk)",
    )
    .await
    .map(drop)
}

/// Runs a program of this machine; its stdout when it succeeds.
pub async fn run(command: &mut Command, what: &str) -> Result<String> {
    let output = command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::Local {
        command: what.to_string(),
        status: output.status.to_string(),
        output: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}
