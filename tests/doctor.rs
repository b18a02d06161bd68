//! `goblog-lab doctor` against this machine's real engine and a stand-in
//! for an old one, and `create` stopping on the same findings before it
//! makes anything; the host's kernel modules mounted into dind nodes and
//! the IPVS probe that decides between the routing mesh and the edge proxy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// What this machine's kernel offers, as the test sees it for itself.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

fn host_has_ipvs() -> bool {
    Path::new("/proc/net/ip_vs").exists()
        || Path::new("/sys/module/ip_vs").exists()
        || Path::new("/lib/modules").join(kernel_release()).exists()
}

/// The table line of finding `name`: "STATUS NAME FOUND → ACTION".
fn line_of<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| {
            l.split_whitespace().nth(1) == Some(name.split_whitespace().next().unwrap())
                && l.contains(name)
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{table}"))
}

/// A kernel module tree for this kernel in a directory of the test's own,
/// for `GOBLOG_LAB_HOST_MODULES`: `modules.dep` is written only if given.
fn module_tree(tag: &str, modules_dep: Option<&str>) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("modules-{tag}"));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join(kernel_release());
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(deps) = modules_dep {
        std::fs::write(dir.join("modules.dep"), deps).unwrap();
    }
    root
}

fn create_with_modules(lab: &str, modules: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "create",
        "--name",
        lab,
        "--workers",
        "0",
        "--no-deploy",
        "-o",
        "json",
    ];
    args.extend(extra);
    let mut command = goblog_lab(&args);
    command.env("GOBLOG_LAB_HOST_MODULES", modules);
    run_command(command, &args)
}

