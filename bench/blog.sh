#!/usr/bin/env bash
# The blog's load test through the lab: Gatling's 1000 users, each calling
# GET /accounts/{id} (ids 10000..10099 in a circle) and pausing 1 s, ramped
# over 10 s, for 30 s, against $ManagerIP:6767 of a fresh lab made from
# lab/part5.toml: the accountservice as part 5 had it, with no quote call
# (part 7 added that). The blog's own figure, Swarm on VirtualBox, was a
# mean of 4 ms. Load goes only to the lab's own address.
#
#   bench/blog.sh                  # 3 runs on one lab
#   RUNS=1 USERS=500 bench/blog.sh
#   LAB_FILE=lab/goblog.toml bench/blog.sh   # the default lab, quotes included
#
# Prints one markdown row per run and the medians, with the load average
# (the generator, the proxy and the replicas share this machine's cores).
set -euo pipefail

RUNS=${RUNS:-3}
USERS=${USERS:-1000}
PAUSE=${PAUSE:-1s}
RAMP=${RAMP:-10s}
DURATION=${DURATION:-30s}
LAB=${LAB:-blog-bench}
LAB_FILE=${LAB_FILE:-lab/part5.toml}
# BENCH_ARGS=--no-resources leaves out the per-second resource readings.
BENCH_ARGS=${BENCH_ARGS:-}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"
[[ -x /usr/bin/time ]] || { echo "blog: /usr/bin/time is required (Debian: apt install time)" >&2; exit 1; }

"$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
"$lab_bin" create -q --name "$LAB" --file "$LAB_FILE" >/dev/null
echo "| run | requests | failed | req/s | mean ms | p50 ms | p99 ms | max ms | bench RSS MiB | load avg |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    /usr/bin/time -f '%M' -o "$work/rss-$run" "$lab_bin" bench -q --name "$LAB" \
        --users "$USERS" --pause "$PAUSE" --ramp "$RAMP" --duration "$DURATION" \
        $BENCH_ARGS -o json >"$work/run-$run.json"
    python3 - "$work/run-$run.json" "$run" "$(cut -d' ' -f1 /proc/loadavg)" "$(cat "$work/rss-$run")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
print(f"| {sys.argv[2]} | {r['requests']} | {r['failures']['total']} | {r['throughput_rps']:.0f} | "
      f"{l.get('mean', 0):.2f} | {l.get('p50', 0):.2f} | {l.get('p99', 0):.2f} | {l.get('max', 0):.1f} | "
      f"{int(sys.argv[4]) / 1024:.1f} | {sys.argv[3]} |")
PY
done
python3 - "$work"/run-*.json <<'PY'
import json, statistics, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
med = lambda k: statistics.median((r.get("latency_ms") or {}).get(k, 0) for r in runs)
print(f"\nmedian of {len(runs)}: mean {med('mean'):.2f} ms, p99 {med('p99'):.2f} ms, "
      f"failed {statistics.median(r['failures']['total'] for r in runs)}, "
      f"{statistics.median(r['throughput_rps'] for r in runs):.0f} req/s (blog, Swarm on VirtualBox: mean 4 ms)")
PY
