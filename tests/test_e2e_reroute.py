"""End to end: re-routing to a device network behind an interface (issue 3).

agent_1 in namespace A; agent_2 in namespace B, with a veth pair into namespace C where
the "device" lives (cccc::1/64, 192.0.2.1/24) with routes to the session networks via
agent_2's host (cccc::2, 192.0.2.2). The agent forwards between the veth and the bus in
user space; forwarding stays off in B.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.packet import raw

from agent.bus import wire
from tests.conftest import (
    ROOT,
    Proc,
    Session,
    _unique,
    listening,
    needs_root,
    ns_run,
    ping,
    run_example,
    tun_links,
    wait_for,
)

pytestmark = [pytest.mark.e2e, needs_root]

DEVICE6, DEVICE4 = "cccc::1", "192.0.2.1"
HOST6, HOST4 = "cccc::2", "192.0.2.2"
REROUTE_ARGS = ("--re-route-prefix", "cccc", "--re-route-prefix", "192.0.2.0/24",
                "--re-route-host", "1")


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, f"ip {' '.join(args)}: {out.stderr}"


def sysctl(ns: str, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    return ns_run(ns, "cat", path).stdout.strip()


def set_sysctl(ns: str, key: str, value: str) -> None:
    out = ns_run(ns, "sysctl", "-q", "-w", f"{key}={value}")
    assert out.returncode == 0, out.stderr


def snapshot(ns: str) -> str:
    """Links, addresses, routes and forwarding settings of a namespace (no counters)."""
    parts = [
        ns_run(ns, "ip", "-o", "link", "show").stdout,
        ns_run(ns, "ip", "-o", "addr", "show").stdout,
        ns_run(ns, "ip", "-4", "route", "show", "table", "all").stdout,
        ns_run(ns, "ip", "-6", "route", "show", "table", "all").stdout,
        ns_run(ns, "ip", "rule", "show").stdout,
        sysctl(ns, "net.ipv4.ip_forward"),
        sysctl(ns, "net.ipv6.conf.all.forwarding"),
    ]
    text = "\n".join(parts)
    # link state lines carry qdisc/state details that do not change; drop the link stats
    return "\n".join(sorted(line for line in text.splitlines() if "valid_lft" not in line))


@dataclass
class DeviceNet:
    ns_b: str  # agent_2's namespace
    ns_c: str  # the device's namespace
    veth_b: str
    veth_c: str


def make_device_net(
    ns_b: str, ns_c: str, veth_b: str | None = None, veth_c: str | None = None
) -> DeviceNet:
    """A veth pair B <-> C: cccc::2, 192.0.2.2 in B; the device cccc::1, 192.0.2.1 in C."""
    veth_b, veth_c = veth_b or _unique("rb"), veth_c or _unique("rc")
    ip("link", "add", veth_b, "netns", ns_b, "type", "veth", "peer", "name", veth_c,
       "netns", ns_c)
    ip("-n", ns_b, "addr", "add", f"{HOST6}/64", "dev", veth_b, "nodad")
    ip("-n", ns_b, "addr", "add", f"{HOST4}/24", "dev", veth_b)
    ip("-n", ns_c, "addr", "add", f"{DEVICE6}/64", "dev", veth_c, "nodad")
    ip("-n", ns_c, "addr", "add", f"{DEVICE4}/24", "dev", veth_c)
    ip("-n", ns_b, "link", "set", veth_b, "up")
    ip("-n", ns_c, "link", "set", veth_c, "up")
    device_routes(ns_c)
    # the test's namespaces do not forward, whatever the host does (the agent forwards)
    for ns in (ns_b, ns_c):
        set_sysctl(ns, "net.ipv4.conf.all.forwarding", "0")
        set_sysctl(ns, "net.ipv6.conf.all.forwarding", "0")
    for ns, dev in ((ns_b, veth_b), (ns_c, veth_c)):  # carrier, and link-local addresses made
        assert wait_for(lambda ns=ns, dev=dev: _link_ready(ns, dev), 5)
    return DeviceNet(ns_b, ns_c, veth_b, veth_c)


def _link_ready(ns: str, dev: str) -> bool:
    if "LOWER_UP" not in ns_run(ns, "ip", "link", "show", dev).stdout:
        return False
    out = ns_run(ns, "ip", "-6", "addr", "show", "dev", dev, "scope", "link").stdout
    return "fe80::" in out and "tentative" not in out


def device_routes(ns_c: str) -> None:
    """The device reaches the session through agent_2's host, as a border router is told."""
    ip("-n", ns_c, "-6", "route", "replace", "bbbb::/64", "via", HOST6)
    ip("-n", ns_c, "-4", "route", "replace", "10.2.0.0/24", "via", HOST4)


