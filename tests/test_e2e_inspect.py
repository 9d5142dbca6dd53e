"""End to end packet inspection: `connect --pcap -v`, `sniff`, counters, over the real
broker with TUNs in namespaces.

The agents' namespaces have router solicitations switched off before the TUN is made
(`net.ipv6.conf.default.router_solicitations=0`), so that the only packets are the
ones a test sends and every count can be exact.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from agent.bus import wire
from tests.conftest import (
    NOBODY,
    ROOT,
    Listener,
    Proc,
    Unprivileged,
    needs_root,
    ns_run,
    ping,
    run_example,
    tun_links,
    wait_for,
)
from tests.tools.pcap import TSHARK, read_raw
from tests.tools.pcap import tshark_fields as _tshark

pytestmark = [pytest.mark.e2e, needs_root]

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")


class QuietSession:
    """A router and agents, each in a namespace where the kernel sends nothing by itself."""

    def __init__(self, url: str, netns: Callable[[], str], procs: Callable[..., Proc]) -> None:
        self.url, self._netns, self._procs = url, netns, procs
        self.ns: dict[str, str] = {}
        self.agents: dict[str, Proc] = {}
        self.router: Proc | None = None

    def start_router(self, *extra: str) -> Proc:
        self.router = self._procs("router", "--url", self.url, *extra, label="router")
        assert self.router.wait_log("announced as packetrouting"), self.router.output
        return self.router

    def start_agent(self, name: str, *extra: str) -> Proc:
        ns = self._netns()
        out = ns_run(ns, "sysctl", "-qw", "net.ipv6.conf.default.router_solicitations=0")
        assert out.returncode == 0, out.stderr
        self.ns[name] = ns
        proc = self._procs(
            "connect", "--url", self.url, "--name", name, "--netns", ns, *extra, label=name
        )
        self.agents[name] = proc
        assert proc.wait_log("published ready"), proc.output
        return proc

    def learned(self, *names: str) -> None:
        assert self.router is not None
        for n in names:
            assert self.router.wait_log(f"learned {n}\\b", 10), self.router.output


@pytest.fixture
def quiet(vhost: str, netns: Callable[[], str], procs: Callable[..., Proc]) -> QuietSession:
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed")
    return QuietSession(vhost, netns, procs)


def _records(path: Path) -> list[tuple[bytes, str, int, int | None]]:
    return [(d, m.ifname.decode(), m.linktype, m.direction) for d, m in read_raw(path)]  # type: ignore[attr-defined]


def _is_echo6(pkt: bytes) -> bool:
    return pkt[0] >> 4 == 6 and pkt[6] == 58 and len(pkt) > 40 and pkt[40] in (128, 129)


def _drain(lst: Listener, quiet_for: float = 0.5, first: float = 5.0) -> list[tuple[str, bytes]]:
    """Packets of the messages on lst (JSON or fast wire): wait up to `first` s for one,
    then until quiet."""
    out = []
    timeout = first
    while (got := lst.get(timeout=timeout)) is not None:
        key, body, props = got
        out.extend((key, p) for p in wire.decode_packets(body, props.content_type))
        timeout = quiet_for
    return out


# --------------------------------------------------------------------------- connect --pcap


@needs_tshark
def test_connect_pcap_and_trace_during_ping(quiet: QuietSession, listener, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cap = tmp_path / "agent_1.pcapng"
    bus = listener(["fromAgent.agent_1.ip.tun.packet.raw", "toAgent.agent_1.ip.tun.packet.raw"])
    quiet.start_router()
    a1 = quiet.start_agent("agent_1", "--pcap", str(cap), "-v")
    quiet.start_agent("agent_2")
    quiet.learned("agent_1", "agent_2")
    tun = tun_links(quiet.ns["agent_1"])[0]

    assert ping(quiet.ns["agent_1"], "bbbb::2", count=2)
    crossed = _drain(bus)
    ups = [p for k, p in crossed if k.startswith("fromAgent.")]
    downs = [p for k, p in crossed if k.startswith("toAgent.")]
    assert len(ups) == 2 and len(downs) == 2 and all(map(_is_echo6, ups + downs)), crossed

    # readable while the agent runs: 2 requests and 2 replies, each on both ports
    assert wait_for(lambda: len(_tshark(cap, "frame.len")) == 8, 5)
    rows = _tshark(cap, "frame.interface_name", "frame.packet_flags_direction", "icmpv6.type")
    assert (
        rows
        == [
            [tun, "0x00000001", "128"],
            ["bus", "0x00000002", "128"],
            ["bus", "0x00000001", "129"],
            [tun, "0x00000002", "129"],
        ]
        * 2
    )

    code, _ = a1.stop(signal.SIGINT)
    assert code == 0, a1.output
    assert re.search(r"wrote 4 packets to .*agent_1\.pcapng", a1.output)
    records = _records(cap)
    assert {(iface, lt) for _, iface, lt, _ in records} == {(tun, 101), ("bus", 101)}
    # the exact bytes that crossed the bus, on both ports, in order
    assert [d for d, iface, _, _ in records if iface == "bus"] == [
        p for pair in zip(ups, downs, strict=True) for p in pair
    ]
    assert [d for d, iface, _, _ in records if iface == tun] == [
        p for pair in zip(ups, downs, strict=True) for p in pair
    ]
    assert len(_tshark(cap, "frame.len")) == 8  # and after Ctrl-C

    # -v: one line per packet, direction and ports first
    seq = r"\(id 0x[0-9a-f]+ seq 1\)"
    assert re.search(
        rf"up   {tun}>bus  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request {seq} 104 B", a1.output
    )
    assert re.search(
        rf"down bus>{tun}  IPv6 bbbb::2 > bbbb::1 ICMPv6 Echo Reply {seq} 104 B", a1.output
    )
    assert len(re.findall(r"agent\.packets INFO: ", a1.output)) == 4


def test_no_packet_lines_without_v(quiet: QuietSession) -> None:
    quiet.start_router("-v")
    quiet.start_agent("agent_1")
    a2 = quiet.start_agent("agent_2", "--stats", "0.3")
    quiet.learned("agent_1", "agent_2")
    assert ping(quiet.ns["agent_1"], "bbbb::2", count=2)
    assert ping(quiet.ns["agent_1"], "10.2.0.2", count=1, version=4)
    # --stats N: a status line every N seconds, by itself
    status = "status: bus>tun 3p/292B | tun>bus 3p/292B"
    assert wait_for(lambda: a2.output.count(status) >= 2, 3), a2.output
    a2.stop()
    assert "agent.packets" not in a2.output
    # the router's -v lines name both agents and summarise the packet
    assert quiet.router is not None
    router_log = quiet.router.output
    assert re.search(
        r"agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request \(id 0x[0-9a-f]+ seq 2\) "
        r"104 B",
        router_log,
    )
    assert re.search(
        r"agent_2 > agent_1  IPv4 10.2.0.2 > 10.2.0.1 ICMP echo-reply \(id 0x[0-9a-f]+ seq 1\) "
        r"84 B",
        router_log,
    )


# --------------------------------------------------------------------------- sniff


def _sniff(url: str, *args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "agent", "sniff", "--url", url, *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOME="/tmp")
    env.pop("AMQP_URL", None)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )


def _wait_stderr(proc: subprocess.Popen[str], pattern: str, timeout: float = 15) -> str:
    """Read stderr until pattern shows up; returns what was read (communicate() gets the rest)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not re.search(pattern, seen.decode(errors="replace")):
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
    text = seen.decode(errors="replace")
    assert re.search(pattern, text), f"no {pattern!r} from sniff: {text}"
    return text


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _uids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return [int(u) for u in re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()]  # type: ignore[union-attr]


