//! VM labs end to end: real QEMU VMs (TCG on machines without working KVM,
//! as CI's are), a real bridge and taps, real sshd and dockerd in every VM,
//! a real Swarm with the routing mesh (the VMs' kernel has IPVS), and real
//! HTTP through $ManagerIP.
//!
//! VMs under software emulation take minutes, so the tests share work: one
//! lab carries the blog replay, a second lab beside it, a killed VM, and a
//! stop/start; one pair of bare VMs carries the docker-machine adoption.
//! The tests take turns (`VMS`): two CPU cores run one VM set at a time
//! much faster than two at once.

mod common;
#[path = "common/machine_store.rs"]
mod machine_store;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

static VMS: Mutex<()> = Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    VMS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lab_dir(lab: &str) -> std::path::PathBuf {
    home().join("labs").join(lab)
}

/// Every device, rule and process of `lab` that this machine still has.
fn leftovers(lab: &str) -> Vec<String> {
    let alias = format!("goblog-lab:{lab}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let ifalias = std::fs::read_to_string(entry.path().join("ifalias")).unwrap_or_default();
        if ifalias.trim() == alias {
            found.push(format!("device {}", entry.file_name().to_string_lossy()));
        }
    }
    let rules = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .unwrap();
    found.extend(
        stdout(&rules)
            .lines()
            .filter(|l| l.contains(&alias))
            .map(|l| format!("rule {l}")),
    );
    let name = format!("goblog-lab/{lab}/");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&name) {
            found.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    if lab_dir(lab).exists() {
        found.push(format!("state {}", lab_dir(lab).display()));
    }
    found
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// The replicas that answered `curl $ManagerIP:6767/accounts/10000`, over
/// `tries` calls through the routing mesh.
fn served_by(manager_ip: &str, tries: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        if let Ok((200, body)) = http_get(manager_ip, 6767, "/accounts/10000") {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            seen.insert(body["servedBy"].as_str().unwrap().to_string());
        }
    }
    seen
}

