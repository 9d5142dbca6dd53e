"""802.15.4 frames of the serial probe mode, read down to the IPv6 packet inside.

``WpanDecoder.decode(frame)`` gives one line and, when the frame carries (or completes)
an IPv6 datagram, that datagram decompressed: 802.15.4 MAC header (Scapy's dot15d4), then
the 6LoWPAN headers in the order RFC 4944 puts them (mesh, broadcast, fragment), then the
IPv6 header (uncompressed, or IPHC as in RFC 6282: header fields and addresses read by
Scapy's sixlowpan layer, the NHC headers after it restored by agent.inspect.nhc), and
the summary of the IPv6 packet (agent.inspect.summary):

    802.15.4 0x1234 > 0xffff 6LoWPAN IPHC fe80::ff:fe00:1234 > ff02::1a UDP 5683 > 5683
        CoAP NON GET /rd 27 B        (one line)

The dispatch byte is read here, not by Scapy's ``SixLoWPAN`` (which takes 0x7f, an IPHC
header with everything elided, for the old ESC dispatch); so are context-based addresses
(shown as tshark shows them when it does not know the contexts: prefix ::).

Fragments (FRAG1 / FRAGN) are kept in a small bounded table keyed by (link source, link
destination, tag, size) for 60 s; the frame that completes a datagram shows the whole
datagram, the others ``6LoWPAN FRAGN tag 7 offset 96 size 180``. A frame that cannot be
decoded is shown as 802.15.4 with a short reason in brackets; nothing here raises.

Only used when inspection is on (``-v``, ``agent sniff``): the probe's per-frame path
never imports this module otherwise.
"""

from __future__ import annotations

import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from scapy.layers.dot15d4 import Dot15d4, Dot15d4Data
from scapy.layers.sixlowpan import (
    LoWPAN_IPHC,
    _extract_upperaddress,
    dest_addr_size,
    source_addr_size,
)
from scapy.packet import Packet
from scapy.utils import hexdump

from agent.inspect import nhc
from agent.inspect.summary import clean, dump, quiet, summarize

__all__ = ["Decoded", "Fragments", "WpanDecoder", "dump_wpan", "summarize_wpan"]

FRAG_TIMEOUT = 60.0  # s, RFC 4944's reassembly timeout
FRAG_DATAGRAMS = 32  # datagrams being reassembled at once (oldest dropped beyond)
_FRAMETYPES = {0: "Beacon", 1: "Data", 2: "Ack", 3: "Command"}


class NotDecoded(Exception):
    """A frame (or a part of it) this module cannot read; str() is the short reason."""


@dataclass(frozen=True)
class Decoded:
    """What a frame showed: the line (without the frame size) and the IPv6 datagram
    it carried or completed, decompressed (None if none)."""

    text: str
    ipv6: bytes | None = None


# ------------------------------------------------------------------------ reassembly


@dataclass
class _Datagram:
    started: float
    first: bytes | None = None  # FRAG1's payload (compressed headers, then data)
    rest: dict[int, bytes] = field(default_factory=dict)  # FRAGN payloads by byte offset


class Fragments:
    """Bounded table of datagrams being reassembled (pure: the caller gives ``now``)."""

    def __init__(self, limit: int = FRAG_DATAGRAMS, timeout: float = FRAG_TIMEOUT) -> None:
        self.limit = limit
        self.timeout = timeout
        self._table: OrderedDict[tuple[object, ...], _Datagram] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def add(
        self, key: tuple[object, ...], offset: int, payload: bytes, first: bool, now: float
    ) -> bytes | None:
        """Store one fragment (FRAG1 if ``first``, else a FRAGN at ``offset`` bytes of the
        datagram; ``key`` ends with the datagram size); return FRAG1's payload and the
        FRAGNs' in order once FRAG1 is there and the FRAGNs run without a gap to the
        datagram's end (the caller decompresses and checks the size)."""
        self._expire(now)
        entry = self._table.get(key)
        if entry is None:
            entry = self._table[key] = _Datagram(now)
            while len(self._table) > self.limit:
                self._table.popitem(last=False)
        if first:
            entry.first = payload
        else:
            entry.rest[offset] = payload
        if entry.first is None:
            return None
        size = key[-1]
        parts = [entry.first]
        offsets = sorted(entry.rest)
        for here, nxt in zip(offsets, offsets[1:], strict=False):
            if here + len(entry.rest[here]) != nxt:
                return None
        if offsets:
            last = offsets[-1]
            if last + len(entry.rest[last]) != size:
                return None
            parts.extend(entry.rest[o] for o in offsets)
        return b"".join(parts)

    def done(self, key: tuple[object, ...]) -> None:
        self._table.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._table:
            key, oldest = next(iter(self._table.items()))
            if now - oldest.started < self.timeout:
                break
            del self._table[key]


