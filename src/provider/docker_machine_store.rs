//! docker-machine's on-disk store, read so that a lab can adopt the machines
//! the blog's own `docker-machine create` made, whatever their driver
//! (virtualbox, generic, a cloud): their address, SSH user, port and key
//! are all in `machines/NAME/config.json`.
//!
//! goblog-lab only reads the store. It never writes to it and never runs
//! docker-machine, so a machine stays docker-machine's to start, stop and
//! remove. The format is docker-machine 0.16's (config version 3): a `Host`
//! (`libmachine/host/host.go`) whose `Driver` object is the driver's own
//! struct with `drivers.BaseDriver` (`libmachine/drivers/base.go`) embedded,
//! so `IPAddress`, `SSHUser`, `SSHPort` and `SSHKeyPath` sit at its top level
//! for every driver.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where docker-machine keeps its machines: $MACHINE_STORAGE_PATH, else ~/.docker/machine.
pub fn storage_path() -> PathBuf {
    // commands/mcndirs/utils.go, GetBaseDir.
    match std::env::var_os("MACHINE_STORAGE_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => dirs::home_dir()
            .unwrap_or_default()
            .join(".docker")
            .join("machine"),
    }
}

/// One machine as its store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The machine's name: its directory under `machines/`.
    pub name: String,
    /// docker-machine's driver that made it (`DriverName`).
    pub driver: String,
    /// The address the driver recorded (`IPAddress`), where its Docker
    /// engine listens on 2376.
    pub ip: String,
    pub ssh_user: String,
    /// The SSH port the driver recorded. The virtualbox driver's is a NAT
    /// forward on 127.0.0.1 (its `GetSSHHostname`), not a port of `ip`;
    /// boot2docker's sshd answers on `ip`:22 as well.
    pub ssh_port: u16,
    pub ssh_key: PathBuf,
}

/// Why a machine could not be read from docker-machine's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no docker-machine store: docker-machine keeps machines in {path}; set MACHINE_STORAGE_PATH if yours are elsewhere")]
    NoStore { path: PathBuf },

    #[error("docker-machine has no machine '{name}' in {store} ({}): create it with `docker-machine create`, or set MACHINE_STORAGE_PATH if it is in another store", present_list(.present))]
    NoMachine {
        name: String,
        store: PathBuf,
        /// The machines that are there, sorted.
        present: Vec<String>,
    },

    #[error("'{name}' is not a docker-machine machine name: names start with a letter or digit and go on with letters, digits, '-' and '.'")]
    BadName { name: String },

    #[error("cannot read docker-machine's {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },

    #[error("docker-machine machine '{name}' has no IP address (it is stopped, or was never started): run `docker-machine start {name}` (`docker-machine ls` shows its state)")]
    NoAddress { name: String },

    #[error("the SSH key of docker-machine machine '{name}', {path}, does not exist: put the machine's private key there (`docker-machine ssh {name}` uses the same file)")]
    NoKey { name: String, path: PathBuf },
}

/// How many present machines `NoMachine` names before "and N more".
const LISTED: usize = 8;

fn present_list(present: &[String]) -> String {
    if present.is_empty() {
        return "it has none".to_string();
    }
    let mut text = format!("it has {}", present[..present.len().min(LISTED)].join(", "));
    if present.len() > LISTED {
        let _ = write!(text, " and {} more", present.len() - LISTED);
    }
    text
}

