"""Packet inspection without a broker: -v trace lines (golden), the router's lines, the
--pcap tap (read back by Scapy and tshark), counters tables, sniff's line formatting."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import orjson
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

from agent.bus import wire
from agent.bus.url import parse_url
from agent.counters import Counters
from agent.inspect.filter import Filter
from agent.inspect.pcapng import LINKTYPE_IEEE802_15_4_NOFCS, LINKTYPE_RAW
from agent.inspect.sniff import Sniffer, bindings, describe_plan, line
from agent.inspect.taps import PcapTap, TraceTap, direction, install, router_line, trace_line
from tests.conftest import FakeBus, FakePort, FakeTun, make_agent
from tests.tools import wpan
from tests.tools.pcap import TSHARK
from tests.tools.pcap import read_raw as _read
from tests.tools.pcap import tshark_fields as _tshark

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

ECHO_REQ = bytes(
    IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=0x1C, seq=3, data=b"x" * 56)
)
ECHO_REP = bytes(
    IPv6(src="bbbb::2", dst="bbbb::1") / ICMPv6EchoReply(id=0x1C, seq=3, data=b"x" * 56)
)
PING4 = bytes(IP(src="10.2.0.1", dst="10.2.0.2") / ICMP(id=7, seq=1) / (b"y" * 56))
URL = parse_url("amqp://guest:guest@127.0.0.1:5672/unused")


PORTS = {"tun": FakePort("tun0"), "bus": FakePort("bus"), "eth1": FakePort("eth1")}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def packet_log() -> list[str]:
    logger = logging.getLogger("agent.packets")
    handler = Records()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.messages
    logger.removeHandler(handler)
    logger.setLevel(old)


# --------------------------------------------------------------------------- -v lines


def test_trace_lines_golden(packet_log: list[str]) -> None:
    tap = TraceTap(PORTS)
    tap(ECHO_REQ, "tun", "bus")
    tap(ECHO_REP, "bus", "tun")
    tap(PING4, "tun", "eth1")
    tap(PING4, "eth1", "bus")
    assert packet_log == [
        "up   tun0>bus  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B",
        "down bus>tun0  IPv6 bbbb::2 > bbbb::1 ICMPv6 Echo Reply (id 0x1c seq 3) 104 B",
        "side tun0>eth1 IPv4 10.2.0.1 > 10.2.0.2 ICMP echo-request (id 0x7 seq 1) 84 B",
        "up   eth1>bus  IPv4 10.2.0.1 > 10.2.0.2 ICMP echo-request (id 0x7 seq 1) 84 B",
    ]


def test_trace_line_pieces() -> None:
    assert direction("tun", "bus") == "up"
    assert direction("bus", "serial") == "down"
    assert direction("serial", "tun") == "side"
    # an unknown port key is shown as the key itself
    assert TraceTap({}).line(ECHO_REQ, "tun", "bus").startswith("up   tun>bus   IPv6 bbbb::1")
    assert trace_line(b"\x00\x01", "a", "b", "up") == "up   a>b       not IP (2 B) 0001"


def test_trace_vv_adds_the_dump(packet_log: list[str]) -> None:
    TraceTap(PORTS, full_dump=True)(ECHO_REQ, "tun", "bus")
    (message,) = packet_log
    first, *rest = message.splitlines()
    assert first.startswith("up   tun0>bus  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request")
    assert "###[ IPv6 ]###" in rest[0] and any("seq" in r and "0x3" in r for r in rest)


def test_router_lines_golden() -> None:
    assert router_line("agent_1", ["agent_2"], ECHO_REQ) == (
        "agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B"
    )
    assert router_line("agent_1", ["agent_2", "agent_TT"], PING4).startswith(
        "agent_1 > agent_2,agent_TT  IPv4 10.2.0.1 > 10.2.0.2 ICMP echo-request"
    )
    assert router_line("agent_1", [], ECHO_REQ).startswith("agent_1 > - (no route)  IPv6")
    assert router_line("agent_1", None, ECHO_REQ).startswith("agent_1 > - (spoofed source")


def test_agent_hook_taps_only_when_asked(packet_log: list[str], tmp_path: Path) -> None:
    async def go() -> None:
        rig = make_agent("agent_1", tun=FakeTun("tun0"), bus=FakeBus(up=False), accept_any=True)
        agent = rig.agent
        install(agent, verbose=0, pcap=None)
        assert agent.taps == []  # no -v, no --pcap: the per-packet path calls nothing
        await agent.start()
        install(agent, verbose=1)
        agent.forward(ECHO_REQ, "tun")  # the bus is not connected: counted as a drop
        agent.forward(ECHO_REP, "bus")
        assert packet_log == [
            "up   tun0>bus  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B",
            "down bus>tun0  IPv6 bbbb::2 > bbbb::1 ICMPv6 Echo Reply (id 0x1c seq 3) 104 B",
        ]
        assert dict(agent.counters.drops) == {"bus down": 1}
        assert dict(agent.counters.packets) == {"bus>tun": 1}
        assert rig.tun.sent == [ECHO_REP]

    asyncio.run(go())


# --------------------------------------------------------------------------- --pcap tap


def _write_session(path: Path) -> PcapTap:
    ports = {**PORTS, "serial": FakePort("serial", LINKTYPE_IEEE802_15_4_NOFCS)}
    tap = PcapTap.open(str(path), ports, owner="agent_1")
    tap(ECHO_REQ, "tun", "bus")
    tap(ECHO_REP, "bus", "tun")
    tap(PING4, "bus", "eth1")
    tap(b"\x41\xc8\x00\xff\xff", "serial", "bus")  # an 802.15.4 frame crossing to the bus
    return tap


def test_pcap_tap_one_interface_per_port(tmp_path: Path) -> None:
    path = tmp_path / "a.pcapng"
    tap = _write_session(path)
    tap.close()
    tap.close()  # idempotent
    records = _read(path)
    got = [(data, m.ifname.decode(), m.linktype, m.direction) for data, m in records]
    assert got == [
        (ECHO_REQ, "tun0", LINKTYPE_RAW, 1),
        (ECHO_REQ, "bus", LINKTYPE_RAW, 2),
        (ECHO_REP, "bus", LINKTYPE_RAW, 1),
        (ECHO_REP, "tun0", LINKTYPE_RAW, 2),
        (PING4, "bus", LINKTYPE_RAW, 1),
        (PING4, "eth1", LINKTYPE_RAW, 2),
        (b"\x41\xc8\x00\xff\xff", "serial", 230, 1),
        (b"\x41\xc8\x00\xff\xff", "bus-wpan", 230, 2),
    ]
    assert tap.packets == 4


@needs_tshark
def test_pcap_tap_readable_live_and_by_tshark(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"
    tap = _write_session(path)  # no event loop here: flushed at once
    rows = _tshark(path, "frame.interface_name", "frame.packet_flags_direction", "frame.len")
    assert rows[:4] == [
        ["tun0", "0x00000001", "104"],
        ["bus", "0x00000002", "104"],
        ["bus", "0x00000001", "104"],
        ["tun0", "0x00000002", "104"],
    ]
    tap.close()
    assert len(_tshark(path, "frame.len")) == 8


def test_pcap_tap_flushes_once_per_loop_iteration(tmp_path: Path) -> None:
    path = tmp_path / "loop.pcapng"

    async def main() -> tuple[int, int]:
        tap = PcapTap.open(str(path), PORTS)
        for _ in range(10):
            tap(ECHO_REQ, "tun", "bus")
        tap(ECHO_REP, "bus", "tun")
        size_before = path.stat().st_size  # interface blocks only
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        size_after = path.stat().st_size
        tap.close()
        return size_before, size_after

    before, after = asyncio.run(main())
    assert after > before
    assert len(_read(path)) == 22


def test_pcap_tap_stops_on_write_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tap = PcapTap.open(str(tmp_path / "x.pcapng"), PORTS)
    tap.writer._file.close()  # the disk goes away under us
    tap(ECHO_REQ, "tun", "bus")
    tap(ECHO_REQ, "tun", "bus")  # ignored, no exception
    assert "capture to" in caplog.text
    tap.close()


# --------------------------------------------------------------------------- counters


def test_counters_table_and_status_line() -> None:
    c = Counters()
    for _ in range(3):
        c.count("tun>bus", 104)
        c.count("bus>tun", 104)
    c.drop("malformed")
    c.drop("malformed")
    c.drop("too big")
    assert c.status_line() == "bus>tun 3p/312B | tun>bus 3p/312B | drops: malformed 2, too big 1"
    assert c.table().splitlines() == [
        "  path                   packets         bytes",
        "  bus>tun                      3           312",
        "  tun>bus                      3           312",
        "  drop malformed               2",
        "  drop too big                 1",
    ]
    c.count("eth1>bus", 84)
    c.count("bus>eth1", 84)
    assert c.per_port()["bus"] == (4, 396, 4, 396)
    assert "  in  bus                      4           396" in c.table().splitlines()


# --------------------------------------------------------------------------- sniff


def test_sniff_bindings() -> None:
    assert bindings() == [
        "fromAgent.#",
        "toAgent.#",
        "testingtool.component.ready",
        "testingtool.terminate",
    ]
    assert bindings(("agent_1",))[:2] == ["fromAgent.agent_1.#", "toAgent.agent_1.#"]


def test_sniff_describe_plan() -> None:
    start = {
        "ipv6_prefix": "bbbb",
        "ipv6_host": ":2",
        "ipv4_host": "10.2.0.2",
        "ipv4_netmask": "255.255.255.0",
        "re_route_packets_prefix": "cccc",
        "re_route_packets_if": "eth1",
        "re_route_packets_host": "1",
    }
    assert describe_plan(start) == (
        "bbbb::2/64, fe80::2/64, 10.2.0.2/24, re-route cccc::/64 via eth1 host 1"
    )
    assert describe_plan({"ipv6_host": "zz;rm"}).startswith("invalid: ")


def _sniff(messages: list[tuple], **kw: object) -> tuple[list[str], Sniffer]:
    """Feed (key, body[, props]) messages to a Sniffer; its lines without time stamps."""
    out = io.StringIO()

    async def main() -> Sniffer:
        s = Sniffer(URL, out=out, **kw)  # type: ignore[arg-type]
        for key, body, *props in messages:
            s._on_message(key, body, props[0] if props else None)
        await asyncio.sleep(0)
        return s

    s = asyncio.run(main())
    return [row[16:] for row in out.getvalue().splitlines()], s  # without the time stamp


def test_sniff_lines_golden() -> None:
    started = {
        "name": "agent_2",
        "ipv6_prefix": "bbbb",
        "ipv6_host": "2",
        "ipv4_address": "10.2.0.2",
    }
    rows, s = _sniff(
        [
            (wire.READY_KEY, wire.encode_ready("agent_1")),
            ("fromAgent.agent_2.ip.tun.started", orjson.dumps(started)),
            ("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(ECHO_REQ, "tun0")),
            ("toAgent.agent_2.ip.tun.packet.raw", wire.encode_packet(ECHO_REQ, "tun0")),
            ("toAgent.agent_2.ip.tun.packet.raw", b"not json"),
            ("toAgent.agent_2.ip.tun.packet.raw", b'{"data": [1, 2, 3]}'),
            (wire.TERMINATE_KEY, b'{"description": "session over"}'),
            ("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(ECHO_REP, "tun0")),
        ]
    )
    req = "IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B"
    assert rows == [
        "agent_1       up    ready",
        "agent_2       up    tun.started: bbbb::2/64, fe80::2/64, 10.2.0.2/24",
        f"agent_1       up    {req}",
        f"agent_2       down  {req}",
        "agent_2       down  malformed message on toAgent.agent_2.ip.tun.packet.raw: "
        "body is not JSON",
        "agent_2       down  malformed message on toAgent.agent_2.ip.tun.packet.raw: "
        "not an IP packet (version nibble 0)",
        "testingtool         terminate: session over",
    ]  # nothing after terminate
    assert s.counters.status_line() == ("agent_1> 1p/104B | >agent_2 1p/104B | drops: malformed 2")


def test_sniff_count_filter_and_pcap(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    msgs = [
        ("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(PING4, "tun0")),
        ("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(ECHO_REQ, "tun0")),
        ("toAgent.agent_2.ip.tun.packet.raw", wire.encode_packet(ECHO_REQ, "tun0")),
        ("fromAgent.agent_2.802154.serial.packet.raw", b'{"data": [65, 200, 0, 255, 255]}'),
        ("fromAgent.agent_2.ip.tun.packet.raw", wire.encode_packet(ECHO_REP, "tun0")),
        ("toAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(ECHO_REP, "tun0")),
    ]
    rows, s = _sniff(msgs, count=2, packet_filter=Filter("icmp6"), pcap=str(path))
    assert [r.split()[:2] for r in rows] == [["agent_1", "up"], ["agent_2", "down"]]
    assert s.counters.drops["filtered out"] == 1
    assert s.writer is not None
    s.writer.close()
    records = _read(path)
    assert [(d, m.ifname.decode(), m.linktype) for d, m in records] == [
        (ECHO_REQ, "fromAgent.agent_1", 101),
        (ECHO_REQ, "toAgent.agent_2", 101),
    ]
    # 802.15.4 frames (serial mode) get their own interface and linktype
    rows, s = _sniff(msgs[3:4], pcap=str(path))
    assert rows[0].startswith("agent_2       up    802.15.4")
    assert s.writer is not None
    s.writer.close()
    assert [(m.ifname.decode(), m.linktype) for _, m in _read(path)] == [
        ("fromAgent.agent_2.802154", 230)
    ]


def _frame_msg(frame: bytes) -> bytes:
    return orjson.dumps({"data": list(frame), "interface_name": "serial"})


def test_sniff_reads_6lowpan_and_filters_on_the_inner_packet() -> None:
    """`sniff --filter 'udp port 5683'` on probe frames: matched on the decompressed
    IPv6 packet; fragments are reassembled per agent and direction, also when the
    fragments before the last are filtered out."""
    up = "fromAgent.probe_1.802154.serial.packet.raw"
    down = "toAgent.probe_1.802154.serial.packet.raw"
    frags, _ = wpan.fragmented(tag=21)
    rd, _ = wpan.multicast_rd()
    msgs = [(up, _frame_msg(f)) for f in (rd, wpan.ack(), frags[0], frags[1])]
    msgs += [(down, _frame_msg(frags[2])), (up, _frame_msg(wpan.not_lowpan()))]
    msgs += [(up, _frame_msg(frags[2]))]
    rows, s = _sniff(msgs, packet_filter=Filter("udp port 5683"))
    assert rows == [
        "probe_1       up    802.15.4 0x1234 > 0xffff 6LoWPAN IPHC fe80::ff:fe00:1234 > ff02::1a "
        f"UDP 5683 > 5683 CoAP NON GET /rd {len(rd)} B",
        "probe_1       up    802.15.4 00:12:4b:00:0a:0b:0c:0d > 00:12:4b:00:0e:0f:10:11 6LoWPAN "
        "FRAGN tag 21 offset 152 size 188 reassembled IPHC fe80::212:4b00:a0b:c0d > "
        f"fe80::212:4b00:e0f:1011 UDP 61616 > 5683 CoAP CON POST /big {len(frags[2])} B",
    ]  # the last fragment sent down alone completes nothing
    assert s.counters.drops["filtered out"] == 5
    rows, _ = _sniff(msgs[:2], full_dump=True)
    assert "('Uri-Path', b'rd')" in "\n".join(rows)  # the CoAP layer of the dump
    assert any(r.endswith("up    802.15.4 Ack seq 9 3 B") for r in rows)


def test_sniff_line_layout() -> None:
    assert line(0.5, "agent_1", "up", "x")[15:] == " agent_1       up    x"


def test_sniff_reads_the_fast_wire() -> None:
    fast = wire.FAST_CONTENT_TYPE
    body = wire.encode_batch([ECHO_REQ, PING4])
    rows, s = _sniff([("fromAgent.agent_1.ip.tun.packet.raw", body, fast)], count=5)
    assert [r.split(None, 3)[2] for r in rows] == ["IPv6", "IPv4"]
    assert s.counters.packets["agent_1>"] == 2
    rows, s = _sniff([("fromAgent.agent_1.ip.tun.packet.raw", body, fast)], count=1)
    assert len(rows) == 1  # --count stops inside a batch
    rows, _ = _sniff([("fromAgent.agent_1.ip.tun.packet.raw", b"\x00\x05ab", fast)])
    assert rows == [
        "agent_1       up    malformed message on fromAgent.agent_1.ip.tun.packet.raw: "
        "bad length in packet batch"
    ]