# ------------------------------------------------------------------------ 802.15.4


def _addr(value: object, mode: int) -> str:
    if value is None or mode == 0:
        return "-"
    number = int(value)  # type: ignore[call-overload]
    if mode == 2:
        return f"0x{number:04x}"
    return ":".join(f"{b:02x}" for b in number.to_bytes(8, "big"))


def _mac(frame: bytes) -> tuple[Dot15d4, str, bytes]:
    """The MAC header (Scapy), its text, and the MAC payload."""
    if len(frame) < 3:
        raise NotDecoded("802.15.4 header cut short")
    mac = Dot15d4(frame, stop_dissection_after=Dot15d4Data)
    kind = _FRAMETYPES.get(mac.fcf_frametype, f"frame type {mac.fcf_frametype}")
    data = mac.getlayer(Dot15d4Data)
    if data is None:
        return mac, f"802.15.4 {kind} seq {mac.seqnum}", b""
    src = _addr(data.src_addr, mac.fcf_srcaddrmode)
    dst = _addr(data.dest_addr, mac.fcf_destaddrmode)
    payload = bytes(data.payload)
    return mac, f"802.15.4 {src} > {dst}", payload


# ------------------------------------------------------------------------ 6LoWPAN


def _mesh(data: bytes) -> tuple[int, str, tuple[int, int, int, int]]:
    """RFC 4944 mesh header: (length, text, (src mode, src, dst mode, dst))."""
    v, f, hops = data[0] >> 5 & 1, data[0] >> 4 & 1, data[0] & 0x0F
    slen, dlen = (2 if v else 8), (2 if f else 8)
    if len(data) < 1 + slen + dlen:
        raise NotDecoded("mesh header cut short")
    src = int.from_bytes(data[1 : 1 + slen], "big")
    dst = int.from_bytes(data[1 + slen : 1 + slen + dlen], "big")
    smode, dmode = (2 if v else 3), (2 if f else 3)
    text = f"MESH {_addr(src, smode)} > {_addr(dst, dmode)} hops {hops}"
    return 1 + slen + dlen, text, (smode, src, dmode, dst)


def _link_context(mac: Dot15d4, mesh: tuple[int, int, int, int] | None) -> Packet | None:
    """The Dot15d4Data layer IPHC takes elided addresses from (the mesh header's
    originator and final destination when there is one, RFC 4944 section 11)."""
    if mesh is None:
        return mac.getlayer(Dot15d4Data)
    smode, src, dmode, dst = mesh
    fake = Dot15d4(fcf_frametype=1, fcf_srcaddrmode=smode, fcf_destaddrmode=dmode)
    return (fake / Dot15d4Data(src_addr=src, dest_addr=dst))[Dot15d4Data]


def _iphc(data: bytes, link: Packet | None) -> tuple[str, bytes]:
    """IPHC (RFC 6282): (note, the IPv6 packet); NotDecoded if it cannot be read.
    Scapy's LoWPAN_IPHC reads the header and decompresses the addresses; the headers
    after it (inline, or LOWPAN_NHC: agent.inspect.nhc) are restored here."""
    try:
        iphc = LoWPAN_IPHC(data, _underlayer=link, stop_dissection_after=LoWPAN_IPHC)
        length = _iphc_length(iphc)
        src = socket.inet_pton(socket.AF_INET6, iphc.src)
        dst = socket.inet_pton(socket.AF_INET6, iphc.dst)
        tc, fl = iphc._getTrafficClassAndFlowLabel()
    except Exception as exc:
        raise NotDecoded(f"IPHC header cut short ({type(exc).__name__})") from None
    if length > len(data):
        raise NotDecoded("IPHC header cut short")
    note = ""
    if iphc.sac or iphc.dac:  # stateful: the prefix (or more) comes from a shared context
        sci, dci = (iphc.sci, iphc.dci) if iphc.cid else (0, 0)
        note = f"(context {sci}/{dci}, prefix unknown) "
        src, dst = _stateful(iphc, src, dst)
    if iphc.nh:
        try:
            proto, rest = nhc.decompress(data[length:])
        except nhc.NhcError as exc:
            addrs = f"{_ntop(src)} > {_ntop(dst)}"
            raise NotDecoded(f"IPHC {addrs}: {exc}") from None
    else:
        proto, rest = iphc.nhField, data[length:]
    hlim = iphc.hopLimit if iphc.hlim == 0 else (0, 1, 64, 255)[iphc.hlim]
    first = 0x60000000 | (tc & 0xFF) << 20 | (fl & 0xFFFFF)
    head = struct.pack("!IHBB", first, len(rest) & 0xFFFF, proto, hlim)
    return note, head + src + dst + rest