/// Reads machines/NAME/config.json under `store`.
pub fn read(store: &Path, name: &str) -> Result<Machine, StoreError> {
    if !valid_name(name) {
        return Err(StoreError::BadName {
            name: name.to_string(),
        });
    }
    if !store.is_dir() {
        return Err(StoreError::NoStore {
            path: store.to_path_buf(),
        });
    }
    let machines = store.join("machines");
    let dir = machines.join(name);
    if !dir.is_dir() {
        return Err(StoreError::NoMachine {
            name: name.to_string(),
            store: store.to_path_buf(),
            present: list(&machines),
        });
    }

    let path = dir.join("config.json");
    let unreadable = |reason: String| StoreError::Unreadable {
        path: path.clone(),
        reason: one_line(&reason),
    };
    let data = std::fs::read(&path).map_err(|e| {
        unreadable(if e.kind() == std::io::ErrorKind::NotFound {
            format!("it does not exist (an unfinished `docker-machine create`?): `docker-machine rm {name}` and create it again")
        } else {
            e.to_string()
        })
    })?;
    let host: HostConfig = serde_json::from_slice(&data).map_err(|e| {
        unreadable(format!(
            "{e}: it is not docker-machine's JSON (`docker-machine inspect {name}` shows whether docker-machine can read it)"
        ))
    })?;

    // libmachine/version/version.go: ConfigVersion = 3. Version 2 differs
    // from 3 only by the driver's missing StorePath (migrate_v2_v3.go), which
    // the key default below covers; older ones and newer ones are refused as
    // libmachine/host/migrate.go refuses versions from the future.
    let version = host.config_version.unwrap_or(0);
    if version < 2 {
        return Err(unreadable(format!(
            "its config version {version} predates docker-machine 0.6: any docker-machine command that loads it (`docker-machine ls`) upgrades it to version 3"
        )));
    }
    if version > 3 {
        return Err(unreadable(format!(
            "its config version {version} is newer than the 3 that docker-machine 0.16 writes, which is all goblog-lab reads"
        )));
    }
    let driver_name = host
        .driver_name
        .filter(|d| !d.is_empty())
        .ok_or_else(|| unreadable("it names no driver (DriverName)".to_string()))?;
    let driver = host.driver.unwrap_or_default();

    // libmachine/drivers/base.go, GetIP: an empty IPAddress is "not set";
    // drivers fill it when the machine starts and empty it when it stops
    // (drivers/virtualbox/virtualbox.go, Stop and Kill).
    let ip = driver
        .ip_address
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_string();
    if ip.is_empty() {
        return Err(StoreError::NoAddress {
            name: name.to_string(),
        });
    }

    let ssh_user = match driver.ssh_user.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => user.to_string(),
        // drivers/virtualbox/virtualbox.go, GetSSHUsername: "docker".
        None if driver_name == "virtualbox" => "docker".to_string(),
        // libmachine/drivers/base.go, GetSSHUsername: DefaultSSHUser "root".
        None => "root".to_string(),
    };

    // libmachine/drivers/base.go, GetSSHPort: DefaultSSHPort 22 when 0.
    let ssh_port = match driver.ssh_port.unwrap_or(0) {
        0 => 22,
        port => u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| unreadable(format!("its SSHPort {port} is not a TCP port")))?,
    };

    let ssh_key = ssh_key(store, name, &driver_name, &driver)?;

    Ok(Machine {
        name: name.to_string(),
        driver: driver_name,
        ip,
        ssh_user,
        ssh_port,
        ssh_key,
    })
}

/// Reads each name, in order; the first failure wins.
impl Machine {
    /// Where goblog-lab logs in: `user@ip:port`. A VirtualBox machine's
    /// SSHPort is a NAT forward on 127.0.0.1 (`drivers/virtualbox`), so its
    /// sshd is reached on the host-only address's port 22 instead.
    pub fn ssh_target(&self) -> String {
        let port = if self.driver == "virtualbox" {
            22
        } else {
            self.ssh_port
        };
        let spelled = format!("{}@{}:{port}", self.ssh_user, self.ip);
        // As `Target` prints it (no `:22`): the lab's per-host key map and
        // its state are keyed by that spelling.
        spelled
            .parse::<crate::ssh::Target>()
            .map_or(spelled, |target| target.to_string())
    }
}

pub fn read_all(store: &Path, names: &[String]) -> Result<Vec<Machine>, StoreError> {
    names.iter().map(|name| read(store, name)).collect()
}

