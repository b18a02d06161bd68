//! A lab made by the goblog-lab before providers (registry on this
//! machine's engine, no provider recorded beyond "dind") still stops,
//! starts and is destroyed by this one. The old binary is built from the
//! repository's own history, so the lab under test is a real old lab, not
//! a state file written to look like one.

mod common;

use std::process::Command;

use common::*;

/// The last commit before the provider boundary.
const BEFORE_PROVIDERS: &str = "1b503ff8709586fb6b0993498db565ec75f4851d";

/// Builds the old goblog-lab in a directory of its own, once per machine:
/// the directory is under the user's cache, not this clone's target, and
/// named by the commit, so a clean clone's suite finds the binary built by
/// the last one instead of compiling a whole old tree cold again (about
/// three minutes of the suite's two cores). Cargo writes the binary last,
/// so a build cut short leaves no binary to trust.
fn old_goblog_lab() -> std::path::PathBuf {
    let root = machine_cache().join(format!("goblog-lab-{BEFORE_PROVIDERS}"));
    let binary = root.join("target/debug/goblog-lab");
    if binary.exists() {
        return binary;
    }
    let source = root.join("src");
    let _ = std::fs::remove_dir_all(&source);
    std::fs::create_dir_all(&source).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive {BEFORE_PROVIDERS} | tar -x -C '{}'",
            env!("CARGO_MANIFEST_DIR"),
            source.display()
        ))
        .status()
        .unwrap();
    assert!(
        archive.success(),
        "the repository's history holds {BEFORE_PROVIDERS}"
    );
    let built = Command::new("cargo")
        .args(["build", "--quiet", "--bin", "goblog-lab", "--target-dir"])
        .arg(root.join("target"))
        .current_dir(&source)
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(built.success(), "the old goblog-lab builds");
    binary
}

#[test]
fn a_lab_made_before_providers_stops_starts_and_is_destroyed() {
    let lab = "t-old";
    let _guard = LabGuard::new(lab);
    let old = old_goblog_lab();
    let created = Command::new(&old)
        .args([
            "create",
            "-q",
            "--name",
            lab,
            "--workers",
            "1",
            "-o",
            "json",
        ])
        .env("GOBLOG_LAB_HOME", home())
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let manager_ip = summary["manager_ip"].as_str().unwrap().to_string();
    // The old layout: the registry is a container on this machine's engine.
    let registry = format!("{lab}-registry");
    assert!(labelled(lab).contains(&registry), "{:?}", labelled(lab));

    let stopped = run(&["stop", "--name", lab]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let running = |name: &str| {
        stdout(&docker(&[
            "inspect",
            "--format",
            "{{.State.Running}}",
            name,
        ]))
        .trim()
            == "true"
    };
    assert!(!running(&registry), "the old registry stops with the lab");
    assert!(!running(&format!("{lab}-swarm-manager-0")));

    let started = run(&["start", "--name", lab]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert!(running(&registry));
    let (status, body) = http_get(&manager_ip, 6767, "/accounts/10000").unwrap();
    assert_eq!(status, 200, "{body}");

    let destroyed = run(&["destroy", "--name", lab]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    assert_eq!(labelled(lab), Vec::<String>::new());
    assert!(!home().join("labs").join(lab).exists());
}
