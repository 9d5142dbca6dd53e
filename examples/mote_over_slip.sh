#!/usr/bin/env bash
# Demo: a (fake) 6LoWPAN mote on a SLIP serial line behind an agent.
#
#   sudo bash examples/mote_over_slip.sh
#
#   agent_1 (namespace A, bbbb::1)  ->  bus + router  ->  coap_server (namespace B, bbbb::5)
#                                                           |  --serial-port: a socat pty
#                                                         fake mote cccc::1 (tests/tools/slip_peer.py)
#
# socat makes a pty pair standing in for a USB-UART: the agent opens one end as its serial
# port, the fake mote (SLIP, ICMPv6 echo, UDP echo, Contiki-like debug text and a "?P"
# prefix request) sits on the other. The demo pings cccc::1 from agent_1 and shows what
# the mote learnt and said. Everything it starts is stopped by PID and removed at the end
# (processes, namespaces, ptys, the vhost). With AMQP_URL set, that broker is used instead.
source "$(dirname "$0")/lib.sh"
demo_begin slip
ns_a="$tag-a"; ns_b="$tag-b"
mote_tty="$work/mote"; agent_tty="$work/ttyUSB-demo"

wait_for() {  # seconds, command...: true once the command succeeds
    local tries=$(($1 * 5)); shift
    for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

# the "serial cable": two linked ptys
demo_helper socat -d -d "pty,raw,echo=0,link=$mote_tty" "pty,raw,echo=0,link=$agent_tty" \
    2>"$work/socat.log"
wait_for 5 test -e "$agent_tty" -a -e "$mote_tty" || { echo "socat did not start"; exit 1; }

# the mote: sends payload END (as RIOT does), discards up to the first END after boot;
# the agent sends END payload END (its default), so nothing it sends is lost
demo_helper "$py" tests/tools/slip_peer.py "$mote_tty" --address cccc::1 >"$work/mote.log" 2>&1

demo_netns "$ns_a" "$ns_b"
demo_start router "$py" -m agent router
wait_for 20 grep -q "announced as" "$work/router.log"
demo_start agent_1 "$py" -m agent connect --name agent_1 --netns "$ns_a"
wait_for 20 grep -q "published ready" "$work/agent_1.log"
demo_start coap_server "$py" -m agent connect --name coap_server --ipv6-host 5 --netns "$ns_b" \
    --serial-port "$agent_tty" --baudrate 115200 --re-route-prefix cccc --re-route-host 1 -vv

step() {  # description, command...
    local what=$1; shift
    if out=$("$@" 2>&1); then
        echo "PASS  $what"; ok=$((ok + 1))
    else
        echo "FAIL  $what"; echo "$out" | sed 's/^/      /'; failed=$((failed + 1))
    fi
}
step "coap_server opened the serial port and joined the bus" \
    wait_for 20 grep -q "published ready" "$work/coap_server.log"
step "agent_1 learnt the route to cccc::/64 (the network behind coap_server)" \
    wait_for 10 sh -c "ip -n '$ns_a' -6 route | grep -q '^cccc::/64'"
step "the mote's ?P prefix request was answered with cccc::/64" \
    wait_for 10 grep -q "^prefix cccc000000000000" "$work/mote.log"
step "ping -6 cccc::1 from agent_1 reaches the mote over SLIP" \
    ip netns exec "$ns_a" ping -6 -c 3 -i 0.3 -W 2 cccc::1

echo
echo "what the mote printed on the line (logged by coap_server, not forwarded):"
grep -m 2 "serial text:" "$work/coap_server.log" | sed 's/^.*serial text: /    /'
echo "what the mote saw:"
grep -m 4 -E "^(prefix|echo6)" "$work/mote.log" | sed 's/^/    /'

if [ "$failed" -ne 0 ]; then
    for f in socat router agent_1 coap_server mote; do
        echo "--- $f.log"; tail -n 40 "$work/$f.log"
    done
    echo "demo: $failed of $((ok + failed)) steps FAILED"
    exit 1
fi
echo "demo: all $ok steps passed; the mote at cccc::1 answered through the serial line"