def start_agent_in(
    session: Session, procs: Callable[..., Proc], name: str, ns: str, *extra: str,
    wait: bool = True,
) -> Proc:
    """Like session.start_agent, in a namespace the test made (and set up) beforehand."""
    proc = procs("connect", "--url", session.url, "--name", name, "--netns", ns, "-v", *extra,
                 label=name)
    session.ns[name] = ns
    session.agents[name] = proc
    if wait:
        assert proc.wait_log("published ready"), proc.output
    return proc


class Capture:
    """tests/tools/iface_capture.py on one interface, for some seconds."""

    def __init__(self, ns: str, iface: str, seconds: float) -> None:
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable,
             str(ROOT / "tests/tools/iface_capture.py"), iface, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.popen.stdout is not None
        assert self.popen.stdout.readline().strip() == "ready"

    def packets(self, timeout: float = 20) -> list[tuple[str, bytes]]:
        out, _ = self.popen.communicate(timeout=timeout)
        result = []
        for line in out.splitlines():
            direction, hexdata = line.split()
            result.append((direction, bytes.fromhex(hexdata)))
        return result

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def captures() -> Iterator[Callable[[str, str, float], Capture]]:
    made: list[Capture] = []

    def start(ns: str, iface: str, seconds: float) -> Capture:
        cap = Capture(ns, iface, seconds)
        made.append(cap)
        return cap

    yield start
    for cap in made:
        cap.close()


@pytest.fixture
def reroute_session(
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc], listener
) -> Iterator[tuple[Session, DeviceNet, dict[str, str]]]:  # type: ignore[no-untyped-def]
    """Router, agent_1 (ns A), agent_2 (ns B) re-routing to the device in ns C."""
    ns_b, ns_c = netns(), netns()
    net = make_device_net(ns_b, ns_c)
    before = {ns: snapshot(ns) for ns in (ns_b, ns_c)}
    started = listener(["fromAgent.agent_2.ip.tun.started"])
    session.start_router()
    session.start_agent("agent_1", "-v")
    start_agent_in(session, procs, "agent_2", ns_b, "--re-route-if", net.veth_b, *REROUTE_ARGS)
    assert session.learned("agent_1", "agent_2")
    got = started.get(timeout=5)
    assert got is not None
    body = orjson.loads(got[1])
    # agent_1 routes the announced networks into its TUN
    ns_a = session.ns["agent_1"]
    assert wait_for(lambda: "cccc::/64" in ns_run(ns_a, "ip", "-6", "route").stdout, 5)
    assert wait_for(lambda: "192.0.2.0/24" in ns_run(ns_a, "ip", "-4", "route").stdout, 5)
    yield session, net, {"announced": body, **{f"before:{k}": v for k, v in before.items()}}


def test_tun_started_announces_reroute(reroute_session) -> None:  # type: ignore[no-untyped-def]
    _session, net, info = reroute_session
    body = info["announced"]
    assert body["re_route_packets_if"] == net.veth_b
    assert body["re_route_packets_prefix"] == ["cccc", "192.0.2.0/24"]
    assert body["re_route_packets_host"] == "1"


