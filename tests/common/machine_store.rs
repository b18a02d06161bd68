//! A docker-machine store written as docker-machine 0.16 writes one, so the
//! tests can hand goblog-lab machines "made by `docker-machine create`"
//! without docker-machine.
//!
//! The structs mirror docker-machine's (`libmachine/host/host.go`'s `Host`
//! and `Options`, `libmachine/{engine,swarm,auth}`'s `Options`, the generic
//! driver's `Driver` with `drivers.BaseDriver` embedded) in their field
//! order, and the file is indented by four spaces as `Filestore.Save`'s
//! `json.MarshalIndent` does. The values are what `docker-machine create
//! --driver generic` fills in (`commands/create.go`) with no other flags.
#![allow(dead_code)] // not every test file writes a store

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;

/// Writes machines/NAME/config.json (and copies `key` to machines/NAME/id_rsa, mode 0600) as docker-machine 0.16's generic driver would, under `store`.
///
/// docker-machine's generic driver names the copy after the key's own file
/// name; it is always `id_rsa` here so that tests know where it is. The
/// public half, `key`.pub, is copied too when it exists, as generic does.
pub fn write_machine(
    store: &Path,
    name: &str,
    ip: &str,
    ssh_user: &str,
    ssh_port: u16,
    key: &Path,
) {
    let text = |p: &Path| p.display().to_string();
    let certs = store.join("certs");
    let machine_dir = store.join("machines").join(name);
    // Filestore.Save: MkdirAll(hostPath, 0700).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&machine_dir)
        .unwrap();

    // generic.go's copySSHKey: copy, then chmod 0600.
    let key_copy = machine_dir.join("id_rsa");
    fs::copy(key, &key_copy).unwrap();
    fs::set_permissions(&key_copy, fs::Permissions::from_mode(0o600)).unwrap();
    let public = key.with_file_name(format!(
        "{}.pub",
        key.file_name().unwrap().to_string_lossy()
    ));
    if public.is_file() {
        let public_copy = machine_dir.join("id_rsa.pub");
        fs::copy(&public, &public_copy).unwrap();
        fs::set_permissions(&public_copy, fs::Permissions::from_mode(0o600)).unwrap();
    }

    let host = Host {
        config_version: 3,
        driver: GenericDriver {
            ip_address: ip.to_string(),
            machine_name: name.to_string(),
            ssh_user: ssh_user.to_string(),
            ssh_port,
            ssh_key_path: text(&key_copy),
            // The global store, as create.go passes --storage-path.
            store_path: text(store),
            // generic does not call SetSwarmConfigFromFlags.
            swarm_master: false,
            swarm_host: String::new(),
            swarm_discovery: String::new(),
            engine_port: 2376,
            ssh_key: text(key),
        },
        driver_name: "generic",
        host_options: HostOptions {
            driver: "",
            memory: 0,
            disk: 0,
            engine_options: EngineOptions {
                arbitrary_flags: vec![],
                dns: None,
                graph_dir: "",
                env: vec![],
                ipv6: false,
                insecure_registry: vec![],
                labels: vec![],
                log_level: "",
                storage_driver: "",
                selinux_enabled: false,
                tls_verify: true,
                registry_mirror: vec![],
                install_url: "https://get.docker.com",
            },
            swarm_options: SwarmOptions {
                is_swarm: false,
                address: "",
                discovery: "",
                agent: false,
                master: false,
                host: "tcp://0.0.0.0:3376",
                image: "swarm:latest",
                strategy: "spread",
                heartbeat: 0,
                overcommit: 0,
                arbitrary_flags: vec![],
                arbitrary_join_flags: vec![],
                env: None,
                is_experimental: false,
            },
            auth_options: AuthOptions {
                cert_dir: text(&certs),
                ca_cert_path: text(&certs.join("ca.pem")),
                ca_private_key_path: text(&certs.join("ca-key.pem")),
                // The provisioner sets the remote paths on a copy only
                // (provision/utils.go), so they are saved empty.
                ca_cert_remote_path: "",
                server_cert_path: text(&machine_dir.join("server.pem")),
                server_key_path: text(&machine_dir.join("server-key.pem")),
                client_key_path: text(&certs.join("key.pem")),
                server_cert_remote_path: "",
                server_key_remote_path: "",
                client_cert_path: text(&certs.join("cert.pem")),
                server_cert_sans: vec![],
                store_path: text(&machine_dir),
            },
        },
        name: name.to_string(),
    };

    let mut json = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut json, formatter);
    host.serialize(&mut serializer).unwrap();

    // Filestore.saveToFile: a new file is written with mode 0600.
    let config = machine_dir.join("config.json");
    fs::write(&config, json).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Host {
    config_version: u32,
    driver: GenericDriver,
    driver_name: &'static str,
    host_options: HostOptions,
    name: String,
}

/// drivers/generic/generic.go's Driver: BaseDriver's fields, then its own.
#[derive(Serialize)]
struct GenericDriver {
    #[serde(rename = "IPAddress")]
    ip_address: String,
    #[serde(rename = "MachineName")]
    machine_name: String,
    #[serde(rename = "SSHUser")]
    ssh_user: String,
    #[serde(rename = "SSHPort")]
    ssh_port: u16,
    #[serde(rename = "SSHKeyPath")]
    ssh_key_path: String,
    #[serde(rename = "StorePath")]
    store_path: String,
    #[serde(rename = "SwarmMaster")]
    swarm_master: bool,
    #[serde(rename = "SwarmHost")]
    swarm_host: String,
    #[serde(rename = "SwarmDiscovery")]
    swarm_discovery: String,
    #[serde(rename = "EnginePort")]
    engine_port: u16,
    #[serde(rename = "SSHKey")]
    ssh_key: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct HostOptions {
    driver: &'static str,
    memory: u32,
    disk: u32,
    engine_options: EngineOptions,
    swarm_options: SwarmOptions,
    auth_options: AuthOptions,
}

/// libmachine/engine/engine.go's Options.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EngineOptions {
    arbitrary_flags: Vec<String>,
    dns: Option<Vec<String>>,
    graph_dir: &'static str,
    env: Vec<String>,
    ipv6: bool,
    insecure_registry: Vec<String>,
    labels: Vec<String>,
    log_level: &'static str,
    storage_driver: &'static str,
    selinux_enabled: bool,
    tls_verify: bool,
    registry_mirror: Vec<String>,
    #[serde(rename = "InstallURL")]
    install_url: &'static str,
}

/// libmachine/swarm/swarm.go's Options.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SwarmOptions {
    is_swarm: bool,
    address: &'static str,
    discovery: &'static str,
    agent: bool,
    master: bool,
    host: &'static str,
    image: &'static str,
    strategy: &'static str,
    heartbeat: u32,
    overcommit: u32,
    arbitrary_flags: Vec<String>,
    arbitrary_join_flags: Vec<String>,
    env: Option<Vec<String>>,
    is_experimental: bool,
}

/// libmachine/auth/auth.go's Options.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AuthOptions {
    cert_dir: String,
    ca_cert_path: String,
    ca_private_key_path: String,
    ca_cert_remote_path: &'static str,
    server_cert_path: String,
    server_key_path: String,
    client_key_path: String,
    server_cert_remote_path: &'static str,
    server_key_remote_path: &'static str,
    client_cert_path: String,
    #[serde(rename = "ServerCertSANs")]
    server_cert_sans: Vec<String>,
    store_path: String,
}
