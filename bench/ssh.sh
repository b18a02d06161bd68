#!/usr/bin/env bash
# Times `create --driver ssh` on hosts that already have Docker, as
# docs/real-hosts.md reports it:
#   create on 3 hosts (1 manager, 2 workers), until the accountservice
#     answers through $ManagerIP
#   create on 1 host (a manager alone): with provisioning concurrent, the
#     3-host create should cost no more than 1.5x this
#   destroy of the 3-host lab (every host given back)
#
#   bench/ssh.sh                 # RUNS=5 of each
#
# The hosts are Debian systems with systemd, sshd and their own dockerd,
# booted as containers of the lab's node image on a bridge of their own:
# the same test hosts as tests/common/testhosts.rs, made here with the
# docker CLI. goblog-lab reaches them only over SSH, with a key made for
# the run, and trusts their real host keys (read from the hosts), so no
# `--accept-new-host-keys`. Uses hyperfine (installed if missing) and
# prints medians as a markdown table on stdout.
set -euo pipefail

RUNS=${RUNS:-5}
HOSTS=3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh --for-tests
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >&2
cargo build --release -q
gl="$root/target/release/goblog-lab"
host_docker() { env -u DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker "$@"; }

work=$(mktemp -d)
# goblog-lab reads ~/.ssh from $HOME; cargo and rustup must still find
# theirs when create checks the service build.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export GOBLOG_LAB_HOME="$work/home" HOME="$work/user"
unset SSH_AUTH_SOCK
mkdir -p "$HOME/.ssh"
lab=bench-ssh
label=io.goblog-lab.testhost=bench
cleanup() {
    "$gl" destroy -q --name "$lab" 2>/dev/null || true
    "$gl" destroy -q --name "$lab-1" 2>/dev/null || true
    host_docker ps -aq --filter "label=$label" | xargs -r env -u DOCKER_HOST docker rm -f -v >/dev/null
    host_docker volume ls -q --filter "label=$label" | xargs -r env -u DOCKER_HOST docker volume rm >/dev/null
    host_docker network rm goblog-bench-hosts >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

node_image=$("$gl" prepare -q -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_image"])')
ssh-keygen -q -t ed25519 -N '' -f "$work/key"

echo "bench: booting $HOSTS hosts from $node_image" >&2
host_docker network create --label "$label" goblog-bench-hosts >/dev/null
for i in $(seq 0 $((HOSTS - 1))); do
    host_docker volume create --label "$label" "goblog-bench-host-$i" >/dev/null
    host_docker run -d --init=false --name "goblog-bench-host-$i" --hostname "bench-$i" \
        --label "$label" --network goblog-bench-hosts \
        --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
        --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --tmpfs /run:rw,exec,mode=755 --tmpfs /run/lock:rw,mode=1777 --tmpfs /tmp:rw,exec,mode=1777 \
        -v "goblog-bench-host-$i:/var/lib/docker" --env container=docker \
        --stop-signal SIGRTMIN+3 "$node_image" /sbin/init >/dev/null
done
addresses=()
for i in $(seq 0 $((HOSTS - 1))); do
    c="goblog-bench-host-$i"
    host_docker exec "$c" timeout 90 systemctl is-system-running --wait >/dev/null
    for _ in $(seq 1 300); do host_docker exec "$c" docker info >/dev/null 2>&1 && break; sleep 0.2; done
    host_docker exec -i "$c" sh -c 'mkdir -p -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys' < "$work/key.pub"
    ip=$(host_docker inspect -f '{{(index .NetworkSettings.Networks "goblog-bench-hosts").IPAddress}}' "$c")
    echo "$ip $(host_docker exec "$c" cat /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f1,2)" >> "$HOME/.ssh/known_hosts"
    addresses+=("$ip")
done
echo "bench: hosts ${addresses[*]}" >&2

three="$gl create -q --name $lab --driver ssh --ssh-key $work/key --manager root@${addresses[0]} --worker root@${addresses[1]} --worker root@${addresses[2]}"
one="$gl create -q --name $lab-1 --driver ssh --ssh-key $work/key --manager root@${addresses[0]}"
results="$work/results"
mkdir -p "$results"
time_it() { # NAME PREPARE CLEANUP COMMAND
    hyperfine --show-output --runs "$RUNS" --prepare "$2" --cleanup "$3" \
        --export-json "$results/$1.json" -n "$1" "$4" >&2
}
echo "bench: warm-up" >&2
$three >/dev/null && "$gl" destroy -q --name "$lab"
time_it ssh-3 "$gl destroy -q --name $lab" "$gl destroy -q --name $lab" "$three"
time_it ssh-1 "$gl destroy -q --name $lab-1" "$gl destroy -q --name $lab-1" "$one"
time_it ssh-destroy "$gl destroy -q --name $lab; $three" "true" "$gl destroy -q --name $lab"

python3 - "$results" <<'PY'
import json, os, sys
labels = {
    "ssh-3": "`create --driver ssh`, 3 hosts (to answering)",
    "ssh-1": "`create --driver ssh`, 1 host (to answering)",
    "ssh-destroy": "`destroy`, 3 hosts given back",
}
medians = {}
print("| what | median | min | max | runs |")
print("|---|---|---|---|---|")
for key, label in labels.items():
    r = json.load(open(os.path.join(sys.argv[1], key + ".json")))["results"][0]
    medians[key] = r["median"]
    print(f"| {label} | {r['median']:.1f} s | {r['min']:.1f} s | {r['max']:.1f} s | {len(r['times'])} |")
print()
print(f"3 hosts / 1 host: {medians['ssh-3'] / medians['ssh-1']:.2f}x")
PY
