//! The lab definition: plain data read from TOML.
//!
//! `lab/goblog.toml` is compiled in as the default, so the installed binary
//! needs no files; `--file` swaps in another. Parse errors name the file,
//! line and column, because a workshop leader editing a spec by hand should
//! not have to guess which field was wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const DEFAULT_SPEC: &str = include_str!("../../lab/goblog.toml");
pub const MAX_WORKERS: u32 = 20;
pub const MAX_MANAGERS: u32 = 7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// Which provider makes the machines: `dind` (default), `ssh`, `qemu`
    /// or `docker-machine`.
    #[serde(default)]
    pub driver: Option<crate::lab::kind::ProviderKind>,
    /// The hosts of an ssh lab.
    #[serde(default)]
    pub ssh: Option<SshSpec>,
    /// The VMs of a qemu lab.
    #[serde(default)]
    pub vm: Option<VmSpec>,
    /// The machines of a docker-machine lab.
    #[serde(default, rename = "docker-machine")]
    pub docker_machine: Option<MachinesSpec>,
    #[serde(default = "one")]
    pub managers: u32,
    #[serde(default = "two")]
    pub workers: u32,
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default)]
    pub registry: RegistrySpec,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

/// The VMs of `driver = "qemu"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Memory of each VM, in MiB.
    #[serde(default = "default_vm_memory")]
    pub memory: u32,
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            memory: default_vm_memory(),
        }
    }
}

/// 512 MiB: a node's dockerd, containerd and two small tasks use under
/// 250 MiB, and three VMs fit a learner's 8 GiB laptop with room to spare.
fn default_vm_memory() -> u32 {
    512
}

/// Existing hosts for `driver = "ssh"`, each `user@host[:port]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    pub managers: Vec<String>,
    #[serde(default)]
    pub workers: Vec<String>,
    /// A private key to try after ssh-agent.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// A free address on the hosts' network for the virtual `$ManagerIP`
    /// (3 or more managers; `steps::vip`). Without it `$ManagerIP` is the
    /// first host's.
    #[serde(default)]
    pub vip: Option<std::net::Ipv4Addr>,
}

/// Machines made with `docker-machine create`, for `driver =
/// "docker-machine"`: by name, managers first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachinesSpec {
    pub machines: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    /// Port on 127.0.0.1 through which this machine pushes to the lab
    /// registry while goblog-lab pushes; 0 picks a free one.
    #[serde(default)]
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    /// A prebuilt image reference the nodes can pull.
    #[serde(default)]
    pub image: Option<String>,
    /// Or: build it from this repository.
    #[serde(default)]
    pub build: Option<BuildSpec>,
    /// Default: one replica per node.
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// HTTP path the edge proxy health-checks; without it, a TCP check.
    #[serde(default)]
    pub health_path: Option<String>,
    /// HTTP path `create` calls through `$ManagerIP` to know the lab is up.
    #[serde(default)]
    pub probe: Option<String>,
    /// A prebuilt image the lab can do without: deployed when its image can
    /// be had, else skipped with one line saying why.
    #[serde(default)]
    pub optional: bool,
    /// The most CPU each task may use, in cores (`docker service create
    /// --limit-cpu`). Default: no limit.
    #[serde(default)]
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// The cargo package whose binary goes into the image.
    pub package: String,
    /// The image build context, relative to the project root.
    pub context: PathBuf,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn default_network() -> String {
    "my_network".into()
}

/// Where a spec came from, which decides what relative build paths mean.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: LabSpec,
    /// The directory that `build.context` and cargo packages are relative to.
    pub project_root: PathBuf,
}

