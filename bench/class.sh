#!/usr/bin/env bash
# A classroom's numbers on this machine, as docs/classroom.md reports them:
#   class create --learners N (default 10), until every lab answers through
#   its $ManagerIP and every console runs (create returns only then),
#   CREATES times (default 3; the class is destroyed between), median: one
#   run of this varied from 49 to 60 s on the same machine;
#   class reset of one learner, ROUNDS times (default 3), median;
#   memory: MemAvailable before the class and with it up, per lab;
#   the engine's disk: its data directory's use before and after, per lab;
#   the `class serve` process's own RSS, idle and after a board poll and
#   N learner pages' info and picture;
#   the terminal's keystroke-to-echo time, p50/p99, with all N terminals
#   open and typing at once (examples/keystroke_echo.rs, KEYS per terminal).
#
#   bench/class.sh              # N=10 ROUNDS=3
#   N=3 ROUNDS=1 bench/class.sh
#
# BIN times that goblog-lab binary instead of this checkout's release build.
# The class lives in a throw-away GOBLOG_LAB_HOME and is destroyed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10}
KEYS=${KEYS:-200}
ROUNDS=${ROUNDS:-3}
CREATES=${CREATES:-3}
CLASS=${CLASS:-bclass}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="$PWD/target/release/goblog-lab"
fi
cargo build --release --quiet --example keystroke_echo
export GOBLOG_LAB_HOME="${GOBLOG_LAB_HOME:-$(mktemp -d)}"
serve_pid=""
cleanup() {
  [ -z "$serve_pid" ] || kill "$serve_pid" 2>/dev/null || true
  "$BIN" class destroy --name "$CLASS" >/dev/null 2>&1 || true
}
trap cleanup EXIT

mem_available() { awk '/MemAvailable/ {print $2}' /proc/meminfo; }
engine_used() { df -k --output=used "$(docker info --format '{{.DockerRootDir}}')" | tail -1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

"$BIN" prepare >/dev/null 2>&1
creates=()
for i in $(seq 1 "$CREATES"); do
  if [ "$i" -gt 1 ]; then
    "$BIN" class destroy -q --name "$CLASS" >/dev/null
  fi
  mem_before=$(mem_available)
  disk_before=$(engine_used)
  start=$(now)
  "$BIN" class create -q --learners "$N" --name "$CLASS" -o json > "$GOBLOG_LAB_HOME/class.json"
  creates+=("$(since "$start")")
done
create_s=$(printf '%s\n' "${creates[@]}" | median)
ready=$(grep -c '"state": "ready"' "$GOBLOG_LAB_HOME/class.json" || true)
sleep 10 # let the labs settle before reading memory
mem_after=$(mem_available)
disk_after=$(engine_used)

resets=()
for i in $(seq 1 "$ROUNDS"); do
  learner=$(( (i - 1) % N + 1 ))
  start=$(now)
  "$BIN" class reset -q "$learner" --name "$CLASS"
  resets+=("$(since "$start")")
done
reset_median=$(printf '%s\n' "${resets[@]}" | median)

"$BIN" class serve --name "$CLASS" --listen 127.0.0.1:0 > "$GOBLOG_LAB_HOME/serve.out" 2>/dev/null &
serve_pid=$!
for _ in $(seq 1 100); do grep -q '^cards' "$GOBLOG_LAB_HOME/serve.out" 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
rss_idle=$(rss)
board=$(awk '/^board/ {print $2}' "$GOBLOG_LAB_HOME/serve.out")
curl -sf "${board}api/state" > /dev/null
for link in $(awk '/^learner-/ {print $4}' "$GOBLOG_LAB_HOME/serve.out"); do
  curl -sf "${link}info" > /dev/null
  curl -sf "${link}viz/api/state" > /dev/null
done
links=$(awk '/^learner-/ {print $4}' "$GOBLOG_LAB_HOME/serve.out")
# shellcheck disable=SC2086 # one argument per link
echo_times=$(target/release/examples/keystroke_echo "$KEYS" $links)
sleep 3
rss_busy=$(rss)

per_lab_mem=$(( (mem_before - mem_after) / N / 1024 ))
per_lab_disk=$(( (disk_after - disk_before) / N / 1024 ))
cat <<TABLE
| what (this machine, $(nproc) cores) | result |
|---|---|
| \`class create --learners $N\`, until every lab answers, median of $CREATES | **$create_s s** (each: ${creates[*]}; $ready of $N ready) |
| one \`class reset\`, median of $ROUNDS | **$reset_median s** (each: ${resets[*]}) |
| memory of the class (MemAvailable drop) | $(( (mem_before - mem_after) / 1024 )) MiB, **$per_lab_mem MiB a lab** |
| engine disk of the class | $(( (disk_after - disk_before) / 1024 )) MiB, $per_lab_disk MiB a lab |
| keystroke to echo, $N terminals typing at once | $echo_times |
| \`class serve\` RSS, idle / after the board, $N labs' pictures and terminals | $(( rss_idle / 1024 )) MiB / **$(( rss_busy / 1024 )) MiB** |
TABLE