def test_sniff_count_4_exits_after_a_two_echo_ping(
    quiet: QuietSession, unprivileged: Unprivileged
) -> None:
    quiet.start_router()
    quiet.start_agent("agent_1")
    quiet.start_agent("agent_2")
    quiet.learned("agent_1", "agent_2")
    # no root needed: run as user nobody, from a copy of the agent that nobody may read
    sniff = unprivileged.popen("sniff", "--url", quiet.url, "--count", "4",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_stderr(sniff, r"sniffing all agents")
        assert _uids(sniff.pid) == [NOBODY] * 4  # real, effective, saved, fs
        assert ping(quiet.ns["agent_1"], "bbbb::2", count=2)
        out, err = sniff.communicate(timeout=10)
    finally:
        _stop(sniff)
    assert sniff.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    ways = [line.split()[1:3] for line in lines]
    assert sorted(map(tuple, ways)) == sorted(
        [("agent_1", "up"), ("agent_2", "down"), ("agent_2", "up"), ("agent_1", "down")]
    )
    assert all("ICMPv6 Echo" in line for line in lines)
    assert "4 packets seen; stopping" in err


@needs_tshark
def test_sniff_pcap_filter_and_control_lines(  # type: ignore[no-untyped-def]
    quiet: QuietSession, listener, tmp_path: Path
) -> None:
    cap = tmp_path / "bus.pcapng"
    bus = listener(["fromAgent.*.ip.tun.packet.raw", "toAgent.*.ip.tun.packet.raw"])
    quiet.start_router()
    sniff = _sniff(quiet.url, "--pcap", str(cap), "--filter", "icmp6 and host bbbb::2")
    try:
        _wait_stderr(sniff, r"sniffing all agents")
        quiet.start_agent("agent_1")
        quiet.start_agent("agent_2")
        quiet.learned("agent_1", "agent_2")
        assert ping(quiet.ns["agent_1"], "bbbb::2", count=2)
        assert ping(quiet.ns["agent_2"], "10.2.0.1", count=1, version=4)  # filtered out
        crossed = _drain(bus)
        assert wait_for(lambda: len(_records(cap)) == 8, 5), _records(cap)
        live = _tshark(cap, "frame.interface_name", "icmpv6.type")  # while sniff runs
        bus.publish(wire.TERMINATE_KEY, b'{"description": "end of session"}')
        out, err = sniff.communicate(timeout=10)
    finally:
        _stop(sniff)
    assert sniff.returncode == 0, err
    echoes = [(k, p) for k, p in crossed if _is_echo6(p)]
    assert len(echoes) == 8 and len(crossed) == 12  # and 4 IPv4 messages

    # the exact bytes, one interface per agent and direction
    names = {
        "fromAgent.agent_1.ip.tun.packet.raw": "fromAgent.agent_1",
        "toAgent.agent_2.ip.tun.packet.raw": "toAgent.agent_2",
        "fromAgent.agent_2.ip.tun.packet.raw": "fromAgent.agent_2",
        "toAgent.agent_1.ip.tun.packet.raw": "toAgent.agent_1",
    }
    records = _records(cap)
    assert sorted((iface, d) for d, iface, _, _ in records) == sorted(
        (names[k], p) for k, p in echoes
    )
    assert {lt for _, _, lt, _ in records} == {101}
    assert sorted(live) == sorted([[names[k], str(p[40])] for k, p in echoes])

    lines = out.splitlines()
    assert len([line for line in lines if "ICMPv6 Echo" in line]) == 8
    assert not any("ICMP echo" in line for line in lines)  # IPv4, filtered out
    control = [line[16:] for line in lines if "ICMPv6" not in line]
    assert "agent_1       up    ready" in control
    assert "agent_1       up    tun.started: bbbb::1/64, fe80::1/64, 10.2.0.1/24" in control
    assert control[-1] == "testingtool         terminate: end of session"
    assert re.search(r"drop filtered out\s+4\n", err), err  # the final counters table


# --------------------------------------------------------------------------- counters


def _echo4(n: int) -> bytes:
    return bytes(IP(src="10.2.0.9", dst="10.2.0.1") / ICMP(id=0x99, seq=n) / (b"z" * 56))


def _echo6(n: int) -> bytes:
    return bytes(
        IPv6(src="bbbb::9", dst="bbbb::1") / ICMPv6EchoRequest(id=0x99, seq=n, data=b"z" * 56)
    )


def test_agent_counters_after_a_known_exchange(quiet: QuietSession, listener) -> None:  # type: ignore[no-untyped-def]
    lst = listener(["fromAgent.agent_1.ip.tun.packet.raw"])
    a1 = quiet.start_agent("agent_1")
    down = "toAgent.agent_1.ip.tun.packet.raw"
    for n in range(3):
        lst.publish(down, wire.encode_packet(_echo4(n), "tun0"))
    for n in range(2):
        lst.publish(down, wire.encode_packet(_echo6(n), "tun0"))
    replies = _drain(lst, quiet_for=1.0)
    assert len(replies) == 5, replies
    # malformed: not JSON, data not a list, not an IP packet; too big: over 256 KiB
    lst.publish(down, b"{not json")
    lst.publish(down, b'{"data": "abc", "interface_name": "x", "timestamp": 1}')
    lst.publish(down, orjson.dumps({"data": [1, 2, 3]}))
    lst.publish(down, b'{"data": [' + b"0," * (wire.MAX_BODY // 2) + b"0]}")
    # 3 x 84 B + 2 x 104 B each way
    expected = "bus>tun 5p/460B | tun>bus 5p/460B | drops: malformed 3, too big 1"
    assert a1.wait_log("too big"), a1.output
    a1.send(signal.SIGUSR1)
    assert a1.wait_log(re.escape(f"status: {expected}"), 5), a1.output
    code, _ = a1.stop()
    assert code == 0
    table = a1.output.split("counters:\n", 1)[1].splitlines()[:5]
    assert [row.split() for row in table] == [
        ["path", "packets", "bytes"],
        ["bus>tun", "5", "460"],
        ["tun>bus", "5", "460"],
        ["drop", "malformed", "3"],
        ["drop", "too", "big", "1"],
    ]


def test_router_counters_and_malformed(vhost: str, procs: Callable[..., Proc], listener) -> None:  # type: ignore[no-untyped-def]
    router = procs("router", "--url", vhost, "-v", label="router")
    assert router.wait_log("announced as packetrouting"), router.output
    lst = listener(["toAgent.#"])
    for n in (1, 2):
        started = {"name": f"agent_{n}", "ipv6_prefix": "bbbb", "ipv6_host": str(n)}
        lst.publish(f"fromAgent.agent_{n}.ip.tun.started", orjson.dumps(started))
    assert router.wait_log(r"learned agent_2\b"), router.output
    req = bytes(IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=1, seq=1))
    for _ in range(3):
        lst.publish("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(req, "tun0"))
    lst.publish("fromAgent.agent_1.ip.tun.packet.raw", b"[1, 2]")
    lst.publish("fromAgent.agent_1.ip.tun.packet.raw", b'{"data": [96]}')
    got = _drain(lst)
    assert [k for k, _ in got] == ["toAgent.agent_2.ip.tun.packet.raw"] * 3
    assert router.wait_log("truncated IPv6 packet"), router.output
    router.send(signal.SIGUSR1)
    # (the router also counts messages by wire: rx json, tx json...)
    assert router.wait_log(
        r"status: agent_1> 3p/144B \| >agent_2 3p/144B \| .*drops: malformed 2\n"
    ), router.output
    assert router.wait_log(r"agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request"), (
        router.output
    )
    code, _ = router.stop()
    assert code == 0
    table = router.output.split("counters:\n", 1)[1]
    assert re.search(r"^  agent_1>\s+3\s+144\n  >agent_2\s+3\s+144\n", table, re.M), table
    assert re.search(r"^  drop malformed\s+2$", table, re.M), table


# --------------------------------------------------------------------------- the example


def test_capture_session_script_runs(tmp_path: Path) -> None:
    out = run_example("capture_session.sh", "cap", tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "capture: done" in text
    assert re.search(r"tun\d+ .*ICMPv6 .*Echo \(ping\) request", text), text
    assert re.search(r"fromAgent\.agent_1 .*Echo \(ping\) request", text), text
    assert re.search(r"toAgent\.agent_2 CoAP CON, MID:4660, GET, /\.well-known/core", text), text
    assert re.search(r"agent_1 +up +IPv6 bbbb::1 > bbbb::2 UDP \d+ > 5683 CoAP CON GET", text)
