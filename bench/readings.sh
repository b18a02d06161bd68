#!/usr/bin/env bash
# Does `bench` disturb what it measures? On one fresh lab made from
# lab/part5.toml ($LAB_FILE), RUNS pairs of open-loop runs at RATE req/s
# (default 200) for DURATION (20 s), alternating with and without the
# per-second resource readings (`--no-resources`), so both see the same
# lab and the same machine. Prints each run and the two medians' ratio;
# the target is p99 with readings within 20 % of p99 without. Load goes
# only to the lab's own address; every run stops by itself.
#
#   bench/readings.sh              # RUNS=3
set -euo pipefail

RUNS=${RUNS:-3}
RATE=${RATE:-200}
DURATION=${DURATION:-20s}
LAB=${LAB:-readings-bench}
LAB_FILE=${LAB_FILE:-lab/part5.toml}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

"$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
"$lab_bin" create -q --name "$LAB" --file "$LAB_FILE" >/dev/null
echo "| run | readings | requests | failed | p50 ms | p99 ms | max ms | task samples |"
echo "|---|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
    for mode in with without; do
        args=()
        [[ $mode == without ]] && args=(--no-resources)
        "$lab_bin" bench -q --name "$LAB" --rate "$RATE" --duration "$DURATION" "${args[@]}" \
            -o json >"$work/$mode-$run.json"
        python3 - "$work/$mode-$run.json" "$run" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
tasks = (r.get("resources") or {}).get("tasks") or []
sources = sorted({t.get("source") for t in tasks} - {None})
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['requests']} | {r['failures']['total']} | "
      f"{l.get('p50', 0):.2f} | {l.get('p99', 0):.2f} | {l.get('max', 0):.1f} | "
      f"{len(tasks)} tasks {' '.join(sources)} |")
PY
    done
done
python3 - "$work" "$RUNS" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
p99 = lambda mode: statistics.median(
    json.load(open(f"{work}/{mode}-{i}.json"))["latency_ms"]["p99"] for i in range(1, runs + 1))
w, wo = p99("with"), p99("without")
print(f"\nmedian p99 of {runs}: {w:.2f} ms with readings, {wo:.2f} ms without: "
      f"{100 * (w / wo - 1):+.0f} % (target: within 20 %)")
PY
