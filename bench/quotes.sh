#!/usr/bin/env bash
# The default lab (accountservice calling quotes-service, as in part 7) under
# load: does a slow dependency cost a fallback quote rather than a failed
# request? On a fresh lab made from lab/goblog.toml ($LAB_FILE):
#   RUNS open-loop runs at RATE req/s (default 200) for DURATION (30 s);
#   RUNS runs of the bench's default scenario, the blog's 1000 users;
#   after each run, how long until an account answers with a live quote
#   again (the breaker's pause is 5 s; the bulkhead needs none).
# Every row gives failed requests, p50/p99/max and the fallback share.
# Load goes only to the lab's own address; every run stops by itself.
#
#   bench/quotes.sh                       # RUNS=2
#   LAB_FILE=lab/mine.toml bench/quotes.sh
set -euo pipefail

RUNS=${RUNS:-2}
RATE=${RATE:-200}
DURATION=${DURATION:-30s}
LAB=${LAB:-quotes-bench}
LAB_FILE=${LAB_FILE:-lab/goblog.toml}

# shellcheck source=bench/lab-run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lab-run.sh"

"$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
"$lab_bin" create -q --name "$LAB" --file "$LAB_FILE" >/dev/null
manager=$("$lab_bin" env --name "$LAB" | sed -n 's/^export ManagerIP="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p')

# Seconds from now until /accounts/10000 carries a live quote (60 s at most).
live_again() {
    python3 - "$manager" <<'PY'
import json, sys, time, urllib.request
start = time.monotonic()
while time.monotonic() - start < 60:
    try:
        body = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}:6767/accounts/10000", timeout=2))
        if body.get("quote", {}).get("ipAddress") not in (None, "circuit-breaker"):
            print(f"{time.monotonic() - start:.2f}")
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
print("never")
PY
}

echo "| run | load | requests | failed | p50 ms | p99 ms | max ms | fallback | live quote again after |"
echo "|---|---|---|---|---|---|---|---|---|"
row() {
    python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r.get("latency_ms") or {}
share = r.get("fallback_percent")
share = "none" if share is None else f"{share:.1f} %"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['requests']} | {r['failures']['total']} | "
      f"{l.get('p50', 0):.1f} | {l.get('p99', 0):.1f} | {l.get('max', 0):.1f} | {share} | {sys.argv[4]} s |")
PY
}
for run in $(seq "$RUNS"); do
    "$lab_bin" bench -q --name "$LAB" --rate "$RATE" --duration "$DURATION" -o json >"$work/rate-$run.json"
    row "$work/rate-$run.json" "$run" "$RATE req/s open loop, $DURATION" "$(live_again)"
done
for run in $(seq "$RUNS"); do
    "$lab_bin" bench -q --name "$LAB" -o json >"$work/users-$run.json"
    row "$work/users-$run.json" "$run" "1000 users (the default)" "$(live_again)"
done
python3 - "$work"/rate-*.json <<'PY'
import json, statistics, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
p99 = statistics.median((r.get("latency_ms") or {}).get("p99", 0) for r in runs)
failed = sum(r["failures"]["total"] for r in runs)
print(f"\nopen loop, median of {len(runs)}: p99 {p99:.1f} ms, {failed} failed in all (target: 0 failed, p99 <= 600 ms)")
PY