impl LabSpec {
    /// Parses `text`, naming `origin` in errors.
    pub fn parse(text: &str, origin: &str) -> Result<LabSpec> {
        let spec: LabSpec = toml::from_str(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            Error::Spec {
                path: origin.to_string(),
                line,
                column,
                message: err.message().trim().replace('\n', " "),
            }
        })?;
        spec.check(origin)?;
        Ok(spec)
    }

    /// Rules serde cannot express; reported against the file as a whole.
    fn check(&self, origin: &str) -> Result<()> {
        let fail = |message: String| Error::Spec {
            path: origin.to_string(),
            line: 1,
            column: 1,
            message,
        };
        check_counts(self.managers, self.workers).map_err(|e| fail(e.to_string()))?;
        if !is_docker_name(&self.network) {
            return Err(fail(format!(
                "network: {:?} is not a valid Docker network name",
                self.network
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for service in &self.services {
            if !is_docker_name(&service.name) || service.name.contains('.') {
                return Err(fail(format!(
                    "services: {:?} is not a valid service name",
                    service.name
                )));
            }
            if !seen.insert(&service.name) {
                return Err(fail(format!(
                    "services: {:?} is listed twice",
                    service.name
                )));
            }
            match (&service.image, &service.build) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(fail(format!(
                        "services.{}: give exactly one of `image` or `build`",
                        service.name
                    )))
                }
            }
            if service.optional && service.build.is_some() {
                return Err(fail(format!(
                    "services.{}: `optional` is for prebuilt images; a service built from source is always deployed",
                    service.name
                )));
            }
            if let Some(cpus) = service.cpus {
                if !(cpus.is_finite() && (0.01..=64.0).contains(&cpus)) {
                    return Err(fail(format!(
                        "services.{}.cpus: {cpus} is not a CPU limit; give cores between 0.01 and 64, such as 0.5",
                        service.name
                    )));
                }
            }
            if service.ports.contains(&0) {
                return Err(fail(format!(
                    "services.{}.ports: 0 is not a port",
                    service.name
                )));
            }
        }
        Ok(())
    }
}

/// The limits `--workers` and `--managers` are held to, and why.
pub fn check_counts(managers: u32, workers: u32) -> Result<()> {
    if workers > MAX_WORKERS {
        return Err(Error::usage(format!(
            "--workers {workers} is out of range 0..={MAX_WORKERS}: each node is a full Docker engine (~70 MiB, a share of the CPU), and more than {MAX_WORKERS} on one machine stops being a lab"
        )));
    }
    if managers == 0 || managers > MAX_MANAGERS {
        return Err(Error::usage(format!(
            "--managers {managers} is out of range 1..={MAX_MANAGERS}: a Swarm needs one manager, and Raft gains nothing past {MAX_MANAGERS}"
        )));
    }
    Ok(())
}

/// Why an even number of managers is worth a warning, or nothing. Raft
/// needs a majority of managers: 2 tolerate no failure (stopping either
/// stops the Swarm's control plane) and 4 tolerate one, as 3 do.
pub fn even_managers_warning(managers: u32) -> Option<String> {
    if managers % 2 == 1 {
        return None;
    }
    let tolerated = (managers - 1) / 2;
    let odd = managers - 1;
    Some(format!(
        "{managers} managers tolerate {} lost manager{}, as {odd} would: Raft needs a majority ({} of {managers}), so an odd count is the usual choice (Docker's \"Administer and maintain a swarm\")",
        if tolerated == 0 { "no".to_string() } else { tolerated.to_string() },
        if tolerated == 1 { "" } else { "s" },
        managers / 2 + 1
    ))
}

/// Loads `--file PATH`, or the compiled-in default.
pub fn load(file: Option<&Path>) -> Result<LoadedSpec> {
    match file {
        None => Ok(LoadedSpec {
            spec: LabSpec::parse(DEFAULT_SPEC, "lab/goblog.toml (built in)")?,
            project_root: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                Error::usage(format!("cannot read lab file {}: {err}", path.display()))
            })?;
            let spec = LabSpec::parse(&text, &path.display().to_string())?;
            // A spec in `<project>/lab/` builds from `<project>`, as the default does.
            let dir = path
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            let project_root = if dir.file_name().is_some_and(|n| n == "lab") {
                dir.parent().map(Path::to_path_buf).unwrap_or(dir)
            } else {
                dir
            };
            Ok(LoadedSpec { spec, project_root })
        }
    }
}

