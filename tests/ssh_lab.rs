//! The ssh provider end to end: real sshd, real systemd, real dockerd on
//! every test host, a real Swarm across them, real HTTP through $ManagerIP.
//!
//! The test hosts are containers of the lab's node image booting systemd
//! (`common/testhosts.rs`) on a bridge of their own. goblog-lab reaches
//! them only over SSH, with the ssh2 crate, as it would three spare
//! machines; the tests use `docker exec` on the host engine to set up
//! faults and to look at what goblog-lab left behind.

mod common;
#[path = "common/machine_store.rs"]
mod machine_store;
#[path = "common/sshd.rs"]
mod sshd;
#[path = "common/testhosts.rs"]
mod testhosts;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use testhosts::{node_image, TestHosts, TestHostsOptions};

/// A user's machine for goblog-lab: its own HOME (so `~/.ssh` is the
/// test's), no ssh-agent, and a key of its own.
struct Workstation {
    home: PathBuf,
    key: PathBuf,
    public_key: String,
}

impl Workstation {
    fn new(name: &str) -> Self {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ssh-home-{name}"));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let key = home.join("lab_key");
        sshd::keygen(&key, "");
        let public_key = std::fs::read_to_string(sshd::public_of(&key)).unwrap();
        let public_key = public_key.trim().to_string();
        Workstation {
            home,
            key,
            public_key,
        }
    }

    fn goblog_lab(&self, args: &[&str]) -> Command {
        let mut cmd = goblog_lab(args);
        cmd.env("HOME", &self.home).env_remove("SSH_AUTH_SOCK");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run_command(self.goblog_lab(args), args)
    }

    /// Trusts the hosts' real keys, as a user who checked them would.
    fn trust(&self, hosts: &TestHosts) {
        let lines: Vec<String> = (0..hosts.hosts.len())
            .map(|i| hosts.host_key_line(i))
            .collect();
        std::fs::write(self.home.join(".ssh/known_hosts"), lines.join("\n") + "\n").unwrap();
    }

    fn forget_hosts(&self) {
        let _ = std::fs::remove_file(self.home.join(".ssh/known_hosts"));
    }
}

/// `count` test hosts that know the workstation's key, root and a `deploy`
/// user with passwordless sudo on each.
fn boot(lab: &str, count: usize) -> (Workstation, TestHosts) {
    let me = Workstation::new(lab);
    let hosts = TestHosts::start(
        lab,
        &node_image(),
        TestHostsOptions {
            count,
            authorized_key: me.public_key.clone(),
            sudo_user: Some("deploy".into()),
            docker: true,
        },
    );
    (me, hosts)
}

/// `docker node ls` through the lab's `env` lists every test host Ready.
fn assert_every_host_ready(vars: &std::collections::HashMap<String, String>, hosts: &TestHosts) {
    let nodes = lab_docker(
        vars,
        &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
    );
    assert!(nodes.status.success(), "{}", stderr(&nodes));
    let nodes = stdout(&nodes);
    for host in &hosts.hosts {
        assert!(
            nodes.contains(&format!("{} Ready", host.hostname)),
            "{} missing from {nodes}",
            host.hostname
        );
    }
}

fn host_arg(user: &str, hosts: &TestHosts, i: usize) -> String {
    format!("{user}@{}", hosts.hosts[i].address)
}

