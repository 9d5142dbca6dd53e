#!/usr/bin/env bash
# Demo: two agents and a router on one host. Each agent's TUN lives in its own network
# namespace (standing in for two sites); a ping crosses the AMQP bus both ways, IPv6 and IPv4.
#
#   sudo bash examples/two_agents_one_host.sh
#
# Installs what is missing (scripts/setup.sh), uses the local RabbitMQ (started if none
# answers) with a vhost of its own, and removes everything it made when it ends.
# With AMQP_URL set, that broker is used instead and no vhost is created.
source "$(dirname "$0")/lib.sh"
demo_begin demo
ns_a="$tag-a"; ns_b="$tag-b"
demo_netns "$ns_a" "$ns_b"

demo_start router "$py" -m agent router
demo_start agent_1 "$py" -m agent connect --name agent_1 --netns "$ns_a"
demo_start agent_2 "$py" -m agent connect --name agent_2 --netns "$ns_b"
wait_log "$work/agent_1.log" "published ready" && wait_log "$work/agent_2.log" "published ready" \
    && wait_log "$work/router.log" "announced as"

echo "agent_1 in namespace $ns_a (bbbb::1, 10.2.0.1), agent_2 in $ns_b (bbbb::2, 10.2.0.2)"
ping_check "agent_1 -> agent_2 IPv6" "$ns_a" -6 bbbb::2
ping_check "agent_2 -> agent_1 IPv6" "$ns_b" -6 bbbb::1
ping_check "agent_1 -> agent_2 IPv4" "$ns_a" -4 10.2.0.2
ping_check "agent_2 -> agent_1 IPv4" "$ns_b" -4 10.2.0.1
demo_end demo router agent_1 agent_2
echo "demo: all $ok pings went through the tunnel"
