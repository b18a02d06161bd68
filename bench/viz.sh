#!/usr/bin/env bash
# How soon `viz` shows a scale: the bound the browser test once held to 2 s,
# measured here instead (tests/workshop.rs waits for the page with a generous
# deadline and prints what it saw). Each round runs `goblog-lab scale
# accountservice=N` (which returns once Swarm runs the tasks) and then reads
# viz's /api/state, the model the page draws from its event stream, every
# 20 ms until it holds N running accountservice tasks. Rounds go 3 -> 5 -> 3
# ... on one lab, made for the run and destroyed after it.
#
#   bench/viz.sh                # 10 rounds
#   ROUNDS=20 bench/viz.sh
#
# Prints one row per round, then the median and max of each direction, in ms
# after scale returned (a scale down is often shown before scale returns: 0-1 ms).
# viz polls the manager once a second (src/viz/poll.rs, POLL_EVERY), so the
# expected figure is up to about a second.
set -euo pipefail

ROUNDS=${ROUNDS:-10}
LAB=${LAB:-viz-bench}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

"$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
"$lab_bin" create -q --name "$LAB" --workers 2 >/dev/null
"$lab_bin" viz -q --name "$LAB" --port 0 >"$work/viz.out" 2>"$work/viz.err" &
viz_pid=$!
trap 'kill "$viz_pid" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 300); do
    url=$(grep -ho 'http://127.0.0.1:[0-9]*' "$work/viz.out" 2>/dev/null | head -n1 || true)
    [[ -n "$url" ]] && break
    sleep 0.1
done
[[ -n "$url" ]] || { echo "viz.sh: viz printed no address" >&2; exit 1; }

python3 - "$lab_bin" "$LAB" "$url" "$ROUNDS" <<'PY'
import json, statistics, subprocess, sys, time, urllib.request
lab_bin, lab, url, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def running():
    with urllib.request.urlopen(url + "/api/state", timeout=5) as r:
        state = json.load(r)
    return sum(1 for t in state["tasks"]
               if t["service"] == "accountservice" and t["state"] == "running"
               and t.get("desired_state", "running") == "running")

print("| round | scale to | shown after (ms) |")
print("|---|---|---|")
took = []
for i in range(1, rounds + 1):
    n = 5 if i % 2 else 3
    subprocess.run([lab_bin, "scale", "-q", f"accountservice={n}", "--name", lab], check=True,
                   stdout=subprocess.DEVNULL)
    returned = time.monotonic()
    deadline = returned + 60
    while running() != n:
        if time.monotonic() > deadline:
            sys.exit(f"viz.sh: /api/state did not show {n} running tasks within 60 s")
        time.sleep(0.02)
    ms = (time.monotonic() - returned) * 1000
    took.append(ms)
    print(f"| {i} | {n} | {ms:.0f} |")
ups, downs = took[0::2], took[1::2]
print(f"\nto 5 tasks: median {statistics.median(ups):.0f} ms, max {max(ups):.0f} ms over {len(ups)} rounds")
if downs:
    print(f"to 3 tasks: median {statistics.median(downs):.0f} ms, max {max(downs):.0f} ms over {len(downs)} rounds")
PY
