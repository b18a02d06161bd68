//! The ssh provider's test hosts are real hosts: systemd as PID 1, sshd with
//! their own host keys, their own dockerd, reachable from this machine and
//! from each other, and down when stopped.

mod common;
#[path = "common/sshd.rs"]
mod sshd;
#[path = "common/testhosts.rs"]
mod testhosts;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testhosts::{node_image, TestHosts, TestHostsOptions};

/// The lab's node image, built if missing (once per test binary).
fn ssh(key: &Path, known_hosts: &Path, target: &str, command: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "LogLevel=ERROR",
            "-F",
            "/dev/null",
            target,
            command,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs")
}

#[test]
fn test_hosts_are_real_hosts() {
    let image = node_image();
    let started = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("testhosts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("id_ed25519");
    sshd::keygen(&key, "");
    let public = std::fs::read_to_string(sshd::public_of(&key)).unwrap();

    let hosts = TestHosts::start(
        "th",
        &image,
        TestHostsOptions {
            count: 3,
            authorized_key: public,
            sudo_user: Some("deploy".into()),
            docker: true,
        },
    );
    let booted = started.elapsed();
    let known_hosts = dir.join("known_hosts");
    let lines: Vec<String> = (0..3).map(|i| hosts.host_key_line(i)).collect();
    std::fs::write(&known_hosts, lines.join("\n") + "\n").unwrap();

    // Distinct identities, though every host comes from one rootfs.
    let keys: std::collections::HashSet<_> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "host keys: {lines:?}");
    let ids: std::collections::HashSet<String> = (0..3)
        .map(|i| {
            let (code, id) = hosts.exec(i, "cat /etc/machine-id");
            assert_eq!(code, 0);
            assert_eq!(id.trim().len(), 32, "machine-id {id:?}");
            id.trim().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3, "machine-ids: {ids:?}");

    for (i, host) in hosts.hosts.iter().enumerate() {
        let root = format!("root@{}", host.address);
        let out = ssh(
            &key,
            &known_hosts,
            &root,
            "hostname; systemctl is-active docker ssh; docker info --format '{{.Swarm.LocalNodeState}}'",
        );
        assert!(out.status.success(), "ssh {root}: {}", common::stderr(&out));
        assert_eq!(
            common::stdout(&out),
            format!("{}\nactive\nactive\ninactive\n", host.hostname),
            "host {i}"
        );
    }
    // The sudo user, on every host (here: the last one).
    let deploy = format!("deploy@{}", hosts.hosts[2].address);
    let out = ssh(
        &key,
        &known_hosts,
        &deploy,
        "id -un; sudo -n true && echo sudo-ok",
    );
    assert!(
        out.status.success(),
        "ssh {deploy}: {}",
        common::stderr(&out)
    );
    assert_eq!(common::stdout(&out), "deploy\nsudo-ok\n");

    // A wrong known host key is refused, so the check above meant something.
    let wrong = dir.join("known_hosts.wrong");
    let swapped = format!(
        "{} {}\n",
        hosts.hosts[0].address,
        lines[1].split_once(' ').unwrap().1
    );
    std::fs::write(&wrong, swapped).unwrap();
    let out = ssh(
        &key,
        &wrong,
        &format!("root@{}", hosts.hosts[0].address),
        "true",
    );
    assert!(!out.status.success(), "a wrong host key was accepted");
    assert!(
        common::stderr(&out).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        common::stderr(&out)
    );

    // Hosts reach each other: sshd, and a Swarm port served by a listener.
    let addr1 = hosts.hosts[1].address;
    let (code, _) = hosts.exec(0, &format!("timeout 3 bash -c '</dev/tcp/{addr1}/22'"));
    assert_eq!(code, 0, "host 0 does not reach host 1 on 22");
    let (code, _) = hosts.exec(
        1,
        "docker swarm init --advertise-addr eth0 >/dev/null && docker info --format '{{.Swarm.LocalNodeState}}'",
    );
    assert_eq!(code, 0, "swarm init on host 1");
    let (code, _) = hosts.exec(0, &format!("timeout 3 bash -c '</dev/tcp/{addr1}/2377'"));
    assert_eq!(code, 0, "host 0 does not reach host 1's Swarm port 2377");
    let token = hosts.exec(1, "docker swarm join-token -q worker").1;
    let (code, _) = hosts.exec(
        2,
        &format!("docker swarm join --token {} {addr1}:2377", token.trim()),
    );
    assert_eq!(code, 0, "host 2 joins host 1's Swarm");
    let (_, nodes) = hosts.exec(1, "docker node ls --format '{{.Hostname}} {{.Status}}'");
    assert!(nodes.contains("th-2 Ready"), "{nodes}");

    // Down: a connection fails fast. Back: same key, same machine.
    hosts.stop_host(1);
    let t = Instant::now();
    let out = ssh(&key, &known_hosts, &format!("root@{addr1}"), "true");
    assert!(!out.status.success(), "ssh to a stopped host succeeded");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    hosts.start_host(1);
    eprintln!("host 1 back in {:.1}s", t.elapsed().as_secs_f64());
    let out = ssh(
        &key,
        &known_hosts,
        &format!("root@{addr1}"),
        "cat /etc/machine-id",
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(ids.contains(common::stdout(&out).trim()));

    eprintln!(
        "booted 3 hosts in {:.1}s, whole test {:.1}s",
        booted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(hosts);
    assert!(
        common::docker(&["ps", "-aq", "--filter", "label=io.goblog-lab.testhost=th"])
            .stdout
            .is_empty(),
        "containers left behind"
    );
}

/// `docker: false`: a host where Docker was never installed.
#[test]
fn a_host_without_docker() {
    let image = node_image();
    let hosts = TestHosts::start(
        "th-nodocker",
        &image,
        TestHostsOptions {
            count: 1,
            authorized_key: String::new(),
            sudo_user: None,
            docker: false,
        },
    );
    let (code, out) = hosts.exec(
        0,
        "command -v docker dockerd containerd; systemctl is-active docker.service; \
         systemctl list-unit-files docker.service docker.socket --no-legend | wc -l; systemctl is-system-running",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "inactive\n0\nrunning\n");
}
