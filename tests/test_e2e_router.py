"""The packet router end to end: restarted mid-session, --mirror, --links.

Real broker, agents with their TUNs in namespaces, real ping.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pika
import pytest

from agent.bus.connection import QUEUE_CHECK_S
from tests.conftest import ROOT, Session, needs_root, ping, rabbitmqctl, tun_links, wait_for

pytestmark = [pytest.mark.e2e, needs_root]


def test_router_restarts_mid_session(session: Session) -> None:
    """The router goes away and comes back (once JSON-only, then as before): the agents
    re-announce themselves, its table refills, the wire falls back and renegotiates."""
    first = session.start_router()
    a1 = session.start_agent("agent_1")
    a2 = session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    assert a1.wait_log("uplink wire: fast", 10) and a2.wait_log("uplink wire: fast", 10)
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]
    assert ping(ns1, "bbbb::2", count=2)

    code, _ = first.stop()
    assert code == 0, first.output
    assert not ping(ns1, "bbbb::2", count=1)  # no router, no path

    # back, reading only ioppytest's JSON wire: the agents fall back to it
    second = session.start_router("--wire", "json")
    assert session.learned("agent_1", "agent_2")  # from their re-published tun.started
    for agent in (a1, a2):
        assert agent.wait_log("uplink wire: json", 10), agent.output
        assert agent.output.count("re-publishing tun.started") >= 2
    assert ping(ns1, "bbbb::2", count=3) and ping(ns2, "10.2.0.1", count=2, version=4)
    # learned, not flooded: unicast to the owner
    assert re.search(r"agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request",
                     second.output)
    m = second.status(r"rx json (\d+)p")
    assert m and int(m.group(1)) >= 5 and "rx fast" not in m.string, m and m.string
    code, _ = second.stop()
    assert code == 0, second.output

    # and back as it was: the fast wire is negotiated again
    third = session.start_router()
    assert session.learned("agent_1", "agent_2")
    for agent in (a1, a2):
        assert agent.output.count("uplink wire: fast") == 2, agent.output
    assert ping(ns1, "bbbb::2", count=3) and ping(ns2, "bbbb::1", count=2)
    m = third.status(r"rx fast (\d+)p")
    assert m and int(m.group(1)) >= 5, m and m.string
    assert a1.running() and a2.running()
    assert "Traceback" not in a1.output + a2.output


def _tun_capture(ns: str, seconds: float) -> subprocess.Popen[str]:
    cap = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(ROOT / "tests/tools/iface_capture.py"),
         tun_links(ns)[0], str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
    return cap


def _echoes(out: str) -> list[tuple[str, int, int, int]]:
    """(direction, ICMPv6 type, last byte of source, of destination) of each echo."""
    found = []
    for line in out.splitlines():
        direction, hexdata = line.split()
        pkt = bytes.fromhex(hexdata)
        if pkt[0] >> 4 == 6 and pkt[6] == 58 and pkt[40] in (128, 129):
            found.append((direction, pkt[40], pkt[23], pkt[39]))
    return found


def test_mirror_copies_every_packet_to_testers(session: Session) -> None:
    """`router --mirror agent_TT --mirror agent_TU`: a testing tool's agent with
    --accept-any (its TUN takes packets not addressed to it) sees the others' traffic;
    one without it gets the copies too but drops and counts them; others see nothing."""
    session.start_router("--mirror", "agent_TT", "--mirror", "agent_TU")
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    tt = session.start_agent("agent_TT", "--ipv6-host", "ff", "--accept-any")
    tu = session.start_agent("agent_TU", "--ipv6-host", "fe")
    other = session.start_agent("agent_3")  # not a mirror
    assert session.learned("agent_1", "agent_2", "agent_TT", "agent_TU", "agent_3")
    cap_tt = _tun_capture(session.ns["agent_TT"], 4)
    cap_3 = _tun_capture(session.ns["agent_3"], 4)
    try:
        assert ping(session.ns["agent_1"], "bbbb::2", count=2)
        out_tt, _ = cap_tt.communicate(timeout=15)
        out_3, _ = cap_3.communicate(timeout=15)
    finally:
        for cap in (cap_tt, cap_3):
            if cap.poll() is None:
                cap.kill()
    # both requests and both replies, written into agent_TT's TUN (incoming, to its kernel)
    assert sorted(_echoes(out_tt)) == sorted([("in", 128, 1, 2), ("in", 129, 2, 1)] * 2)
    assert _echoes(out_3) == []
    m = tu.status(r"not for us (\d+)")
    assert m and int(m.group(1)) >= 4, m and m.string
    assert tt.running() and tu.running() and other.running()


def test_static_links_forward_only_between_linked_agents(session: Session) -> None:
    """`router --links agent_1,agent_2 --links agent_2,agent_3`: 1-2 and 2-3 talk, 1-3 not."""
    router = session.start_router("--links", "agent_1,agent_2", "--links", "agent_2,agent_3")
    for n in (1, 2, 3):
        session.start_agent(f"agent_{n}")
    assert session.learned("agent_1", "agent_2", "agent_3")
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]
    assert ping(ns1, "bbbb::2", count=2)
    assert ping(ns2, "bbbb::3", count=2, version=6)
    assert ping(ns2, "10.2.0.1", count=1, version=4)
    assert not ping(ns1, "bbbb::3", count=2)
    assert not ping(ns1, "10.2.0.3", count=1, version=4)
    # agent_1's packets for agent_3 went to its only link, agent_2, which did not take them
    assert re.search(r"agent_1 > agent_2  IPv6 bbbb::1 > bbbb::3 ICMPv6 Echo Request",
                     router.output)
    assert not re.search(r"agent_1 > [^ ]*agent_3", router.output)


def test_router_whose_queue_vanished_reconnects(session: Session) -> None:
    """The router's queue deleted behind its back (as a broker race after a cluster node's
    death can do, docs/cluster.md): the router notices within QUEUE_CHECK_S, reconnects,
    holds its queue again and the agents' pings get through again."""
    router = session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    ns1 = session.ns["agent_1"]
    assert ping(ns1, "bbbb::2", count=2)
    vhost = session.url.rsplit("/", 1)[1]
    rabbitmqctl("delete_queue", "-p", vhost, "packetrouting@router")
    assert router.wait_log("our queue is gone", QUEUE_CHECK_S + 10), router.output[-2000:]
    assert router.wait_log("broker connection restored", 10), router.output[-2000:]
    assert wait_for(lambda: ping(ns1, "bbbb::2", count=1), 20), router.output[-2000:]
    assert "Traceback" not in router.output


def test_router_whose_queue_name_another_connection_took_stands_by(session: Session) -> None:
    """The router's queue deleted and its name then taken by another connection (the other
    outcome of that broker race): the router notices, reconnects, stands by while the name
    is held, and is active again, routing, once the holder goes."""
    router = session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    ns1 = session.ns["agent_1"]
    vhost = session.url.rsplit("/", 1)[1]
    rabbitmqctl("delete_queue", "-p", vhost, "packetrouting@router")
    holder = pika.BlockingConnection(pika.URLParameters(session.url))
    try:
        holder.channel().queue_declare("packetrouting@router", exclusive=True)
        assert router.wait_log("our queue is gone or held", QUEUE_CHECK_S + 10), router.output
        assert router.wait_log("another router is active", 10), router.output[-2000:]
    finally:
        holder.close()
    # active again: a second "active on" line (the first was at start)
    assert wait_for(lambda: router.output.count("announced as packetrouting") >= 2, 10), (
        router.output[-2000:]
    )
    assert wait_for(lambda: ping(ns1, "bbbb::2", count=1), 20), router.output[-2000:]
    assert "Traceback" not in router.output
