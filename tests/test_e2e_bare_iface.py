"""End to end: --re-route-if on a bare interface (only its link-local address).

A mote or border router on a plain cable: the veth end in B has no address but its
link-local one; the device in C has cccc::1/64 and routes bbbb::/64 via B's link-local
address. The agent adds the on-link route cccc::/64 dev <veth> (proto 172) itself and
removes it when it stops, also when stopped during start-up; a route the user made to
the prefix is never touched.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import Proc, Session, _unique, needs_root, ns_run, wait_for
from tests.test_e2e_reroute import _link_ready, ip, set_sysctl, snapshot, start_agent_in

pytestmark = [pytest.mark.e2e, needs_root]

DEVICE6 = "cccc::1"
ARGS = ("--re-route-prefix", "cccc", "--re-route-host", "1")


def bare_cable(ns_b: str, ns_c: str) -> tuple[str, str]:
    veth_b, veth_c = _unique("bb"), _unique("bc")
    ip("link", "add", veth_b, "netns", ns_b, "type", "veth", "peer", "name", veth_c, "netns", ns_c)
    ip("-n", ns_c, "addr", "add", f"{DEVICE6}/64", "dev", veth_c, "nodad")
    ip("-n", ns_b, "link", "set", veth_b, "up")
    ip("-n", ns_c, "link", "set", veth_c, "up")
    for ns in (ns_b, ns_c):
        set_sysctl(ns, "net.ipv6.conf.all.forwarding", "0")
    for ns, dev in ((ns_b, veth_b), (ns_c, veth_c)):
        assert wait_for(lambda ns=ns, dev=dev: _link_ready(ns, dev), 5)
    lladdr = re.search(
        r"inet6 (fe80::[0-9a-f:]+)/64",
        ns_run(ns_b, "ip", "-6", "addr", "show", "dev", veth_b).stdout,
    )
    assert lladdr, "no link-local address on the bare end"
    # the border router routes the session network via our link-local address
    ip("-n", ns_c, "-6", "route", "add", "bbbb::/64", "via", lladdr.group(1), "dev", veth_c)
    addrs = ns_run(ns_b, "ip", "-6", "addr", "show", "dev", veth_b).stdout
    assert "scope global" not in addrs, addrs  # bare: link-local only
    return veth_b, veth_c


def route_to_device(ns_b: str) -> str:
    return ns_run(ns_b, "ip", "-6", "route", "show", "cccc::/64").stdout.strip()


def test_bare_interface_gets_an_on_link_route_for_the_session(  # type: ignore[no-untyped-def]
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc]
) -> None:
    ns_b, ns_c = netns(), netns()
    veth_b, _veth_c = bare_cable(ns_b, ns_c)
    before = snapshot(ns_b)
    assert route_to_device(ns_b) == ""
    session.start_router()
    session.start_agent("agent_1")
    agent = start_agent_in(session, procs, "agent_2", ns_b, "--re-route-if", veth_b, *ARGS)
    assert session.learned("agent_1", "agent_2")
    assert agent.wait_log(rf"route cccc::/64 dev {veth_b} in namespace {ns_b} added \(on-link"), (
        agent.output
    )
    route = route_to_device(ns_b)
    assert f"dev {veth_b}" in route and "proto 172" in route and "via" not in route, route
    ns_a = session.ns["agent_1"]
    assert wait_for(lambda: "cccc::/64" in ns_run(ns_a, "ip", "-6", "route").stdout, 5)
    out = ns_run(ns_a, "ping", "-6", "-c", "5", "-i", "0.3", "-W", "2", DEVICE6)
    assert "5 received" in out.stdout, out.stdout + agent.output[-3000:]
    out = ns_run(ns_c, "ping", "-6", "-c", "3", "-i", "0.3", "-W", "2", "bbbb::1")
    assert "3 received" in out.stdout, out.stdout + agent.output[-3000:]
    assert "does" not in agent.output or "have a route" not in agent.output
    # the agent's own host reaches the device too, over the same route (from bbbb::2)
    out = ns_run(ns_b, "ping", "-6", "-c", "3", "-i", "0.3", "-W", "2", DEVICE6)
    assert "3 received" in out.stdout and "DUP" not in out.stdout, out.stdout

    # down and up again: the kernel deleted the route with the link; the agent adds it again
    ip("-n", ns_b, "link", "set", veth_b, "down")
    assert wait_for(lambda: route_to_device(ns_b) == "", 5)
    assert agent.wait_log(r"is down: packets for cccc::/64 are dropped")
    ip("-n", ns_b, "link", "set", veth_b, "up")
    added = rf"route cccc::/64 dev {veth_b} in namespace {ns_b} added"
    assert wait_for(lambda: len(re.findall(added, agent.output)) == 2, 10), agent.output
    assert "proto 172" in route_to_device(ns_b)
    assert wait_for(lambda: _link_ready(ns_b, veth_b), 5)
    out = ns_run(ns_a, "ping", "-6", "-c", "3", "-i", "0.3", "-W", "2", DEVICE6)
    assert "3 received" in out.stdout, out.stdout + agent.output[-3000:]

    code, _ = agent.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in agent.output, agent.output
    assert re.search(rf"route cccc::/64 dev {veth_b} removed", agent.output), agent.output
    assert route_to_device(ns_b) == ""
    assert snapshot(ns_b) == before


def test_ctrl_c_during_start_up_removes_the_route(  # type: ignore[no-untyped-def]
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc]
) -> None:
    """A "broker" that accepts TCP but never speaks AMQP: the agent is still starting up
    (connecting) when Ctrl-C comes."""
    ns_b, ns_c = netns(), netns()
    veth_b, _ = bare_cable(ns_b, ns_c)
    before = snapshot(ns_b)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        agent = procs(
            "connect",
            "--url",
            f"amqp://guest:guest@127.0.0.1:{port}/",
            "--name",
            "agent_9",
            "--netns",
            ns_b,
            "-v",
            "--re-route-if",
            veth_b,
            *ARGS,
            label="agent_9",
        )
        assert agent.wait_log(r"route cccc::/64 dev \S+ in namespace \S+ added"), agent.output
        assert "proto 172" in route_to_device(ns_b)
        time.sleep(0.5)  # a window in which an exit or a bus connection would show
        assert agent.running() and "published ready" not in agent.output, agent.output
        code, _ = agent.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in agent.output, agent.output
    assert route_to_device(ns_b) == ""
    assert snapshot(ns_b) == before


def test_a_route_the_user_made_is_left_alone(  # type: ignore[no-untyped-def]
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc]
) -> None:
    ns_b, ns_c = netns(), netns()
    veth_b, _ = bare_cable(ns_b, ns_c)
    other = _unique("du")
    ip("-n", ns_b, "link", "add", other, "type", "veth", "peer", "name", other + "p")
    ip("-n", ns_b, "link", "set", other, "up")
    ip("-n", ns_b, "link", "set", other + "p", "up")
    for dev in (other, other + "p"):
        assert wait_for(lambda dev=dev: _link_ready(ns_b, dev), 5)
    ip("-n", ns_b, "-6", "route", "add", "cccc::/64", "dev", other)  # the user's, elsewhere
    before = snapshot(ns_b)
    user_route = route_to_device(ns_b)
    session.start_router()
    agent = start_agent_in(session, procs, "agent_2", ns_b, "--re-route-if", veth_b, *ARGS)
    assert agent.wait_log(r"no route to cccc::/64 leads out of .*File exists \(left as it is\)"), (
        agent.output
    )
    assert route_to_device(ns_b) == user_route
    code, _ = agent.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in agent.output, agent.output
    assert route_to_device(ns_b) == user_route
    assert snapshot(ns_b) == before