fn qemu_pid(lab: &str, host: &str) -> i32 {
    let pidfile = lab_dir(lab).join("vms").join(host).join("qemu.pid");
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_vm_lab_runs_the_blogs_own_commands_and_survives_stop_kill_and_a_neighbour() {
    let _turn = take_turn();
    let lab = "vmlab";
    let _guard = LabGuard::new(lab);

    // create --driver qemu --workers 2, end to end.
    let created = json(&run(&[
        "create",
        "-q",
        "--driver",
        "qemu",
        "--workers",
        "2",
        "--name",
        lab,
        "-o",
        "json",
    ]));
    assert_eq!(created["driver"], "qemu");
    assert_eq!(created["routing"], "mesh", "VMs have IPVS: {created}");
    let manager_ip = created["manager_ip"].as_str().unwrap().to_string();
    assert!(
        manager_ip.starts_with("192.168.") && manager_ip.ends_with(".100"),
        "{manager_ip}"
    );
    assert_eq!(
        created["services"][0]["served_by"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Secrets stay private; every VM's host key was recorded before it booted.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&lab_dir(lab).join("id_ed25519")), 0o600);
    assert_eq!(
        mode(&lab_dir(lab).join("vms/swarm-worker-1/identity.tar")),
        0o600
    );
    let known = std::fs::read_to_string(lab_dir(lab).join("known_hosts")).unwrap();
    let keys: BTreeSet<&str> = known
        .lines()
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "one host key per VM: {known}");

    // status shows the mesh.
    let status = json(&run(&["status", "--name", lab, "-o", "json"]));
    assert_eq!(status["routing"], "mesh", "{status}");

    // The blog's part 5, literally, through `eval "$(goblog-lab env)"`.
    let vars = env_vars(&stdout(&run(&["env", "--name", lab])));
    assert_eq!(vars["ManagerIP"], manager_ip);
    let docker = |args: &[&str]| {
        let out = lab_docker(&vars, args);
        assert!(out.status.success(), "docker {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let nodes = docker(&["node", "ls"]);
    assert_eq!(nodes.matches("Ready").count(), 3, "{nodes}");
    let image = docker(&[
        "service",
        "inspect",
        "accountservice",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
    ]);
    let image = image.trim().split('@').next().unwrap().to_string();
    docker(&["service", "rm", "accountservice"]);
    docker(&[
        "service",
        "create",
        "--name=accountservice",
        "--replicas=1",
        "--network=my_network",
        "-p=6767:6767",
        "--detach",
        &image,
    ]);
    docker(&["service", "scale", "--detach", "accountservice=3"]);
    wait_until(
        "three replicas answering through the routing mesh",
        Duration::from_secs(600),
        || served_by(&manager_ip, 12).len() == 3,
    );
    let tasks = docker(&["service", "ps", "accountservice"]);
    assert!(tasks.matches("Running").count() >= 3, "{tasks}");
    // The mesh answers on every node's address, as in the blog.
    for host in [101, 102] {
        let worker = manager_ip.replace(".100", &format!(".{host}"));
        let (code, _) = http_get(&worker, 6767, "/accounts/10000").unwrap();
        assert_eq!(code, 200, "{worker}:6767");
    }

    // Two VM labs side by side: the second takes the next /24.
    {
        let second = "vmlab2";
        let _guard2 = LabGuard::new(second);
        let made = json(&run(&[
            "create",
            "-q",
            "--driver",
            "qemu",
            "--workers",
            "0",
            "--no-deploy",
            "--name",
            second,
            "-o",
            "json",
        ]));
        let second_ip = made["manager_ip"].as_str().unwrap();
        assert_ne!(second_ip, manager_ip);
        assert!(second_ip.ends_with(".100"), "{second_ip}");
        let out = run(&["destroy", "-q", "--name", second]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(leftovers(second), Vec::<String>::new());
        // The first lab is untouched.
        assert!(!leftovers(lab).is_empty());
        assert_eq!(served_by(&manager_ip, 3).len().min(1), 1);
    }

    // A VM killed outright: status says so, `start` boots it again.
    let killed = qemu_pid(lab, "swarm-worker-1");
    unsafe { libc::kill(killed, libc::SIGKILL) };
    wait_until("the killed QEMU to go", Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{killed}")).exists()
    });
    let out = run(&["start", "-q", "--name", lab]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(qemu_pid(lab, "swarm-worker-1"), killed);
    wait_until("the healed worker Ready", Duration::from_secs(300), || {
        let out = lab_docker(
            &vars,
            &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        );
        stdout(&out).contains("swarm-worker-1 Ready")
    });

    // stop, then start: same ManagerIP, same services.
    let out = run(&["stop", "-q", "--name", lab]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        leftovers(lab).iter().all(|l| !l.starts_with("process")),
        "{:?}",
        leftovers(lab)
    );
    let out = run(&["start", "-q", "--name", lab]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vars = env_vars(&stdout(&run(&["env", "--name", lab])));
    assert_eq!(vars["ManagerIP"], manager_ip);
    wait_until(
        "answers through the mesh after start",
        Duration::from_secs(600),
        || !served_by(&manager_ip, 3).is_empty(),
    );
    let services = stdout(&lab_docker(&vars, &["service", "ls"]));
    assert!(services.contains("accountservice"), "{services}");

    // destroy: no process, tap, bridge, rule, overlay or state.
    let out = run(&["destroy", "-q", "--name", lab]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(leftovers(lab), Vec::<String>::new());
}

/// Machines a reader made with `docker-machine create` (here: two bare VMs
/// and a store in docker-machine's on-disk format) become a lab, and are
/// left as they were.
#[test]
fn machines_from_docker_machine_become_a_lab_and_are_given_back() {
    use goblog_lab::lab::state::{LabDir, Role};
    use goblog_lab::provider::qemu::QemuProvider;
    use goblog_lab::provider::{MachinePlan, Provider};

    let _turn = take_turn();
    let hosts_lab = "dm-machines";
    let _hosts_guard = LabGuard::new(hosts_lab);
    let lab = "dm-lab";
    let _guard = LabGuard::new(lab);

    // SAFETY: set before any thread of this test reads it; the value is the
    // one every goblog-lab this file runs gets.
    unsafe { std::env::set_var("GOBLOG_LAB_HOME", home()) };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = LabDir::new(hosts_lab);
    let ui = goblog_lab::ui::Ui::new(true, false);
    let provider = QemuProvider::new(hosts_lab, &dir, 512, ui).unwrap();
    let plans: Vec<MachinePlan> = ["m0", "w0"]
        .iter()
        .map(|name| MachinePlan {
            hostname: name.to_string(),
            role: Role::Manager,
            reached: Vec::new(),
        })
        .collect();
    let machines = runtime.block_on(provider.create(&plans)).unwrap();
    // As docker-machine leaves its machines: dockerd running, no Swarm.
    for machine in &machines {
        let out = runtime
            .block_on(provider.run(
                machine,
                "rm /etc/systemd/system/docker.service.d/10-wait-for-goblog-lab.conf /etc/systemd/system/containerd.service.d/10-wait-for-goblog-lab.conf && systemctl daemon-reload && systemctl start docker && docker info --format '{{.Swarm.LocalNodeState}}'",
            ))
            .unwrap();
        assert_eq!(out.status, 0, "{}", out.output);
    }

    // The store, as docker-machine 0.16's generic driver writes it.
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-machine-store");
    let _ = std::fs::remove_dir_all(&store);
    for machine in &machines {
        machine_store::write_machine(
            &store,
            &machine.hostname,
            &machine.address.to_string(),
            "root",
            22,
            &dir.ssh_key(),
        );
    }
    let user_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-machine-user");
    let _ = std::fs::remove_dir_all(&user_home);
    std::fs::create_dir_all(&user_home).unwrap();
    let adopt = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "-q",
            "--driver",
            "docker-machine",
            "--machines",
            "m0,w0",
            "--name",
            lab,
            "--no-deploy",
            "-o",
            "json",
        ];
        args.extend(extra);
        let mut command = goblog_lab(&args);
        command
            .env("MACHINE_STORAGE_PATH", &store)
            .env("HOME", &user_home)
            .env_remove("SSH_AUTH_SOCK");
        run_command(command, &args)
    };

    // docker-machine never recorded host keys; goblog-lab will not guess.
    let refused = adopt(&[]);
    assert_one_line_error(&refused, 1, "--accept-new-host-keys");

    let created = json(&adopt(&["--accept-new-host-keys"]));
    assert_eq!(created["driver"], "docker-machine");
    assert_eq!(created["manager_ip"], machines[0].address.to_string());
    let vars = env_vars(&stdout(&run(&["env", "--name", lab])));
    let nodes = stdout(&lab_docker(&vars, &["node", "ls"]));
    assert_eq!(nodes.matches("Ready").count(), 2, "{nodes}");

    let out = run(&["destroy", "-q", "--name", lab]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Given back: still running, dockerd up, in no Swarm, no lab config.
    for machine in &machines {
        let out = runtime
            .block_on(provider.run(
                machine,
                "docker info --format '{{.Swarm.LocalNodeState}}' && test ! -e /etc/systemd/system/docker.service.d/zz-goblog-lab.conf && test ! -e /etc/docker/certs.d/ && echo given-back",
            ))
            .unwrap();
        assert_eq!(out.status, 0, "{}", out.output);
        assert!(out.output.starts_with("inactive"), "{}", out.output);
        assert!(out.output.contains("given-back"), "{}", out.output);
    }
    runtime.block_on(provider.remove(None)).unwrap();
    let _ = std::fs::remove_dir_all(lab_dir(hosts_lab));
    assert_eq!(leftovers(hosts_lab), Vec::<String>::new());
}

#[test]
fn bad_vm_input_gets_one_line_and_a_failing_exit() {
    // No QEMU on PATH (and none in the sbin directories goblog-lab also looks in).
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let args = ["create", "-q", "--driver", "qemu", "--name", "noqemu"];
    let mut command = goblog_lab(&args);
    command.env("PATH", &empty);
    let out = run_command(command, &args);
    assert_one_line_error(&out, 1, "qemu-system-x86_64");
    assert!(!lab_dir("noqemu").exists());

    // Not root: the bridge and taps need it.
    let args = ["create", "-q", "--driver", "qemu", "--name", "noroot"];
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .env("GOBLOG_LAB_HOME", home());
    let out = run_command(command, &args);
    assert_one_line_error(&out, 2, "needs root");

    // A lab file naming a driver goblog-lab does not have.
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unknown-driver.toml");
    std::fs::write(&file, "driver = \"virtualbox2\"\nworkers = 1\n").unwrap();
    let out = run(&[
        "create",
        "-q",
        "--file",
        file.to_str().unwrap(),
        "--name",
        "baddriver",
    ]);
    assert_one_line_error(&out, 2, "unknown variant `virtualbox2`");

    // VM flags without the VM driver, and docker-machine names that are not there.
    let out = run(&["create", "-q", "--memory", "1024", "--name", "nomem"]);
    assert_one_line_error(&out, 2, "--driver qemu");
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-machine-store-bad");
    let _ = std::fs::remove_dir_all(&store);
    machine_store::write_machine(&store, "m0", "192.0.2.10", "root", 22, &file);
    let args = [
        "create",
        "-q",
        "--driver",
        "docker-machine",
        "--machines",
        "m0,nope",
        "--name",
        "nodm",
    ];
    let mut command = goblog_lab(&args);
    command.env("MACHINE_STORAGE_PATH", &store);
    let out = run_command(command, &args);
    assert_one_line_error(&out, 2, "m0");
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}
