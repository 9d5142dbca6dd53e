#!/usr/bin/env bash
# Demo: two agents and a router on one host. Each agent's TUN lives in its own network
# namespace (standing in for two sites); a ping crosses the AMQP bus both ways, IPv6 and IPv4.
#
#   sudo bash examples/two_agents_one_host.sh
#
# Installs what is missing (scripts/setup.sh), uses the local RabbitMQ (started if none
# answers) with a vhost of its own, and removes everything it made when it ends.
# With AMQP_URL set, that broker is used instead and no vhost is created.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
bash scripts/setup.sh || exit 1
py="$top/.venv/bin/python"

tag="demo$$"
ns_a="$tag-a"; ns_b="$tag-b"
logs=$(mktemp -d)
pids=()
vhost=""

cleanup() {
    for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
    ip netns del "$ns_a" 2>/dev/null
    ip netns del "$ns_b" 2>/dev/null
    [ -n "$vhost" ] && rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${AMQP_URL:-}" ]; then
    vhost="$tag"
    rabbitmqctl -q add_vhost "$vhost" >/dev/null
    rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
    export AMQP_URL="amqp://guest:guest@127.0.0.1/$vhost"
fi

ip netns add "$ns_a"
ip netns add "$ns_b"

"$py" -m agent router >"$logs/router.log" 2>&1 & pids+=($!)
"$py" -m agent connect --name agent_1 --netns "$ns_a" >"$logs/agent_1.log" 2>&1 & pids+=($!)
"$py" -m agent connect --name agent_2 --netns "$ns_b" >"$logs/agent_2.log" 2>&1 & pids+=($!)

for _ in $(seq 1 50); do
    grep -q "published ready" "$logs/agent_1.log" && grep -q "published ready" "$logs/agent_2.log" \
        && grep -q "announced as" "$logs/router.log" && break
    sleep 0.2
done

ok=0; failed=0
check() {  # description, namespace, ping arguments...
    local what=$1 ns=$2; shift 2
    if out=$(ip netns exec "$ns" ping -c 3 -i 0.3 -W 2 "$@" 2>&1); then
        echo "PASS  $what: $(echo "$out" | grep -E 'packets transmitted|rtt')" | tr '\n' ' '; echo
        ok=$((ok + 1))
    else
        echo "FAIL  $what"; echo "$out" | sed 's/^/      /'
        failed=$((failed + 1))
    fi
}
echo "agent_1 in namespace $ns_a (bbbb::1, 10.2.0.1), agent_2 in $ns_b (bbbb::2, 10.2.0.2)"
check "agent_1 -> agent_2 IPv6" "$ns_a" -6 bbbb::2
check "agent_2 -> agent_1 IPv6" "$ns_b" -6 bbbb::1
check "agent_1 -> agent_2 IPv4" "$ns_a" -4 10.2.0.2
check "agent_2 -> agent_1 IPv4" "$ns_b" -4 10.2.0.1

if [ "$failed" -ne 0 ]; then
    for f in router agent_1 agent_2; do echo "--- $f.log"; cat "$logs/$f.log"; done
    echo "demo: $failed of $((ok + failed)) pings FAILED"
    exit 1
fi
echo "demo: all $ok pings went through the tunnel"
