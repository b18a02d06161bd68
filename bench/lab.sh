#!/usr/bin/env bash
# Times a lab's life on this machine, as docs/performance.md reports it:
#   create --workers 2, until the accountservice answers through $ManagerIP
#   destroy
#   create --workers 10
#   the CPU an idle default lab costs: 3 samples of 30 s, 20 s after create
#   (bench/idle-cpu.py)
#   (with --cold) one first run from nothing: no goblog-lab images on the
#   engine and no cached cargo build, so debootstrap and the static build of
#   the accountservice are included.
#
#   bench/lab.sh            # RUNS=5 warm runs of each (10 workers: 3)
#   bench/lab.sh --cold     # the same, then one cold run
#   bench/lab.sh --idle     # only the idle CPU: it counts CPU time, not wall
#                           # time, so it holds on a machine busy with other work
#
# BIN times that goblog-lab binary instead of building this checkout's
# (before/after comparisons: BIN=/path/to/old/goblog-lab bench/lab.sh).
# CREATE_ARGS adds flags to every create, e.g. CREATE_ARGS="--publish
# localhost" (the Docker Desktop mode); ONLY picks timings by name (e.g.
# ONLY=create-2); LAB names the lab (default bench), so that runs side by
# side with other labs do not collide.
#
# Uses hyperfine (Debian package, installed if missing) and reports medians
# as a markdown table on stdout. Labs live in a throw-away GOBLOG_LAB_HOME.
set -euo pipefail

RUNS=${RUNS:-5}
RUNS_BIG=${RUNS_BIG:-3}
CREATE_ARGS=${CREATE_ARGS:-}
ONLY=${ONLY:-create-2 destroy create-10 idle}
[[ "${1:-}" == "--idle" ]] && ONLY=idle
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
if ! command -v hyperfine >/dev/null; then
    apt-get install -y -qq hyperfine >&2
fi
if [[ -n "${BIN:-}" ]]; then
    gl=$(realpath "$BIN")
else
    cargo build --release -q
    gl="$root/target/release/goblog-lab"
fi
export GOBLOG_LAB_HOME
GOBLOG_LAB_HOME=$(mktemp -d)
lab=${LAB:-bench}
results=$(mktemp -d)
trap '"$gl" destroy -q --name "$lab" || true; rm -rf "$results"' EXIT

"$gl" destroy -q --name "$lab"
echo "bench: warm-up (builds the images once if needed)" >&2
"$gl" create -q --name "$lab" --workers 2 $CREATE_ARGS >/dev/null
"$gl" destroy -q --name "$lab"

time_it() { # NAME RUNS PREPARE COMMAND
    [[ " $ONLY " == *" $1 "* ]] || return 0
    hyperfine --style basic --runs "$2" --prepare "$3" --cleanup "$gl destroy -q --name $lab" \
        --export-json "$results/$1.json" -n "$1" "$4" >&2
}
create="$gl create -q --name $lab $CREATE_ARGS"
time_it create-2 "$RUNS" "$gl destroy -q --name $lab" "$create --workers 2"
time_it destroy "$RUNS" "$gl destroy -q --name $lab; $create --workers 2" "$gl destroy -q --name $lab"
time_it create-10 "$RUNS_BIG" "$gl destroy -q --name $lab" "$create --workers 10"

if [[ "${1:-}" == "--cold" ]]; then
    echo "bench: cold run: removing goblog-lab images and the lab's cargo build" >&2
    "$gl" destroy -q --name "$lab"
    docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^goblog-lab/' | xargs -r docker rmi -f >/dev/null
    docker image prune -f >/dev/null
    rm -rf "$root/target/goblog-lab"
    ONLY="$ONLY cold-create-2" time_it cold-create-2 1 "true" "$create --workers 2"
fi

if [[ " $ONLY " == *" idle "* ]]; then
    echo "bench: idle CPU of a default lab" >&2
    "$gl" create -q --name "$lab" --workers 2 >/dev/null
    sleep 20
    for _ in 1 2 3; do
        sample=$("$root/bench/idle-cpu.py" 30 "$lab-swarm-manager-0" "$lab-swarm-worker-0" "$lab-swarm-worker-1")
        echo "$sample" >&2
        echo "${sample%%\%*}" >>"$results/idle"
    done
    "$gl" destroy -q --name "$lab"
fi

python3 - "$results" <<'PY'
import json, os, sys
labels = {
    "create-2": "`create --workers 2` (to answering)" + (f" with `{os.environ['CREATE_ARGS']}`" if os.environ.get("CREATE_ARGS") else ""),
    "destroy": "`destroy` (3 nodes)",
    "create-10": "`create --workers 10` (to answering)",
    "cold-create-2": "cold first `create --workers 2` (debootstrap + cargo build)",
}
print("| what | median | min | max | runs |")
print("|---|---|---|---|---|")
for key in labels:
    path = os.path.join(sys.argv[1], key + ".json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))["results"][0]
    print(f"| {labels[key]} | {r['median']:.1f} s | {r['min']:.1f} s | {r['max']:.1f} s | {len(r['times'])} |")
idle_path = os.path.join(sys.argv[1], "idle")
idle = sorted(float(x) for x in open(idle_path).read().split()) if os.path.exists(idle_path) else []
if idle:
    print(f"| idle default lab, CPU (30 s samples, 20 s after create) | {idle[len(idle) // 2]:.1f} % of a core | {idle[0]:.1f} % | {idle[-1]:.1f} % | {len(idle)} |")
PY
