# Sourced by the bench scripts that start the accountservice on loopback
# with `--port 0` (accountservice.sh, generator.sh).
#
# service_port OUT ERR PID: waits up to 30 s for the start-up line the
# service prints on OUT and echoes the port the kernel chose; if the process
# dies first, shows its stderr (ERR) and fails.
service_port() {
    local out=$1 err=$2 pid=$3 port=""
    for _ in $(seq 300); do
        port=$(awk '/^Starting HTTP service at /{ print $5 }' "$out")
        [[ -n "$port" ]] && { echo "$port"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; return 1; }
        sleep 0.1
    done
    return 1
}
