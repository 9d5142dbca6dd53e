"""agent.inspect.filter: `sniff --filter` selects exactly what tcpdump selects.

A pcap of mixed raw-IP traffic (IPv4/IPv6, ICMP, UDP with CoAP and DNS, TCP, fragments,
extension headers, odd lengths) is written with Scapy; for a table of filters, and for
expressions hypothesis builds, the packets Filter.matches() keeps are compared with the
ones `tcpdump -r FILE -w - FILTER` keeps. Then the agent's own words (coap, wpan) and
the one-line errors.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Raw

from agent.inspect.filter import COAP_EXPR, Filter, FilterError, translate

TCPDUMP = shutil.which("tcpdump")
LINKTYPE_RAW = 101


def _packets() -> list[bytes]:
    coap = Raw(b"\x40\x01\x12\x34\xb4test")
    pkts = [
        IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=1, seq=1),
        IPv6(src="bbbb::2", dst="bbbb::1") / ICMPv6EchoReply(id=1, seq=1),
        IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255) / ICMPv6ND_NS(tgt="bbbb::2"),
        IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=40000, dport=5683) / coap,
        IPv6(src="bbbb::2", dst="bbbb::1") / UDP(sport=5683, dport=40000) / Raw(b"\x60\x45"),
        IPv6(src="bbbb::1", dst="cccc::1") / UDP(sport=40001, dport=5684) / Raw(b"dtls"),
        IPv6(src="bbbb::3", dst="bbbb::1") / UDP(sport=53, dport=33333) / Raw(b"dns"),
        IPv6(src="bbbb::1", dst="2001:db8::7") / TCP(sport=45000, dport=80, flags="S"),
        IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=5683),
        IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrDestOpt() / TCP(sport=2, dport=53),
        IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrFragment(m=1, id=7) / UDP(dport=5683),
        IPv6(src="bbbb::1", dst="bbbb::2")
        / IPv6ExtHdrFragment(offset=100, id=7, nh=17)
        / Raw(b"\x16\x33" * 8),
        IP(src="10.2.0.1", dst="10.2.0.2") / ICMP(type=8) / Raw(b"x" * 56),
        IP(src="10.2.0.2", dst="10.2.0.1") / ICMP(type=0) / Raw(b"x" * 56),
        IP(src="10.2.0.1", dst="192.0.2.53") / UDP(sport=5353, dport=53) / Raw(b"q"),
        IP(src="192.0.2.53", dst="10.2.0.1") / UDP(sport=53, dport=5353) / Raw(b"a" * 300),
        IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=40000, dport=5683) / coap,
        IP(src="10.2.0.1", dst="198.51.100.9") / TCP(sport=40000, dport=443, flags="PA"),
        IP(src="10.2.0.1", dst="10.2.0.2", flags="MF", id=9) / UDP(sport=7, dport=53),
        IP(src="10.2.0.1", dst="10.2.0.2", frag=20, id=9, proto=17) / Raw(b"\x00\x35" * 8),
        IP(src="172.16.5.4", dst="10.2.0.1", ttl=1) / TCP(sport=22, dport=50000),
    ]
    return [bytes(p) for p in pkts]


PACKETS = _packets()

FILTERS = [
    "ip",
    "ip6",
    "icmp",
    "icmp6",
    "udp",
    "tcp",
    "icmp or udp and port 53",  # the example: (icmp or udp) and port 53
    "icmp or (udp and port 53)",
    "udp and port 53 or icmp",
    "not udp or tcp",
    "not (udp or tcp)",
    "! icmp6 && ip6 || icmp",
    "host bbbb::2",
    "src host bbbb::1 and dst host bbbb::2",
    "dst net cccc::/16 or dst net 192.0.2.0/24",
    "net 10.2.0.0/16 and not host 10.2.0.2",
    "src 10.2.0.1",
    "port 5683",
    "udp port 5683",
    "src port 5683 or dst port 53",
    "portrange 5000-6000",
    "tcp portrange 1-100",
    "proto 58",
    "ip6 proto 17",
    "ip proto 6 or ip6 proto 6",
    "less 60",
    "greater 100",
    "ip6 and udp and not port 5683",
    "ip[8] = 1",
    "ip6[6] = 17",
    "tcp[tcpflags] & tcp-syn != 0",
    "ip[6:2] & 0x1fff != 0",
    "coap",
    "coap or icmp6",
    "not coap and ip6",
    "udp port coap",
    "port coaps",
    "icmp6 and host bbbb::2",
]


def _write_pcap(path: Path, packets: list[bytes]) -> None:
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for i, pkt in enumerate(packets):
            out.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(pkt), len(pkt)))
            out.write(pkt)


def _read_pcap(data: bytes) -> list[bytes]:
    assert len(data) >= 24, data
    out, off = [], 24
    while off < len(data):
        incl = struct.unpack_from("<IIII", data, off)[2]
        out.append(data[off + 16 : off + 16 + incl])
        off += 16 + incl
    return out


@pytest.fixture(scope="module")
def mixed_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert len(set(PACKETS)) == len(PACKETS)
    path = tmp_path_factory.mktemp("pktfilter") / "mixed.pcap"
    _write_pcap(path, PACKETS)
    return path


def tcpdump_selects(pcap: Path, expression: str) -> list[bytes]:
    assert TCPDUMP is not None, "tcpdump is missing: run scripts/setup.sh"
    proc = subprocess.run(
        [TCPDUMP, "-n", "-r", str(pcap), "-w", "-", expression],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, (expression, proc.stderr)
    return _read_pcap(proc.stdout)


def agent_selects(expression: str) -> list[bytes]:
    f = Filter(expression)
    return [p for p in PACKETS if f.matches(p)]


@pytest.mark.parametrize("expression", FILTERS)
def test_selects_what_tcpdump_selects(mixed_pcap: Path, expression: str) -> None:
    want = tcpdump_selects(mixed_pcap, translate(expression))
    assert agent_selects(expression) == want


def test_the_table_is_not_trivial(mixed_pcap: Path) -> None:
    """Every filter keeps some packets and drops others; and/or precedence is visible."""
    for expression in FILTERS:
        kept = len(agent_selects(expression))
        assert 0 < kept < len(PACKETS), (expression, kept)
    assert agent_selects("icmp or udp and port 53") != agent_selects("icmp or (udp and port 53)")
    echo4 = PACKETS[12]
    assert not Filter("icmp or udp and port 53").matches(echo4)  # tcpdump: (icmp or udp) and ...


primitives = st.sampled_from(
    [
        "ip",
        "ip6",
        "udp",
        "tcp",
        "icmp",
        "icmp6",
        "port 53",
        "port 5683",
        "host bbbb::1",
        "net 10.2.0.0/16",
        "src host 10.2.0.1",
        "less 80",
        "portrange 5000-6000",
        "coap",
    ]
)


def _expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        primitives,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from([" and ", " or ", " && ", " || "]), inner).map(
                "".join
            ),
            inner.map(lambda e: f"not {e}"),
            inner.map(lambda e: f"({e})"),
        ),
        max_leaves=6,
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(expression=_expressions())
def test_random_expressions_agree_with_tcpdump(mixed_pcap: Path, expression: str) -> None:
    assert TCPDUMP is not None, "tcpdump is missing: run scripts/setup.sh"
    proc = subprocess.run(
        [TCPDUMP, "-n", "-r", str(mixed_pcap), "-w", "-", translate(expression)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:  # e.g. "expression rejects all packets" (`ip and not ip`)
        with pytest.raises(FilterError):
            Filter(expression)
        return
    assert agent_selects(expression) == _read_pcap(proc.stdout)


# ------------------------------------------------------------------------ the agent's words


def test_coap_translation() -> None:
    assert translate("coap") == COAP_EXPR
    assert translate("udp port coap or src port coaps") == "udp port 5683 or src port 5684"
    assert translate("portrange coap-5690") == "portrange coap-5690"  # not a word of its own
    assert translate("host coap.example") == "host coap.example"
    assert translate("not coap") == f"not {COAP_EXPR}"


def test_wpan_matches_only_802154_frames() -> None:
    frame = bytes.fromhex("41d8ab cdab ffff 0100000000000000 7a3b3a1a")
    only = Filter("wpan")
    assert only.matches(frame, wpan=True)
    assert not any(only.matches(p) for p in PACKETS)
    either = Filter("wpan or less 10")
    assert either.matches(frame, wpan=True)
    assert not Filter("not wpan").matches(frame, wpan=True)
    # IP words cannot be applied to 802.15.4 by libpcap: without the decompressed packet
    # (agent.inspect.sixlowpan, tests/test_sixlowpan.py) such frames do not pass
    assert not Filter("icmp6 or wpan").matches(frame, wpan=True)
    assert Filter("icmp6 or wpan").matches(PACKETS[0])


@pytest.mark.parametrize(
    "bad",
    ["udp port", "ip6 and", "(udp", "port 70000", "host 1.2.3.4.5", "", "   ", "coaps", "vlan"],
)
def test_bad_filter_is_a_one_line_error(bad: str) -> None:
    with pytest.raises(FilterError) as err:
        Filter(bad)
    message = str(err.value)
    assert message and "\n" not in message
