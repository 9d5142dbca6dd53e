"""Completing transport checksums left to the hardware. Pure.

A packet read from an AF_PACKET socket may still carry a partial checksum: the sending
stack left the TCP/UDP checksum to "the hardware" (CHECKSUM_PARTIAL, flagged
TP_STATUS_CSUMNOTREADY), which never happens for a packet that crossed a veth, a tap or a
bridge. Such a packet must be completed before it leaves the host by the bus, or the
receiving kernel drops it.
"""

from __future__ import annotations

import struct

from agent.ipheader import ipv6_upper_layer

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
# IPv6 extension headers a completed checksum may sit behind: with a routing header the
# pseudo-header would need the final destination; a fragment's checksum spans several
# packets; AH, mobility, HIP and shim6 are left as they are
_WALKED = frozenset({0, 60})
_CSUM_OFFSET = {TCP: 16, UDP: 6, ICMP: 2, ICMPV6: 2}


def ones_complement_sum(data: bytes, start: int = 0) -> int:
    """The 16-bit one's complement sum of data (padded to even length), folded."""
    if len(data) % 2:
        data += b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _transport(packet: bytes) -> tuple[int, int, bytes] | None:
    """(protocol, offset of the transport header, pseudo-header) of an unfragmented packet."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total = int.from_bytes(packet[2:4], "big")
        if ihl < 20 or total > len(packet) or int.from_bytes(packet[6:8], "big") & 0x3FFF:
            return None  # bad header, or a fragment: the checksum spans several packets
        proto = packet[9]
        length = total - ihl
        pseudo = packet[12:20] + struct.pack("!BBH", 0, proto, length)
        return proto, ihl, pseudo
    if version == 6 and len(packet) >= 40:
        end = 40 + int.from_bytes(packet[4:6], "big")
        if end > len(packet):
            return None
        proto, offset, _first, seen = ipv6_upper_layer(packet, end)
        if seen - _WALKED:
            return None
        pseudo = packet[8:40] + struct.pack("!I3xB", end - offset, proto)
        return proto, offset, pseudo
    return None


def complete_checksum(packet: bytes) -> bytes:
    """packet with its TCP/UDP/ICMP checksum computed; unchanged when it has none we know."""
    found = _transport(packet)
    if found is None:
        return packet
    proto, offset, pseudo = found
    field = _CSUM_OFFSET.get(proto)
    version = packet[0] >> 4
    if field is None or (proto == ICMPV6 and version != 6) or (proto == ICMP and version != 4):
        return packet
    end = (
        40 + int.from_bytes(packet[4:6], "big")
        if version == 6
        else int.from_bytes(packet[2:4], "big")
    )
    if offset + field + 2 > end:
        return packet
    segment = bytearray(packet[offset:end])
    segment[field : field + 2] = b"\0\0"
    start = 0 if proto == ICMP else ones_complement_sum(pseudo)
    csum = ~ones_complement_sum(bytes(segment), start) & 0xFFFF
    if proto == UDP and csum == 0:
        csum = 0xFFFF
    out = bytearray(packet)
    struct.pack_into("!H", out, offset + field, csum)
    return bytes(out)
