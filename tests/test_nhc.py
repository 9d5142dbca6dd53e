"""agent.inspect.nhc: LOWPAN_NHC chains restored to IPv6 extension headers and UDP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    HBHOptUnknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)

from agent.inspect.nhc import NhcError, decompress


def _after_ipv6(pkt: IPv6) -> bytes:
    return bytes(pkt)[40:]


@pytest.mark.parametrize(
    ("p", "ports", "sport", "dport"),
    [
        (0, b"\x16\x33\xc0\x01", 5683, 0xC001),
        (1, b"\x16\x33\x0b", 5683, 0xF00B),
        (2, b"\x0b\x16\x33", 0xF00B, 5683),
        (3, b"\x3c", 0xF0B3, 0xF0BC),
    ],
)
def test_udp_port_compression(p: int, ports: bytes, sport: int, dport: int) -> None:
    proto, rest = decompress(bytes([0xF0 | p]) + ports + b"\xbe\xef" + b"data")
    assert proto == 17
    assert struct.unpack("!HHHH", rest[:8]) == (sport, dport, 12, 0xBEEF)
    assert rest[8:] == b"data"
    # checksum elided (C = 1): shown as 0
    proto, rest = decompress(bytes([0xF4 | p]) + ports + b"xy")
    assert struct.unpack("!HHHH", rest[:8]) == (sport, dport, 10, 0)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 12, 30])
def test_options_headers_get_their_padding_back(size: int) -> None:
    """An option of any size: the restored hop-by-hop / destination options header is
    the one Scapy pads (Pad1 or PadN) to a multiple of 8 octets."""
    option = HBHOptUnknown(otype=0x3E, optdata=bytes(range(size)))
    for eid, cls in ((0, IPv6ExtHdrHopByHop), (3, IPv6ExtHdrDestOpt)):
        content = bytes(option)
        nhc = bytes([0xE0 | eid << 1 | 1, len(content)]) + content
        udp = b"\xf0\x16\x33\x16\x33\x00\x00"
        proto, rest = decompress(nhc + udp + b"!")
        sent = IPv6() / cls(options=[option]) / UDP(sport=5683, dport=5683, chksum=0) / b"!"
        assert proto == (0 if eid == 0 else 60)
        assert rest == _after_ipv6(sent), (size, eid)


def test_routing_header_then_inline_next_header() -> None:
    """A routing header whose next header is inline (not compressed): the rest is as is."""
    routing = bytes(IPv6ExtHdrRouting(type=3, segleft=1, addresses=[]))[2:] + bytes(4)
    nhc = b"\xe2" + b"\x3a" + bytes([len(routing)]) + routing  # EID 1, NH inline = ICMPv6
    proto, rest = decompress(nhc + b"\x80\x00\x00\x00")
    assert proto == 43
    assert rest[0] == 58 and rest[1] == (2 + len(routing) + 7) // 8 - 1
    assert rest[-4:] == b"\x80\x00\x00\x00"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "NHC header cut short"),
        (b"\xf0\x16", "NHC UDP header cut short"),
        (b"\xe1\x06\x63", "NHC extension header cut short"),
        (b"\xe1", "NHC extension header cut short"),
        (b"\xe1\x00", "NHC header cut short"),  # NH compressed, but nothing follows
        (b"\xee\x00", "NHC IPv6 header not decoded"),
        (b"\xea\x00", "NHC EID 5 header not decoded"),
        (b"\x80", "unknown NHC header 0x80"),
    ],
)
def test_bad_chains_are_one_reason(data: bytes, reason: str) -> None:
    with pytest.raises(NhcError, match=f"^{reason}$"):
        decompress(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_decompress_arbitrary_bytes_raises_only_nhc_error(data: bytes) -> None:
    try:
        proto, rest = decompress(data)
    except NhcError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 60
        return
    assert 0 <= proto <= 255 and isinstance(rest, bytes)
