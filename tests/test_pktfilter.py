"""agent.pktfilter: the sniff --filter language. Examples, then properties (hypothesis):
printing and re-parsing any tree gives the tree back, any text either parses or raises
FilterError, and evaluation on packets built by Scapy agrees with a reference evaluator
that reads Scapy's own dissection."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.packet import Packet, Raw

from agent.pktfilter import (
    And,
    Filter,
    FilterError,
    Not,
    Or,
    Prim,
    parse,
    parse_header,
)

COAP_GET = bytes(
    IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=40000, dport=5683) / Raw(b"\x40\x01\x00\x01")
)
ECHO6 = bytes(IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=1, seq=1))
ECHO4 = bytes(IP(src="10.2.0.1", dst="10.2.0.2") / ICMP())
TCP4 = bytes(IP(src="10.2.0.1", dst="192.0.2.7") / TCP(sport=1234, dport=80))
RS = bytes(IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS())


@pytest.mark.parametrize(
    ("expr", "yes", "no"),
    [
        ("udp port 5683", [COAP_GET], [ECHO6, ECHO4, TCP4]),
        ("coap", [COAP_GET], [ECHO6, TCP4]),
        ("icmp6", [ECHO6, RS], [ECHO4, COAP_GET]),
        ("icmp", [ECHO4], [ECHO6]),
        ("host bbbb::1", [COAP_GET, ECHO6], [ECHO4, RS]),
        ("src host bbbb::1", [ECHO6], [RS]),
        ("dst bbbb::1", [], [ECHO6, COAP_GET]),
        ("src bbbb::1", [ECHO6], [ECHO4]),
        ("icmp6 and host bbbb::2", [ECHO6], [RS, COAP_GET]),
        ("ip6 and net bbbb::/64", [ECHO6, COAP_GET], [RS, ECHO4]),
        ("net 10.2.0.0/24", [ECHO4, TCP4], [ECHO6]),
        ("dst net 10.2.0.0/24", [ECHO4], [TCP4]),
        ("tcp dst port 80", [TCP4], [COAP_GET]),
        ("portrange 5000-6000", [COAP_GET], [TCP4]),
        ("src portrange 1000-2000", [TCP4], [COAP_GET]),
        ("ip", [ECHO4, TCP4], [ECHO6]),
        ("not ip", [ECHO6], [ECHO4]),
        ("! icmp6 && ip6", [COAP_GET], [ECHO6]),
        ("icmp6 || udp", [ECHO6, COAP_GET], [TCP4]),
        ("coap or (ip and not icmp)", [COAP_GET, TCP4], [ECHO4, ECHO6]),
        ("proto 58", [ECHO6], [COAP_GET]),
        ("proto udp", [COAP_GET], [ECHO6]),
        ("ip6 proto icmp6", [ECHO6], [ECHO4]),
        ("less 50", [ECHO6, ECHO4], [COAP_GET]),
        ("greater 44", [COAP_GET, ECHO6], [ECHO4, TCP4]),
        ("UDP PORT COAP", [COAP_GET], [ECHO6]),
        ("port coaps or port coap", [COAP_GET], [TCP4]),
    ],
)
def test_examples(expr: str, yes: list[bytes], no: list[bytes]) -> None:
    f = Filter(expr)
    for pkt in yes:
        assert f.matches(pkt), (expr, IPv6(pkt).summary() if pkt[0] >> 4 == 6 else pkt.hex())
    for pkt in no:
        assert not f.matches(pkt), expr


def test_and_binds_tighter_than_or() -> None:
    assert parse("icmp6 or udp and port 5683") == Or(
        Prim("icmp6"), And(Prim("udp"), Prim("port", "", "5683"))
    )
    assert parse("not udp and tcp") == And(Not(Prim("udp")), Prim("tcp"))


def test_narrowing_like_tcpdump() -> None:
    assert parse("udp port 5683") == And(Prim("udp"), Prim("port", "", "5683"))
    assert parse("ip6 src host bbbb::1") == And(Prim("ip6"), Prim("host", "src", "bbbb::1"))


@pytest.mark.parametrize(
    ("expr", "where"),
    [
        ("", 1),
        ("udp port", 9),
        ("host nosuchhost", 6),
        ("udp and", 8),
        ("(udp", 5),
        ("udp)", 4),
        ("port 70000", 6),
        ("portrange 9-1", 11),
        ("net 10.0.0.0/33", 5),
        ("host a or b", 6),
        ("udp & tcp", 5),
        ("frobnicate", 1),
    ],
)
def test_errors_say_where(expr: str, where: int) -> None:
    with pytest.raises(FilterError) as info:
        parse(expr)
    assert f"at character {where})" in str(info.value)


def test_wpan_frames() -> None:
    frame = b"\x41\xc8\x00\xff\xff\x01\x02" + b"\x00" * 10
    assert Filter("wpan").matches(frame, wpan=True)
    assert not Filter("wpan").matches(ECHO6)
    assert not Filter("ip6 or udp or host bbbb::1").matches(frame, wpan=True)
    assert Filter("not icmp6").matches(frame, wpan=True)


def test_ipv6_extension_headers_and_fragments() -> None:
    pkt = IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
    pkt = pkt / UDP(sport=1, dport=5683) / Raw(b"x" * 8)
    assert Filter("udp port 5683").matches(bytes(pkt))
    first = IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrFragment(offset=0, m=1, nh=17)
    first = first / Raw(bytes(UDP(sport=1, dport=5683)) + b"x" * 8)
    later = IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrFragment(offset=2, nh=17) / Raw(b"y" * 8)
    assert Filter("udp and port 5683").matches(bytes(first))
    assert Filter("udp").matches(bytes(later))
    assert not Filter("port 5683").matches(bytes(later))


def test_truncated_packets_never_raise() -> None:
    for pkt in (COAP_GET, ECHO4, TCP4):
        for n in range(len(pkt) + 1):
            Filter("coap or tcp port 80 or host 10.2.0.1 or less 10").matches(pkt[:n])


# --------------------------------------------------------------------------- properties

V6 = ["bbbb::1", "bbbb::2", "cccc::1", "fe80::1"]
V4 = ["10.2.0.1", "10.2.0.2", "192.0.2.7"]
PORTS = [53, 5683, 5684, 40000]
NETS = ["bbbb::/64", "cccc::/16", "fe80::/10", "10.2.0.0/24", "192.0.2.0/25", "0.0.0.0/0"]


def prims() -> st.SearchStrategy[Prim]:
    qual = st.sampled_from(["", "src", "dst"])
    return st.one_of(
        st.sampled_from(["ip", "ip6", "icmp", "icmp6", "udp", "tcp", "coap", "wpan"]).map(Prim),
        st.builds(lambda q, a: Prim("host", q, a), qual, st.sampled_from(V6 + V4)),
        st.builds(
            lambda q, n: Prim("net", q, str(ipaddress.ip_network(n))), qual, st.sampled_from(NETS)
        ),
        st.builds(lambda q, p: Prim("port", q, str(p)), qual, st.sampled_from(PORTS)),
        st.builds(
            lambda q, a, b: Prim("portrange", q, f"{min(a, b)}-{max(a, b)}"),
            qual,
            st.sampled_from(PORTS),
            st.sampled_from(PORTS),
        ),
        st.builds(lambda p: Prim("proto", "", str(p)), st.sampled_from([1, 6, 17, 58, 0])),
        st.builds(
            lambda k, n: Prim(k, "", str(n)),
            st.sampled_from(["less", "greater"]),
            st.integers(0, 200),
        ),
    )


trees = st.recursive(
    prims(),
    lambda sub: st.one_of(st.builds(Not, sub), st.builds(And, sub, sub), st.builds(Or, sub, sub)),
    max_leaves=12,
)


@given(trees)
def test_print_then_parse_gives_the_tree(tree: object) -> None:
    assert parse(str(tree)) == tree


VOCAB = [
    "and",
    "or",
    "not",
    "!",
    "&&",
    "||",
    "(",
    ")",
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "udp",
    "tcp",
    "ip",
    "ip6",
    "icmp",
    "icmp6",
    "coap",
    "wpan",
    "proto",
    "less",
    "greater",
    "bbbb::1",
    "10.2.0.1",
    "10.2.0.0/24",
    "5683",
    "1-2",
    "70000",
    "&",
    "|",
    "x",
]


@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(VOCAB), max_size=12).map(" ".join)))
def test_any_text_parses_or_raises_filter_error(text: str) -> None:
    try:
        tree = parse(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text)
    else:
        assert parse(str(tree)) == tree  # and what parsed prints back equivalently


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    if draw(st.booleans()):
        ip: Packet = IPv6(src=draw(st.sampled_from(V6)), dst=draw(st.sampled_from(V6)))
        icmp: Packet = ICMPv6EchoRequest()
    else:
        ip = IP(src=draw(st.sampled_from(V4)), dst=draw(st.sampled_from(V4)))
        icmp = ICMP()
    kind = draw(st.sampled_from(["udp", "tcp", "icmp"]))
    if kind == "icmp":
        upper: Packet = icmp
    else:
        cls = UDP if kind == "udp" else TCP
        upper = cls(sport=draw(st.sampled_from(PORTS)), dport=draw(st.sampled_from(PORTS)))
    payload = Raw(b"p" * draw(st.integers(0, 64)))
    return (
        IP(bytes(ip / upper / payload)) if isinstance(ip, IP) else IPv6(bytes(ip / upper / payload))
    )


def reference(node: object, pkt: Packet) -> bool:
    """The meaning of a tree, read off Scapy's dissection (independent of parse_header)."""
    if isinstance(node, Not):
        return not reference(node.expr, pkt)
    if isinstance(node, And):
        return reference(node.left, pkt) and reference(node.right, pkt)
    if isinstance(node, Or):
        return reference(node.left, pkt) or reference(node.right, pkt)
    assert isinstance(node, Prim)
    v6 = isinstance(pkt, IPv6)
    l4 = pkt[UDP] if UDP in pkt else pkt[TCP] if TCP in pkt else None
    ports = (l4.sport, l4.dport) if l4 is not None else ()
    proto = pkt.nh if v6 else pkt.proto
    k, q, v = node.kind, node.qual, node.value

    def pick(pair: tuple) -> tuple:
        return pair[:1] if q == "src" else pair[1:] if q == "dst" else pair

    if k == "ip":
        return not v6
    if k == "ip6":
        return v6
    if k == "icmp":
        return not v6 and proto == 1
    if k == "icmp6":
        return v6 and proto == 58
    if k in ("udp", "tcp"):
        return proto == {"udp": 17, "tcp": 6}[k]
    if k == "coap":
        return UDP in pkt and bool({5683, 5684} & set(ports))
    if k == "wpan":
        return False
    if k == "host":
        addr = ipaddress.ip_address(v)
        return any(ipaddress.ip_address(a) == addr for a in pick((pkt.src, pkt.dst)))
    if k == "net":
        net = ipaddress.ip_network(v)
        return any(
            ipaddress.ip_address(a).version == net.version and ipaddress.ip_address(a) in net
            for a in pick((pkt.src, pkt.dst))
        )
    if k == "port":
        return int(v) in pick(ports) if ports else False
    if k == "portrange":
        lo, hi = (int(x) for x in v.split("-"))
        return any(lo <= p <= hi for p in pick(ports)) if ports else False
    if k == "proto":
        return proto == int(v)
    if k == "less":
        return len(pkt) <= int(v)
    if k == "greater":
        return len(pkt) >= int(v)
    raise AssertionError(k)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(trees, packets())
def test_evaluation_agrees_with_scapy(tree: object, pkt: Packet) -> None:
    f = Filter(str(tree))
    assert f.matches(bytes(pkt)) == reference(tree, pkt)
    assert Filter(f"not ({tree})").matches(bytes(pkt)) == (not reference(tree, pkt))


@given(packets())
def test_header_parser_reads_what_scapy_reads(pkt: Packet) -> None:
    h = parse_header(bytes(pkt))
    assert h.version == (6 if isinstance(pkt, IPv6) else 4)
    assert ipaddress.ip_address(h.src) == ipaddress.ip_address(pkt.src)
    assert ipaddress.ip_address(h.dst) == ipaddress.ip_address(pkt.dst)
    l4 = pkt[UDP] if UDP in pkt else pkt[TCP] if TCP in pkt else None
    if l4 is not None:
        assert (h.sport, h.dport) == (l4.sport, l4.dport)
    else:
        assert (h.sport, h.dport) == (-1, -1)
