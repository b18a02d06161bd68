#!/usr/bin/env bash
# How fast is `goblog-lab bench` as a load generator? Side by side with wrk in
# one run: the same accountservice binary on loopback, the same number of
# connections, closed loop (each connection sends as soon as it has its answer).
#
#   bench/generator.sh                 # 10 s each, 50 connections
#   DURATION=5 CONNECTIONS=20 bench/generator.sh
#
# Other knobs: THREADS (wrk's, 2), RUNS (1; alternating wrk and bench each run),
# SERVICE_BIN (an accountservice binary already built, to skip its build).
# `bench` only loads a lab's own addresses, so the script gives it a lab of
# its own in a temporary GOBLOG_LAB_HOME whose manager is 127.0.0.1 and whose
# accountservice is the process started here. Load goes to 127.0.0.1 only.
# Prints a markdown table on stdout, with the machine's load average (the
# generator, the service and wrk share its cores with whatever else runs).
set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
RUNS=${RUNS:-1}
TARGET=x86_64-unknown-linux-gnu

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source bench/service-port.sh

for tool in cargo wrk python3; do
    command -v "$tool" >/dev/null || { echo "generator: $tool is required" >&2; exit 1; }
done

target_dir="${CARGO_TARGET_DIR:-$root/target}"
service=${SERVICE_BIN:-"$target_dir/$TARGET/release/accountservice"}
if [[ -z "${SERVICE_BIN:-}" ]]; then
    echo "generator: building the accountservice (static, release)" >&2
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release -p accountservice --target "$TARGET" >&2
fi
echo "generator: building goblog-lab (release)" >&2
cargo build --release -p goblog-lab >&2
lab_bin="$target_dir/release/goblog-lab"

work=$(mktemp -d)
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$service" --port 0 --bind 127.0.0.1 --db "$work/accounts.db" >"$work/service.out" 2>"$work/service.err" &
pid=$!
port=$(service_port "$work/service.out" "$work/service.err" "$pid") ||
    { echo "generator: the accountservice did not start" >&2; exit 1; }

# A lab whose only address is this loopback service.
export GOBLOG_LAB_HOME="$work/home"
mkdir -p "$GOBLOG_LAB_HOME/labs/loopback"
cat >"$GOBLOG_LAB_HOME/labs/loopback/state.json" <<EOF
{
  "version": 1, "name": "loopback", "driver": "dind", "created_unix": 0,
  "overlay_network": "none",
  "nodes": [{ "id": "none", "hostname": "loopback", "role": "manager",
              "address": "127.0.0.1", "docker_port": 2376 }],
  "registry": { "container": "none", "pull_address": "none" },
  "routing": "edge",
  "services": [{ "name": "accountservice", "image": "none", "replicas": 1, "ports": [$port] }]
}
EOF

wrk_rps() {
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -H 'Accept: application/json' \
        "http://127.0.0.1:$port/accounts/10000" | awk '/^Requests\/sec:/{ print $2 }'
}
bench_rps() {
    "$lab_bin" -q bench --name loopback --users "$CONNECTIONS" --connections "$CONNECTIONS" \
        --pause 0s --ramp 0s --duration "${DURATION}s" --ids 10000..10000 -o json \
        | python3 -c 'import json, sys; r = json.load(sys.stdin); assert r["failures"]["total"] == 0, r["failures"]; print("%.0f" % r["throughput_rps"])'
}

rows=()
for n in $(seq "$RUNS"); do
    echo "generator: run $n of $RUNS: wrk, then goblog-lab bench ($CONNECTIONS connections, ${DURATION}s each)" >&2
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    w=$(wrk_rps)
    b=$(bench_rps)
    ratio=$(awk -v b="$b" -v w="$w" 'BEGIN { printf "%.0f%%", b / w * 100 }')
    rows+=("| $n | $w | $b | $ratio | $load_before |")
done

echo
echo "Closed loop on 127.0.0.1, GET /accounts/10000, $CONNECTIONS connections, ${DURATION}s each, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "(wrk -t$THREADS -c$CONNECTIONS; goblog-lab bench --users $CONNECTIONS --pause 0s --ramp 0s)"
echo
echo "| run | wrk req/s | goblog-lab bench req/s | bench / wrk | load average before |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