/// libmachine/host/host.go, validHostNamePattern:
/// `^[a-zA-Z0-9][a-zA-Z0-9\-\.]*$`. It also keeps `..` and `/` out of paths.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// The machines in a store's `machines/`, as `Filestore.List` finds them
/// (libmachine/persist/filestore.go: directories not starting with '.').
fn list(machines: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(machines)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The private key docker-machine would use for the machine, which must exist.
fn ssh_key(
    store: &Path,
    name: &str,
    driver_name: &str,
    driver: &DriverConfig,
) -> Result<PathBuf, StoreError> {
    let no_key = |path: PathBuf| StoreError::NoKey {
        name: name.to_string(),
        path,
    };
    if let Some(path) = driver.ssh_key_path.as_deref().filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(no_key(path))
        };
    }

    if driver_name == "generic" {
        // drivers/generic/generic.go: GetSSHKeyPath returns SSHKeyPath as it
        // is, and a machine made without --generic-ssh-key is "assuming an
        // existing key at the default location", the user's own. The same
        // defaults as goblog-lab's SSH client (src/ssh/auth.rs).
        let ssh_dir = dirs::home_dir().unwrap_or_default().join(".ssh");
        let defaults = ["id_ed25519", "id_rsa"].map(|key| ssh_dir.join(key));
        return defaults
            .iter()
            .find(|path| path.is_file())
            .cloned()
            .ok_or_else(|| no_key(defaults[1].clone()));
    }

    // libmachine/drivers/base.go, GetSSHKeyPath: ResolveStorePath("id_rsa"),
    // that is StorePath/machines/MachineName/id_rsa with the driver's own
    // StorePath (the store it was made in). A version-2 config has none, and
    // a store that moved has a stale one, so this store's copy is next.
    let here = store.join("machines").join(name).join("id_rsa");
    let recorded = driver
        .store_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| Path::new(p).join("machines").join(name).join("id_rsa"));
    match recorded {
        Some(path) if path.is_file() => Ok(path),
        _ if here.is_file() => Ok(here),
        Some(path) => Err(no_key(path)),
        None => Err(no_key(here)),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parts of `libmachine/host/host.go`'s `Host` that goblog-lab uses.
/// Every field may be missing or null (Go writes nil pointers as null).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostConfig {
    #[serde(rename = "ConfigVersion")]
    config_version: Option<i64>,
    #[serde(rename = "Driver")]
    driver: Option<DriverConfig>,
    #[serde(rename = "DriverName")]
    driver_name: Option<String>,
}

