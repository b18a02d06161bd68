#!/usr/bin/env bash
# Proves `scripts/setup.sh --for-tests` on the package states a machine of
# this kind can be in, without a new machine: each scenario is a container of
# the lab's node image (debootstrapped Debian 12 with apt, reaching the same
# mirror as this machine), put into that state, then handed this checkout's
# setup.sh. After it, qemu-system-x86_64, qemu-img, chromium, chromedriver
# and sshd must be there and run.
#
# Scenarios (default: all three):
#   backport       a new machine: qemu-utils from bookworm-backports installed,
#                  no qemu-system, and no backports source left configured
#                  (../shared/reference/docker-on-this-machine.md, 2026-12-05)
#   none           no QEMU at all
#   other-release  qemu-system-x86 and qemu-utils both from backports, source
#                  removed: a qemu-system from another release already there
#
# Needs a running engine and the node image (any `goblog-lab create` or
# `goblog-lab prepare` builds it). Takes about 2 minutes a scenario, most of
# it apt downloading chromium: not part of every CI run.
#
#   scripts/check-fresh-setup.sh [SCENARIO...]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf ' • %s\n' "$*" >&2; }
host_docker() { env -u DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker "$@"; }

image="$(host_docker images goblog-lab/node --format '{{.Repository}}:{{.Tag}}' | head -n1)"
if [ -z "$image" ]; then
  echo "check-fresh-setup.sh: no goblog-lab/node image on this engine; build it with \`goblog-lab prepare\`" >&2
  exit 1
fi

scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(backport none other-release)

# Puts the container into a scenario's state. The backports line is derived
# from the image's own first `deb` line: same mirror, suite + "-backports".
prepare_state() {
  local scenario="$1"
  local backports='awk '\''$1 == "deb" { print "deb", $2, $3 "-backports", "main"; exit }'\'' /etc/apt/sources.list > /etc/apt/sources.list.d/backports.list'
  local from_backports
  case "$scenario" in
    none) echo 'apt-get update -qq' ;;
    backport) from_backports="qemu-utils" ;;
    other-release) from_backports="qemu-system-x86 qemu-utils" ;;
    *) echo "check-fresh-setup.sh: unknown scenario '$scenario' (backport, none, other-release)" >&2; return 1 ;;
  esac
  if [ -n "${from_backports:-}" ]; then
    cat <<EOF
set -e
$backports
cat /etc/apt/sources.list.d/backports.list
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "\$(awk '\$1 == "deb" { print \$3 "-backports"; exit }' /etc/apt/sources.list)" $from_backports >/dev/null
rm /etc/apt/sources.list.d/backports.list
apt-get update -qq
EOF
  fi
}

check='
set -e
for tool in qemu-system-x86_64 qemu-img chromium chromedriver; do command -v "$tool"; done
test -x /usr/sbin/sshd && echo /usr/sbin/sshd
qemu-system-x86_64 --version | head -n1
qemu-img --version | head -n1
chromedriver --version
dpkg-query -W qemu-system-x86 qemu-utils
'

failed=()
for scenario in "${scenarios[@]}"; do
  name="goblog-lab-check-setup-$scenario-$$"
  say "$scenario: starting $image as $name"
  # The node's own flag set (this engine refuses --privileged): dockerd
  # inside must start, as setup.sh starts one when none answers.
  host_docker run -d --rm --name "$name" \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp \
    -v /var/lib/docker \
    -v "$PWD/scripts/setup.sh:/check/setup.sh:ro" \
    --entrypoint sleep "$image" 1800 >/dev/null
  trap 'host_docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
  started=$SECONDS
  if ! prepare_state "$scenario" | host_docker exec -i "$name" bash; then
    failed+=("$scenario (could not prepare the state)")
    host_docker rm -f "$name" >/dev/null
    continue
  fi
  say "$scenario: before: $(host_docker exec "$name" sh -c 'dpkg-query -W -f="\${Package} \${Version}\n" qemu-utils qemu-system-x86 2>/dev/null | tr "\n" " "; true')"
  if host_docker exec "$name" /check/setup.sh --for-tests >"/tmp/check-setup-$scenario.log" 2>&1 \
     && host_docker exec "$name" sh -c "$check" >"/tmp/check-setup-$scenario.tools" 2>&1; then
    say "$scenario: setup.sh --for-tests passed in $((SECONDS - started)) s: $(grep -E '^qemu-(system-x86|utils)[[:space:]]' "/tmp/check-setup-$scenario.tools" | tr '\t\n' ' ;')"
  else
    failed+=("$scenario (see /tmp/check-setup-$scenario.log and .tools)")
    tail -n 5 "/tmp/check-setup-$scenario.log" >&2 || true
  fi
  host_docker rm -f "$name" >/dev/null
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "check-fresh-setup.sh: failed: ${failed[*]}" >&2
  exit 1
fi
say "setup.sh --for-tests passed in every scenario: ${scenarios[*]}"