fn is_docker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_manager_count_is_warned_about_with_why() {
        assert_eq!(even_managers_warning(1), None);
        assert_eq!(even_managers_warning(3), None);
        assert_eq!(
            even_managers_warning(2).unwrap(),
            "2 managers tolerate no lost managers, as 1 would: Raft needs a majority (2 of 2), so an odd count is the usual choice (Docker's \"Administer and maintain a swarm\")"
        );
        assert!(even_managers_warning(4).unwrap().starts_with(
            "4 managers tolerate 1 lost manager, as 3 would: Raft needs a majority (3 of 4)"
        ));
    }

    #[test]
    fn default_spec_is_the_blogs_lab() {
        let loaded = load(None).unwrap();
        let spec = loaded.spec;
        assert_eq!((spec.managers, spec.workers), (1, 2));
        assert_eq!(spec.network, "my_network");
        assert_eq!(spec.services[0].name, "accountservice");
        assert_eq!(spec.services[0].ports, vec![6767]);
        assert!(loaded.project_root.join("accountservice").is_dir());
    }

    #[test]
    fn part5_is_the_accountservice_alone() {
        let text = include_str!("../../lab/part5.toml");
        let spec = LabSpec::parse(text, "lab/part5.toml").unwrap();
        assert_eq!((spec.managers, spec.workers), (1, 2));
        let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["accountservice"]);
        assert!(spec.services[0].env.is_empty(), "no quote call in part 5");
    }

    #[test]
    fn a_cpu_limit_is_read_and_a_nonsense_one_refused_in_one_line() {
        let service =
            |cpus: &str| format!("[[services]]\nname = \"q\"\nimage = \"q:1\"\ncpus = {cpus}\n");
        let spec = LabSpec::parse(&service("0.25"), "lab/x.toml").unwrap();
        assert_eq!(spec.services[0].cpus, Some(0.25));
        for bad in ["0", "-1", "100", "nan"] {
            let err = LabSpec::parse(&service(bad), "lab/x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains("services.q.cpus"), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_typo_names_line_and_field() {
        let text = "managers = 1\nwrokers = 2\n";
        let err = LabSpec::parse(text, "lab/x.toml").unwrap_err().to_string();
        assert!(err.starts_with("lab/x.toml:2:1: "), "{err}");
        assert!(err.contains("wrokers"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_wrong_type_names_its_line() {
        let text =
            "managers = 1\n\n[[services]]\nname = \"a\"\nimage = \"x\"\nports = [\"http\"]\n";
        let err = LabSpec::parse(text, "s.toml").unwrap_err().to_string();
        assert!(err.starts_with("s.toml:6:"), "{err}");
    }

    #[test]
    fn nested_unknown_field_is_caught() {
        let text = "[registry]\nprot = 5000\n";
        let err = LabSpec::parse(text, "s.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("s.toml:2:1: ") && err.contains("prot"),
            "{err}"
        );
    }

    #[test]
    fn service_needs_image_or_build() {
        let text = "[[services]]\nname = \"a\"\n";
        let err = LabSpec::parse(text, "s.toml").unwrap_err().to_string();
        assert!(err.contains("exactly one of `image` or `build`"), "{err}");
    }

    #[test]
    fn counts_are_capped_with_a_reason() {
        assert!(check_counts(1, 20).is_ok());
        let err = check_counts(1, 21).unwrap_err().to_string();
        assert!(err.contains("0..=20") && err.contains("70 MiB"), "{err}");
        assert!(check_counts(0, 2).is_err());
        assert!(check_counts(8, 2).is_err());
    }

    #[test]
    fn workers_over_the_cap_in_a_file_are_refused() {
        let err = LabSpec::parse("workers = 99\n", "s.toml").unwrap_err();
        assert!(err.to_string().contains("0..=20"), "{err}");
    }
}