/// `libmachine/drivers/base.go`'s `BaseDriver` fields, at the top level of
/// every driver's object.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DriverConfig {
    #[serde(rename = "IPAddress")]
    ip_address: Option<String>,
    #[serde(rename = "SSHUser")]
    ssh_user: Option<String>,
    #[serde(rename = "SSHPort")]
    ssh_port: Option<i64>,
    #[serde(rename = "SSHKeyPath")]
    ssh_key_path: Option<String>,
    #[serde(rename = "StorePath")]
    store_path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A store under the temp dir, removed on drop.
    struct Store(PathBuf);

    impl Store {
        fn new(test: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "goblog-lab-docker-machine-{test}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(path.join("machines")).unwrap();
            Store(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn machine_dir(&self, name: &str) -> PathBuf {
            self.0.join("machines").join(name)
        }

        fn put(&self, name: &str, config: &Value) {
            let dir = self.machine_dir(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_vec_pretty(config).unwrap(),
            )
            .unwrap();
        }

        fn key(&self, name: &str, file: &str) -> PathBuf {
            let path = self.machine_dir(name).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
            path
        }
    }

    impl Drop for Store {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `HostOptions` as `docker-machine create` fills it (commands/create.go)
    /// with no flags beyond the driver's.
    fn host_options(store: &Path, name: &str) -> Value {
        let s = |p: PathBuf| p.display().to_string();
        let certs = store.join("certs");
        let machine = store.join("machines").join(name);
        json!({
            "Driver": "",
            "Memory": 0,
            "Disk": 0,
            "EngineOptions": {
                "ArbitraryFlags": [],
                "Dns": null,
                "GraphDir": "",
                "Env": [],
                "Ipv6": false,
                "InsecureRegistry": [],
                "Labels": [],
                "LogLevel": "",
                "StorageDriver": "",
                "SelinuxEnabled": false,
                "TlsVerify": true,
                "RegistryMirror": [],
                "InstallURL": "https://get.docker.com"
            },
            "SwarmOptions": {
                "IsSwarm": false,
                "Address": "",
                "Discovery": "",
                "Agent": false,
                "Master": false,
                "Host": "tcp://0.0.0.0:3376",
                "Image": "swarm:latest",
                "Strategy": "spread",
                "Heartbeat": 0,
                "Overcommit": 0,
                "ArbitraryFlags": [],
                "ArbitraryJoinFlags": [],
                "Env": null,
                "IsExperimental": false
            },
            "AuthOptions": {
                "CertDir": s(certs.clone()),
                "CaCertPath": s(certs.join("ca.pem")),
                "CaPrivateKeyPath": s(certs.join("ca-key.pem")),
                "CaCertRemotePath": "",
                "ServerCertPath": s(machine.join("server.pem")),
                "ServerKeyPath": s(machine.join("server-key.pem")),
                "ClientKeyPath": s(certs.join("key.pem")),
                "ServerCertRemotePath": "",
                "ServerKeyRemotePath": "",
                "ClientCertPath": s(certs.join("cert.pem")),
                "ServerCertSANs": [],
                "StorePath": s(machine)
            }
        })
    }

    fn config(store: &Path, name: &str, driver_name: &str, driver: Value) -> Value {
        json!({
            "ConfigVersion": 3,
            "Driver": driver,
            "DriverName": driver_name,
            "HostOptions": host_options(store, name),
            "Name": name
        })
    }

    /// drivers/virtualbox/virtualbox.go's Driver as docker-machine 0.16
    /// saves it for a running VM.
    fn virtualbox_driver(store: &Path, name: &str, key: &Path) -> Value {
        json!({
            "IPAddress": "192.168.99.100",
            "MachineName": name,
            "SSHUser": "docker",
            "SSHPort": 39437,
            "SSHKeyPath": key.display().to_string(),
            "StorePath": store.display().to_string(),
            "SwarmMaster": false,
            "SwarmHost": "tcp://0.0.0.0:3376",
            "SwarmDiscovery": "",
            "VBoxManager": {},
            "HostInterfaces": {},
            "CPU": 1,
            "Memory": 1024,
            "DiskSize": 20000,
            "NatNicType": "82540EM",
            "Boot2DockerURL": "",
            "Boot2DockerImportVM": "",
            "HostDNSResolver": false,
            "HostOnlyCIDR": "192.168.99.1/24",
            "HostOnlyNicType": "82540EM",
            "HostOnlyPromiscMode": "deny",
            "UIType": "headless",
            "HostOnlyNoDHCP": false,
            "NoShare": false,
            "DNSProxy": true,
            "NoVTXCheck": false,
            "ShareFolder": ""
        })
    }

    #[test]
    fn docker_machine_reads_a_virtualbox_machine() {
        let store = Store::new("virtualbox");
        let key = store.key("swarm-manager-0", "id_rsa");
        let driver = virtualbox_driver(store.path(), "swarm-manager-0", &key);
        store.put(
            "swarm-manager-0",
            &config(store.path(), "swarm-manager-0", "virtualbox", driver),
        );

        let machine = read(store.path(), "swarm-manager-0").unwrap();
        assert_eq!(
            machine,
            Machine {
                name: "swarm-manager-0".into(),
                driver: "virtualbox".into(),
                ip: "192.168.99.100".into(),
                ssh_user: "docker".into(),
                ssh_port: 39437,
                ssh_key: key,
            }
        );
        // VirtualBox's NAT forward is not reachable on the host-only
        // address; sshd's own port is, spelled as the lab keys its hosts.
        assert_eq!(machine.ssh_target(), "docker@192.168.99.100");
    }

    #[test]
    fn docker_machine_reads_a_generic_machine() {
        let store = Store::new("generic");
        // generic.go's Create copies --generic-ssh-key into the machine's
        // directory under its own base name and records the copy.
        let key = store.key("worker1", "lab_key");
        let driver = json!({
            "IPAddress": "10.0.0.12",
            "MachineName": "worker1",
            "SSHUser": "ubuntu",
            "SSHPort": 2222,
            "SSHKeyPath": key.display().to_string(),
            "StorePath": store.path().display().to_string(),
            "SwarmMaster": false,
            "SwarmHost": "",
            "SwarmDiscovery": "",
            "EnginePort": 2376,
            "SSHKey": "/home/me/.ssh/lab_key"
        });
        store.put(
            "worker1",
            &config(store.path(), "worker1", "generic", driver),
        );

        let machines = read_all(store.path(), &["worker1".to_string()]).unwrap();
        assert_eq!(
            machines,
            vec![Machine {
                name: "worker1".into(),
                driver: "generic".into(),
                ip: "10.0.0.12".into(),
                ssh_user: "ubuntu".into(),
                ssh_port: 2222,
                ssh_key: key,
            }]
        );
        assert_eq!(machines[0].ssh_target(), "ubuntu@10.0.0.12:2222");
    }

    #[test]
    fn docker_machine_fills_in_base_driver_defaults() {
        let store = Store::new("defaults");
        let key = store.key("m1", "id_rsa");
        // No SSHUser, SSHPort 0, no SSHKeyPath, no StorePath (version 2).
        store.put(
            "m1",
            &json!({
                "ConfigVersion": 2,
                "Driver": {"IPAddress": "203.0.113.5", "MachineName": "m1", "SSHPort": 0},
                "DriverName": "digitalocean",
                "HostOptions": null,
                "Name": "m1"
            }),
        );
        let machine = read(store.path(), "m1").unwrap();
        assert_eq!(machine.ssh_user, "root");
        assert_eq!(machine.ssh_port, 22);
        assert_eq!(machine.ssh_key, key);

        // virtualbox's own default user is "docker".
        let mut driver = virtualbox_driver(store.path(), "vb", Path::new(""));
        for field in ["SSHUser", "SSHKeyPath"] {
            driver.as_object_mut().unwrap().remove(field);
        }
        let key = store.key("vb", "id_rsa");
        store.put("vb", &config(store.path(), "vb", "virtualbox", driver));
        let machine = read(store.path(), "vb").unwrap();
        assert_eq!(machine.ssh_user, "docker");
        assert_eq!(machine.ssh_key, key);

        // A missing key is named.
        std::fs::remove_file(&key).unwrap();
        match read(store.path(), "vb") {
            Err(StoreError::NoKey { name, path }) => {
                assert_eq!(name, "vb");
                assert_eq!(path, key);
            }
            other => panic!("expected NoKey, got {other:?}"),
        }
    }

    #[test]
    fn docker_machine_refuses_bad_names() {
        let store = Store::new("names");
        for name in ["../x", "", ".hidden", "-dash", "a/b", "a b", "é"] {
            match read(store.path(), name) {
                Err(StoreError::BadName { name: got }) => assert_eq!(got, name),
                other => panic!("{name:?}: expected BadName, got {other:?}"),
            }
        }
        assert!(valid_name("swarm-manager-0"));
        assert!(valid_name("node.1"));
        assert!(valid_name("9lives"));
    }

    #[test]
    fn docker_machine_lists_the_machines_that_are_there() {
        let store = Store::new("missing");
        for name in ["b", "a", ".tmp"] {
            std::fs::create_dir_all(store.machine_dir(name)).unwrap();
        }
        std::fs::write(store.path().join("machines").join("file"), "").unwrap();
        let err = read(store.path(), "c").unwrap_err();
        match &err {
            StoreError::NoMachine {
                name,
                store: at,
                present,
            } => {
                assert_eq!(name, "c");
                assert_eq!(at, store.path());
                assert_eq!(present, &["a", "b"]);
            }
            other => panic!("expected NoMachine, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("it has a, b"), "{text}");
        assert!(!text.contains('\n'));

        let many: Vec<String> = (0..11).map(|i| format!("m{i:02}")).collect();
        assert_eq!(
            present_list(&many),
            "it has m00, m01, m02, m03, m04, m05, m06, m07 and 3 more"
        );
        assert_eq!(present_list(&[]), "it has none");

        let gone = store.path().join("nowhere");
        match read(&gone, "a") {
            Err(StoreError::NoStore { path }) => assert_eq!(path, gone),
            other => panic!("expected NoStore, got {other:?}"),
        }
    }

    #[test]
    fn docker_machine_says_to_start_a_machine_without_address() {
        let store = Store::new("stopped");
        let key = store.key("vb", "id_rsa");
        let mut driver = virtualbox_driver(store.path(), "vb", &key);
        driver["IPAddress"] = json!("");
        store.put("vb", &config(store.path(), "vb", "virtualbox", driver));
        let err = read(store.path(), "vb").unwrap_err();
        assert!(matches!(&err, StoreError::NoAddress { name } if name == "vb"));
        assert!(err.to_string().contains("docker-machine start vb"));
    }

    #[test]
    fn docker_machine_reports_unreadable_configs() {
        let store = Store::new("unreadable");
        std::fs::create_dir_all(store.machine_dir("half")).unwrap();
        store.put(
            "future",
            &json!({"ConfigVersion": 4, "DriverName": "generic"}),
        );
        std::fs::write(store.machine_dir("future").join("x"), "").unwrap();
        store.put("old", &json!({"DriverName": "virtualbox", "Driver": {}}));
        std::fs::create_dir_all(store.machine_dir("junk")).unwrap();
        std::fs::write(store.machine_dir("junk").join("config.json"), "{\n\"Con").unwrap();
        for name in ["half", "future", "old", "junk"] {
            match read(store.path(), name) {
                Err(err @ StoreError::Unreadable { .. }) => {
                    let text = err.to_string();
                    assert!(!text.contains('\n'), "{text}");
                    assert!(
                        text.contains(&format!("machines/{name}/config.json")),
                        "{text}"
                    );
                }
                other => panic!("{name}: expected Unreadable, got {other:?}"),
            }
        }
    }
}
