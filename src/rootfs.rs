//! A Debian root filesystem built from a recipe, offline.
//!
//! Nothing can be pulled on an offline machine, so every image the lab
//! boots comes from `debootstrap` (which only needs the apt mirror this
//! machine already uses), trimmed and completed by a recipe file: the node
//! image (`images/node/recipe.toml`, imported into Docker) and the VM image
//! (`images/vm/recipe.toml`, made into a disk). This module makes the tree;
//! what becomes of it is its caller's business.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};
use crate::lab::state::home;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    suite: String,
    variant: String,
    pub packages: Vec<String>,
    /// Paths relative to the root, removed after debootstrap (directories
    /// with their contents); `*` in the last component matches any name.
    remove: Vec<String>,
    /// Files written into the tree after `remove`.
    #[serde(default)]
    pub files: Vec<RootfsFile>,
    /// Symbolic links made last (a unit enabled as `systemctl enable` does).
    #[serde(default)]
    links: Vec<RootfsLink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootfsLink {
    /// Relative to the root.
    path: String,
    /// As the link will hold it, absolute within the image.
    target: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsFile {
    /// Relative to the root, e.g. `etc/machine-id`.
    pub path: String,
    /// Permission bits, e.g. `0o644` in TOML.
    pub mode: u32,
    contents: String,
}

impl Recipe {
    /// A built-in recipe; they are tested to parse.
    pub fn parse(text: &str) -> Recipe {
        toml::from_str(text).expect("a built-in recipe parses")
    }
}

/// The first 12 hex digits of a hash of what builds an image: a new recipe
/// or builder is a new image, and an unchanged one is found in the cache.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    hex::encode(hash.finalize())[..12].to_string()
}

/// A built tree, removed (after unmounting what debootstrap left mounted
/// inside it) when dropped.
pub struct Tree {
    guard: RootfsGuard,
}

impl Tree {
    pub fn path(&self) -> &Path {
        &self.guard.0
    }
}

/// Runs debootstrap for `recipe` under goblog-lab's build directory, then
/// trims and completes the tree. `what` names the image in errors and logs.
pub async fn build(recipe: &Recipe, what: &str) -> Result<Tree> {
    preflight(what)?;
    let mirror = debian_mirror()?;
    let work = home().join("build");
    let rootfs = work.join(format!("{what}-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(&work).context("creating the image build directory")?;
    let guard = RootfsGuard(rootfs.clone());
    debootstrap(
        recipe,
        &rootfs,
        &mirror,
        &work.join(format!("debootstrap-{what}.log")),
    )
    .await?;
    for pattern in &recipe.remove {
        remove_matching(&rootfs, pattern)?;
    }
    for file in &recipe.files {
        write_file(&rootfs, file)?;
    }
    for link in &recipe.links {
        make_link(&rootfs, link)?;
    }
    Ok(Tree { guard })
}

/// Holds an exclusive lock on `name` under goblog-lab's home: two creates
/// (or two tests) that need the same image at once build it once.
pub async fn build_lock(name: &str) -> Result<std::fs::File> {
    std::fs::create_dir_all(home()).context("creating goblog-lab's home directory")?;
    let lock = std::fs::File::create(home().join(name)).context("creating the image build lock")?;
    tokio::task::spawn_blocking(move || lock.lock().map(|_| lock))
        .await
        .map_err(|err| Error::failed(err.to_string()))?
        .context("waiting for another image build")
}

/// A recipe path as components under the root: relative, no `..`, so
/// nothing outside the tree is touched.
fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if path.starts_with('/') || parts.is_empty() || parts.contains(&"..") {
        return Err(Error::failed(format!(
            "recipe path {path:?} must be relative to the root, without `..`"
        )));
    }
    Ok(parts)
}

/// Removes what `pattern` names under `rootfs`, never following a symbolic
/// link: the tree holds absolute links that point into this machine.
fn remove_matching(rootfs: &Path, pattern: &str) -> Result<()> {
    let mut parts = components(pattern)?;
    let last = parts.pop().expect("at least one component");
    let dir = parts
        .iter()
        .fold(rootfs.to_path_buf(), |dir, p| dir.join(p));
    if parts.iter().any(|p| p.contains('*')) || !no_links_between(rootfs, &dir) {
        return Err(Error::failed(format!(
            "recipe path {pattern:?}: only its last component may hold `*`, and none may be a link"
        )));
    }
    let names: Vec<String> = if last.contains('*') {
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| wildcard_match(last, name))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![last.to_string()]
    };
    for name in names {
        let path = dir.join(&name);
        let result = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(_) => continue, // already absent
        };
        result.with_context(|| format!("removing {} from the node image tree", path.display()))?;
    }
    Ok(())
}

