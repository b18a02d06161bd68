#!/usr/bin/env bash
# Benchmark of the accountservice as the lab ships it: the static binary of
# the profile `create` builds images with, idle and peak RSS, wrk throughput
# on /accounts/10000, RSS once the quote path has run, binary and image size. When a Go toolchain is present,
# the blog's Go original (bench/go-original) runs in the same rounds,
# alternating with it, so the two share whatever else the machine is doing.
#
#   bench/accountservice.sh            # one round
#   RUNS=3 bench/accountservice.sh     # three rounds (fresh processes) + medians
#
# Knobs: PROFILE (cargo profile, default `image`: the one `create` uses;
# `deploy` is the one `deploy` uses), DURATION (wrk seconds, default 10),
# CONNECTIONS (50), THREADS (2), SKIP_IMAGE=1, SKIP_GO=1. Cargo's
# CARGO_PROFILE_* and CARGO_TARGET_DIR pass through, so a profile change can
# be tried without editing Cargo.toml (use its own target dir to keep the
# shared one warm). The Go original needs Debian's golang-go,
# golang-github-gorilla-mux-dev and golang-github-boltdb-bolt-dev (offline:
# GOPATH mode, no module download). Load is sent to 127.0.0.1 only. Prints
# markdown tables on stdout, progress on stderr.
set -euo pipefail

RUNS=${RUNS:-1}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
PROFILE=${PROFILE:-image}
TARGET=x86_64-unknown-linux-gnu
GOPATH_DEBIAN=/usr/share/gocode

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source bench/service-port.sh

for tool in cargo wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

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

# Both services in one cargo run, as the lab builds them: cargo unifies
# their dependencies' features, so this is the binary the lab ships.
echo "bench: building the static binaries (profile $PROFILE)" >&2
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile "$PROFILE" -p accountservice -p quotes-service --target "$TARGET" >&2
profile_dir=$PROFILE
[[ "$PROFILE" == dev ]] && profile_dir=debug
bin="${CARGO_TARGET_DIR:-$root/target}/$TARGET/$profile_dir/accountservice"
quotes_bin="${CARGO_TARGET_DIR:-$root/target}/$TARGET/$profile_dir/quotes-service"
if ! file "$bin" 2>/dev/null | grep -q 'static'; then
    echo "bench: warning: $bin does not look statically linked" >&2
fi

services=(rust)
go_bin=""
if [[ -n "${SKIP_GO:-}" ]]; then
    echo "bench: Go original skipped (SKIP_GO)" >&2
elif ! command -v go >/dev/null; then
    echo "bench: Go original skipped: no go toolchain (apt-get install golang-go golang-github-gorilla-mux-dev golang-github-boltdb-bolt-dev)" >&2
elif [[ ! -d "$GOPATH_DEBIAN/src/github.com/gorilla/mux" || ! -d "$GOPATH_DEBIAN/src/github.com/boltdb/bolt" ]]; then
    echo "bench: Go original skipped: gorilla/mux or boltdb missing (apt-get install golang-github-gorilla-mux-dev golang-github-boltdb-bolt-dev)" >&2
else
    echo "bench: building the Go original ($(go version | awk '{ print $3 }'))" >&2
    go_bin="$work/accountservice-go"
    GO111MODULE=off GOPATH="$GOPATH_DEBIAN" GOCACHE="$work/gocache" \
        go build -o "$go_bin" bench/go-original/main.go >&2
    services=(rust go)
fi

# CPU ticks (USER_HZ): busy time of the whole machine, and of one process.
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
total_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
mib_bytes() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
status_kib() { awk -v f="$2" '$1 == f":" { print $2 }' "/proc/$1/status"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
label() { [[ "$1" == rust ]] && echo "accountservice ($PROFILE)" || echo "Go original"; }

# Starts one service with a fresh database; sets pid and port.
start() {
    local kind=$1 n=$2 out="$work/stdout.$1.$2" err="$work/stderr.$1.$2"
    rm -f "$work/accounts.db"
    port=""
    if [[ "$kind" == rust ]]; then
        # Kernel-chosen port, reported in the start-up line.
        "$bin" --port 0 --bind 127.0.0.1 --db "$work/accounts.db" >"$out" 2>"$err" &
        pid=$!
        port=$(service_port "$out" "$err" "$pid") || true
    else
        local candidate
        candidate=$(free_port)
        "$go_bin" -port "$candidate" -db "$work/accounts.db" >"$out" 2>"$err" &
        pid=$!
        for _ in $(seq 300); do
            if curl -fs -o /dev/null "http://127.0.0.1:$candidate/accounts/10000"; then
                port=$candidate
                break
            fi
            kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; exit 1; }
            sleep 0.1
        done
    fi
    [[ -n "$port" ]] || { echo "bench: $(label "$kind") did not start" >&2; exit 1; }
}