def test_ping_device_both_ways(reroute_session) -> None:  # type: ignore[no-untyped-def]
    session, net, _info = reroute_session
    ns_a = session.ns["agent_1"]
    assert ping(ns_a, DEVICE6, version=6)
    assert ping(ns_a, DEVICE4, version=4)
    # the device reaches agent_1 (through the bus) and agent_2's own TUN address (its kernel)
    assert ping(net.ns_c, "bbbb::1", version=6)
    assert ping(net.ns_c, "10.2.0.1", version=4)
    assert ping(net.ns_c, "bbbb::2", version=6)
    # no duplicates: one reply per request
    out = ns_run(ns_a, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", DEVICE6)
    assert out.returncode == 0 and "DUP" not in out.stdout, out.stdout
    out = ns_run(net.ns_c, "ping", "-4", "-c", "3", "-i", "0.2", "-W", "2", "10.2.0.1")
    assert out.returncode == 0 and "DUP" not in out.stdout, out.stdout
    # agent_2's own TUN address: its kernel answers, the agent does not add a copy
    out = ns_run(net.ns_c, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "bbbb::2")
    assert out.returncode == 0 and "DUP" not in out.stdout, out.stdout
    # the agent forwarded them in user space: forwarding is still off in B
    assert sysctl(net.ns_b, "net.ipv6.conf.all.forwarding") == "0"
    assert sysctl(net.ns_b, "net.ipv4.ip_forward") == "0"


def udp_exchange(server_ns: str, listen: str, client_ns: str, connect: str) -> None:
    """One UDP request and its answer with socat; the server upper-cases what it gets."""
    # `ip netns exec` execs socat itself (no `timeout` wrapper): killing this PID ends the
    # listener, nothing is orphaned
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "socat", "-T", "5", listen, "EXEC:tr a-z A-Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = int(re.search(r":(\d+)", listen).group(1))  # type: ignore[union-attr]
        assert wait_for(lambda: listening(server_ns, port, udp=True), 10), server.stderr
        client = subprocess.run(
            ["ip", "netns", "exec", client_ns, "timeout", "10", "socat", "-t", "4", "-T", "4",
             "-", connect],
            input="hello-through-the-bus\n", capture_output=True, text=True, timeout=20,
        )
        assert "HELLO-THROUGH-THE-BUS" in client.stdout, (client.stdout, client.stderr)
    finally:
        if server.poll() is None:
            server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_udp_exchange_both_directions(reroute_session) -> None:  # type: ignore[no-untyped-def]
    session, net, _info = reroute_session
    ns_a = session.ns["agent_1"]
    # A is the client, the device serves (IPv6 and IPv4)
    udp_exchange(net.ns_c, "UDP6-RECVFROM:5683,fork", ns_a, f"UDP6:[{DEVICE6}]:5683")
    udp_exchange(net.ns_c, "UDP4-RECVFROM:5684,fork", ns_a, f"UDP4:{DEVICE4}:5684")
    # the device is the client, agent_1 serves
    udp_exchange(ns_a, "UDP6-RECVFROM:5685,fork", net.ns_c, "UDP6:[bbbb::1]:5685")
    udp_exchange(ns_a, "UDP4-RECVFROM:5686,fork", net.ns_c, "UDP4:10.2.0.1:5686")


def _is_link_scope(pkt: bytes) -> bool:
    """Neighbour discovery, router solicitations and anything to link-local/multicast."""
    if pkt[0] >> 4 == 6:
        return pkt[24] == 0xFF or pkt[24:26] == b"\xfe\x80" or pkt[6] == 58 and pkt[40] >= 133
    return pkt[0] >> 4 != 4  # ARP has no IP version nibble of 4


def _dst(pkt: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if pkt[0] >> 4 == 6:
        return ipaddress.IPv6Address(pkt[24:40])
    return ipaddress.IPv4Address(pkt[16:20])


def test_only_rerouted_prefixes_leave_by_the_interface(  # type: ignore[no-untyped-def]
    reroute_session, captures, listener
) -> None:
    session, net, _info = reroute_session
    ns_a = session.ns["agent_1"]
    cap = captures(net.ns_b, net.veth_b, 6)
    # traffic for agent_2's own addresses, and packets from the bus for elsewhere
    assert ping(ns_a, "bbbb::2", version=6)
    assert ping(ns_a, "10.2.0.2", version=4)
    bus = listener([])
    others = [
        IPv6(src="bbbb::1", dst="dddd::1") / ICMPv6EchoRequest(),
        IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=1, dport=9) / b"x",
        IP(src="10.2.0.1", dst="10.9.9.9") / ICMP(),
        IP(src="10.2.0.1", dst="198.51.100.1") / UDP(sport=1, dport=9) / b"x",
    ]
    for pkt in others:
        bus.publish("toAgent.agent_2.ip.tun.packet.raw", wire.encode_packet(raw(pkt), "tun0"))
    # positive control: the device's traffic does leave by it
    assert ping(ns_a, DEVICE6, version=6, count=2)
    assert ping(ns_a, DEVICE4, version=4, count=2)
    seen = cap.packets()
    out = [pkt for direction, pkt in seen if direction == "out" and not _is_link_scope(pkt)]
    device = [ipaddress.ip_network("cccc::/64"), ipaddress.ip_network("192.0.2.0/24")]
    stray = [p for p in out if not any(_dst(p) in n for n in device if n.version == p[0] >> 4)]
    assert stray == [], [p.hex() for p in stray]
    assert any(_dst(p) == ipaddress.ip_address(DEVICE6) for p in out)
    assert any(_dst(p) == ipaddress.ip_address(DEVICE4) for p in out)


def test_the_agents_own_host_reaches_the_device(  # type: ignore[no-untyped-def]
    reroute_session
) -> None:
    """agent_2's host reaches the device network through its interface (its address there,
    cccc::2), with the agent running: one reply per request, nothing doubled."""
    _session, net, _info = reroute_session
    for dst, version in ((DEVICE6, 6), (DEVICE4, 4)):
        out = ns_run(net.ns_b, "ping", f"-{version}", "-c", "3", "-i", "0.2", "-W", "2", dst)
        assert out.returncode == 0 and "DUP" not in out.stdout, out.stdout


def test_link_local_never_crosses_the_interface(  # type: ignore[no-untyped-def]
    reroute_session, captures, listener
) -> None:
    """A packet of link-local scope from the bus (source fe80::1, or to 169.254.x.y behind
    a re-routed prefix's address) never leaves by the interface; a global one does. The
    switch counts them, the same rule as for a serial line."""
    session, net, _info = reroute_session
    cap = captures(net.ns_c, net.veth_c, 3)
    bus = listener([])
    packets = [
        IPv6(src="fe80::1", dst=DEVICE6) / UDP(sport=5, dport=9) / b"link-local",
        IP(src="169.254.1.1", dst=DEVICE4) / UDP(sport=5, dport=9) / b"link-local",
        IPv6(src="bbbb::1", dst=DEVICE6) / UDP(sport=5, dport=9) / b"global",
    ]
    for pkt in packets:
        bus.publish("toAgent.agent_2.ip.tun.packet.raw", wire.encode_packet(raw(pkt), "tun0"))
    seen = [p for d, p in cap.packets() if d == "in"]
    udp = [p for p in seen if b"link-local" in p or b"global" in p]
    assert [p for p in udp if b"global" in p], [p.hex() for p in seen]
    assert not [p for p in udp if b"link-local" in p], [p.hex() for p in udp]
    agent = session.agents["agent_2"]
    code, _ = agent.stop(signal.SIGINT)
    assert code == 0, agent.output
    assert re.search(r"drop link-local\s+2\b", agent.output), agent.output[-3000:]


def test_sigint_leaves_nothing_behind(reroute_session) -> None:  # type: ignore[no-untyped-def]
    session, net, info = reroute_session
    ns_a = session.ns["agent_1"]
    assert ping(ns_a, DEVICE6, version=6, count=1)
    assert ping(net.ns_c, "10.2.0.1", version=4, count=1)
    for name in ("agent_2", "agent_1"):
        proc = session.agents[name]
        code, took = proc.stop(signal.SIGINT)
        assert code == 0, proc.output
        assert took < 3.0, f"{name} took {took:.2f} s"
        assert "Traceback" not in proc.output
    # B and C are exactly as the test made them; A has no TUN and no announced routes
    for ns in (net.ns_b, net.ns_c):
        assert snapshot(ns) == info[f"before:{ns}"]
    assert tun_links(ns_a) == [] and tun_links(net.ns_b) == []
    left = ns_run(ns_a, "ip", "addr").stdout + ns_run(ns_a, "ip", "-6", "route").stdout
    left += ns_run(ns_a, "ip", "-4", "route").stdout
    assert "cccc" not in left and "192.0.2." not in left and "bbbb" not in left, left


def test_interface_down_and_gone_later(  # type: ignore[no-untyped-def]
    reroute_session
) -> None:
    session, net, _info = reroute_session
    ns_a = session.ns["agent_1"]
    agent_2 = session.agents["agent_2"]
    for ns, dev in ((net.ns_b, net.veth_b), (net.ns_c, net.veth_c)):
        set_sysctl(ns, f"net.ipv6.conf.{dev}.keep_addr_on_down", "1")
    # the peer goes down: no carrier on agent_2's side, then back
    ip("-n", net.ns_c, "link", "set", net.veth_c, "down")
    assert agent_2.wait_log(rf"{net.veth_b}.* is without carrier", 5), agent_2.output
    assert ping(ns_a, "bbbb::2", count=1)  # the rest of the tunnel goes on
    ip("-n", net.ns_c, "link", "set", net.veth_c, "up")
    device_routes(net.ns_c)  # the kernel flushed them with the link
    assert agent_2.wait_log(rf"{net.veth_b}.* is up again", 5), agent_2.output
    assert wait_for(lambda: ping(ns_a, DEVICE6, count=1), 10)
    # the interface disappears: one line, the agent keeps tunnelling
    ip("-n", net.ns_c, "link", "del", net.veth_c)
    assert agent_2.wait_log(rf"{net.veth_b}.* disappeared", 5), agent_2.output
    time.sleep(1.5)  # a window in which a crash or a second "disappeared" line would show
    assert agent_2.running()
    assert agent_2.output.count("disappeared") == 1
    assert ping(ns_a, "bbbb::2", version=6)
    assert ping(net.ns_b, "bbbb::1", version=6)
    assert not ping(ns_a, DEVICE6, count=1)
    # it comes back (same name): the agent uses it again
    make_device_net(net.ns_b, net.ns_c, net.veth_b, net.veth_c)
    assert agent_2.wait_log(rf"{net.veth_b}.* is back", 5), agent_2.output
    assert wait_for(lambda: ping(ns_a, DEVICE6, count=1), 10)
    assert ping(net.ns_c, "bbbb::1")
    code, _ = agent_2.stop()
    assert code == 0 and "Traceback" not in agent_2.output


def test_kernel_forwarding_on_is_left_to_the_kernel(  # type: ignore[no-untyped-def]
    session: Session, netns, procs
) -> None:
    """With forwarding on in B the kernel forwards the device's packets into the TUN; the
    agent must not send a second copy (no duplicate replies)."""
    ns_b, ns_c = netns(), netns()
    net = make_device_net(ns_b, ns_c)
    set_sysctl(ns_b, "net.ipv6.conf.all.forwarding", "1")
    set_sysctl(ns_b, "net.ipv4.conf.all.forwarding", "1")
    session.start_router()
    session.start_agent("agent_1")
    agent_2 = start_agent_in(session, procs, "agent_2", ns_b, "--re-route-if", net.veth_b,
                             *REROUTE_ARGS)
    assert session.learned("agent_1", "agent_2")
    assert "forwarding is on" in agent_2.output
    ns_a = session.ns["agent_1"]
    assert wait_for(lambda: "cccc::/64" in ns_run(ns_a, "ip", "-6", "route").stdout, 5)
    for ns, dst, version in ((ns_c, "bbbb::1", 6), (ns_c, "10.2.0.1", 4), (ns_a, DEVICE6, 6)):
        out = ns_run(ns, "ping", f"-{version}", "-c", "3", "-i", "0.2", "-W", "2", dst)
        assert out.returncode == 0 and "DUP" not in out.stdout, out.stdout


@pytest.mark.parametrize("problem", ["missing", "down", "no carrier"])
def test_unusable_interface_is_a_clear_error(  # type: ignore[no-untyped-def]
    problem: str, vhost: str, netns, procs
) -> None:
    ns_b, ns_c = netns(), netns()
    if problem == "missing":
        ifname = "nosuch0"
    else:
        net = make_device_net(ns_b, ns_c)
        ifname = net.veth_b
        if problem == "down":
            ip("-n", ns_b, "link", "set", net.veth_b, "down")
        else:
            ip("-n", ns_c, "link", "set", net.veth_c, "down")
            assert wait_for(
                lambda: "NO-CARRIER" in ns_run(ns_b, "ip", "link", "show", ifname).stdout, 5
            )
    proc = procs("connect", "--url", vhost, "--name", "agent_2", "--netns", ns_b,
                 "--re-route-if", ifname, *REROUTE_ARGS, label="agent_2")
    code = proc.wait(15)
    text = proc.output
    assert code == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if "ERROR" in line]
    expected = {"missing": "does not exist", "down": "is down", "no carrier": "no carrier"}
    assert len(errors) == 1 and ifname in errors[0] and expected[problem] in errors[0], text
    assert tun_links(ns_b) == []


