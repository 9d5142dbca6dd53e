"""LOWPAN_NHC (RFC 6282 section 4): the headers after a compressed IPv6 header, restored.

Pure functions of bytes. ``decompress(data)`` reads the chain of NHC headers that follows
an IPHC header whose NH bit is set: IPv6 extension headers (hop-by-hop and destination
options with their padding restored, routing, fragment, mobility) and UDP (ports,
checksum; the length is the rest of the datagram). It returns the protocol number of the
first header and the uncompressed bytes of everything after the IPv6 header. Scapy's
sixlowpan layer reads IPHC, not this chain: it drops extension headers.
"""

from __future__ import annotations

import struct

__all__ = ["NhcError", "decompress"]

# NHC extension header id (EID) -> IPv6 protocol number
EID_PROTO = {0: 0, 1: 43, 2: 44, 3: 60, 4: 135}
EID_NAMES = {0: "hop-by-hop", 1: "routing", 2: "fragment", 3: "destination options",
             4: "mobility", 7: "IPv6"}  # fmt: skip
UDP = 17


class NhcError(ValueError):
    """The NHC chain cannot be read; str() is a short reason."""


def _udp(data: bytes, pos: int) -> bytes:
    """NHC UDP at pos (11110CPP) through the end: the UDP header and payload."""
    head = data[pos]
    c, p = head >> 2 & 1, head & 3
    pos += 1
    need = (4, 3, 3, 1)[p] + (0 if c else 2)
    if len(data) < pos + need:
        raise NhcError("NHC UDP header cut short")
    if p == 0:
        sport, dport = struct.unpack_from("!HH", data, pos)
    elif p == 1:
        sport, dport = struct.unpack_from("!H", data, pos)[0], 0xF000 | data[pos + 2]
    elif p == 2:
        sport, dport = 0xF000 | data[pos], struct.unpack_from("!H", data, pos + 1)[0]
    else:
        sport, dport = 0xF0B0 | data[pos] >> 4, 0xF0B0 | data[pos] & 0x0F
    pos += (4, 3, 3, 1)[p]
    checksum = 0  # elided (C = 1): left out of the display
    if not c:
        checksum = struct.unpack_from("!H", data, pos)[0]
        pos += 2
    payload = data[pos:]
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), checksum) + payload


def _ext_body(eid: int, content: bytes) -> bytes:
    """An extension header without its Next Header byte: length byte, content, padding
    (options headers are padded back to 8 octets with Pad1 / PadN, RFC 6282 4.2)."""
    if eid == 2:  # fragment: reserved byte, then offset/flags and id as carried
        return b"\x00" + content
    pad = -(2 + len(content)) % 8
    if eid in (0, 3) and pad:
        padding = b"\x00" if pad == 1 else bytes([1, pad - 2]) + bytes(pad - 2)
    else:
        padding = bytes(pad)
    return bytes([(2 + len(content) + pad) // 8 - 1]) + content + padding


def _ext(data: bytes, pos: int) -> tuple[int, int | None, bytes, int]:
    """NHC extension header at pos (1110EEEN): (protocol, inline next header or None,
    body, position after it)."""
    head = data[pos]
    eid, nh_compressed = head >> 1 & 7, head & 1
    if eid not in EID_PROTO:
        raise NhcError(f"NHC {EID_NAMES.get(eid, f'EID {eid}')} header not decoded")
    pos += 1
    inline = None
    if not nh_compressed:
        if pos >= len(data):
            raise NhcError("NHC extension header cut short")
        inline = data[pos]
        pos += 1
    if pos >= len(data) or len(data) < pos + 1 + data[pos]:
        raise NhcError("NHC extension header cut short")
    length = data[pos]
    content = data[pos + 1 : pos + 1 + length]
    return EID_PROTO[eid], inline, _ext_body(eid, content), pos + 1 + length


def decompress(data: bytes) -> tuple[int, bytes]:
    """(protocol of the first header, uncompressed headers and payload); NhcError."""
    chain: list[tuple[int, int | None, bytes]] = []  # protocol, inline next, body
    pos, rest = 0, b""
    while True:
        if pos >= len(data):
            raise NhcError("NHC header cut short")
        head = data[pos]
        if head >> 3 == 0b11110:
            chain.append((UDP, None, _udp(data, pos)))
            break
        if head >> 4 != 0b1110:
            raise NhcError(f"unknown NHC header 0x{head:02x}")
        proto, inline, body, pos = _ext(data, pos)
        chain.append((proto, inline, body))
        if inline is not None:  # the next header is not compressed: the rest as it is
            rest = data[pos:]
            break
        if len(chain) > 16:
            raise NhcError("too many NHC extension headers")
    out = []
    for i, (proto, inline, body) in enumerate(chain):
        if proto == UDP:
            out.append(body)
        else:
            nxt = inline if inline is not None else chain[i + 1][0]
            out.append(bytes([nxt]) + body)
    return chain[0][0], b"".join(out) + rest
