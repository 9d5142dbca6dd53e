"""End to end: router + agents over the real broker, TUNs in namespaces, real ping."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import (
    ROOT,
    Session,
    needs_root,
    ns_run,
    ping,
    run_example,
    tun_links,
    wait_for,
)

pytestmark = [pytest.mark.e2e, needs_root]


def _addresses(ns: str) -> str:
    return ns_run(ns, "ip", "addr").stdout + ns_run(ns, "ip", "-6", "route").stdout


def test_ping_both_ways_ipv6_and_ipv4(session: Session) -> None:
    session.start_router()
    a1 = session.start_agent("agent_1")
    a2 = session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]

    assert ping(ns1, "bbbb::2", version=6)
    assert ping(ns2, "bbbb::1", version=6)
    assert ping(ns1, "10.2.0.2", version=4)
    assert ping(ns2, "10.2.0.1", version=4)
    # link-local addresses of the plan work too
    assert ping(ns1, "fe80::2%" + tun_links(ns1)[0], version=6)

    # SIGINT: exit 0 within 2 s, and nothing of the agent remains in its namespace
    for name, proc, ns in (("agent_1", a1, ns1), ("agent_2", a2, ns2)):
        code, took = proc.stop(signal.SIGINT)
        assert code == 0, proc.output
        assert took < 2.0, f"{name} took {took:.2f} s to stop"
        assert tun_links(ns) == []
        left = _addresses(ns)
        assert "bbbb" not in left and "10.2.0." not in left, left
        assert "Traceback" not in proc.output


def test_sigterm_stops_cleanly(session: Session) -> None:
    proc = session.start_agent("agent_7")
    ns = session.ns["agent_7"]
    assert len(tun_links(ns)) == 1
    code, took = proc.stop(signal.SIGTERM)
    assert code == 0 and took < 2.0, proc.output
    assert tun_links(ns) == []


def test_unicast_does_not_reach_third_agent(session: Session) -> None:
    session.start_router()
    for n in (1, 2, 3):
        session.start_agent(f"agent_{n}")
    assert session.learned("agent_1", "agent_2", "agent_3")
    ns3 = session.ns["agent_3"]
    tun3 = tun_links(ns3)[0]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", ns3, sys.executable, str(ROOT / "tests/tools/iface_capture.py"),
         tun3, "6"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
        assert ping(session.ns["agent_1"], "bbbb::2", count=5)
        assert ping(session.ns["agent_2"], "10.2.0.1", count=5, version=4)
        # positive control: the capture does see echoes that are agent_3's
        assert ping(session.ns["agent_1"], "bbbb::3", count=1)
        assert ping(session.ns["agent_2"], "10.2.0.3", count=1, version=4)
        out, _ = cap.communicate(timeout=15)
    finally:
        if cap.poll() is None:
            cap.kill()
    echoes = []  # (version, source, destination) of each echo request or reply
    for line in out.splitlines():
        _direction, hexdata = line.split()
        pkt = bytes.fromhex(hexdata)
        if pkt[0] >> 4 == 6 and pkt[6] == 58 and pkt[40] in (128, 129):
            echoes.append((6, pkt[8:24][-1], pkt[24:40][-1]))
        if pkt[0] >> 4 == 4 and pkt[9] == 1:
            echoes.append((4, pkt[12:16][-1], pkt[16:20][-1]))
    # request in and reply out, per version: what the capture saw of agent_3's own pings
    assert sorted(echoes) == [(4, 2, 3), (4, 3, 2), (6, 1, 3), (6, 3, 1)], echoes
    # the router did forward the echoes, to the right agents only
    router_log = session.router.output if session.router else ""
    assert re.search(r"agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request", router_log)
    assert not re.search(r"agent_1 > [^ ]*agent_3[^ ]*  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo",
                         router_log)


def test_name_without_plan_uses_given_host(session: Session) -> None:
    session.start_router()
    session.start_agent("coap_client", "--ipv6-host", "a", "--ipv4-address", "10.2.0.10")
    session.start_agent("coap_server", "--ipv6-host", "b")
    assert session.learned("coap_client", "coap_server")
    assert ping(session.ns["coap_client"], "bbbb::b")
    assert ping(session.ns["coap_server"], "bbbb::a")


def test_wait_bootstrap_creates_tun_on_tun_start(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    lst = listener(["fromAgent.coap_server.ip.tun.started"])
    proc = session.start_agent("coap_server", "--wait-bootstrap")
    ns = session.ns["coap_server"]
    assert tun_links(ns) == []
    start = {
        "_api_version": "1.2.15", "name": "coap_server", "ipv6_prefix": "bbbb",
        "ipv6_host": ":5", "ipv6_no_forwarding": False, "ipv4_host": "10.2.0.5",
        "ipv4_network": "10.2.0.0", "ipv4_netmask": "255.255.255.0",
        "re_route_packets_if": None, "re_route_packets_prefix": None,
        "re_route_packets_host": None,
    }
    lst.publish("toAgent.coap_server.ip.tun.start", orjson.dumps(start))
    got = lst.get(timeout=3)
    assert got is not None, proc.output
    started = orjson.loads(got[1])
    assert started["ipv6_host"] == "5" and started["ipv4_address"] == "10.2.0.5"
    addrs = _addresses(ns)
    assert "bbbb::5/64" in addrs and "fe80::5/64" in addrs and "10.2.0.5/24" in addrs


def test_announced_prefix_is_routed_into_tun(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    lst = listener([])
    session.start_agent("agent_1")
    ns = session.ns["agent_1"]
    started = {
        "_api_version": "1.2.15", "name": "agent_9", "ipv6_prefix": "bbbb", "ipv6_host": "9",
        "ipv4_address": "10.2.0.9", "re_route_packets_prefix": "cccc",
        "re_route_packets_host": "1", "re_route_packets_if": "eth1",
    }
    lst.publish("fromAgent.agent_9.ip.tun.started", orjson.dumps(started))
    assert wait_for(lambda: "cccc::/64" in ns_run(ns, "ip", "-6", "route").stdout, 5)
    proc = session.agents["agent_1"]
    code, _ = proc.stop()
    assert code == 0
    assert "cccc" not in ns_run(ns, "ip", "-6", "route").stdout


def test_demo_script_runs(tmp_path: Path) -> None:
    """The README's demo command, as a user runs it."""
    out = run_example("two_agents_one_host.sh", "demo", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo: all 4 pings went through the tunnel" in out.stdout
    assert len(re.findall(r"^PASS ", out.stdout, re.M)) == 4


def test_addresses_match_plan(session: Session) -> None:
    session.start_agent("agent_3", "--mtu", "1400")
    ns = session.ns["agent_3"]
    out = ns_run(ns, "ip", "addr").stdout
    for iface in ("bbbb::3/64", "fe80::3/64", "10.2.0.3/24"):
        assert iface in out
    assert "mtu 1400" in out
    # per-interface redirects off, nothing process-wide changed
    tun = tun_links(ns)[0]
    val = ns_run(ns, "cat", f"/proc/sys/net/ipv4/conf/{tun}/send_redirects").stdout.strip()
    assert val == "0"
    for scope in ("all", "default"):  # a fresh namespace's defaults, untouched
        path = f"/proc/sys/net/ipv4/conf/{scope}/send_redirects"
        assert ns_run(ns, "cat", path).stdout.strip() == "1", scope
        path = f"/proc/sys/net/ipv6/conf/{scope}/addr_gen_mode"
        assert ns_run(ns, "cat", path).stdout.strip() == "0", scope
