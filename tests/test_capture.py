"""Tests for agent.inspect.pcapng (the writer) and agent.inspect.summary (one-line summaries)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.coap import CoAP
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.utils import PcapNgReader, rdpcap

from agent.inspect.pcapng import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IEEE802_15_4_NOFCS,
    LINKTYPE_RAW,
    PcapNgWriter,
)
from agent.inspect.summary import dump, summarize
from tests.tools.pcap import TSHARK
from tests.tools.pcap import read_raw as _raw_read
from tests.tools.pcap import tshark_fields as _tshark_fields

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

# --------------------------------------------------------------------------- summaries

ECHO_REQ = bytes(
    IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=0x1C, seq=3, data=b"x" * 56)
)


def _golden() -> list[tuple[bytes, str]]:
    return [
        (ECHO_REQ, "IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B"),
        (
            bytes(IPv6(src="bbbb::2", dst="bbbb::1") / ICMPv6EchoReply(id=0x1C, seq=3)),
            "IPv6 bbbb::2 > bbbb::1 ICMPv6 Echo Reply (id 0x1c seq 3) 48 B",
        ),
        (
            bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, id=0x1C, seq=3) / b"ab"),
            "IPv4 10.0.0.1 > 10.0.0.2 ICMP echo-request (id 0x1c seq 3) 30 B",
        ),
        (
            bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0, id=0x1C, seq=3)),
            "IPv4 10.0.0.2 > 10.0.0.1 ICMP echo-reply (id 0x1c seq 3) 28 B",
        ),
        (
            bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=3, code=3)),
            "IPv4 10.0.0.2 > 10.0.0.1 ICMP dest-unreach port-unreachable 28 B",
        ),
        (
            bytes(IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=5683, dport=40000)),
            "IPv6 bbbb::1 > bbbb::2 UDP 5683 > 40000 48 B",
        ),
        (
            bytes(IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=40000, dport=1234) / b"hi"),
            "IPv6 bbbb::1 > bbbb::2 UDP 40000 > 1234 50 B",
        ),
        (
            bytes(
                IPv6(src="bbbb::1", dst="bbbb::2")
                / UDP(sport=40000, dport=5683)
                / CoAP(type=0, code=1, msg_id=0x1234, token=b"ab", options=[("Uri-Path", b"hello")])
            ),
            "IPv6 bbbb::1 > bbbb::2 UDP 40000 > 5683 CoAP CON GET /hello 60 B",
        ),
        (
            bytes(
                IPv6(src="bbbb::2", dst="bbbb::1")
                / UDP(sport=5683, dport=40000)
                / CoAP(type=2, code=69, msg_id=0x1234, token=b"ab", paymark=b"\xff")
                / b"world"
            ),
            "IPv6 bbbb::2 > bbbb::1 UDP 5683 > 40000 CoAP ACK 2.05 Content 60 B",
        ),
        (
            bytes(
                IP(src="10.0.0.1", dst="10.0.0.2")
                / UDP(sport=40000, dport=5683)
                / CoAP(
                    type=1,
                    code=2,
                    options=[("Uri-Path", b"a"), ("Uri-Path", b"b"), ("Uri-Query", b"x=1")],
                )
            ),
            "IPv4 10.0.0.1 > 10.0.0.2 UDP 40000 > 5683 CoAP NON POST /a/b?x=1 40 B",
        ),
        (
            bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="S")),
            "IPv4 10.0.0.1 > 10.0.0.2 TCP 40000 > 80 [S] 40 B",
        ),
        (
            bytes(IPv6(src="bbbb::1", dst="bbbb::2") / TCP(sport=40000, dport=80, flags="SA")),
            "IPv6 bbbb::1 > bbbb::2 TCP 40000 > 80 [SA] 60 B",
        ),
        (
            bytes(IPv6(src="fe80::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="bbbb::2")),
            "IPv6 fe80::1 > ff02::1:ff00:2 ICMPv6 Neighbor Solicitation (tgt bbbb::2) 64 B",
        ),
        (
            bytes(IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS()),
            "IPv6 fe80::1 > ff02::2 ICMPv6 Router Solicitation 48 B",
        ),
        (
            bytes(IPv6(src="bbbb::1", dst="bbbb::2", nh=59)),
            "IPv6 bbbb::1 > bbbb::2 No Next Header 40 B",
        ),
        (
            bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=47) / b"\x00\x00\x08\x00"),
            "IPv4 10.0.0.1 > 10.0.0.2 GRE 24 B",
        ),
        (b"", "not IP (0 B)"),
        (bytes(range(1, 13)), "not IP (12 B) 0102030405060708090a0b0c"),
        (bytes(range(1, 21)), "not IP (20 B) 0102030405060708090a0b0c0d0e0f10"),
        (b"\x60" + bytes(30), "not IP (31 B) 60000000000000000000000000000000"),
        (b"\x45" + bytes(10), "not IP (11 B) 4500000000000000000000"),
    ]


@pytest.mark.parametrize(("packet", "expected"), _golden(), ids=lambda v: str(v)[:40])
def test_summarize_golden(packet: bytes, expected: str) -> None:
    assert summarize(packet) == expected


def test_summarize_fragments() -> None:
    ipv6 = IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrFragment(id=5)
    frags = fragment6(ipv6 / UDP(sport=40000, dport=1234) / (b"x" * 2000), 1280)
    lines = [summarize(bytes(f)) for f in frags]
    assert lines == [
        "IPv6 bbbb::1 > bbbb::2 frag id 0x5 off 0 MF UDP 40000 > 1234 1280 B",
        "IPv6 bbbb::1 > bbbb::2 frag id 0x5 off 1232 UDP data 824 B",
    ]
    v4 = IP(src="10.0.0.1", dst="10.0.0.2", id=7, frag=100, proto=17) / (b"x" * 20)
    assert summarize(bytes(v4)) == "IPv4 10.0.0.1 > 10.0.0.2 frag id 0x7 off 800 UDP data 40 B"


def test_summarize_truncated_and_odd_input() -> None:
    assert summarize(ECHO_REQ[:50]) == (
        "IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) truncated 50 B"
    )
    assert summarize(bytearray(ECHO_REQ)) == summarize(ECHO_REQ)
    assert summarize(memoryview(ECHO_REQ)) == summarize(ECHO_REQ)
    # a CoAP path with control characters stays on one line
    evil = (
        IPv6(src="bbbb::1", dst="bbbb::2")
        / UDP(sport=1, dport=5683)
        / CoAP(code=1, options=[("Uri-Path", b"a\nb")])
    )
    line = summarize(bytes(evil))
    assert "\n" not in line
    assert line.endswith("CoAP CON GET /a\\x0ab 56 B")


def test_dump() -> None:
    text = dump(ECHO_REQ)
    assert "###[ IPv6 ]###" in text
    assert "###[ ICMPv6 Echo Request ]###" in text
    assert "seq       = 0x3" in text
    assert dump(b"").startswith("not IP (0 B)")
    garbage = dump(b"\x01\x02garbage")
    assert garbage.startswith("not IP (9 B) 0102")
    assert "0000  01 02 67" in garbage


_ip_prefix = st.sampled_from([b"", b"\x60", b"\x45", b"\x46", b"\x4f", b"\x60\x00\x00\x00"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_ip_prefix, body=st.binary(max_size=200))
def test_summarize_and_dump_never_raise(prefix: bytes, body: bytes) -> None:
    data = prefix + body
    line = summarize(data)
    assert isinstance(line, str)
    assert "\n" not in line
    assert line.endswith(f"{len(data)} B") or line.startswith(f"not IP ({len(data)} B)")
    assert isinstance(dump(data), str)


@settings(max_examples=200, deadline=None)
@given(
    nh=st.sampled_from([0, 6, 17, 43, 44, 58, 59, 60]),
    sport=st.sampled_from([5683, 5684, 1234]),
    payload=st.binary(max_size=120),
)
def test_summarize_never_raises_on_valid_headers(nh: int, sport: int, payload: bytes) -> None:
    """Well-formed IPv6/UDP headers followed by garbage (exercises the CoAP dissector)."""
    udp = bytes(IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=sport, dport=40000) / payload)
    line = summarize(udp)
    assert line.startswith(f"IPv6 bbbb::1 > bbbb::2 UDP {sport} > 40000")
    assert "\n" not in line
    other = bytes(IPv6(src="bbbb::1", dst="bbbb::2", nh=nh) / payload)
    assert summarize(other).startswith("IPv6 bbbb::1 > bbbb::2 ")
    assert isinstance(dump(udp), str)
    assert isinstance(dump(other), str)


# --------------------------------------------------------------------------- pcapng

T0 = 1_700_000_000.123456
IP_PKTS = [
    ECHO_REQ,
    bytes(IPv6(src="bbbb::2", dst="bbbb::1") / ICMPv6EchoReply(id=0x1C, seq=3, data=b"y" * 3)),
    bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=5683) / b"\x40\x01\x00\x01"),
]
# 802.15.4 data frame without FCS: fc, seq, dst PAN, dst short, src short, payload
WPAN_PKT = bytes.fromhex("41880122ffffffff0100") + b"hello"


def _write_sample(path: Path) -> None:
    with PcapNgWriter(path) as writer:
        tun = writer.add_interface("tun0", LINKTYPE_RAW, description="agent tunnel")
        serial = writer.add_interface("serial", LINKTYPE_IEEE802_15_4_NOFCS)
        assert (tun, serial) == (0, 1)
        writer.write(tun, IP_PKTS[0], timestamp=T0, comment="first")
        writer.write(serial, WPAN_PKT, timestamp=T0 + 0.5)
        writer.write(tun, IP_PKTS[1], timestamp=T0 + 1)
        writer.write(tun, IP_PKTS[2], timestamp=T0 + 2.000001)


def test_pcapng_roundtrip_scapy(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcapng"
    _write_sample(path)
    records = _raw_read(path)
    assert [data for data, _ in records] == [IP_PKTS[0], WPAN_PKT, IP_PKTS[1], IP_PKTS[2]]
    metas = [meta for _, meta in records]
    assert [m.linktype for m in metas] == [101, 230, 101, 101]
    assert [m.ifname for m in metas] == [b"tun0", b"serial", b"tun0", b"tun0"]
    assert [m.tsresol for m in metas] == [1_000_000] * 4
    micros = [(m.tshigh << 32) | m.tslow for m in metas]
    assert micros == [
        1_700_000_000_123_456,
        1_700_000_000_623_456,
        1_700_000_001_123_456,
        1_700_000_002_123_457,
    ]
    assert [m.wirelen for m in metas] == [len(IP_PKTS[0]), len(WPAN_PKT), *map(len, IP_PKTS[1:])]
    assert metas[0].comments == [b"first"]
    # the high-level readers agree
    pkts = rdpcap(str(path))
    assert [bytes(p) for p in pkts] == [IP_PKTS[0], WPAN_PKT, IP_PKTS[1], IP_PKTS[2]]
    with PcapNgReader(str(path)) as reader:
        first = next(iter(reader))
    assert isinstance(first, IPv6)
    assert float(first.time) == pytest.approx(T0, abs=1e-6)


@needs_tshark
def test_pcapng_tshark(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcapng"
    _write_sample(path)
    rows = _tshark_fields(
        path,
        "frame.interface_name",
        "frame.len",
        "frame.protocols",
        "frame.comment",
        "frame.interface_description",
    )
    assert [r[:2] for r in rows] == [
        ["tun0", str(len(IP_PKTS[0]))],
        ["serial", str(len(WPAN_PKT))],
        ["tun0", str(len(IP_PKTS[1]))],
        ["tun0", str(len(IP_PKTS[2]))],
    ]
    protocols = [r[2] for r in rows]
    assert protocols[0].startswith("raw:ipv6:icmpv6")
    assert protocols[1].startswith("wpan")
    assert protocols[3].startswith("raw:ip:udp")
    assert rows[0][3] == "first"
    assert rows[0][4] == "agent tunnel"


@needs_tshark
def test_pcapng_readable_while_open(tmp_path: Path) -> None:
    path = tmp_path / "live.pcapng"
    writer = PcapNgWriter(str(path))
    try:
        assert _tshark_fields(path, "frame.len") == []  # SHB only: valid, empty
        tun = writer.add_interface("tun0")
        writer.write(tun, IP_PKTS[0], timestamp=T0)
        writer.flush()
        assert _tshark_fields(path, "frame.interface_name", "frame.len") == [
            ["tun0", str(len(IP_PKTS[0]))]
        ]
        writer.write(tun, IP_PKTS[1], timestamp=T0 + 1)
        # an interface added after packets were written
        serial = writer.add_interface("serial", LINKTYPE_IEEE802_15_4_NOFCS, snaplen=4096)
        assert serial == 1
        writer.write(serial, WPAN_PKT, timestamp=T0 + 2)
        writer.write(tun, IP_PKTS[2], timestamp=T0 + 3)
        rows = _tshark_fields(path, "frame.interface_name", "frame.len", "frame.protocols")
        assert [r[:2] for r in rows] == [
            ["tun0", str(len(IP_PKTS[0]))],
            ["tun0", str(len(IP_PKTS[1]))],
            ["serial", str(len(WPAN_PKT))],
            ["tun0", str(len(IP_PKTS[2]))],
        ]
        assert rows[2][2].startswith("wpan")
        assert not writer.closed
    finally:
        writer.close()
    assert writer.closed
    assert len(_tshark_fields(path, "frame.len")) == 4


def test_add_interface_after_packets_scapy(tmp_path: Path) -> None:
    path = tmp_path / "late.pcapng"
    with PcapNgWriter(path) as writer:
        a = writer.add_interface("tun0")
        writer.write(a, IP_PKTS[0], timestamp=T0)
        b = writer.add_interface("eth0", LINKTYPE_ETHERNET)
        eth = bytes.fromhex("ffffffffffff02000000000186dd") + IP_PKTS[1]
        writer.write(b, eth, timestamp=T0 + 1)
        writer.write(a, IP_PKTS[2], timestamp=T0 + 2)
    records = _raw_read(path)
    assert [(d, m.linktype, m.ifname) for d, m in records] == [
        (IP_PKTS[0], LINKTYPE_RAW, b"tun0"),
        (eth, LINKTYPE_ETHERNET, b"eth0"),
        (IP_PKTS[2], LINKTYPE_RAW, b"tun0"),
    ]


def test_snaplen_truncates(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcapng"
    with PcapNgWriter(path) as writer:
        tun = writer.add_interface("tun0", snaplen=50)
        writer.write(tun, ECHO_REQ, timestamp=T0)
    [(data, meta)] = _raw_read(path)
    assert data == ECHO_REQ[:50]
    assert meta.wirelen == len(ECHO_REQ)


def test_autoflush_off_batches_until_flush(tmp_path: Path) -> None:
    """The agent's mode: blocks wait for the loop's flush; interfaces go out at once."""
    path = tmp_path / "batch.pcapng"
    writer = PcapNgWriter(path, autoflush=False)
    try:
        tun = writer.add_interface("tun0")
        header_size = path.stat().st_size
        assert header_size > 0  # SHB + IDB are written immediately
        writer.write(tun, IP_PKTS[0], timestamp=T0)
        writer.write(tun, IP_PKTS[1], timestamp=T0 + 1)
        assert path.stat().st_size == header_size  # batched
        writer.flush()
        assert [d for d, _ in _raw_read(path)] == IP_PKTS[:2]
        writer.write(tun, IP_PKTS[2], timestamp=T0 + 2)
    finally:
        writer.close()
    assert [d for d, _ in _raw_read(path)] == IP_PKTS  # close flushes


def test_file_object_and_close_idempotent() -> None:
    buf = io.BytesIO()
    writer = PcapNgWriter(buf)
    tun = writer.add_interface("tun0")
    writer.write(tun, IP_PKTS[0], timestamp=T0)
    writer.close()
    writer.close()
    assert not buf.closed  # the caller owns it
    assert [bytes(p) for p in rdpcap(io.BytesIO(buf.getvalue()))] == [IP_PKTS[0]]
    with pytest.raises(ValueError, match="closed"):
        writer.write(tun, IP_PKTS[0])
    with pytest.raises(ValueError, match="closed"):
        writer.add_interface("x")
    writer.flush()  # no-op after close


def test_bad_arguments(tmp_path: Path) -> None:
    with PcapNgWriter(tmp_path / "bad.pcapng") as writer:
        with pytest.raises(ValueError, match="unknown interface"):
            writer.write(0, b"x")
        tun = writer.add_interface("tun0")
        with pytest.raises(ValueError, match="unknown interface"):
            writer.write(tun + 1, b"x")
        with pytest.raises(ValueError):
            writer.add_interface("x", linktype=70000)


def test_default_timestamp_and_odd_sizes(tmp_path: Path) -> None:
    path = tmp_path / "odd.pcapng"
    before = time.time()
    with PcapNgWriter(path) as writer:
        tun = writer.add_interface("tün0 ✓", description="non-ASCII")
        for size in range(6):
            writer.write(tun, bytes(range(size)), comment="c" * size or None)
        writer.write(tun, bytearray(b"abc"))
    after = time.time()
    records = _raw_read(path)
    assert [d for d, _ in records] == [bytes(range(n)) for n in range(6)] + [b"abc"]
    for _, meta in records:
        assert meta.ifname == "tün0 ✓".encode()
        stamp = ((meta.tshigh << 32) | meta.tslow) / 1e6
        assert before - 1e-3 <= stamp <= after + 1e-3


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    packets=st.lists(
        st.tuples(
            st.binary(max_size=300),
            st.integers(0, 2**40),
            st.one_of(st.none(), st.text(max_size=30)),
        ),
        max_size=10,
    )
)
def test_pcapng_roundtrip_property(tmp_path: Path, packets: list) -> None:
    buf = io.BytesIO()
    with PcapNgWriter(buf) as writer:
        tun = writer.add_interface("tun0")
        for data, micros, comment in packets:
            writer.write(tun, data, timestamp=micros / 1e6, comment=comment)
    path = tmp_path / "prop.pcapng"
    path.write_bytes(buf.getvalue())
    records = _raw_read(path)
    assert [d for d, _ in records] == [p[0] for p in packets]
    assert [(m.tshigh << 32) | m.tslow for _, m in records] == [p[1] for p in packets]
    for (_, meta), (_, _, comment) in zip(records, packets, strict=True):
        if comment is None:
            assert not meta.comments
        else:
            assert meta.comments == [comment.encode("utf-8", "replace")]


def test_open_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.pcapng"
    with pytest.raises(OSError) as excinfo:
        PcapNgWriter(str(missing))
    msg = str(excinfo.value)
    assert str(missing) in msg and "No such file or directory" in msg
    assert "\n" not in msg and not msg.startswith("[Errno")
    assert isinstance(excinfo.value, FileNotFoundError)
    assert excinfo.value.errno is not None

    with pytest.raises(IsADirectoryError, match="cannot open capture file"):
        PcapNgWriter(tmp_path)

    if os.geteuid() != 0:  # root ignores file permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match="Permission denied"):
                PcapNgWriter(ro / "x.pcapng")
        finally:
            ro.chmod(0o700)


def test_truncates_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "old.pcapng"
    path.write_bytes(b"x" * 10000)
    with PcapNgWriter(path) as writer:
        writer.write(writer.add_interface("tun0"), IP_PKTS[0], timestamp=T0)
    assert [d for d, _ in _raw_read(path)] == [IP_PKTS[0]]


def test_summarize_falls_back_when_scapy_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.inspect.summary as capture

    def boom(data: bytes) -> str:
        raise IndexError("dissector bug")

    monkeypatch.setattr(capture, "_summarize6", boom)
    monkeypatch.setattr(capture, "_summarize4", boom)
    assert summarize(ECHO_REQ) == "IPv6 bbbb::1 > bbbb::2 ICMPv6 (malformed) 104 B"
    udp4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    assert summarize(udp4) == "IPv4 10.0.0.1 > 10.0.0.2 UDP (malformed) 28 B"
    # Scapy itself raises on some inputs (e.g. a 1-byte routing header)
    odd = bytes(IPv6(src="bbbb::1", dst="bbbb::2", nh=43) / b"\x00")
    line = summarize(odd)
    assert line.startswith("IPv6 bbbb::1 > bbbb::2 ") and line.endswith(" 41 B")


def test_no_log_filter_at_import_one_on_first_summary() -> None:
    """Importing the summaries changes nothing in logging; the first summary (which loads
    Scapy's optional dissectors) installs the filter on Scapy's logger, once."""
    code = (
        "import logging\n"
        "import agent.inspect.summary as s, agent.inspect.taps, agent.inspect.sniff\n"
        "scapy_log = logging.getLogger('scapy.runtime')\n"
        "before = list(scapy_log.filters)\n"
        "assert s._quiet_filter not in before, before\n"
        "s.summarize(b\"\\x60\" + bytes(39))\n"
        "s.summarize(b\"\\x60\" + bytes(39))\n"
        "assert scapy_log.filters == [*before, s._quiet_filter], scapy_log.filters\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