/// Where a recipe entry goes in the tree, its directories made: refused
/// when any directory on the way is a symbolic link, which could lead out
/// of the tree. Whatever was at the path is removed, a link included.
fn place(rootfs: &Path, relative: &str) -> Result<PathBuf> {
    let path = components(relative)?
        .iter()
        .fold(rootfs.to_path_buf(), |dir, p| dir.join(p));
    let dir = path.parent().expect("below the root");
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {} in the image tree", dir.display()))?;
    if !no_links_between(rootfs, dir) {
        return Err(Error::failed(format!(
            "recipe path {relative:?} lies under a symbolic link"
        )));
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path)
            .with_context(|| format!("replacing {} in the image tree", path.display()))?;
    }
    Ok(path)
}

/// Writes one recipe file, replacing whatever was there (a link included,
/// rather than writing through it), and creating its directories.
fn write_file(rootfs: &Path, file: &RootfsFile) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = place(rootfs, &file.path)?;
    std::fs::write(&path, &file.contents)
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode)))
        .with_context(|| format!("writing {} into the image tree", path.display()))
}

/// Makes one recipe link, replacing whatever was at its path.
fn make_link(rootfs: &Path, link: &RootfsLink) -> Result<()> {
    let path = place(rootfs, &link.path)?;
    std::os::unix::fs::symlink(&link.target, &path)
        .with_context(|| format!("linking {} in the image tree", path.display()))
}

/// True when no directory from `rootfs` (exclusive) down to `dir` is a
/// symbolic link.
fn no_links_between(rootfs: &Path, dir: &Path) -> bool {
    let Ok(below) = dir.strip_prefix(rootfs) else {
        return false;
    };
    let mut at = rootfs.to_path_buf();
    below.components().all(|c| {
        at.push(c);
        std::fs::symlink_metadata(&at).map_or(true, |m| !m.file_type().is_symlink())
    })
}

/// Shell-style matching with `*` only.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| wildcard_match(tail, &rest[i..]))
        }
    }
}

/// Removes the ~400 MiB build tree however the build ends: success, error,
/// or Ctrl-C dropping the future mid-debootstrap. debootstrap mounts /proc,
/// /sys (and, inside a container, binds /dev) into the tree, so those are
/// unmounted first: deleting through a bind mount of /dev would delete the
/// host's device nodes.
struct RootfsGuard(PathBuf);

impl Drop for RootfsGuard {
    fn drop(&mut self) {
        let root = self.0.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&format!("{root}/")))
            .collect();
        // Deepest first.
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in &inside {
            let _ = std::process::Command::new("umount")
                .args(["-l", mount])
                .status();
        }
        let still_mounted = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|m| m.starts_with(&format!("{root}/")))
            });
        if still_mounted {
            eprintln!(
                "goblog-lab: warning: left {root} in place: something is still mounted inside it"
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails with the first of `programs` (name, how to install it) that this
/// machine lacks.
pub fn require(what: &'static str, programs: &[(&'static str, &'static str)]) -> Result<()> {
    match programs
        .iter()
        .find(|(program, _)| which(program).is_none())
    {
        Some(&(program, install)) => Err(Error::MissingProgram {
            what,
            program,
            install,
        }),
        None => Ok(()),
    }
}

/// True when this process runs with root's effective user id.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fails, with the fix, when this machine cannot build the `what` image:
/// debootstrap missing, or not root.
pub fn preflight(what: &str) -> Result<()> {
    if which("debootstrap").is_none() {
        return Err(Error::failed(format!(
            "the {what} image is built offline with debootstrap, which is not installed: run `scripts/setup.sh` (or `apt-get install debootstrap`)"
        )));
    }
    if !is_root() {
        return Err(Error::failed(format!(
            "building the {what} image runs debootstrap, which needs root: run this first `create` with sudo (later runs reuse the image)"
        )));
    }
    Ok(())
}

async fn debootstrap(recipe: &Recipe, rootfs: &Path, mirror: &str, log: &Path) -> Result<()> {
    let log_file = std::fs::File::create(log).context("creating the debootstrap log")?;
    let status = tokio::process::Command::new("debootstrap")
        .arg(format!("--variant={}", recipe.variant))
        .arg(format!("--include={}", recipe.packages.join(",")))
        .arg(&recipe.suite)
        .arg(rootfs)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .context("opening the debootstrap log")?,
        )
        .stderr(log_file)
        .kill_on_drop(true)
        .status()
        .await
        .context("running debootstrap")?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    Err(Error::failed(format!(
        "debootstrap failed ({status}): {last} (full log: {})",
        log.display()
    )))
}

/// The Debian mirror this machine's apt already uses: never a hard-coded
/// host, since an offline machine reaches only its own mirror.
fn debian_mirror() -> Result<String> {
    if let Ok(mirror) = std::env::var("GOBLOG_LAB_DEBIAN_MIRROR") {
        return Ok(mirror);
    }
    let mut texts: Vec<String> = std::fs::read_to_string("/etc/apt/sources.list")
        .into_iter()
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            if file
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
            {
                texts.extend(std::fs::read_to_string(file).ok());
            }
        }
    }
    texts
        .iter()
        .find_map(|text| mirror_in(text))
        .ok_or_else(|| {
            Error::failed(
                "found no Debian mirror in /etc/apt/sources.list*: set GOBLOG_LAB_DEBIAN_MIRROR to one",
            )
        })
}

