#!/usr/bin/env bash
# Brings a Debian or Ubuntu machine to what goblog-lab needs, and nothing more:
#   - a Docker engine that answers (Debian's docker.io, started if not running);
#   - debootstrap, which builds the lab's node image offline from the apt mirror
#     this machine already uses;
#   - with --for-tests, also cargo-nextest (the suite's runner), and
#     Debian's chromium and chromium-driver, which the
#     visualizer's browser tests drive, and openssh-server and -client: the
#     ssh2 core's tests talk to a real sshd on loopback, and the ssh
#     provider's tests make keys with ssh-keygen; and qemu-system-x86, which
#     boots the VM labs' machines (qemu-img comes with qemu-utils);
#   - in both modes, the class pages' browser assets (xterm.js and its fit
#     addon) in web/node_modules, installed by npm from web/package-lock.json.
# Safe to run again: it installs only what is missing and starts dockerd only
# when no engine answers. Used by the README's commands and by .ci/run.
set -euo pipefail

say() { printf ' • %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# The host engine, not a lab: `eval "$(goblog-lab env)"` points DOCKER_HOST at one.
host_docker() { env -u DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH docker "$@"; }

missing=()
if [ "${1:-}" = "--for-tests" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1 || want_qemu=1
fi
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
# The suite runs under cargo-nextest (.config/nextest.toml says why). A new
# machine of this kind has it; elsewhere it is built from crates.io.
if [ "${1:-}" = "--for-tests" ] && ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest from crates.io"
  cargo install --locked --quiet cargo-nextest >&2
fi
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# The version of one package: what is installed, else what apt would install.
# (dpkg-query fails for a package it never saw: that is "none", not an error.)
installed_version() { { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } | awk '/ installed /{print $4}'; }
candidate_version() { apt-cache policy "$1" | awk '/Candidate:/ && $2 != "(none)" {print $2}'; }

apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

if [ "${#missing[@]}" -gt 0 ] || [ -n "${want_qemu:-}" ]; then
  wanted=("${missing[@]}")
  [ -z "${want_qemu:-}" ] || wanted+=(qemu-system-x86 qemu-utils)
  say "installing ${wanted[*]} from Debian's packages"
  as_root apt-get update -qq >&2
  [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
fi

# QEMU: qemu-system-x86 and qemu-utils are built from one source package and
# must be of one version. A new machine of this kind comes with a backported
# qemu-utils (1:10.0.2+ds-2+deb13u1~bpo12+1) and no backports source, and that
# qemu-utils `Breaks` the qemu-system-common of Debian 12's qemu-system-x86
# (1:7.2), so naming both packages fails with "held broken packages" (measured
# 2026-12-05, ../shared/reference/docker-on-this-machine.md). So both are named
# at one version: the installed qemu-system-x86's if there is one (from any
# release, as long as apt can still fetch the matching qemu-utils), else the
# candidate's, downgrading qemu-utils when it must.
# scripts/check-fresh-setup.sh proves this in a container, without a new machine.
if [ -n "${want_qemu:-}" ]; then
  version="$(installed_version qemu-system-x86)"
  if [ -n "$version" ] && ! apt-cache madison qemu-utils | awk -v v="$version" '$3 == v {found=1} END {exit !found}'; then
    version=""
  fi
  [ -n "$version" ] || version="$(candidate_version qemu-system-x86)"
  if [ -z "$version" ]; then
    echo "setup.sh: apt offers no qemu-system-x86; check this machine's apt sources" >&2
    exit 1
  fi
  apt_install --allow-downgrades "qemu-system-x86=$version" "qemu-utils=$version"
fi

# `goblog-lab class serve` reads xterm.js and its fit addon from
# web/node_modules at run time (they are not built into the binary, and the
# learner page may load nothing from the internet), so both modes install them
# when one is missing, pinned by web/package-lock.json. Here, before the early
# exit below: a machine whose engine already answers needs them too. Without
# npm, labs still work, so only --for-tests, whose browser tests load the
# learner page, treats it as a failure.
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$root/web/node_modules/@xterm/xterm/lib/xterm.js" ] ||
   [ ! -f "$root/web/node_modules/@xterm/addon-fit/lib/addon-fit.js" ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing the class pages' xterm assets into web/node_modules"
    # npm's summary is noise here; its output is shown only when it fails.
    if ! out="$(npm ci --prefix "$root/web" --no-audit --no-fund --loglevel=error 2>&1)"; then
      printf '%s\n' "$out" >&2
      echo "setup.sh: npm ci --prefix web failed" >&2
      exit 1
    fi
  else
    note="\`goblog-lab class serve\` needs the xterm assets in web/node_modules, and npm is not here: \`npm ci --prefix web\` installs them"
    if [ "${1:-}" = "--for-tests" ]; then
      echo "setup.sh: $note" >&2
      exit 1
    fi
    say "$note"
  fi
fi

if host_docker version >/dev/null 2>&1; then
  exit 0
fi

say "starting dockerd"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  as_root systemctl start docker
else
  # No init system to ask (containers, CI sandboxes): run it in the background.
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
fi
for _ in $(seq 1 120); do
  if host_docker version >/dev/null 2>&1; then
    say "dockerd is up ($(host_docker version --format '{{.Server.Version}}'))"
    exit 0
  fi
  sleep 0.5
done
echo "setup.sh: dockerd did not answer within 60 s; see /var/log/dockerd.log" >&2
exit 1
