#!/usr/bin/env bash
# The workshop loop, timed: a one-line change to the accountservice, then
# `goblog-lab deploy`, while a client hammers $ManagerIP:6767 with new
# connections. Reports, as medians over RUNS deploys, the time from the
# command to every replica serving the new image, the whole command (until
# the old tasks are gone), the share of the incremental cargo build, and
# the requests that failed during the updates.
#
#   bench/redeploy.sh            # RUNS=5, a lab with 2 workers (3 replicas)
#
# The change is made in a copy of the service's sources
# (scripts/service-workspace.sh), never in this checkout; the copy shares
# this checkout's compiled dependencies, as a workshop's checkout would
# have its own from `create`. `create` ships the image profile and builds
# the deploy profile beside it; each deploy builds the deploy profile.
set -euo pipefail

RUNS=${RUNS:-5}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
# goblog-lab passes CARGO_PROFILE_* on to the services' cargo build, so
# `CARGO_PROFILE_DEPLOY_LTO=fat bench/redeploy.sh` times another deploy
# profile; the CLI itself is built as always.
env $(compgen -e | grep '^CARGO_PROFILE_' | sed 's/^/-u /') cargo build --release -q
gl="$root/target/release/goblog-lab"
export GOBLOG_LAB_HOME GOBLOG_LAB_TARGET_DIR="$root/target/goblog-lab"
GOBLOG_LAB_HOME=$(mktemp -d)
work=$(mktemp -d)
lab=redeploy
trap '"$gl" destroy -q --name "$lab" || true; rm -rf "$work"' EXIT

scripts/service-workspace.sh "$work/src"
routes="$work/src/accountservice/src/routes.rs"
grep -q 'br#"{"status":"UP"}"#' "$routes"
"$gl" create -q --name "$lab" --file "$work/src/lab/goblog.toml" >/dev/null
manager=$("$gl" env --name "$lab" --shell bash | sed -n 's/^export ManagerIP="\(.*\)"$/\1/p')

for run in $(seq 1 "$RUNS"); do
    # The one-line change: what /health says.
    sed -i "s|br#\"{\"status\":\"UP\"[^#]*#|br#\"{\"status\":\"UP\",\"build\":\"$run\"}\"#|" "$routes"
    python3 bench/hammer.py "http://$manager:6767/accounts/10000" 2 5 >"$work/hammer-$run.json" &
    hammer=$!
    sleep 1
    "$gl" deploy -q --name "$lab" -o json >"$work/deploy-$run.json"
    kill -TERM "$hammer"
    wait "$hammer"
    served=$(curl -sS "http://$manager:6767/health" || true)
    echo "bench: run $run: $(tr -d '\n ' <"$work/deploy-$run.json" | grep -o '"seconds":{[^}]*}') requests $(cat "$work/hammer-$run.json"); /health says $served" >&2
    [[ "$served" == *"\"build\":\"$run\""* ]] || { echo "bench: run $run does not serve the new build" >&2; exit 1; }
done

python3 - "$work" "$RUNS" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
deploys = [json.load(open(f"{work}/deploy-{i}.json"))[0]["seconds"] for i in range(1, runs + 1)]
hammers = [json.load(open(f"{work}/hammer-{i}.json")) for i in range(1, runs + 1)]
med = lambda key: statistics.median(d[key] for d in deploys)
print(f"| redeploy after a one-line change ({runs} runs, 3 replicas) | median | range |")
print("|---|---|---|")
for key, label in [("serving", "command → every replica serving the new version"),
                   ("total", "whole command (old tasks gone)"),
                   ("build", "of which incremental cargo build + image"),
                   ("push", "of which push to the lab registry"),
                   ("rollout", "of which rolling update")]:
    values = [d[key] for d in deploys]
    print(f"| {label} | {med(key):.1f} s | {min(values):.1f}-{max(values):.1f} s |")
print(f"| build share of the time to serving | {100 * statistics.median(d['build'] / d['serving'] for d in deploys):.0f} % | |")
ok = sum(h["ok"] for h in hammers)
failed = sum(h["failed"] for h in hammers)
print(f"| requests during the deploys (new connection each) | {ok} ok, {failed} failed | |")
PY
