"""802.15.4 frames carrying 6LoWPAN, built byte by byte after RFC 4944 / RFC 6282 (not by
the code under test), for the summaries' tests and the tshark cross-check.

Each builder returns frames without FCS, as the serial probe carries them. `EXPECTED`
says what a reader of each frame should find (addresses, ports, CoAP code), or None for
frames that hold no complete IPv6 datagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from socket import AF_INET6, inet_pton

from scapy.contrib.coap import CoAP
from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

PAN = b"\xcd\xab"  # 0xabcd, little endian on the air


@dataclass(frozen=True)
class Inner:
    src: str
    dst: str
    sport: int
    dport: int
    coap_code: int


def coap(
    mtype: int, code: int, mid: int, paths: tuple[str, ...] = (), payload: bytes = b""
) -> bytes:
    options = [("Uri-Path", p.encode()) for p in paths]
    msg = CoAP(type=mtype, code=code, msg_id=mid, token=b"\x42", options=options)
    if payload:
        msg.paymark = b"\xff"
    return bytes(msg / payload) if payload else bytes(msg)


def udp_bytes(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """UDP header + data, with the checksum a sender computes."""
    return bytes(IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / data)[40:]


def mac_short(src: int, dst: int, seq: int = 1) -> bytes:
    """Data frame, PAN ID compression, short addresses (frame control 0x8841)."""
    return b"\x41\x88" + bytes([seq]) + PAN + struct.pack("<HH", dst, src)


def mac_long(src: int, dst: int, seq: int = 1) -> bytes:
    """Data frame, PAN ID compression, extended addresses (frame control 0xcc41)."""
    return b"\x41\xcc" + bytes([seq]) + PAN + struct.pack("<QQ", dst, src)


def iid_short(addr: int) -> str:
    return f"fe80::ff:fe00:{addr:x}"


def iid_long(addr: int) -> str:
    eui = (addr ^ (0x02 << 56)).to_bytes(8, "big")
    groups = [int.from_bytes(eui[i : i + 2], "big") for i in range(0, 8, 2)]
    return "fe80::" + ":".join(f"{g:x}" for g in groups)


def nhc_udp(udp: bytes) -> bytes:
    """LOWPAN_NHC UDP, ports and checksum inline (0xf0): length elided."""
    return b"\xf0" + udp[0:4] + udp[6:8] + udp[8:]


def multicast_rd() -> tuple[bytes, Inner]:
    """IPHC with everything elided: TF 11, NH compressed, HLIM 255, source from the MAC
    (SAM 11), ff02::1a in one byte (M 1, DAM 11), NHC UDP; a CoAP NON GET /rd."""
    src, dst = iid_short(0x1234), "ff02::1a"
    udp = udp_bytes(src, dst, 5683, 5683, coap(1, 1, 0x1234, ("rd",)))
    frame = mac_short(0x1234, 0xFFFF) + b"\x7f\x3b\x1a" + nhc_udp(udp)
    return frame, Inner(src, dst, 5683, 5683, 1)


def inline_fields() -> tuple[bytes, Inner]:
    """IPHC with every field inline: TF 00 (4 bytes), next header 17, hop limit 64, both
    addresses in full; the UDP header uncompressed; CoAP CON GET /.well-known/core."""
    src, dst = "bbbb::1", "bbbb::2"
    udp = udp_bytes(src, dst, 40001, 5683, coap(0, 1, 0x0102, (".well-known", "core")))
    head = b"\x60\x00" + b"\x00\x00\x00\x00" + b"\x11" + b"\x40"
    ips = IPv6(src=src, dst=dst)
    addrs = bytes(ips)[8:40]
    frame = mac_long(0x0012_4B00_0001_0203, 0x0012_4B00_0004_0506) + head + addrs + udp
    return frame, Inner(src, dst, 40001, 5683, 1)


def fragmented(tag: int = 7) -> tuple[list[bytes], Inner]:
    """A CoAP CON POST /big (188 bytes as IPv6) in three fragments (FRAG1 with
    IPHC from extended MAC addresses and NHC UDP, then offsets 96 and 152)."""
    s_mac, d_mac = 0x0012_4B00_0A0B_0C0D, 0x0012_4B00_0E0F_1011
    src, dst = iid_long(s_mac), iid_long(d_mac)
    body = coap(0, 2, 0x0BAD, ("big",), bytes(range(65, 65 + 26)) * 5)
    udp = udp_bytes(src, dst, 61616, 5683, body)
    size = 40 + len(udp)
    compressed = b"\x7e\x33" + nhc_udp(udp)  # TF 11, NH 1, HLIM 64 / SAM 11, DAM 11
    # FRAG1 covers 96 uncompressed bytes: 40 (IPv6) + 8 (UDP) + 48 bytes of CoAP
    head_len = 2 + 7  # IPHC + NHC UDP (the compressed form of those 48 header bytes)
    cut1 = head_len + 48
    rest = compressed[cut1:]
    mac = mac_long(s_mac, d_mac)
    frag1 = mac + bytes([0xC0 | size >> 8, size & 0xFF]) + struct.pack(">H", tag)
    frames = [frag1 + compressed[:cut1]]
    offset = 96
    for chunk in (rest[:56], rest[56:]):
        hdr = bytes([0xE0 | size >> 8, size & 0xFF]) + struct.pack(">H", tag)
        frames.append(mac + hdr + bytes([offset // 8]) + chunk)
        offset += len(chunk)
    assert offset == size, (offset, size)
    return frames, Inner(src, dst, 61616, 5683, 2)


def meshed() -> tuple[bytes, Inner]:
    """Mesh header (short originator 0x0001, final 0x0002, 5 hops left) before an IPHC
    whose addresses are inline (SAM 01 / DAM 01: 64-bit IIDs), CoAP ACK 2.05."""
    src, dst = "fe80::1", "fe80::2"
    udp = udp_bytes(src, dst, 5683, 49152, coap(2, 69, 0x1234, (), b"hello"))
    mesh = b"\xb5" + b"\x00\x01" + b"\x00\x02"
    iphc = b"\x7e\x11" + (1).to_bytes(8, "big") + (2).to_bytes(8, "big")
    frame = mac_short(0x0003, 0x0004) + mesh + iphc + nhc_udp(udp)
    return frame, Inner(src, dst, 5683, 49152, 69)


def stateful() -> tuple[bytes, Inner]:
    """Context-based IPHC (SAC 1 / SAM 11: identifier from the MAC source; DAC 1 / DAM 10:
    16-bit identifier inline), context 0 not known to the reader: prefix ::."""
    src, dst = "::ff:fe00:3", "::ff:fe00:a"
    udp = udp_bytes(src, dst, 5683, 5683, coap(0, 3, 0x0303, ("ctx",), b"1"))
    frame = mac_short(0x0003, 0x0004) + b"\x7e\x76" + b"\x00\x0a" + nhc_udp(udp)
    return frame, Inner(src, dst, 5683, 5683, 3)


def rpl_hop_by_hop() -> tuple[bytes, Inner]:
    """NHC-compressed hop-by-hop header carrying an RPL option (RFC 6553: instance 0x1e,
    rank 0x0200), its next header NHC UDP, as RPL networks send data: CoAP CON DELETE /x.
    Addresses inline (SAM 00, DAM 00), TF 11, HLIM 64."""
    src, dst = "fd00::212:4b00:1:1", "fd00::212:4b00:2:2"
    option = b"\x63\x04\x00\x1e\x02\x00"
    udp = udp_bytes(src, dst, 5683, 5683, coap(0, 4, 0x4444, ("x",)))  # pseudo-header: no ext
    iphc = b"\x7e\x00" + inet_pton(AF_INET6, src) + inet_pton(AF_INET6, dst)
    nhc = b"\xe1" + bytes([len(option)]) + option  # EID 0 (hop-by-hop), NH compressed
    frame = mac_short(0x0007, 0x0008) + iphc + nhc + nhc_udp(udp)
    return frame, Inner(src, dst, 5683, 5683, 4)


def uncompressed_echo() -> tuple[bytes, Inner | None]:
    """The uncompressed-IPv6 dispatch (0x41) with an ICMPv6 echo request."""
    pkt = bytes(IPv6(src="bbbb::3", dst="bbbb::4", hlim=64) / ICMPv6EchoRequest(id=1, seq=1))
    return mac_short(0x0005, 0x0006) + b"\x41" + pkt, None


def cut_short() -> bytes:
    """IPHC announcing inline addresses (SAM 00, DAM 00) but ending after three bytes."""
    return mac_short(0x1234, 0xFFFF) + b"\x78\x00" + b"\xbb\xbb\x00"


def not_lowpan() -> bytes:
    """A NALP dispatch (00xxxxxx): not a 6LoWPAN frame."""
    return mac_short(0x1234, 0xFFFF) + b"\x01zigbee?"


def ack(seq: int = 9) -> bytes:
    return b"\x02\x00" + bytes([seq])


def mixed() -> list[tuple[bytes, Inner | None]]:
    """The cross-check capture: every kind above, fragments out of the way of nothing."""
    frags, big = fragmented()
    one, rd = multicast_rd()
    two, wk = inline_fields()
    mesh, ack_205 = meshed()
    ctx, put = stateful()
    rpl, delete = rpl_hop_by_hop()
    echo, _ = uncompressed_echo()
    return [
        (one, rd),
        (two, wk),
        (frags[0], None),
        (frags[1], None),
        (frags[2], big),
        (mesh, ack_205),
        (ctx, put),
        (rpl, delete),
        (echo, None),
        (cut_short(), None),
        (not_lowpan(), None),
        (ack(), None),
    ]
