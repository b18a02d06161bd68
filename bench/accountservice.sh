#!/usr/bin/env bash
# Benchmark of the accountservice as it ships: static release build, idle and
# peak RSS, wrk throughput on /accounts/10000, binary and image size.
#
#   bench/accountservice.sh            # one measured run
#   RUNS=3 bench/accountservice.sh     # three runs (fresh process each) + medians
#
# Other knobs: DURATION (wrk seconds, default 10), CONNECTIONS (50),
# THREADS (2), SKIP_IMAGE=1. Cargo's CARGO_PROFILE_RELEASE_* and
# CARGO_TARGET_DIR pass through, so a profile change can be tried without
# editing Cargo.toml (use its own target dir to keep the shared one warm).
# Load is sent to 127.0.0.1 only. Prints a markdown table on stdout.
set -euo pipefail

RUNS=${RUNS:-1}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
TARGET=x86_64-unknown-linux-gnu

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

for tool in cargo wrk; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "bench: building the static release binary" >&2
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release -p accountservice --target "$TARGET" >&2
bin="${CARGO_TARGET_DIR:-$root/target}/$TARGET/release/accountservice"
if ! file "$bin" 2>/dev/null | grep -q 'static'; then
    echo "bench: warning: $bin does not look statically linked" >&2
fi

work=$(mktemp -d)
pid=""
image=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [[ -n "$image" ]]; then
        docker rmi -f "$image" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# CPU ticks (USER_HZ): busy time of the whole machine, and of one process.
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
total_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
status_kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One run: fresh database, fresh process, kernel-chosen loopback port.
run_once() {
    local n=$1 out="$work/stdout.$1" port="" rps latency idle peak
    local cpu0 cpu1 tot0 tot1 srv0 srv1 wrk_cpu others
    rm -f "$work/accounts.db"
    "$bin" --port 0 --bind 127.0.0.1 --db "$work/accounts.db" >"$out" 2>"$work/stderr.$n" &
    pid=$!
    for _ in $(seq 300); do
        port=$(awk '/^Starting HTTP service at /{ print $5 }' "$out")
        [[ -n "$port" ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/stderr.$n" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n "$port" ]] || { echo "bench: service did not start" >&2; exit 1; }
    sleep 1 # let start-up settle before calling it idle
    idle=$(status_kib "$pid" VmRSS)
    cpu0=$(busy_ticks)
    tot0=$(total_ticks)
    srv0=$(proc_ticks "$pid")
    local TIMEFORMAT='%U %S'
    { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        "http://127.0.0.1:$port/accounts/10000" >"$work/wrk.$n"; } 2>"$work/wrktime.$n"
    srv1=$(proc_ticks "$pid")
    cpu1=$(busy_ticks)
    tot1=$(total_ticks)
    peak=$(status_kib "$pid" VmHWM)
    # The machine is shared: whatever CPU neither the service nor wrk used
    # went to someone else and skews the run. Report it next to the numbers.
    wrk_cpu=$(awk '{ printf "%d", ($1 + $2) * 100 }' "$work/wrktime.$n")
    others=$(awk -v busy=$((cpu1 - cpu0)) -v total=$((tot1 - tot0)) -v mine=$((srv1 - srv0 + wrk_cpu)) \
        'BEGIN { o = total > 0 ? (busy - mine) / total * 100 : 0; if (o < 0) o = 0; printf "%.0f%%", o }')
    kill -TERM "$pid"
    wait "$pid" || { echo "bench: service exited non-zero on SIGTERM" >&2; exit 1; }
    pid=""
    rps=$(awk '/^Requests\/sec:/{ print $2 }' "$work/wrk.$n")
    latency=$(awk '$1 == "Latency" { print $2 }' "$work/wrk.$n")
    if grep -q 'Non-2xx' "$work/wrk.$n"; then
        echo "bench: wrk saw non-2xx answers" >&2
        cat "$work/wrk.$n" >&2
        exit 1
    fi
    echo "$rps $latency $idle $peak $others"
}

results=()
for n in $(seq "$RUNS"); do
    echo "bench: run $n of $RUNS (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)" >&2
    results+=("$(run_once "$n")")
done

bin_bytes=$(stat -c %s "$bin")
strip -o "$work/stripped" "$bin" 2>/dev/null && stripped_bytes=$(stat -c %s "$work/stripped") || stripped_bytes=""

image_cell="not measured (docker not answering)"
[[ -n "${SKIP_IMAGE:-}" ]] && image_cell="not measured (SKIP_IMAGE)"
if [[ -z "${SKIP_IMAGE:-}" ]] && docker version >/dev/null 2>&1; then
    ctx="$work/context"
    mkdir -p "$ctx"
    cp -R images/accountservice/. "$ctx/"
    cp "$bin" "$ctx/accountservice"
    image="accountservice-bench:$$"
    # This engine has no BuildKit plugin; the classic builder does FROM scratch.
    if DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null 2>"$work/docker-build.log"; then
        image_bytes=$(docker image inspect -f '{{.Size}}' "$image")
        image_cell="$image_bytes bytes ($(awk -v b="$image_bytes" 'BEGIN { printf "%.2f MB", b / 1e6 }'))"
    else
        cat "$work/docker-build.log" >&2
        image_cell="docker build failed"
    fi
fi

echo
echo "Command: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s http://127.0.0.1:PORT/accounts/10000\`, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| run | req/s | mean latency | idle RSS | peak RSS | CPU used by others |"
echo "|---|---|---|---|---|---|"
n=0
for r in "${results[@]}"; do
    n=$((n + 1))
    read -r rps latency idle peak others <<<"$r"
    echo "| $n | $rps | $latency | $(kib "$idle") | $(kib "$peak") | $others |"
done
if ((RUNS > 1)); then
    col() { for r in "${results[@]}"; do echo "$r"; done | awk -v c="$1" '{ print $c }'; }
    med_rps=$(col 1 | median)
    med_idle=$(col 3 | median)
    med_peak=$(col 4 | median)
    echo "| **median** | **$med_rps** | | **$(kib "$med_idle")** | **$(kib "$med_peak")** | |"
fi
echo
echo "| artefact | size |"
echo "|---|---|"
echo "| binary (static-pie, as built) | $bin_bytes bytes ($(awk -v b="$bin_bytes" 'BEGIN { printf "%.2f MiB", b / 1048576 }')) |"
[[ -n "$stripped_bytes" ]] && echo "| binary after \`strip\` | $stripped_bytes bytes ($(awk -v b="$stripped_bytes" 'BEGIN { printf "%.2f MiB", b / 1048576 }')) |"
echo "| image (FROM scratch) | $image_cell |"