#[test]
fn doctor_reports_this_machine_and_is_ready() {
    let output = run(&["doctor"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(
        !table.contains('\x1b'),
        "no colour when not a terminal: {table:?}"
    );

    let engine = line_of(&table, "engine");
    assert!(engine.starts_with("ok "), "{engine}");
    assert!(
        engine.contains("Docker ") && engine.contains("API 1."),
        "{engine}"
    );
    assert!(engine.contains("unix:///var/run/docker.sock"), "{engine}");

    let cgroup = line_of(&table, "cgroup");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    assert!(
        cgroup.contains(if v2 { "v2" } else { "v1" }),
        "{cgroup} (cgroup v2 here: {v2})"
    );

    let routing = line_of(&table, "routing");
    if host_has_ipvs() {
        assert!(routing.contains("mesh"), "{routing}");
    } else {
        assert!(routing.starts_with("warn "), "{routing}");
        assert!(
            routing.contains(&format!(
                "edge: no IPVS (modprobe ip_vs: no /lib/modules/{} on this machine",
                kernel_release()
            )),
            "{routing}"
        );
        assert!(routing.contains("--routing mesh is refused"), "{routing}");
    }

    let reach = line_of(&table, "reach");
    assert!(
        reach.contains("reachable: container networks are routed here"),
        "{reach}"
    );

    let node_image = line_of(&table, "node image");
    assert!(
        node_image.contains("is built → uses it: debootstrap not needed")
            || node_image.contains("debootstrap present"),
        "{node_image}"
    );

    let qemu = line_of(&table, "qemu");
    let has_qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    assert!(
        qemu.contains(if has_qemu {
            "qemu-system-x86_64 "
        } else {
            "not found"
        }),
        "{qemu}"
    );
    assert!(qemu.contains("for --driver qemu"), "{qemu}");
    let kvm = line_of(&table, "kvm");
    assert!(kvm.contains("for --driver qemu"), "{kvm}");
    for name in [
        "privileged",
        "disk (engine)",
        "disk (lab home)",
        "memory",
        "root",
        "port 6767",
        "port 6969",
    ] {
        line_of(&table, name);
    }
    assert_eq!(
        table.lines().last(),
        Some("Ready: `goblog-lab create` will work here.")
    );

    let json = run(&["doctor", "-o", "json"]);
    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(report["ready"], true, "{report}");
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 14, "{report}");
    for finding in findings {
        for key in ["name", "found", "status", "action"] {
            assert!(finding[key].is_string(), "{key} in {finding}");
        }
        assert_ne!(finding["status"], "blocking", "{finding}");
    }
}

#[test]
fn an_old_engine_is_blocking_and_create_stops_with_the_same_line() {
    let socket = old_engine("doctor");
    let host = format!("unix://{}", socket.display());
    let args = ["doctor"];
    let mut command = goblog_lab(&args);
    command.env("DOCKER_HOST", &host);
    let doctor = run_command(command, &args);
    assert_eq!(doctor.status.code(), Some(1));
    let engine = line_of(&stdout(&doctor), "engine").to_string();
    assert!(engine.starts_with("blocking "), "{engine}");
    let err = stderr(&doctor);
    let last = err.lines().last().unwrap();
    assert_eq!(
        last,
        format!("goblog-lab: error: the Docker daemon at {host} speaks API 1.24, but goblog-lab needs 1.40 or newer (Docker 19.03+): upgrade Docker")
    );
    // VM-only findings never block the default driver, engine or not.
    for name in ["qemu", "kvm", "root"] {
        assert!(!line_of(&stdout(&doctor), name).starts_with("blocking"));
    }

    let args = ["doctor", "-o", "json"];
    let mut command = goblog_lab(&args);
    command.env("DOCKER_HOST", &host);
    let json = run_command(command, &args);
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(report["ready"], false);
    assert_eq!(report["findings"][0]["status"], "blocking");
    assert_eq!(
        format!(
            "goblog-lab: error: {}",
            report["blocking"].as_str().unwrap()
        ),
        last
    );

    let lab = "dr-old";
    let args = ["create", "-q", "--name", lab];
    let mut command = goblog_lab(&args);
    command.env("DOCKER_HOST", &host);
    let create = run_command(command, &args);
    assert_one_line_error(&create, 1, "speaks API 1.24");
    assert_eq!(stderr(&create).trim_end(), last);
}

#[test]
fn routing_mesh_without_ipvs_is_refused_before_anything_is_made() {
    assert!(
        !host_has_ipvs(),
        "this test needs a kernel without IPVS (like the CI machine's)"
    );
    let lab = "dr-mesh";
    let _guard = LabGuard::new(lab);
    // Without -q: a step begun would print its line; only the error may.
    let output = run(&["create", "--name", lab, "--routing", "mesh"]);
    assert_mesh_refused(
        &output,
        lab,
        &format!("no /lib/modules/{} on this machine", kernel_release()),
    );
}

/// One line saying why, and nothing of `lab` left anywhere.
fn assert_mesh_refused(output: &Output, lab: &str, why: &str) {
    assert_one_line_error(
        output,
        1,
        &format!("--routing mesh needs IPVS, which this kernel lacks (modprobe ip_vs: {why}"),
    );
    assert_eq!(labelled(lab), Vec::<String>::new());
    assert!(!home().join("labs").join(lab).exists());
}

/// The module list names ip_vs, so only a node can find out that it does
/// not load: the create gets as far as a node, then refuses and rolls back.
#[test]
fn routing_mesh_refused_by_the_node_probe_leaves_nothing() {
    assert!(!host_has_ipvs(), "this test needs a kernel without IPVS");
    let lab = "dr-mesh-late";
    let _guard = LabGuard::new(lab);
    let modules = module_tree(
        "listed",
        Some("kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko\n"),
    );
    let output = create_with_modules(lab, &modules, &["-q", "--routing", "mesh"]);
    // modprobe's own words, from inside the node.
    assert_mesh_refused(
        &output,
        lab,
        &format!(
            "Module ip_vs not found in directory /lib/modules/{})",
            kernel_release()
        ),
    );
}

#[test]
fn dind_nodes_get_the_host_modules_and_try_to_load_ipvs() {
    assert!(!host_has_ipvs(), "this test needs a kernel without IPVS");
    let lab = "dr-modules";
    let _guard = LabGuard::new(lab);
    let modules = module_tree("empty", None);
    let output = create_with_modules(lab, &modules, &["-v"]);
    assert!(output.status.success(), "create failed");
    let summary: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(summary["routing"], "edge");
    // What modprobe itself said inside the node, read through the mount.
    assert_eq!(
        summary["routing_why"],
        format!(
            "no IPVS (modprobe ip_vs: Module ip_vs not found in directory /lib/modules/{})",
            kernel_release()
        )
    );
    assert!(
        stderr(&output).contains("IPVS on swarm-manager-0 ("),
        "the attempt is timed in -v"
    );

    let inspect = docker(&[
        "inspect",
        "--format",
        "{{json .Mounts}}",
        &format!("{lab}-swarm-manager-0"),
    ]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let mounts: serde_json::Value = serde_json::from_str(&stdout(&inspect)).unwrap();
    let modules_mount = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/lib/modules")
        .unwrap_or_else(|| panic!("no /lib/modules mount in {mounts}"));
    assert_eq!(modules_mount["Type"], "bind");
    assert_eq!(modules_mount["RW"], false, "{modules_mount}");
    assert_eq!(modules_mount["Source"], modules.display().to_string());
}

#[test]
fn doctor_help_is_complete() {
    let help = goblog_lab(&["doctor", "--help"]).output().unwrap();
    assert!(help.status.success());
    let text = stdout(&help);
    for needle in [
        "Tell whether this machine can run a lab",
        "ok / warn / blocking",
        "-o, --output <OUTPUT>",
        "json",
        "--driver qemu",
        "Exit status: 0",
        "1 when it",
        "create` runs the same checks first",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let top = stdout(&goblog_lab(&["--help"]).output().unwrap());
    assert!(top.contains("doctor"), "{top}");
}
