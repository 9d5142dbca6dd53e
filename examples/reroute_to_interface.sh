#!/usr/bin/env bash
# Re-routing demo: a device network behind an interface of agent_2's host joins the session.
#
#   sudo bash examples/reroute_to_interface.sh
#
# Three network namespaces stand in for three machines:
#   A  agent_1's host                       (TUN bbbb::1, 10.2.0.1)
#   B  agent_2's host                       (TUN bbbb::2, 10.2.0.2; veth cccc::2, 192.0.2.2)
#   C  the device under test, behind B      (veth cccc::1, 192.0.2.1; routes the session via B)
# agent_2 runs with --re-route-if <its veth> --re-route-prefix cccc --re-route-prefix
# 192.0.2.0/24 --re-route-host 1: it forwards between the veth and the bus itself (IP
# forwarding stays off in B), and announces cccc::/64 and 192.0.2.0/24 to the session.
#
# Installs what is missing (scripts/setup.sh), uses the local RabbitMQ with a vhost of its
# own (or the broker of AMQP_URL when set), and removes everything it made when it ends.
source "$(dirname "$0")/lib.sh"
demo_begin rr
ns_a="$tag-a"; ns_b="$tag-b"; ns_c="$tag-c"
veth_b="${tag}b"; veth_c="${tag}c"      # at most 15 characters
demo_netns "$ns_a" "$ns_b" "$ns_c"

set -e
for ns in "$ns_a" "$ns_b" "$ns_c"; do
    # the kernels do not forward: the agent does, in user space
    ip netns exec "$ns" sysctl -q -w net.ipv4.conf.all.forwarding=0 net.ipv6.conf.all.forwarding=0
done
ip link add "$veth_b" netns "$ns_b" type veth peer name "$veth_c" netns "$ns_c"
# no duplicate address detection on this made-up cable: its link-local addresses are
# usable at once (a first ping would otherwise wait 1-2 s for them)
ip netns exec "$ns_b" sysctl -q -w "net.ipv6.conf.$veth_b.accept_dad=0"
ip netns exec "$ns_c" sysctl -q -w "net.ipv6.conf.$veth_c.accept_dad=0"
ip -n "$ns_b" addr add cccc::2/64 dev "$veth_b" nodad
ip -n "$ns_b" addr add 192.0.2.2/24 dev "$veth_b"
ip -n "$ns_c" addr add cccc::1/64 dev "$veth_c" nodad
ip -n "$ns_c" addr add 192.0.2.1/24 dev "$veth_c"
ip -n "$ns_b" link set "$veth_b" up
ip -n "$ns_c" link set "$veth_c" up
# the device reaches the session through agent_2's host, as a border router is told to
ip -n "$ns_c" -6 route add bbbb::/64 via cccc::2
ip -n "$ns_c" -4 route add 10.2.0.0/24 via 192.0.2.2
wait_link "$ns_b" "$veth_b"
wait_link "$ns_c" "$veth_c"
set +e

demo_start router "$py" -m agent router
demo_start agent_1 "$py" -m agent connect --name agent_1 --netns "$ns_a"
demo_start agent_2 "$py" -m agent connect --name agent_2 --netns "$ns_b" --re-route-if "$veth_b" \
    --re-route-prefix cccc --re-route-prefix 192.0.2.0/24 --re-route-host 1
wait_log "$work/agent_1.log" "route cccc::/64" && wait_log "$work/agent_2.log" "published ready" \
    && wait_log "$work/router.log" "learned agent_2"

echo "agent_1 in $ns_a; agent_2 in $ns_b re-routing cccc::/64, 192.0.2.0/24 via $veth_b;" \
     "the device in $ns_c (cccc::1, 192.0.2.1)"
ping_check "agent_1 -> device IPv6" "$ns_a" -6 cccc::1
ping_check "agent_1 -> device IPv4" "$ns_a" -4 192.0.2.1
ping_check "device -> agent_1 IPv6" "$ns_c" -6 bbbb::1
ping_check "device -> agent_1 IPv4" "$ns_c" -4 10.2.0.1
echo "forwarding in $ns_b: ipv4 $(ip netns exec "$ns_b" cat /proc/sys/net/ipv4/ip_forward)," \
     "ipv6 $(ip netns exec "$ns_b" cat /proc/sys/net/ipv6/conf/all/forwarding) (off: the agent forwarded)"

demo_end "reroute demo" router agent_1 agent_2
echo "reroute demo: all $ok pings reached the device network and back"
