#!/usr/bin/env bash
# Demo: watch a session. Two agents and a router on one host (each TUN in its own network
# namespace, as in two_agents_one_host.sh); agent_1 traces its packets (-v) and captures
# them (--pcap), `agent sniff` captures the bus side; pings and one CoAP request cross
# the tunnel, then the captures are summarised with tshark.
#
#   sudo bash examples/capture_session.sh
#   sudo CAPTURE_DIR=/tmp/caps bash examples/capture_session.sh   # keep the pcapng files
#
# Uses the local RabbitMQ with a vhost of its own (or AMQP_URL if set) and removes every
# process, namespace and vhost it made when it ends.
source "$(dirname "$0")/lib.sh"
demo_begin cap
command -v tshark >/dev/null || { echo "tshark is missing (apt-get install tshark)" >&2; exit 1; }
ns_a="$tag-a"; ns_b="$tag-b"
logs=$work
caps=${CAPTURE_DIR:-$logs}
mkdir -p "$caps"
demo_netns "$ns_a" "$ns_b"
for ns in "$ns_a" "$ns_b"; do  # no router solicitations: only the demo's packets
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.router_solicitations=0
done

demo_start router "$py" -m agent router -v
wait_log "$logs/router.log" "announced as" || exit 1
"$py" -m agent sniff --pcap "$caps/bus.pcapng" >"$logs/sniff.txt" 2>"$logs/sniff.log" &
demo_track $!
"$py" -m agent sniff --filter 'udp port 5683' --count 1 >"$logs/coap.txt" 2>"$logs/coap.log" &
demo_track $!
wait_log "$logs/sniff.log" "sniffing" 30 && wait_log "$logs/coap.log" "sniffing" 30 || exit 1
"$py" -m agent connect --name agent_1 --netns "$ns_a" -v --pcap "$caps/agent_1.pcapng" \
    >"$logs/agent_1.log" 2>&1 &
agent_1=$!; demo_track $agent_1
demo_start agent_2 "$py" -m agent connect --name agent_2 --netns "$ns_b"
wait_log "$logs/agent_1.log" "published ready" && wait_log "$logs/agent_2.log" "published ready" \
    && wait_log "$logs/router.log" "learned agent_2" || exit 1

echo "== traffic: 2 pings each way (IPv6 one way, IPv4 the other), one CoAP GET"
ip netns exec "$ns_a" ping -6 -c 2 -i 0.3 -W 2 bbbb::2 | grep -E "transmitted"
ip netns exec "$ns_b" ping -4 -c 2 -i 0.3 -W 2 10.2.0.1 | grep -E "transmitted"
# a CoAP GET /.well-known/core (CON, message id 0x1234); nobody listens: ICMPv6 unreachable
ip netns exec "$ns_a" bash -c \
    "printf '\x40\x01\x12\x34\xbb.well-known\x04core' > /dev/udp/bbbb::2/5683"
sleep 1

echo; echo "== agent_1 on SIGUSR1 (counters status line)"
kill -USR1 "$agent_1"; sleep 0.3
grep -o "status: .*" "$logs/agent_1.log"

demo_stop

echo; echo "== agent connect -v (agent_1): one line per packet"
grep "agent.packets" "$logs/agent_1.log"
echo; echo "== agent_1 at exit"
sed -n '/wrote .* packets/p; /counters:/,$p' "$logs/agent_1.log"
echo; echo "== agent router -v"
grep "agent.packets" "$logs/router.log"
echo; echo "== agent sniff (bus side)"
cat "$logs/sniff.txt"
echo; echo "== agent sniff --filter 'udp port 5683' --count 1"
cat "$logs/coap.txt"

summary() {  # pcapng file: one line per frame with its interface
    tshark -n -r "$1" -T fields -E separator=' ' -e frame.number -e frame.interface_name \
        -e _ws.col.Protocol -e _ws.col.Info 2> >(grep -v '^Running as user' >&2)
}
echo; echo "== tshark -r $caps/agent_1.pcapng (one interface per port)"
summary "$caps/agent_1.pcapng"
echo; echo "== tshark -r $caps/bus.pcapng (one interface per agent and direction)"
summary "$caps/bus.pcapng"
[ -n "${CAPTURE_DIR:-}" ] && echo "captures kept in $caps"
echo "capture: done"