/// The first Debian main-archive URI in an apt sources text, one-line or
/// deb822 format (security and updates suites are not full archives).
fn mirror_in(text: &str) -> Option<String> {
    let is_archive = |uri: &str| {
        uri.starts_with("http")
            && !uri.contains("security")
            && uri.trim_end_matches('/').ends_with("debian")
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("deb ") {
            let uri = rest.split_whitespace().find(|w| !w.starts_with('['));
            if let Some(uri) = uri.filter(|u| is_archive(u)) {
                return Some(uri.to_string());
            }
        }
        if let Some(uris) = line.strip_prefix("URIs:") {
            if let Some(uri) = uris.split_whitespace().find(|u| is_archive(u)) {
                return Some(uri.to_string());
            }
        }
    }
    None
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_recipes_parse_with_paths_inside_the_tree() {
        for text in [
            include_str!("../images/node/recipe.toml"),
            include_str!("../images/vm/recipe.toml"),
        ] {
            let recipe = Recipe::parse(text);
            assert!(recipe.packages.iter().any(|p| p == "docker.io"));
            for file in &recipe.files {
                components(&file.path).unwrap();
                assert!(file.mode <= 0o7777, "{}", file.path);
            }
        }
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["a", "b"]), fingerprint(&["a", "c"]));
    }

    #[test]
    fn wildcards_and_recipe_paths() {
        assert!(wildcard_match("ssh_host_*", "ssh_host_ed25519_key.pub"));
        assert!(wildcard_match("*_key", "ssh_host_rsa_key"));
        assert!(!wildcard_match("*_key", "ssh_host_rsa_key.pub"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("sshd_config", "ssh_config"));
        assert!(components("/etc/passwd").is_err());
        assert!(components("etc/../../x").is_err());
        assert_eq!(components("etc//ssh/").unwrap(), ["etc", "ssh"]);
    }

    #[test]
    fn removes_and_writes_inside_the_tree_only() {
        let root = std::env::temp_dir().join(format!("node-image-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
        for name in ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "sshd_config"] {
            std::fs::write(root.join("etc/ssh").join(name), "x").unwrap();
        }
        // An absolute link, as debootstrap trees hold: never followed.
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        remove_matching(&root, "etc/ssh/ssh_host_*").unwrap();
        remove_matching(&root, "absent/dir").unwrap();
        let left: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["sshd_config"]);
        let file = |path: &str| RootfsFile {
            path: path.into(),
            mode: 0o444,
            contents: String::new(),
        };
        write_file(&root, &file("etc/machine-id")).unwrap();
        write_file(&root, &file("etc/systemd/system/a.service.d/b.conf")).unwrap();
        assert!(write_file(&root, &file("link/evil")).is_err());
        assert!(remove_matching(&root, "link/*").is_err());
        assert!(!outside.join("evil").exists());
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(root.join("etc/machine-id")).unwrap();
        assert_eq!((meta.len(), meta.permissions().mode() & 0o7777), (0, 0o444));
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn finds_the_mirror_in_both_apt_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.example.org/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.example.org/debian")
        );
        let classic = "# comment\ndeb [arch=amd64] http://ftp.example.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(classic).as_deref(),
            Some("http://ftp.example.org/debian/")
        );
        assert_eq!(
            mirror_in("deb http://security.example.org/debian-security bookworm-security main"),
            None
        );
    }
}