stop() {
    local kind=$1
    kill -TERM "$pid"
    if [[ "$kind" == rust ]]; then
        # The accountservice drains and exits 0; anything else is a bug.
        wait "$pid" || { echo "bench: the accountservice exited non-zero on SIGTERM" >&2; exit 1; }
    else
        # The original has no signal handling: SIGTERM kills it (143).
        wait "$pid" || true
    fi
    pid=""
}

# One measured run of one service: prints
# "rps latency idle peak others cpu_us_per_request".
run_once() {
    local kind=$1 n=$2 rps latency idle peak requests cpu_per_request
    local cpu0 cpu1 tot0 tot1 srv0 srv1 wrk_cpu others
    start "$kind" "$n"
    sleep 1 # let start-up settle before calling it idle
    idle=$(status_kib "$pid" VmRSS)
    cpu0=$(busy_ticks)
    tot0=$(total_ticks)
    srv0=$(proc_ticks "$pid")
    local TIMEFORMAT='%U %S'
    { time wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
        "http://127.0.0.1:$port/accounts/10000" >"$work/wrk.$kind.$n"; } 2>"$work/wrktime.$kind.$n"
    srv1=$(proc_ticks "$pid")
    cpu1=$(busy_ticks)
    tot1=$(total_ticks)
    peak=$(status_kib "$pid" VmHWM)
    # The machine is shared: whatever CPU neither the service nor wrk used
    # went to someone else and skews the run. Report it next to the numbers.
    wrk_cpu=$(awk '{ printf "%d", ($1 + $2) * 100 }' "$work/wrktime.$kind.$n")
    others=$(awk -v busy=$((cpu1 - cpu0)) -v total=$((tot1 - tot0)) -v mine=$((srv1 - srv0 + wrk_cpu)) \
        'BEGIN { o = total > 0 ? (busy - mine) / total * 100 : 0; if (o < 0) o = 0; printf "%.0f%%", o }')
    stop "$kind"
    rps=$(awk '/^Requests\/sec:/{ print $2 }' "$work/wrk.$kind.$n")
    latency=$(awk '$1 == "Latency" { print $2 }' "$work/wrk.$kind.$n")
    # The service's own CPU per request, user + system (a tick is 10 ms):
    # wrk takes its share of the same two cores, more of it the faster the
    # service answers, so req/s understates the gap between two services.
    requests=$(awk '/ requests in /{ print $1 }' "$work/wrk.$kind.$n")
    cpu_per_request=$(awk -v t=$((srv1 - srv0)) -v r="$requests" 'BEGIN { printf "%.1f", (r > 0 ? t * 10000 / r : 0) }')
    if grep -q 'Non-2xx' "$work/wrk.$kind.$n"; then
        echo "bench: wrk saw non-2xx answers from $(label "$kind")" >&2
        cat "$work/wrk.$kind.$n" >&2
        exit 1
    fi
    echo "$rps $latency $idle $peak $others $cpu_per_request"
}

# The resident set once the quote path has run: each account then costs a
# name lookup (glibc's resolver, on a blocking thread) and an HTTP call.
# Prints "idle after" in KiB.
rss_with_quotes() {
    local qport qpid
    qport=$(free_port)
    "$quotes_bin" --port "$qport" --bind 127.0.0.1 2>"$work/quotes.err" &
    qpid=$!
    rm -f "$work/accounts.db"
    "$bin" --port 0 --bind 127.0.0.1 --db "$work/accounts.db" \
        --quotes-url "http://localhost:$qport/api/quote?strength=1" >"$work/stdout.quotes" 2>"$work/stderr.quotes" &
    pid=$!
    port=""
    for _ in $(seq 300); do
        port=$(awk '/^Starting HTTP service at /{ print $5 }' "$work/stdout.quotes")
        [[ -n "$port" ]] && curl -fs -o /dev/null "http://127.0.0.1:$qport/health" && break
        sleep 0.1
    done
    sleep 1
    local before after
    before=$(status_kib "$pid" VmRSS)
    for _ in $(seq 200); do
        curl -fs "http://127.0.0.1:$port/accounts/10000" >"$work/quoted.json"
    done
    grep -q '"quote":{"quote"' "$work/quoted.json" || { echo "bench: no quote in $(cat "$work/quoted.json")" >&2; exit 1; }
    grep -q circuit-breaker "$work/quoted.json" && { echo "bench: the quote call failed: $(cat "$work/quoted.json")" >&2; exit 1; }
    sleep 1
    after=$(status_kib "$pid" VmRSS)
    stop rust
    kill "$qpid"
    wait "$qpid" || true
    echo "$before $after"
}

