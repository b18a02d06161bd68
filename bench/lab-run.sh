# Sourced by the bench scripts that load a lab of their own (blog.sh,
# failover.sh): finds goblog-lab ($LAB_BIN, else a release build of this
# checkout) as $lab_bin, makes a scratch directory $work, and destroys the
# lab $LAB and the scratch directory however the script ends.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
command -v python3 >/dev/null || { echo "$(basename "$0"): python3 is required" >&2; exit 1; }
if [[ -z "${LAB_BIN:-}" ]]; then
    echo "$(basename "$0"): building goblog-lab (release)" >&2
    cargo build --release -p goblog-lab >&2
fi
lab_bin=${LAB_BIN:-"${CARGO_TARGET_DIR:-$root/target}/release/goblog-lab"}

work=$(mktemp -d)
cleanup() {
    "$lab_bin" destroy -q --name "$LAB" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
