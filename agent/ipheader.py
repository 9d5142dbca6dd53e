"""Reads of IP headers and a longest-prefix-match table. Pure, no Scapy.

The hot path (the per-packet decision) reads the version nibble and the address bytes
at fixed offsets: extension headers and fragments do not move the IPv6 destination, so
no dissection is needed. The slow paths (the sniffer's filter, checksum completion of
offloaded packets) walk the IPv6 extension headers with `ipv6_upper_layer`, the one
list of them in the code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

IPV6_ROUTING = 43
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_EXT_HEADERS = frozenset({0, IPV6_ROUTING, 60, 135, 139, 140})
"""extension headers sized in 8-octet units after the first 8: hop-by-hop, routing,
destination options, mobility, HIP, shim6 (the fragment header and AH are sized apart)"""
MAX_EXT_HEADERS = 16


def ipv6_upper_layer(packet: bytes, end: int) -> tuple[int, int, bool, frozenset[int]]:
    """Walk the extension headers of an IPv6 packet (at least 40 bytes, ending at `end`):
    (next header where the walk stopped, its offset, first fragment or not fragmented,
    the extension header types crossed). The walk stops at the first header that is not
    an extension header, or that does not fit before end (then the next header returned
    is still an extension header type), and after MAX_EXT_HEADERS."""
    nh, off, first = packet[6], 40, True
    seen: set[int] = set()
    for _ in range(MAX_EXT_HEADERS):
        if nh in IPV6_EXT_HEADERS:
            if off + 2 > end:
                break
            seen.add(nh)
            nh, off = packet[off], off + (packet[off + 1] + 1) * 8
        elif nh == IPV6_FRAGMENT:
            if off + 8 > end:
                break
            seen.add(nh)
            first = first and (int.from_bytes(packet[off + 2 : off + 4], "big") >> 3) == 0
            nh, off = packet[off], off + 8
        elif nh == IPV6_AH:
            if off + 2 > end:
                break
            seen.add(nh)
            nh, off = packet[off], off + (packet[off + 1] + 2) * 4
        else:
            break
    return nh, off, first, frozenset(seen)
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def destination(packet: bytes) -> tuple[int, bytes] | None:
    """(version, destination address bytes), or None for anything that is not IP."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 6 and len(packet) >= 40:
        return 6, packet[24:40]
    if version == 4 and len(packet) >= 20 and packet[0] & 0x0F >= 5:
        return 4, packet[16:20]
    return None


def source(packet: bytes) -> tuple[int, bytes] | None:
    """(version, source address bytes), or None for anything that is not IP."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 6 and len(packet) >= 40:
        return 6, packet[8:24]
    if version == 4 and len(packet) >= 20 and packet[0] & 0x0F >= 5:
        return 4, packet[12:16]
    return None


def is_group(version: int, addr: bytes) -> bool:
    """Multicast or limited broadcast: delivered to everyone."""
    if version == 6:
        return addr[0] == 0xFF
    return 224 <= addr[0] <= 239 or addr == b"\xff\xff\xff\xff"


def is_link_local_or_unspecified(version: int, addr: bytes) -> bool:
    if version == 6:
        return (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80) or addr == bytes(16)
    return addr[:2] == b"\xa9\xfe" or addr == bytes(4)


def is_link_scope(version: int, addr: bytes) -> bool:
    """An address that means something on one link only, or the unspecified address:
    IPv6 fe80::/10, multicast of interface- or link-local scope (ffX0, ffX1, ffX2: ff02::2,
    ff02::1:ff00:0/104...) and ::; IPv4 169.254.0.0/16, 224.0.0.0/24 (local network
    control: never routed), the limited broadcast 255.255.255.255 and 0.0.0.0."""
    if version == 6:
        if addr[0] == 0xFF:
            return addr[1] & 0x0F <= 2
        return (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80) or addr == bytes(16)
    return (
        addr[:2] == b"\xa9\xfe"
        or addr[:3] == b"\xe0\x00\x00"
        or addr == bytes(4)
        or addr == b"\xff\xff\xff\xff"
    )


def crosses_link(packet: bytes, version: int, dst: bytes) -> bool:
    """False when the packet (an IP packet of `version` to `dst`, as `destination` read
    it) is of link-local scope by its source or destination (`is_link_scope`): it must
    stay on the link it was sent on."""
    src = packet[8:24] if version == 6 else packet[12:16]
    return not (is_link_scope(version, dst) or is_link_scope(version, src))


def to_address(version: int, addr: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.IPv6Address(addr) if version == 6 else ipaddress.IPv4Address(addr)


class PrefixTable(Generic[V]):
    """Longest-prefix match from (version, address bytes) to a value."""

    def __init__(self) -> None:
        # per version: list of (prefixlen, {network int: value}), longest first
        self._by_version: dict[int, list[tuple[int, dict[int, V]]]] = {4: [], 6: []}

    @staticmethod
    def _bits(version: int) -> int:
        return 128 if version == 6 else 32

    def add(self, network: Net | str, value: V) -> None:
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        levels = self._by_version[net.version]
        key = int(net.network_address) >> (self._bits(net.version) - net.prefixlen)
        for plen, entries in levels:
            if plen == net.prefixlen:
                entries[key] = value
                return
        levels.append((net.prefixlen, {key: value}))
        levels.sort(key=lambda level: -level[0])

    def remove(self, network: Net | str) -> V | None:
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        levels = self._by_version[net.version]
        key = int(net.network_address) >> (self._bits(net.version) - net.prefixlen)
        for i, (plen, entries) in enumerate(levels):
            if plen == net.prefixlen:
                value = entries.pop(key, None)
                if not entries:
                    del levels[i]
                return value
        return None

    def lookup_exact(self, network: Net) -> V | None:
        key = int(network.network_address) >> (self._bits(network.version) - network.prefixlen)
        for plen, entries in self._by_version[network.version]:
            if plen == network.prefixlen:
                return entries.get(key)
        return None

    def lookup(self, version: int, addr: bytes) -> V | None:
        levels = self._by_version.get(version)
        if not levels:
            return None
        as_int = int.from_bytes(addr, "big")
        bits = self._bits(version)
        for plen, entries in levels:
            value = entries.get(as_int >> (bits - plen))
            if value is not None:
                return value
        return None

    def items(self) -> Iterator[tuple[Net, V]]:
        for version, levels in self._by_version.items():
            bits = self._bits(version)
            for plen, entries in levels:
                for key, value in entries.items():
                    addr = key << (bits - plen) if plen else 0
                    cls = ipaddress.IPv6Network if version == 6 else ipaddress.IPv4Network
                    yield cls((addr, plen)), value

    def remove_value(self, value: V) -> None:
        """Forget every entry that maps to value."""
        for net, v in list(self.items()):
            if v == value:
                self.remove(net)

    def __len__(self) -> int:
        return sum(len(e) for levels in self._by_version.values() for _, e in levels)