declare -A results
for n in $(seq "$RUNS"); do
    for kind in "${services[@]}"; do
        echo "bench: round $n of $RUNS: $(label "$kind") (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)" >&2
        results[$kind.$n]=$(run_once "$kind" "$n")
    done
done

echo "bench: the accountservice with quotes, 200 requests" >&2
read -r quotes_before quotes_after <<<"$(rss_with_quotes)"

bin_bytes=$(stat -c %s "$bin")
strip -o "$work/stripped" "$bin" 2>/dev/null && stripped_bytes=$(stat -c %s "$work/stripped") || stripped_bytes=""

# The image as the lab runs it: idle RSS of the service in its container,
# 1 s after it first answered (so, unlike the runs above, after one request
# and whatever its HEALTHCHECK has done). Prints KiB, or nothing.
container_idle_kib() {
    local container hostport="" cpid
    container=$(docker run -d -p 127.0.0.1::6767 "$1") || return 0
    for _ in $(seq 100); do
        hostport=$(docker port "$container" 6767/tcp 2>/dev/null | head -1)
        [[ -n "$hostport" ]] && curl -fs -o /dev/null "http://$hostport/accounts/10000" && break
        hostport=""
        sleep 0.1
    done
    if [[ -n "$hostport" ]]; then
        sleep 1
        cpid=$(docker inspect -f '{{.State.Pid}}' "$container")
        status_kib "$cpid" VmRSS
    fi
    docker rm -f "$container" >/dev/null 2>&1 || true
}

container_rss=""
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
        container_rss=$(container_idle_kib "$image")
    else
        cat "$work/docker-build.log" >&2
        image_cell="docker build failed"
    fi
fi

col() { # col KIND FIELD: one field of every run of one service
    for n in $(seq "$RUNS"); do echo "${results[$1.$n]}"; done | awk -v c="$2" '{ print $c }'
}

echo
echo "Command: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s http://127.0.0.1:PORT/accounts/10000\`, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| round | service | req/s | mean latency | service CPU per request | idle RSS | peak RSS | CPU used by others |"
echo "|---|---|---|---|---|---|---|---|"
for n in $(seq "$RUNS"); do
    for kind in "${services[@]}"; do
        read -r rps latency idle peak others cpu <<<"${results[$kind.$n]}"
        echo "| $n | $(label "$kind") | $rps | $latency | $cpu µs | $(kib "$idle") | $(kib "$peak") | $others |"
    done
done
if ((RUNS > 1)); then
    for kind in "${services[@]}"; do
        echo "| **median** | $(label "$kind") | **$(col "$kind" 1 | median)** | | **$(col "$kind" 6 | median) µs** | **$(kib "$(col "$kind" 3 | median)")** | **$(kib "$(col "$kind" 4 | median)")** | |"
    done
fi
if [[ -n "$go_bin" ]]; then
    echo
    echo "accountservice / Go original, medians: **$(awk -v r="$(col rust 1 | median)" -v g="$(col go 1 | median)" 'BEGIN { printf "%.2f×", r / g }')** the req/s, **$(awk -v r="$(col rust 6 | median)" -v g="$(col go 6 | median)" 'BEGIN { printf "%.2f×", g / r }')** less CPU per request"
fi
echo
echo "accountservice ($PROFILE) with quotes (\`--quotes-url http://localhost:PORT/...\`, quotes-service on loopback): idle RSS $(kib "$quotes_before"), after 200 requests with a quote each $(kib "$quotes_after")"
echo
echo "| artefact | size |"
echo "|---|---|"
echo "| accountservice binary (static-pie, profile $PROFILE, as built) | $bin_bytes bytes ($(mib_bytes "$bin_bytes")) |"
[[ -n "$stripped_bytes" && "$stripped_bytes" != "$bin_bytes" ]] && echo "| accountservice binary after \`strip\` | $stripped_bytes bytes ($(mib_bytes "$stripped_bytes")) |"
echo "| accountservice image (FROM scratch) | $image_cell |"
[[ -n "$container_rss" ]] && echo "| accountservice idle RSS in a container of that image, 1 s after its first answer | $(kib "$container_rss") |"
if [[ -n "$go_bin" ]]; then
    go_bytes=$(stat -c %s "$go_bin")
    echo "| Go original binary (the blog's image adds iron/base) | $go_bytes bytes ($(mib_bytes "$go_bytes")) |"
fi