def test_re_route_if_needs_a_prefix() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "connect", "--name", "agent_2", "--re-route-if", "eth1"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "AMQP_URL"},  # never a user's broker
    )
    assert out.returncode == 2 and "--re-route-prefix" in out.stderr, out.stderr


def test_reroute_from_a_tun_start(  # type: ignore[no-untyped-def]
    session: Session, netns, procs, listener
) -> None:
    """A testing tool's tun.start names the interface and network; the agent uses them."""
    ns_b, ns_c = netns(), netns()
    net = make_device_net(ns_b, ns_c)
    lst = listener(["fromAgent.coap_server.ip.tun.started"])
    session.start_router()
    session.start_agent("agent_1")
    proc = start_agent_in(session, procs, "coap_server", ns_b, "--wait-bootstrap")
    start = {
        "_api_version": "1.2.15", "name": "coap_server", "ipv6_prefix": "bbbb",
        "ipv6_host": "2", "ipv4_address": "10.2.0.2", "ipv4_netmask": "255.255.255.0",
        "re_route_packets_if": net.veth_b, "re_route_packets_prefix": "cccc",
        "re_route_packets_host": "1",
    }
    lst.publish("toAgent.coap_server.ip.tun.start", orjson.dumps(start))
    got = lst.get(timeout=5)
    assert got is not None, proc.output
    body = orjson.loads(got[1])
    assert body["re_route_packets_if"] == net.veth_b
    assert body["re_route_packets_prefix"] == "cccc" and body["re_route_packets_host"] == "1"
    assert session.learned("agent_1", "coap_server")
    ns_a = session.ns["agent_1"]
    assert wait_for(lambda: "cccc::/64" in ns_run(ns_a, "ip", "-6", "route").stdout, 5)
    assert ping(ns_a, DEVICE6)
    assert ping(ns_c, "bbbb::1")


def test_example_script_runs(tmp_path: Path) -> None:
    """examples/reroute_to_interface.sh, as a user runs it; it leaves no namespace behind."""
    out = run_example("reroute_to_interface.sh", "rr", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reroute demo: all 4 pings reached the device network and back" in out.stdout
    # no first ping waits for neighbour discovery on a link that is not up yet (1-2 s)
    rtt = r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/([\d.]+)"
    worst = [float(m) for m in re.findall(rtt, out.stdout)]
    assert len(worst) == 4 and max(worst) < 700, out.stdout
    tag = next(w for w in out.stdout.split() if w.startswith("rr") and w.endswith("-a;"))[:-3]
    assert tag not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                     text=True).stdout
