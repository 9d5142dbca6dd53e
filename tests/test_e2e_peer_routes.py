"""Networks other agents announce (re_route_packets_prefix in their tun.started), as one
agent routes them into its TUN: over the real broker, the routes read back from the kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import orjson
import pytest

from tests.conftest import Listener, Proc, Session, needs_root, ns_run, wait_for

pytestmark = [pytest.mark.e2e, needs_root]

MAX_ROUTES = 32  # agent.node.MAX_ANNOUNCED_ROUTES, stated here as the README states it


def _routes(ns: str) -> set[str]:
    """Destinations of the routes of the namespace's TUN that the agent added (not the
    kernel's connected and local routes)."""
    out = set()
    for family in ("-6", "-4"):
        text = ns_run(ns, "ip", family, "route", "show", "table", "main").stdout
        for line in text.splitlines():
            if "proto kernel" in line or " dev tun" not in line:
                continue
            out.add(str(ipaddress.ip_network(line.split()[0])))
    return out


def _announce(lst: Listener, peer: str, host: int, prefixes: list[str] | None) -> None:
    body = {"name": peer, "ipv6_prefix": "bbbb", "ipv6_host": f"{host:x}",
            "re_route_packets_prefix": prefixes}
    lst.publish(f"fromAgent.{peer}.ip.tun.started", orjson.dumps(body))


def _until_routes(ns: str, want: set[str], agent: Proc) -> None:
    got = wait_for(lambda: _routes(ns) == want, 5)
    have = _routes(ns)
    assert got, (f"missing {sorted(want - have)}, extra {sorted(have - want)}",
                 agent.output[-3000:])


def test_announced_networks_added_replaced_withdrawn_and_capped(  # type: ignore[no-untyped-def]
    session: Session, listener: Callable[[list[str]], Listener]
) -> None:
    agent = session.start_agent("agent_1")
    ns = session.ns["agent_1"]
    lst = listener([])
    assert _routes(ns) == set()

    # overlaps with our own networks (bbbb::/64, 10.2.0.0/24) are refused, the rest routed
    _announce(lst, "peer_o", 0x90, ["bbbb::/48", "10.2.0.0/16", "cccc::/64", "192.0.2.0/24"])
    _until_routes(ns, {"cccc::/64", "192.0.2.0/24"}, agent)
    # a new announcement replaces the old one: routes that went are removed
    _announce(lst, "peer_o", 0x90, ["dddd::/64", "192.0.2.0/24"])
    _until_routes(ns, {"dddd::/64", "192.0.2.0/24"}, agent)
    # an announcement without networks withdraws them all
    _announce(lst, "peer_o", 0x90, None)
    _until_routes(ns, set(), agent)

    # 16 networks a message (the most one tun.started may carry): two peers fill the 32
    nets_a = [str(ipaddress.ip_network(f"fd0a:{i:x}::/64")) for i in range(16)]
    nets_b = [str(ipaddress.ip_network(f"fd0b:{i:x}::/64")) for i in range(16)]
    _announce(lst, "peer_a", 0xA, nets_a)
    _announce(lst, "peer_b", 0xB, nets_b)
    _until_routes(ns, set(nets_a + nets_b), agent)
    assert len(_routes(ns)) == MAX_ROUTES
    # a 33rd route is refused, with one log line; nothing of that peer is routed
    _announce(lst, "peer_c", 0xC, ["fd0c::/64"])
    assert agent.wait_log(r"ignored networks of peer_c: more than 32 announced routes", 5)
    assert _routes(ns) == set(nets_a + nets_b)
    # room again once peer_a withdraws; peer_c is routed when it announces again
    _announce(lst, "peer_a", 0xA, None)
    _until_routes(ns, set(nets_b), agent)
    _announce(lst, "peer_c", 0xC, ["fd0c::/64"])
    _until_routes(ns, set(nets_b) | {"fd0c::/64"}, agent)

    # and at the end the agent removes what it added
    code, _ = agent.stop()
    assert code == 0, agent.output
    assert _routes(ns) == set()
    assert "Traceback" not in agent.output