/// What a host looks like when no lab has touched it: the state a
/// rollback or a destroy must leave.
fn assert_untouched(hosts: &TestHosts, i: usize) {
    let (code, out) = hosts.exec(
        i,
        "docker info --format '{{.Swarm.LocalNodeState}}'; \
         test -e /etc/systemd/system/docker.service.d/zz-goblog-lab.conf && echo DROP-IN; \
         test -e /etc/goblog-lab && echo LAB-DIR; \
         ls /etc/docker/certs.d 2>/dev/null; \
         docker ps -aq | wc -l; \
         systemctl is-active docker; \
         perl -MIO::Socket::INET -e 'for (2377, 7946) { IO::Socket::INET->new(LocalPort=>$_,Listen=>1,ReuseAddr=>1) or print \"$_ held\\n\" }'",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // The Swarm's ports are free the moment destroy returns: the next lab
    // on this host binds them at once.
    assert_eq!(
        lines,
        vec!["inactive", "0", "active"],
        "host {i} still carries the lab: {out}"
    );
}

#[test]
fn three_ssh_managers_with_vip_keep_manager_ip_when_the_first_host_stops() {
    let lab = "t-ssh-vip";
    let (me, hosts) = boot(lab, 3);
    let _guard = LabGuard::new(lab);
    me.trust(&hosts);
    let [a, b, c, _] = hosts.hosts[0].address.octets();
    let vip = format!("{a}.{b}.{c}.254");
    let managers: Vec<String> = (0..3).map(|i| host_arg("root", &hosts, i)).collect();
    let key = me.key.to_str().unwrap();
    let mut args = vec![
        "create", "-q", "--name", lab, "--driver", "ssh", "--vip", &vip,
    ];
    for manager in &managers {
        args.extend(["--manager", manager.as_str()]);
    }
    args.extend(["--ssh-key", key, "-o", "json"]);
    let created = me.run(&args);
    assert!(created.status.success(), "{}", stderr(&created));
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(summary["manager_ip"], vip.as_str());
    assert_eq!(summary["manager_ip_moves"], true);
    let vars = env_vars(&stdout(&me.run(&["env", "--name", lab, "--shell", "bash"])));
    assert_eq!(vars["DOCKER_HOST"], format!("tcp://{vip}:2376"));
    assert_every_host_ready(&vars, &hosts);

    // The first host goes down; the address answers from another.
    hosts.stop_host(0);
    wait_until(
        "the virtual $ManagerIP to answer from another host",
        Duration::from_secs(90),
        || http_get(&vip, 6767, "/accounts/10000").is_ok_and(|(status, _)| status == 200),
    );
    let (code, held) = hosts.exec(1, "ip -4 -o addr");
    assert_eq!(code, 0);
    let (_, held_too) = hosts.exec(2, "ip -4 -o addr");
    assert!(
        format!("{held}{held_too}").contains(&format!(" {vip}/32 ")),
        "{held}{held_too}"
    );

    // Back, and destroyed: nothing of the address or keepalived is left.
    hosts.start_host(0);
    let destroyed = me.run(&["destroy", "-q", "--name", lab]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    for i in 0..3 {
        let (_, addresses) = hosts.exec(i, "ip -4 -o addr; docker ps -a --format '{{.Names}}'");
        assert!(!addresses.contains(&vip), "host {i}: {addresses}");
        assert!(
            !addresses.contains("goblog-lab-vip"),
            "host {i}: {addresses}"
        );
    }
}

#[test]
fn a_three_host_lab_over_ssh_end_to_end() {
    let lab = "t-ssh";
    let (me, hosts) = boot(lab, 3);
    // Dropped before the hosts: the lab is destroyed while they still run.
    let _guard = LabGuard::new(lab);
    me.trust(&hosts);
    // Host 1 sets its sockets in daemon.json, as Docker's documentation
    // shows for systemd hosts: an override without `-H fd://`, and `hosts`
    // in daemon.json, in formatting of its own. The lab must set that
    // daemon.json aside (its `hosts` fights the drop-in's -H flags) and
    // give it back byte for byte.
    let own_daemon_json =
        "{\n  \"hosts\": [\"unix:///var/run/docker.sock\"],\n    \"log-level\":   \"warn\"\n}\n";
    let (code, out) = hosts.exec(
        1,
        &format!(
            "mkdir -p /etc/systemd/system/docker.service.d && \
             printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/dockerd --containerd=/run/containerd/containerd.sock\\n' \
               > /etc/systemd/system/docker.service.d/override.conf && \
             printf '%s' '{own_daemon_json}' > /etc/docker/daemon.json && \
             systemctl daemon-reload && systemctl restart docker && docker info --format '{{{{.ServerVersion}}}}'"
        ),
    );
    assert_eq!(code, 0, "{out}");

    let manager = host_arg("root", &hosts, 0);
    let worker0 = host_arg("deploy", &hosts, 1);
    let worker1 = host_arg("deploy", &hosts, 2);
    let key = me.key.to_str().unwrap();
    let args = [
        "create",
        "--name",
        lab,
        "--driver",
        "ssh",
        "--manager",
        &manager,
        "--worker",
        &worker0,
        "--worker",
        &worker1,
        "--ssh-key",
        key,
        "-o",
        "json",
    ];
    let started = Instant::now();
    let created = me.run(&args);
    assert!(created.status.success(), "{}", stderr(&created));
    eprintln!("create --driver ssh took {:?}", started.elapsed());
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let manager_ip = hosts.hosts[0].address.to_string();
    assert_eq!(summary["manager_ip"], manager_ip.as_str());
    assert_eq!(summary["driver"], "ssh");
    assert_eq!(summary["registry"], format!("{manager_ip}:5000").as_str());

    // The tutorial's own commands through `env`.
    let env = me.run(&["env", "--name", lab, "--shell", "bash"]);
    assert!(env.status.success());
    let vars = env_vars(&stdout(&env));
    assert_eq!(vars["ManagerIP"], manager_ip);
    assert_eq!(
        vars["DOCKER_HOST"],
        format!("tcp://{manager_ip}:2376"),
        "{vars:?}"
    );
    assert_every_host_ready(&vars, &hosts);
    let networks = lab_docker(&vars, &["network", "ls", "--format", "{{.Name}}"]);
    assert!(stdout(&networks).lines().any(|n| n == "my_network"));

    // The engines refuse a client without the lab's certificate.
    let plain = Command::new("docker")
        .args(["-H", &format!("tcp://{manager_ip}:2376"), "version"])
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .output()
        .unwrap();
    assert!(!plain.status.success());

    // curl $ManagerIP:6767 reaches more than one replica.
    let mut served_by = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (status, body) = http_get(&manager_ip, 6767, "/accounts/10000").unwrap();
        assert_eq!(status, 200, "{body}");
        let account: serde_json::Value = serde_json::from_str(&body).unwrap();
        served_by.insert(account["servedBy"].as_str().unwrap().to_string());
    }
    assert!(served_by.len() >= 2, "one replica answered: {served_by:?}");

    // The registry listens on the manager's lab address only, over TLS,
    // and every node trusts it through certs.d.
    let (code, listening) = hosts.exec(0, "ss -Hltn 'sport = :5000'");
    assert_eq!(code, 0);
    assert!(
        listening.contains(&format!("{manager_ip}:5000")) && !listening.contains("0.0.0.0:5000"),
        "{listening}"
    );
    for i in 0..3 {
        let (code, out) = hosts.exec(
            i,
            &format!("cat /etc/docker/certs.d/{manager_ip}:5000/ca.crt"),
        );
        assert_eq!(code, 0, "host {i}: {out}");
        assert!(out.starts_with("-----BEGIN CERTIFICATE-----"));
    }
    // It answers only clients with a certificate from the lab CA: a
    // neighbour on the hosts' network can neither push nor pull.
    let certs_d = format!("/etc/docker/certs.d/{manager_ip}:5000");
    let (code, _) = hosts.exec(
        2,
        &format!("curl -s --cacert {certs_d}/ca.crt https://{manager_ip}:5000/v2/"),
    );
    assert_ne!(
        code, 0,
        "the registry answered a client without a certificate"
    );
    let (code, out) = hosts.exec(
        2,
        &format!(
            // curl reads a colon in --cert as the start of a passphrase.
            "cd '{certs_d}' && curl -sf --cacert ca.crt --cert client.cert --key client.key https://{manager_ip}:5000/v2/_catalog"
        ),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accountservice"), "{out}");
    // The key and tokens are the user's alone.
    let lab_dir = home().join("labs").join(lab);
    for secret in [
        "ca-key.pem",
        "certs/key.pem",
        "swarm-worker.token",
        "swarm-manager.token",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lab_dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    // exec runs through SSH on the named node.
    let exec = me.run(&[
        "exec",
        "--name",
        lab,
        &hosts.hosts[1].hostname,
        "--",
        "hostname",
    ]);
    assert!(exec.status.success(), "{}", stderr(&exec));
    assert_eq!(stdout(&exec).trim(), hosts.hosts[1].hostname);
    // A shell on a host is the user's own ssh client's job.
    let shell = me.run(&["shell", "-q", "--name", lab, &hosts.hosts[1].hostname]);
    assert_one_line_error(&shell, 2, &format!("`ssh {worker0}`"));

    // stop and start need no flag: the provider is in the state.
    let stopped = me.run(&["stop", "--name", lab]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    let (_, active) = hosts.exec(0, "systemctl is-active docker");
    assert_eq!(active.trim(), "inactive");
    let started = me.run(&["start", "--name", lab]);
    assert!(started.status.success(), "{}", stderr(&started));
    let (status, _) = http_get(&manager_ip, 6767, "/accounts/10000").unwrap();
    assert_eq!(status, 200);

    // destroy gives every host back as it was, the daemon.json byte for byte.
    let destroyed = me.run(&["destroy", "--name", lab]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    for i in 0..3 {
        assert_untouched(&hosts, i);
    }
    let (_, daemon_json) = hosts.exec(1, "cat /etc/docker/daemon.json");
    assert_eq!(daemon_json, own_daemon_json);
    let (_, images) = hosts.exec(
        0,
        "docker images --format '{{.Repository}}' | grep -c . || true",
    );
    assert_eq!(images.trim(), "0", "the lab's images stayed on the manager");
}

#[test]
fn hosts_that_cannot_take_a_lab_are_refused_before_anything_changes() {
    let lab = "t-ssh-refuse";
    let (me, hosts) = boot(lab, 2);
    // Dropped before the hosts: the lab is destroyed while they still run.
    let _guard = LabGuard::new(lab);
    let manager = host_arg("root", &hosts, 0);
    let worker = host_arg("deploy", &hosts, 1);
    let key = me.key.to_str().unwrap().to_string();
    // A bare lab (no deploy) on the two hosts, `worker` logging in as given.
    let args = |worker: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "create",
            "--name",
            lab,
            "--driver",
            "ssh",
            "--no-deploy",
            "--manager",
            &manager,
            "--worker",
            worker,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let create_as = |worker: &str, extra: &[&str]| {
        let mut args = args(worker, extra);
        args.insert(1, "-q".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        me.run(&args)
    };
    let create = |extra: &[&str]| create_as(&worker, extra);
    let refused = |output: &Output, needle: &str| {
        assert_one_line_error(output, 1, needle);
        assert!(!home().join("labs").join(lab).exists(), "state left behind");
        for i in 0..2 {
            assert_untouched(&hosts, i);
        }
    };

    // An unknown host key is refused, with its fingerprint.
    let output = create(&["--ssh-key", &key]);
    refused(&output, "is not known (SHA256:");
    assert!(stderr(&output).contains("--accept-new-host-keys"));

    // A changed host key is refused even with --accept-new-host-keys:
    // known_hosts names host 0 with host 1's key.
    let wrong_line = hosts.host_key_line(1).replacen(
        &hosts.hosts[1].address.to_string(),
        &hosts.hosts[0].address.to_string(),
        1,
    );
    std::fs::write(me.home.join(".ssh/known_hosts"), format!("{wrong_line}\n")).unwrap();
    let output = create(&["--ssh-key", &key, "--accept-new-host-keys"]);
    refused(&output, "has CHANGED");
    let line = stderr(&output);
    assert_eq!(
        line.matches("SHA256:").count(),
        2,
        "both fingerprints: {line}"
    );
    me.trust(&hosts);

    // A key the hosts do not know.
    let stranger = Workstation::new("t-ssh-stranger");
    let output = create(&["--ssh-key", stranger.key.to_str().unwrap()]);
    refused(&output, "refused every key tried");

    // A key with a passphrase, and no agent to hold it.
    let locked = me.home.join("locked_key");
    sshd::keygen(&locked, "secret");
    let output = create(&["--ssh-key", locked.to_str().unwrap()]);
    refused(&output, "passphrase");

    // A login that cannot become root without a password.
    let (code, out) = hosts.exec(
        1,
        "useradd -m -s /bin/bash plain && install -d -o plain -m 700 /home/plain/.ssh && \
         install -o plain -m 600 /root/.ssh/authorized_keys /home/plain/.ssh/authorized_keys",
    );
    assert_eq!(code, 0, "{out}");
    let plain = host_arg("plain", &hosts, 1);
    let output = create_as(&plain, &["--ssh-key", &key]);
    refused(&output, &format!("plain on {}", hosts.hosts[1].address));
    assert!(stderr(&output).contains("needs passwordless sudo"));

    // Already in a Swarm.
    let (code, out) = hosts.exec(1, "docker swarm init --advertise-addr 127.0.0.1 >/dev/null");
    assert_eq!(code, 0, "{out}");
    let output = create(&["--ssh-key", &key]);
    assert_one_line_error(&output, 1, "already in a Swarm");
    assert!(stderr(&output).contains(&worker), "names the host");
    let (code, _) = hosts.exec(1, "docker swarm leave --force >/dev/null");
    assert_eq!(code, 0);

    // A blocked Swarm port between the hosts.
    let (code, out) = hosts.exec(0, "iptables -I INPUT -p tcp --dport 2377 -j DROP");
    assert_eq!(code, 0, "{out}");
    let output = create(&["--ssh-key", &key]);
    refused(&output, ":2377/tcp");
    hosts.exec(0, "iptables -D INPUT -p tcp --dport 2377 -j DROP");

    // Something of the host's own listens on the registry's port of the
    // manager: refused, naming the port, and the listener is left alone.
    let (code, listener) = hosts.exec(
        0,
        "nohup timeout 300 perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalPort=>5000,Listen=>1,ReuseAddr=>1) or exit 1; sleep 300' >/dev/null 2>&1 & echo $!",
    );
    assert_eq!(code, 0, "{listener}");
    let holding = |host: usize| hosts.exec(host, "ss -Hltn 'sport = :5000'").1;
    wait_until(
        "the host's own listener on 5000",
        Duration::from_secs(10),
        || !holding(0).trim().is_empty(),
    );
    let output = create(&["--ssh-key", &key]);
    refused(&output, "port 5000/tcp is already in use");
    assert!(stderr(&output).contains(&manager), "names the host");
    assert!(
        !holding(0).trim().is_empty(),
        "the host's listener was stopped"
    );
    hosts.exec(0, &format!("kill {}", listener.trim()));

    // A host without Docker: refused, with the way to have it installed.
    let bare = TestHosts::start(
        "t-ssh-nodocker",
        &node_image(),
        TestHostsOptions {
            count: 1,
            authorized_key: me.public_key.clone(),
            sudo_user: None,
            docker: false,
        },
    );
    let mut known = std::fs::read_to_string(me.home.join(".ssh/known_hosts")).unwrap();
    known += &(bare.host_key_line(0) + "\n");
    std::fs::write(me.home.join(".ssh/known_hosts"), known).unwrap();
    let output = me.run(&[
        "create",
        "-q",
        "--name",
        lab,
        "--driver",
        "ssh",
        "--no-deploy",
        "--manager",
        &host_arg("root", &bare, 0),
        "--ssh-key",
        &key,
    ]);
    assert_one_line_error(&output, 1, "Docker is not installed");
    assert!(
        stderr(&output).contains("--install-docker"),
        "{}",
        stderr(&output)
    );
    drop(bare);

    // A host that is down.
    hosts.stop_host(1);
    let output = create(&["--ssh-key", &key]);
    assert_one_line_error(&output, 1, "cannot reach");
    hosts.start_host(1);

    // Ctrl-C while the engines are being reconfigured: rolled back.
    let child = me
        .goblog_lab(
            &args(&worker, &["--ssh-key", &key])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let has_drop_in = |i| {
        hosts
            .exec(
                i,
                "test -e /etc/systemd/system/docker.service.d/zz-goblog-lab.conf",
            )
            .0
            == 0
    };
    wait_until("the drop-in on a host", Duration::from_secs(60), || {
        has_drop_in(0) || has_drop_in(1)
    });
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Rolling back"),
        "{}",
        stderr(&output)
    );
    assert!(!home().join("labs").join(lab).exists(), "state left behind");
    for i in 0..2 {
        assert_untouched(&hosts, i);
    }

    // With the keys recorded by --accept-new-host-keys, the lab comes up.
    me.forget_hosts();
    let output = create(&["--ssh-key", &key, "--accept-new-host-keys"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let recorded =
        std::fs::read_to_string(home().join("labs").join(lab).join("known_hosts")).unwrap();
    assert_eq!(recorded.lines().count(), 2, "{recorded}");

    // A host that is down at destroy: the others are given back, the lab
    // is kept for a second try, which finishes the job once it is up.
    hosts.stop_host(1);
    let output = me.run(&["destroy", "-q", "--name", lab]);
    assert_one_line_error(&output, 1, "could not give back 1 of 2 hosts");
    assert!(
        home().join("labs").join(lab).exists(),
        "the lab was forgotten"
    );
    assert_untouched(&hosts, 0);
    hosts.start_host(1);
    let destroyed = me.run(&["destroy", "--name", lab]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    for i in 0..2 {
        assert_untouched(&hosts, i);
    }

    // --force forgets a lab whose hosts are gone for good.
    let output = create(&["--ssh-key", &key, "--accept-new-host-keys"]);
    assert!(output.status.success(), "{}", stderr(&output));
    hosts.stop_host(1);
    let output = me.run(&["destroy", "--force", "--name", lab]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--force: forgetting lab"),
        "{}",
        stderr(&output)
    );
    assert!(!home().join("labs").join(lab).exists());
}

/// Machines a reader made with `docker-machine create --driver generic`
/// (here: two systemd test hosts, dockerd running and in no Swarm, as
/// docker-machine leaves them, and a store in docker-machine 0.16's on-disk
/// format) become a lab over SSH, and are given back as they were.
#[test]
fn machines_from_docker_machine_become_a_lab_and_are_given_back() {
    let lab = "t-dm";
    let (me, hosts) = boot(lab, 2);
    let _guard = LabGuard::new(lab);

    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docker-machine-store");
    let _ = std::fs::remove_dir_all(&store);
    for (name, host) in ["m0", "w0"].iter().zip(&hosts.hosts) {
        machine_store::write_machine(&store, name, &host.address.to_string(), "root", 22, &me.key);
    }
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
        let mut command = me.goblog_lab(&args);
        command.env("MACHINE_STORAGE_PATH", &store);
        run_command(command, &args)
    };

    // docker-machine never recorded host keys; goblog-lab will not guess,
    // and nothing is touched.
    me.forget_hosts();
    let refused = adopt(&[]);
    assert_one_line_error(&refused, 1, "--accept-new-host-keys");
    for i in 0..2 {
        assert_untouched(&hosts, i);
    }

    let created = adopt(&["--accept-new-host-keys"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(created["driver"], "docker-machine");
    assert_eq!(created["manager_ip"], hosts.hosts[0].address.to_string());
    let vars = env_vars(&stdout(&me.run(&["env", "--name", lab])));
    assert_every_host_ready(&vars, &hosts);

    // Given back: dockerd up, in no Swarm, no lab config, no container.
    let destroyed = me.run(&["destroy", "-q", "--name", lab]);
    assert!(destroyed.status.success(), "{}", stderr(&destroyed));
    for i in 0..2 {
        assert_untouched(&hosts, i);
    }
    assert!(!home().join("labs").join(lab).exists());
}
