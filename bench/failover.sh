#!/usr/bin/env bash
# Failover under load, the issue's scenario: a worker killed while the lab
# answers 200 req/s. Each run gets a fresh lab (so the worker really holds an
# accountservice replica when it dies), loads it open loop for DURATION s,
# kills the worker at KILL_AT s and heals it HEAL_AFTER s later, then
# destroys the lab. Load goes only to the lab's own $ManagerIP.
#
#   bench/failover.sh                    # 3 runs, 200 req/s, 30 s, kill at 10 s, heal 15 s later
#   RUNS=1 RATE=100 bench/failover.sh
#
# EDGE_CONFIG=FILE puts that HAProxy config on the edge proxy of each fresh
# lab before the load (needs the docker CLI), e.g. the config from before the
# failover tuning: EDGE_CONFIG=bench/edge-before-failover-tuning.cfg.
#
# A manager instead (issue 23), on a lab with MANAGERS=3 whose $ManagerIP is
# virtual:
#   MANAGERS=3 NODE=swarm-manager-0 bench/failover.sh   # the first manager
#   MANAGERS=3 NODE=holder bench/failover.sh            # whoever holds the address,
#       handed on first if that is the first manager (its keepalived restarted),
#       so the kill is of a holder that is not the first
#
# Prints one markdown row per run and the medians: failed requests, how many
# seconds were disturbed, and the p99 / max latency of the failover window
# (kill → heal) and of the whole run.
set -euo pipefail

RUNS=${RUNS:-3}
RATE=${RATE:-200}
DURATION=${DURATION:-30}
KILL_AT=${KILL_AT:-10}
HEAL_AFTER=${HEAL_AFTER:-15}
WORKERS=${WORKERS:-2}
LAB=${LAB:-failover-bench}
NODE=${NODE:-swarm-worker-0}
MANAGERS=${MANAGERS:-1}

# The manager whose lab interface holds the virtual $ManagerIP.
holder() {
    local vip=$1 i
    for i in $(seq 0 $((MANAGERS - 1))); do
        if docker exec "$LAB-swarm-manager-$i" ip -4 -o addr | grep -q " $vip/32 "; then
            echo "swarm-manager-$i"
            return
        fi
    done
}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

echo "| run | killed | requests | failed | disturbed s | window p99 ms | window max ms | run p99 ms | load avg |"
echo "|---|---|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    "$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
    "$lab_bin" create -q --name "$LAB" --managers "$MANAGERS" --workers "$WORKERS" >/dev/null
    kill=$NODE
    if [[ $NODE == holder ]]; then
        vip=$("$lab_bin" status --name "$LAB" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manager_ip"])')
        for _ in $(seq 100); do [[ -n $(holder "$vip") ]] && break; sleep 0.1; done
        if [[ $(holder "$vip") == swarm-manager-0 ]]; then
            docker exec "$LAB-swarm-manager-0" docker restart goblog-lab-vip >/dev/null
            for _ in $(seq 100); do
                h=$(holder "$vip"); [[ -n $h && $h != swarm-manager-0 ]] && break; sleep 0.1
            done
            # The address just moved: let the ARP caches settle before the load.
            sleep 5
        fi
        kill=$(holder "$vip")
    fi
    if [[ -n "${EDGE_CONFIG:-}" ]]; then
        (
            eval "$("$lab_bin" env --name "$LAB")"
            current=$(docker service inspect edge \
                --format '{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}{{end}}')
            docker config create "edge-bench-$run" "$EDGE_CONFIG" >/dev/null
            docker service update -q --detach=false --config-rm "$current" \
                --config-add "source=edge-bench-$run,target=/usr/local/etc/haproxy/haproxy.cfg,mode=0444" \
                edge >/dev/null
        )
    fi
    "$lab_bin" bench -q --name "$LAB" --rate "$RATE" --duration "${DURATION}s" \
        --kill "$kill@${KILL_AT}s" --heal-after "${HEAL_AFTER}s" -o json >"$work/run-$run.json"
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$work/run-$run.json" "$run" "$load" "$kill" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
w = r.get("failover") or {}
wl = w.get("latency_ms") or {}
l = r.get("latency_ms") or {}
print(f"| {sys.argv[2]} | {sys.argv[4]} | {r['requests']} | {r['failures']['total']} | "
      f"{w.get('disturbed_s', '-')} | {wl.get('p99', '-')} | "
      f"{wl.get('max', '-')} | {l.get('p99', '-')} | {sys.argv[3]} |")
EOF
done
python3 - "$work"/run-*.json <<'EOF'
import json, statistics, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else "-"
window = [((r.get("failover") or {}).get("latency_ms") or {}) for r in runs]
print(f"\nmedian of {len(runs)}: failed {med([r['failures']['total'] for r in runs])}, "
      f"disturbed {med([(r.get('failover') or {}).get('disturbed_s') for r in runs])} s, "
      f"window p99 {med([w.get('p99') for w in window])} ms, "
      f"window max {med([w.get('max') for w in window])} ms, "
      f"run p99 {med([(r.get('latency_ms') or {}).get('p99') for r in runs])} ms")
EOF
