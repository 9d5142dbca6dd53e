# Shared by the example scripts (source it): setup, a vhost of their own, namespaces and
# processes that are all removed on exit, waiting for log lines, ping checks.
#
#   source "$(dirname "$0")/lib.sh"
#   demo_begin TAG          # root check, scripts/setup.sh, $py, $work, cleanup trap, vhost
#   demo_netns NAME...      # network namespaces, deleted on exit
#   demo_start LABEL CMD... # a process logging to $work/LABEL.log, stopped by SIGINT on exit
#   demo_track PID          # a process started by the script itself, stopped by SIGINT
#   demo_stop               # stop (SIGINT) and wait for the processes now, not at exit
#   demo_helper CMD...      # a helper process (socat, fake mote), stopped by SIGTERM after
#   wait_log FILE PATTERN [SECONDS]
#   wait_link NAMESPACE DEV # until DEV is operationally up with no tentative address
#   ping_check DESCRIPTION NAMESPACE PING-ARGS...   # counts into $ok / $failed
#   demo_end NAME LABEL...  # summary line; on failure the logs of LABELs and exit 1

demo_begin() {
    set -uo pipefail
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    cd "$top" || exit 1
    [ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
    bash scripts/setup.sh || exit 1
    py="$top/.venv/bin/python"
    tag="$1$$"
    work=$(mktemp -d)
    _pids=(); _helpers=(); _netns=(); _vhost=""
    ok=0; failed=0
    trap _demo_cleanup EXIT
    trap 'exit 130' INT TERM
    if [ -z "${AMQP_URL:-}" ]; then
        _vhost="$tag"
        rabbitmqctl -q add_vhost "$_vhost" >/dev/null
        rabbitmqctl -q set_permissions -p "$_vhost" guest '.*' '.*' '.*' >/dev/null
        export AMQP_URL="amqp://guest:guest@127.0.0.1/$_vhost"
    fi
}

demo_stop() {
    local pid
    for pid in "${_pids[@]}"; do kill -INT "$pid" 2>/dev/null; done
    for pid in "${_pids[@]}"; do wait "$pid" 2>/dev/null; done
    _pids=()
}

_demo_cleanup() {
    local pid ns
    demo_stop
    for pid in "${_helpers[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${_helpers[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${_netns[@]}"; do ip netns del "$ns" 2>/dev/null; done  # veths go with them
    [ -n "$_vhost" ] && rabbitmqctl -q delete_vhost "$_vhost" >/dev/null 2>&1
    rm -rf "$work"
}

demo_netns() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns" || exit 1
        _netns+=("$ns")
        ip -n "$ns" link set lo up
    done
}

demo_start() {
    local label=$1; shift
    "$@" >"$work/$label.log" 2>&1 &
    _pids+=($!)
}

demo_track() {
    _pids+=("$1")
}

demo_helper() {
    "$@" &
    _helpers+=($!)
}

wait_log() {
    local tries=$(( ${3:-15} * 5 ))
    for _ in $(seq 1 "$tries"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}

wait_link() {
    # A first ping sent before the link is up, or while an address is still tentative
    # (duplicate address detection), waits a second or two for neighbour discovery.
    for _ in $(seq 1 100); do
        ip -n "$1" link show dev "$2" 2>/dev/null | grep -q "state UP" \
            && ! ip -n "$1" addr show dev "$2" 2>/dev/null | grep -q tentative && return 0
        sleep 0.05
    done
    echo "timed out waiting for $2 in $1 to be up" >&2
    return 1
}

ping_check() {
    local what=$1 ns=$2 out; shift 2
    if out=$(ip netns exec "$ns" ping -c 3 -i 0.3 -W 2 "$@" 2>&1); then
        echo "PASS  $what: $(echo "$out" | grep -E 'packets transmitted|rtt')" | tr '\n' ' '
        echo
        ok=$((ok + 1))
    else
        echo "FAIL  $what"
        echo "$out" | sed 's/^/      /'
        failed=$((failed + 1))
    fi
}

demo_end() {
    local name=$1 label; shift
    if [ "$failed" -ne 0 ]; then
        for label in "$@"; do echo "--- $label.log"; cat "$work/$label.log"; done
        echo "$name: $failed of $((ok + failed)) checks FAILED"
        exit 1
    fi
}
