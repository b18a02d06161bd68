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
# Prints one markdown row per run and the medians: failed requests, and the
# p99 / max latency of the failover window (kill → heal) and of the whole run.
set -euo pipefail

RUNS=${RUNS:-3}
RATE=${RATE:-200}
DURATION=${DURATION:-30}
KILL_AT=${KILL_AT:-10}
HEAL_AFTER=${HEAL_AFTER:-15}
WORKERS=${WORKERS:-2}
LAB=${LAB:-failover-bench}
NODE=${NODE:-swarm-worker-0}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

echo "| run | requests | failed | window p99 ms | window max ms | run p99 ms | load avg |"
echo "|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    "$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
    "$lab_bin" create -q --name "$LAB" --workers "$WORKERS" >/dev/null
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
        --kill "$NODE@${KILL_AT}s" --heal-after "${HEAL_AFTER}s" -o json >"$work/run-$run.json"
    load=$(cut -d' ' -f1 /proc/loadavg)
    python3 - "$work/run-$run.json" "$run" "$load" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
w = r.get("failover") or {}
wl = w.get("latency_ms") or {}
l = r.get("latency_ms") or {}
print(f"| {sys.argv[2]} | {r['requests']} | {r['failures']['total']} | {wl.get('p99', '-')} | "
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
      f"window p99 {med([w.get('p99') for w in window])} ms, "
      f"window max {med([w.get('max') for w in window])} ms, "
      f"run p99 {med([(r.get('latency_ms') or {}).get('p99') for r in runs])} ms")
EOF