def _ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, addr)


def _iphc_length(iphc: Packet) -> int:
    """Bytes of the IPHC header itself (base, CID, inline TF / NH / HLIM, addresses)."""
    tf = (4, 3, 1, 0)[iphc.tf]
    return (
        2
        + (1 if iphc.cid else 0)
        + tf
        + (0 if iphc.nh else 1)
        + (1 if iphc.hlim == 0 else 0)
        + source_addr_size(iphc)
        + dest_addr_size(iphc)
    )


def _stateful(iphc: Packet, src: bytes, dst: bytes) -> tuple[bytes, bytes]:
    """Context-based (SAC / DAC) unicast addresses as tshark shows them without the
    contexts: prefix ::, interface identifier inline or from the link address (Scapy
    puts fe80:: there, or leaves out the ff:fe00 of a 16-bit identifier)."""
    if iphc.sac and iphc.sam in (2, 3):
        iid = _link_iid(iphc, True) if iphc.sam == 3 else src[8:16]
        src = bytes(8) + iid
    if iphc.dac and not iphc.m and iphc.dam in (2, 3):
        iid = _link_iid(iphc, False) if iphc.dam == 3 else b"\x00\x00\x00\xff\xfe\x00" + dst[14:]
        dst = bytes(8) + iid
    return src, dst


def _link_iid(iphc: Packet, source: bool) -> bytes:
    """The interface identifier derived from the link-layer address (RFC 6282 3.2.2)."""
    return bytes(_extract_upperaddress(iphc, source=source))[8:16]


def _inner(ipv6: bytes) -> str:
    """summarize()'s line for the IPv6 packet, without `IPv6 ` and the size."""
    text = summarize(ipv6)
    text = text.removeprefix("IPv6 ")
    head, _, tail = text.rpartition(" ")
    if tail == "B" and head:
        head = head.rpartition(" ")[0]
        return head or text
    return text


def _compressed(data: bytes, link: Packet | None) -> tuple[str, bytes]:
    """The IPv6 header after the fragment header: (text, IPv6 packet)."""
    if not data:
        raise NotDecoded("no IPv6 header")
    dispatch = data[0]
    if dispatch == 0x41:
        if len(data) < 41:
            raise NotDecoded("uncompressed IPv6 header cut short")
        return "IPv6", data[1:]
    if dispatch >> 5 == 0b011:
        note, ipv6 = _iphc(data, link)
        return f"IPHC {note}".rstrip(), ipv6
    if dispatch == 0x42:
        raise NotDecoded("HC1 compression (obsolete) not decoded")
    if dispatch >> 6 == 0:
        raise NotDecoded(f"not 6LoWPAN: dispatch 0x{dispatch:02x}")
    raise NotDecoded(f"unknown 6LoWPAN dispatch 0x{dispatch:02x}")


