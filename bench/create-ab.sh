#!/usr/bin/env bash
# Compares `create --workers 2` (warm, until every replica answers) of two
# or more goblog-lab binaries on this machine, interleaved run by run (A, B,
# A, B, ...), so that a noisy neighbour or a busy minute falls on both: on a
# shared 2-core VM two back-to-back `bench/lab.sh` runs of one binary
# differed by 0.9 s in median, more than the change being measured.
#
#   bench/create-ab.sh ROUNDS BIN_A BIN_B [BIN...]
#   e.g. bench/create-ab.sh 12 /tmp/goblog-lab-before target/release/goblog-lab
#
# Prints each binary's median, min and max, and each median's ratio to the
# first's. Labs live in a throw-away GOBLOG_LAB_HOME; uses hyperfine.
set -euo pipefail
rounds=$1
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" >&2
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >&2
export GOBLOG_LAB_HOME
GOBLOG_LAB_HOME=$(mktemp -d)
out=$(mktemp -d)
lab=${LAB:-bench-ab}
bins=()
for bin in "$@"; do bins+=("$(realpath "$bin")"); done
trap '"${bins[0]}" destroy -q --name "$lab" || true; rm -rf "$out"' EXIT
# One warm-up each: the images are built or found once, outside the timing.
for bin in "${bins[@]}"; do
    "$bin" destroy -q --name "$lab"
    "$bin" create -q --name "$lab" --workers 2 >/dev/null
    "$bin" destroy -q --name "$lab"
done
for round in $(seq 1 "$rounds"); do
    for i in "${!bins[@]}"; do
        bin=${bins[$i]}
        hyperfine --style none --runs 1 --prepare "$bin destroy -q --name $lab" \
            --cleanup "$bin destroy -q --name $lab" --export-json "$out/$i.$round.json" \
            "$bin create -q --name $lab --workers 2" >/dev/null
        echo "round $round, $bin: $(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['results'][0]['times'][0], 2))" "$out/$i.$round.json") s" >&2
    done
done
python3 - "$out" "${bins[@]}" <<'PY'
import glob, json, statistics, sys
out, bins = sys.argv[1], sys.argv[2:]
medians = []
print("| binary | median | min | max | runs |")
print("|---|---|---|---|---|")
for i, b in enumerate(bins):
    ts = [json.load(open(f))["results"][0]["times"][0] for f in glob.glob(f"{out}/{i}.*.json")]
    medians.append(statistics.median(ts))
    print(f"| `{b}` | {medians[-1]:.2f} s | {min(ts):.2f} s | {max(ts):.2f} s | {len(ts)} |")
for i, b in enumerate(bins[1:], 1):
    print(f"\n{b}: {medians[i] / medians[0]:.2f} × the first")
PY
