#!/usr/bin/env bash
# What one dind lab's create costs this machine in CPU, as docs/classroom.md
# quotes it: RUNS creates (default 3) of the default lab, each destroyed
# before the next; for each, the wall time, the CPU-seconds its three node
# containers used (their cgroup's cpuacct.usage, or cpu.stat on cgroup v2)
# and the RSS of the nodes' dockerd processes afterwards.
#
#   bench/lab-cpu.sh            # RUNS=3
#   LAB_BIN=/path/to/goblog-lab bench/lab-cpu.sh
set -euo pipefail

RUNS=${RUNS:-3}
LAB=${LAB:-cpu-bench}
LAB_FILE=${LAB_FILE:-lab/goblog.toml}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

# CPU nanoseconds a container's cgroup has used, on either cgroup layout.
cpu_ns() {
    local id=$1 v1=/sys/fs/cgroup/cpuacct/docker/$1/cpuacct.usage
    if [[ -r $v1 ]]; then
        cat "$v1"
    else
        awk '/^usage_usec/ {print $2 * 1000}' "/sys/fs/cgroup/system.slice/docker-$id.scope/cpu.stat"
    fi
}

echo "| run | create wall s | nodes CPU-s | nodes' dockerd RSS MiB |"
echo "|---|---|---|---|"
for run in $(seq "$RUNS"); do
    "$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
    start=$(date +%s.%N)
    "$lab_bin" create -q --name "$LAB" --file "$LAB_FILE" >/dev/null
    wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    ids=$(docker ps -q --no-trunc --filter "label=io.goblog-lab.lab=$LAB")
    ns=0
    rss=0
    for id in $ids; do
        ns=$((ns + $(cpu_ns "$id")))
        kib=$(docker exec "$id" sh -c 'grep VmRSS /proc/$(pidof dockerd)/status' | awk '{print $2}')
        rss=$((rss + kib))
    done
    echo "| $run | $wall | $(awk -v n="$ns" 'BEGIN {printf "%.2f", n / 1e9}') | $((rss / 1024)) |"
done