class WpanDecoder:
    """Decodes 802.15.4 frames one after the other (fragments are remembered)."""

    def __init__(
        self, fragments: Fragments | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fragments = fragments if fragments is not None else Fragments()
        self.clock = clock

    def decode(self, frame: bytes) -> Decoded:
        """The line and the IPv6 datagram for one frame; never raises."""
        try:
            data = bytes(frame)
        except Exception:
            return Decoded("802.15.4 [not bytes]")
        try:
            with quiet():
                return self._decode(data)
        except Exception as exc:  # a dissector bug must not end the caller
            return Decoded(f"802.15.4 [undecodable: {clean(type(exc).__name__)}]")

    def summarize(self, frame: bytes) -> str:
        """`802.15.4 0x1234 > 0xffff 6LoWPAN IPHC ... 26 B`; never raises."""
        return f"{self.decode(frame).text} {len(frame)} B"

    def _decode(self, frame: bytes) -> Decoded:
        try:
            mac, text, payload = _mac(frame)
        except NotDecoded as exc:
            return Decoded(f"802.15.4 [{exc}]")
        except Exception as exc:
            return Decoded(f"802.15.4 [undecodable MAC header: {clean(type(exc).__name__)}]")
        if mac.fcf_frametype != 1:
            return Decoded(text)
        if mac.fcf_security:
            return Decoded(f"{text} [secured: payload not decoded]")
        if not payload:
            return Decoded(f"{text} [no payload]")
        parts = [text]
        try:
            ipv6 = self._lowpan(mac, payload, parts)
        except NotDecoded as exc:
            parts.append(f"[{clean(str(exc), 120)}]")
            return Decoded(" ".join(parts))
        if ipv6 is not None:
            parts.append(_inner(ipv6))
        return Decoded(" ".join(parts), ipv6)

    def _lowpan(self, mac: Dot15d4, data: bytes, parts: list[str]) -> bytes | None:
        """Mesh, broadcast, fragment headers, then the IPv6 header; appends their text."""
        if data[0] >> 6 == 0:
            raise NotDecoded(f"not 6LoWPAN: dispatch 0x{data[0]:02x}")
        parts.append("6LoWPAN")
        mesh = None
        if data[0] >> 6 == 0b10:
            length, text, mesh = _mesh(data)
            parts.append(text)
            data = data[length:]
        if data[:1] == b"\x50" and len(data) >= 2:  # LOWPAN_BC0
            parts.append(f"BC0 seq {data[1]}")
            data = data[2:]
        if not data:
            raise NotDecoded("nothing after the mesh header")
        if data[0] >> 3 in (0b11000, 0b11100):
            return self._fragment(_link_context(mac, mesh), data, parts)
        text, ipv6 = _compressed(data, _link_context(mac, mesh))
        parts.append(text)
        return ipv6

    def _fragment(self, link: Packet | None, data: bytes, parts: list[str]) -> bytes | None:
        """FRAG1 / FRAGN: the datagram if this fragment completes it (link: the addresses
        the datagram is keyed by and IPHC takes elided addresses from)."""
        first = data[0] >> 3 == 0b11000
        hlen = 4 if first else 5
        if len(data) < hlen:
            raise NotDecoded("fragment header cut short")
        size = (data[0] & 0x07) << 8 | data[1]
        tag = int.from_bytes(data[2:4], "big")
        offset = 0 if first else data[4] * 8
        name = "FRAG1" if first else "FRAGN"
        parts.append(f"{name} tag {tag} offset {offset} size {size}")
        ends = (getattr(link, "src_addr", None), getattr(link, "dest_addr", None))
        key = (*ends, tag, size)
        whole = self.fragments.add(key, offset, data[hlen:], first, self.clock())
        if whole is None:
            return None
        try:
            text, ipv6 = _compressed(whole, link)
        except NotDecoded:
            return None  # e.g. a FRAGN is still missing before the last one
        if len(ipv6) != size:
            return None
        self.fragments.done(key)
        parts.append(f"reassembled {text}")
        return ipv6


def summarize_wpan(frame: bytes) -> str:
    """One line for a lone 802.15.4 frame (no fragment memory); never raises."""
    return WpanDecoder().summarize(frame)


def dump_wpan(frame: bytes, ipv6: bytes | None = None) -> str:
    """Scapy's dump of the MAC header, the MAC payload in hex, and the dump of the IPv6
    packet the frame carried (``ipv6``, from a decoder) if any; never raises."""
    try:
        with quiet():
            mac = Dot15d4(bytes(frame), stop_dissection_after=Dot15d4Data)
            text = str(mac.show(dump=True)).rstrip("\n")
    except Exception as exc:
        text = f"(802.15.4 header not decoded: {clean(type(exc).__name__)})"
    try:
        text += "\n" + hexdump(bytes(frame), dump=True)
    except Exception:  # noqa: S110 (nothing better to show)
        pass
    if ipv6 is not None:
        text += "\n" + dump(ipv6)
    return text
