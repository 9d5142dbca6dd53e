"""Tests for agent.ipheader: header reads checked against Scapy, and the prefix table
checked against a brute-force longest-prefix match over the ipaddress module."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)

from agent.ipheader import (
    PrefixTable,
    destination,
    is_group,
    is_link_local_or_unspecified,
    is_link_scope,
    source,
    to_address,
)


def addr6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def addr4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


# ----------------------------------------------------------------------------- header reads

SCAPY_PACKETS = {
    "ipv6 echo": IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(),
    "ipv6 udp": IPv6(src="fe80::1", dst="ff02::1") / UDP(sport=5683, dport=5683),
    "ipv6 hop-by-hop": IPv6(src="bbbb::1", dst="ff02::16")
    / IPv6ExtHdrHopByHop()
    / ICMPv6EchoRequest(),
    "ipv6 routing": IPv6(src="bbbb::1", dst="cccc::1")
    / IPv6ExtHdrRouting(addresses=["aaaa::1", "aaaa::2"])
    / UDP(),
    "ipv6 chain": IPv6(src="2001:db8::1", dst="2001:db8:ffff::2")
    / IPv6ExtHdrHopByHop()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrRouting()
    / IPv6ExtHdrDestOpt()
    / TCP(),
    "ipv6 fragment header": IPv6(src="bbbb::12", dst="bbbb::13")
    / IPv6ExtHdrFragment(id=7, m=1)
    / UDP()
    / (b"x" * 64),
    "ipv4 udp": IP(src="10.2.0.1", dst="10.2.0.2") / UDP(),
    "ipv4 options (RR)": IP(
        src="10.2.0.1", dst="10.2.0.2", options=[IPOption_RR(routers=["1.2.3.4"] * 5)]
    )
    / ICMP(),
    "ipv4 raw options": IP(src="192.0.2.9", dst="224.0.0.251", options=b"\x94\x04\x00\x00") / UDP(),
    "ipv4 max options": IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01" * 40) / ICMP(),
    "ipv4 fragment": IP(src="10.2.0.3", dst="255.255.255.255", flags="MF", frag=0) / UDP(),
}


@pytest.mark.parametrize("pkt", SCAPY_PACKETS.values(), ids=SCAPY_PACKETS.keys())
def test_destination_and_source_match_scapy(pkt: Any) -> None:
    raw = bytes(pkt)
    parsed = pkt.__class__(raw)
    version = parsed.version
    pack = addr6 if version == 6 else addr4
    assert destination(raw) == (version, pack(parsed.dst))
    assert source(raw) == (version, pack(parsed.src))


def test_ipv4_options_really_lengthen_the_header() -> None:
    raw = bytes(SCAPY_PACKETS["ipv4 max options"])
    assert raw[0] & 0x0F == 15
    assert destination(raw) == (4, addr4("10.0.0.2"))


def test_every_ipv6_fragment_gives_the_same_destination() -> None:
    big = IPv6(src="bbbb::1", dst="bbbb::2") / IPv6ExtHdrFragment() / UDP() / (b"y" * 3000)
    frags = fragment6(big, 1280)
    assert len(frags) >= 3
    for frag in frags:
        raw = bytes(frag)
        assert destination(raw) == (6, addr6("bbbb::2"))
        assert source(raw) == (6, addr6("bbbb::1"))


def test_a_bare_ipv6_header_is_enough() -> None:
    raw = bytes(IPv6(src="bbbb::1", dst="bbbb::2", nh=59))
    assert len(raw) == 40
    assert destination(raw) == (6, addr6("bbbb::2"))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x60",
        bytes(IPv6(dst="bbbb::2"))[:39],
        bytes(IP(dst="10.2.0.2"))[:19],
        b"\x44" + bytes(39),  # IPv4 header length 4 words
        b"\x40" + bytes(39),
        b"\x00" * 60,
        b"\x50" + bytes(59),
        b"\xf0" + bytes(59),
        b"\x20" + bytes(59),
        b"{not an IP packet at all, version nibble 7}",
    ],
)
def test_garbage_gives_none(raw: bytes) -> None:
    assert destination(raw) is None
    assert source(raw) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_give_none_or_addresses_at_the_fixed_offsets(raw: bytes) -> None:
    dst, src = destination(raw), source(raw)
    assert (dst is None) == (src is None)
    if dst is None or src is None:
        return
    version = raw[0] >> 4
    assert dst[0] == src[0] == version
    if version == 6:
        assert (src[1], dst[1]) == (raw[8:24], raw[24:40])
    else:
        assert version == 4
        assert (src[1], dst[1]) == (raw[12:16], raw[16:20])


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("text", "group"),
    [
        ("ff02::1", True),
        ("ff02::1:ff00:2", True),
        ("ff05::fb", True),
        ("ff0e::1", True),
        ("bbbb::1", False),
        ("fe80::1", False),
        ("::", False),
        ("fe02::1", False),
        ("224.0.0.1", True),
        ("224.0.0.251", True),
        ("239.255.255.250", True),
        ("255.255.255.255", True),
        ("10.2.0.2", False),
        ("10.2.0.255", False),
        ("223.255.255.255", False),
        ("240.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_is_group(text: str, group: bool) -> None:
    ip = ipaddress.ip_address(text)
    assert is_group(ip.version, ip.packed) is group


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16) | st.binary(min_size=4, max_size=4))
def test_is_group_agrees_with_ipaddress(packed: bytes) -> None:
    ip = ipaddress.ip_address(packed)
    expected = ip.is_multicast or (
        ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255")
    )
    assert is_group(ip.version, packed) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fe80::1", True),
        ("febf::1", True),
        ("fec0::1", False),
        ("::", True),
        ("::1", False),
        ("bbbb::1", False),
        ("169.254.1.2", True),
        ("0.0.0.0", True),
        ("10.2.0.1", False),
    ],
)
def test_is_link_local_or_unspecified(text: str, expected: bool) -> None:
    ip = ipaddress.ip_address(text)
    assert is_link_local_or_unspecified(ip.version, ip.packed) is expected


def test_to_address() -> None:
    assert to_address(6, addr6("bbbb::2")) == ipaddress.IPv6Address("bbbb::2")
    assert to_address(4, addr4("10.2.0.2")) == ipaddress.IPv4Address("10.2.0.2")


# ----------------------------------------------------------------------------- PrefixTable


def lookup(table: PrefixTable[Any], text: str) -> Any:
    ip = ipaddress.ip_address(text)
    return table.lookup(ip.version, ip.packed)


def test_longest_prefix_wins() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("bbbb::/16", "wide")
    table.add("bbbb::/64", "session")
    table.add("bbbb::2/128", "agent_2")
    table.add("10.0.0.0/8", "ten")
    table.add("10.2.0.2/32", "agent_2")
    assert lookup(table, "bbbb::2") == "agent_2"
    assert lookup(table, "bbbb::3") == "session"
    assert lookup(table, "bbbb:1::3") == "wide"
    assert lookup(table, "cccc::1") is None
    assert lookup(table, "10.2.0.2") == "agent_2"
    assert lookup(table, "10.2.0.3") == "ten"
    assert lookup(table, "11.0.0.1") is None
    assert len(table) == 5


def test_families_do_not_mix() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("::/0", "v6 default")
    assert lookup(table, "10.0.0.1") is None
    assert lookup(table, "2001:db8::1") == "v6 default"
    table.add("0.0.0.0/0", "v4 default")
    assert lookup(table, "10.0.0.1") == "v4 default"
    # ::a00:1 has the same low 32 bits as 10.0.0.1
    table.add("10.0.0.1/32", "host")
    assert lookup(table, "::a00:1") == "v6 default"


def test_add_accepts_network_objects_and_host_bits() -> None:
    table: PrefixTable[int] = PrefixTable()
    table.add(ipaddress.ip_network("cccc::/64"), 1)
    table.add("192.0.2.77/24", 2)  # host bits set: the /24 is meant
    assert lookup(table, "cccc::99") == 1
    assert lookup(table, "192.0.2.1") == 2
    assert table.lookup_exact(ipaddress.ip_network("192.0.2.0/24")) == 2


def test_add_replaces_the_value_of_the_same_network() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("cccc::/64", "agent_1")
    table.add("cccc::/64", "agent_2")
    assert lookup(table, "cccc::1") == "agent_2"
    assert len(table) == 1


def test_lookup_exact_needs_the_same_prefix_length() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("cccc::/64", "a")
    assert table.lookup_exact(ipaddress.ip_network("cccc::/64")) == "a"
    assert table.lookup_exact(ipaddress.ip_network("cccc::/48")) is None
    assert table.lookup_exact(ipaddress.ip_network("cccc::1/128")) is None
    assert table.lookup_exact(ipaddress.ip_network("dddd::/64")) is None
    assert table.lookup_exact(ipaddress.ip_network("10.0.0.0/8")) is None


def test_remove() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("cccc::/64", "a")
    table.add("cccc::1/128", "b")
    assert table.remove("cccc::1/128") == "b"
    assert lookup(table, "cccc::1") == "a"
    assert table.remove(ipaddress.ip_network("cccc::/64")) == "a"
    assert lookup(table, "cccc::1") is None
    assert len(table) == 0
    assert list(table.items()) == []
    # absent entries: None, no error
    assert table.remove("cccc::/64") is None
    assert table.remove("10.0.0.0/8") is None


def test_remove_leaves_other_networks_of_the_same_length() -> None:
    table: PrefixTable[str] = PrefixTable()
    table.add("aaaa::/64", "a")
    table.add("cccc::/64", "c")
    table.remove("aaaa::/64")
    assert lookup(table, "cccc::5") == "c"
    assert lookup(table, "aaaa::5") is None


def test_remove_value_forgets_every_entry_of_an_agent() -> None:
    table: PrefixTable[str] = PrefixTable()
    for net in ("bbbb::1/128", "fe80::1/128", "10.2.0.1/32", "aaaa::/64"):
        table.add(net, "agent_1")
    table.add("bbbb::2/128", "agent_2")
    table.add("10.2.0.2/32", "agent_2")
    table.remove_value("agent_1")
    assert sorted(str(n) for n, _ in table.items()) == ["10.2.0.2/32", "bbbb::2/128"]
    assert {v for _, v in table.items()} == {"agent_2"}
    assert len(table) == 2
    table.remove_value("nobody")
    assert len(table) == 2


def test_items_gives_back_the_networks() -> None:
    table: PrefixTable[int] = PrefixTable()
    nets = [
        "::/0",
        "0.0.0.0/0",
        "cccc::/64",
        "bbbb::2/128",
        "10.2.0.0/24",
        "10.2.0.2/32",
        "8.0.0.0/5",
    ]
    for i, net in enumerate(nets):
        table.add(net, i)
    assert dict(table.items()) == {ipaddress.ip_network(n): i for i, n in enumerate(nets)}
    assert len(table) == len(nets)


# -- property: the table against a brute-force longest-prefix match ------------------------

BASES4 = [0x0A020000, 0xC0000200, 0xE0000000, 0x00000000, 0xFFFFFFFF]
BASES6 = [0xBBBB << 112, 0xCCCC << 112, 0xFE80 << 112, 0xFF02 << 112, 0]


@st.composite
def networks(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if draw(st.booleans()):
        base = draw(st.sampled_from(BASES4))
        addr = (base ^ draw(st.integers(0, 0xFFFF))) & 0xFFFFFFFF
        return ipaddress.IPv4Network((addr, draw(st.integers(0, 32))), strict=False)
    base = draw(st.sampled_from(BASES6))
    addr = base ^ draw(st.integers(0, 0xFFFF)) ^ (draw(st.integers(0, 0xFF)) << 64)
    return ipaddress.IPv6Network((addr, draw(st.integers(0, 128))), strict=False)


@st.composite
def addresses_near(
    draw: st.DrawFn, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if nets and draw(st.booleans()):
        net = draw(st.sampled_from(nets))
        offset = draw(st.integers(0, net.num_addresses - 1))
        return net.network_address + offset
    net = draw(networks())
    return net.network_address


def reference_lookup(entries: dict[Any, Any], ip: Any) -> Any:
    best = None
    for net, value in entries.items():
        if net.version == ip.version and ip in net:
            if best is None or net.prefixlen > best[0].prefixlen:
                best = (net, value)
    return None if best is None else best[1]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_lookup_matches_brute_force(data: st.DataObject) -> None:
    ops = data.draw(
        st.lists(
            st.tuples(st.sampled_from(["add", "add", "add", "remove"]), networks()), max_size=25
        )
    )
    table: PrefixTable[int] = PrefixTable()
    reference: dict[Any, int] = {}
    for i, (op, net) in enumerate(ops):
        if op == "add":
            table.add(net, i)
            reference[net] = i
        else:
            assert table.remove(net) == reference.pop(net, None)
    assert len(table) == len(reference)
    assert dict(table.items()) == reference
    for net, value in reference.items():
        assert table.lookup_exact(net) == value
    nets = list(reference)
    for _ in range(12):
        ip = data.draw(addresses_near(nets))
        assert table.lookup(ip.version, ip.packed) == reference_lookup(reference, ip), ip


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(networks(), st.sampled_from("abc")), max_size=20), st.sampled_from("abc"))
def test_remove_value_matches_brute_force(entries: list[tuple[Any, str]], gone: str) -> None:
    table: PrefixTable[str] = PrefixTable()
    reference: dict[Any, str] = {}
    for net, value in entries:
        table.add(net, value)
        reference[net] = value
    table.remove_value(gone)
    expected = {n: v for n, v in reference.items() if v != gone}
    assert dict(table.items()) == expected
    for net in reference:
        ip = net.network_address
        assert table.lookup(ip.version, ip.packed) == reference_lookup(expected, ip)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fe80::1", True),
        ("febf::ffff", True),
        ("fec0::1", False),
        ("ff02::2", True),  # all routers: a router solicitation
        ("ff02::1:ff00:1", True),  # solicited node: neighbour discovery
        ("ff01::1", True),  # interface-local
        ("ff12::1", True),  # transient, link scope
        ("ff05::fd", False),  # site scope
        ("ff0e::1", False),  # global scope
        ("::", True),
        ("::1", False),
        ("cccc::1", False),
        ("169.254.1.2", True),
        ("169.255.0.1", False),
        ("224.0.0.251", True),  # mDNS: local network control block
        ("224.0.1.1", False),
        ("255.255.255.255", True),
        ("0.0.0.0", True),
        ("192.0.2.1", False),
    ],
)
def test_is_link_scope(text: str, expected: bool) -> None:
    ip = ipaddress.ip_address(text)
    assert is_link_scope(ip.version, ip.packed) is expected


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
                 st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)))
def test_link_scope_agrees_with_ipaddress(ip: Any) -> None:
    if isinstance(ip, ipaddress.IPv6Address):
        scope = ip.packed[1] & 0x0F  # of a multicast address
        want = ip.is_link_local or ip.is_unspecified or (ip.is_multicast and scope <= 2)
    else:
        want = ip.is_link_local or ip.is_unspecified or ip in ipaddress.ip_network("224.0.0.0/24")
        want = want or ip == ipaddress.IPv4Address("255.255.255.255")
    assert is_link_scope(ip.version, ip.packed) is want
