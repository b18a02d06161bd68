#!/usr/bin/env bash
# Copies what the lab builds its services from (the accountservice and
# quotes-service crates, the service-kit crate they share, their image
# contexts, Cargo.lock and the default lab definition) into DEST, as a cargo
# workspace of its own. Tests and benchmarks edit the copy and run
# `goblog-lab deploy`, so this checkout is never touched.
#
#   scripts/service-workspace.sh DEST
#
# With GOBLOG_LAB_TARGET_DIR pointing at this checkout's target/goblog-lab,
# the copy reuses the compiled dependencies and only the edited crate builds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:?usage: scripts/service-workspace.sh DEST}

rm -rf "$dest"
mkdir -p "$dest/images" "$dest/lab"
for crate in accountservice quotes-service; do
    cp -r "$root/$crate" "$dest/"
    cp -r "$root/images/$crate" "$dest/images/"
done
cp -r "$root/service-kit" "$dest/"
cp "$root/Cargo.lock" "$dest/"
cp "$root/lab/goblog.toml" "$dest/lab/"
# The same workspace settings and profiles, so the dependencies compile to
# the very artifacts the checkout's build already made.
{
    printf '[workspace]\nmembers = ["accountservice", "quotes-service", "service-kit"]\nresolver = "2"\n\n'
    awk '/^\[/ { keep = ($0 == "[workspace.package]" || $0 ~ /^\[profile\./) } keep' "$root/Cargo.toml"
} >"$dest/Cargo.toml"
