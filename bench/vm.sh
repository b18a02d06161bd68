#!/usr/bin/env bash
# Measures VM labs as docs/vm-labs.md reports them:
#   cold VM image build      (`prepare --driver qemu` with an empty cache; once)
#   create --driver qemu --workers 2, warm image, until the accountservice
#                            answers through the routing mesh on $ManagerIP
#   destroy                  (VMs, overlays, taps, bridge and rules gone)
#   memory of the 3-VM lab   (sum of the QEMU processes' RSS, 30 s after it
#                            answers: SETTLE=seconds)
# and which accelerator the machine gave (KVM or TCG, with why).
#
#   bench/vm.sh              # RUNS=3 creates; prints medians as markdown
#   COLD=0 bench/vm.sh       # skip the cold image build
#
# Needs root (the host-only bridge), as the qemu driver does. Uses its own
# GOBLOG_LAB_HOME, so the image cache of your labs is left alone.
set -euo pipefail

RUNS=${RUNS:-3}
COLD=${COLD:-1}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh --for-tests
cargo build --release -q
gl="$root/target/release/goblog-lab"
export GOBLOG_LAB_HOME="${BENCH_HOME:-$root/target/bench-vm-home}"
mkdir -p "$GOBLOG_LAB_HOME"
lab=bench-vm
trap '"$gl" destroy -q --name "$lab" >/dev/null 2>&1 || true' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

if [ "$COLD" = 1 ]; then
    rm -rf "$GOBLOG_LAB_HOME/vm-images"
    start=$(now)
    "$gl" prepare -q --driver qemu >/dev/null
    cold=$(echo "$(now) - $start" | bc)
    echo "bench: cold VM image build ${cold}s" >&2
else
    "$gl" prepare -q --driver qemu >/dev/null
    cold="-"
fi

creates=() destroys=() memories=()
for run in $(seq 1 "$RUNS"); do
    start=$(now)
    "$gl" create -q --driver qemu --workers 2 --name "$lab" -o json >"$GOBLOG_LAB_HOME/created.json"
    creates+=("$(echo "$(now) - $start" | bc)")
    # Freed guest pages reach the host through the balloon's free page
    # reporting a few seconds after they are freed: the lab settles first.
    sleep "${SETTLE:-30}"
    rss_kib=$(ps -C qemu-system-x86_64 -o rss=,args= | grep "goblog-lab/$lab/" | awk '{s+=$1} END {print s}')
    memories+=("$(echo "scale=2; $rss_kib / 1048576" | bc)")
    start=$(now)
    "$gl" destroy -q --name "$lab"
    destroys+=("$(echo "$(now) - $start" | bc)")
    echo "bench: run $run: create ${creates[-1]}s, destroy ${destroys[-1]}s, QEMU RSS ${memories[-1]} GiB" >&2
done

accel=$(grep -o '"accel": *"[a-z]*"' "$GOBLOG_LAB_HOME/created.json" | grep -o '[a-z]*"$' | tr -d '"' || true)
one() { printf '%.1f' "$1"; }
echo
echo "| measure (median of $RUNS) | result |"
echo "|---|---|"
if [ "$cold" = "-" ]; then echo "| cold VM image build | - |"; else echo "| cold VM image build | $(one "$cold") s |"; fi
echo "| create --driver qemu --workers 2, warm image, until it answers | $(one "$(printf '%s\n' "${creates[@]}" | median)") s |"
echo "| destroy | $(one "$(printf '%s\n' "${destroys[@]}" | median)") s |"
echo "| QEMU RSS of the 3-VM lab | $(printf '%s\n' "${memories[@]}" | median) GiB |"
echo "| accelerator | ${accel:-unknown} |"
