"""One-line summaries (``-v``, ``agent sniff``) and full dumps (``-vv``) of IP packets.

They are meant for debugging output and never raise. Scapy's dissection warnings (e.g.
on malformed CoAP options) are dropped while a summary is made: the log filter that
does it is installed explicitly, by :func:`load`, when the summaries first load Scapy's
optional dissectors (not when this module is imported). 802.15.4 / 6LoWPAN frames:
agent.inspect.sixlowpan.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator

from scapy.layers import inet, inet6
from scapy.packet import NoPayload, Packet, Raw
from scapy.utils import hexdump

__all__ = ["clean", "dump", "load", "quiet", "summarize"]


_IPV6_EXT = inet6._IPv6ExtHdr  # hop-by-hop, routing, fragment, destination options
_IPV6_FRAG = inet6.IPv6ExtHdrFragment
_ICMP6_TYPES: dict[int, str] = inet6.icmp6types
_IPV6_NH: dict[int, str] = inet6.ipv6nh
_ICMP_TYPES: dict[int, str] = inet.icmptypes
_ICMP_CODES: dict[int, dict[int, str]] = inet.icmpcodes
_COAP_PORTS = (5683, 5684)
_COAP_TYPES = ("CON", "NON", "ACK", "RST")


class _QuietFilter(logging.Filter):
    """Drops Scapy's dissection warnings (e.g. malformed CoAP options) in quiet() blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_quiet_filter = _QuietFilter()
_coap_cls: type[Packet] | None = None
_loaded = False


def load() -> None:
    """Load Scapy's optional dissectors (CoAP; 802.15.4 set to 6LoWPAN) and install the
    filter on Scapy's logger that quiet() switches on. Idempotent; called on first use."""
    global _coap_cls, _loaded
    if _loaded:
        return
    _loaded = True
    logging.getLogger("scapy.runtime").addFilter(_quiet_filter)
    try:
        from scapy.contrib.coap import CoAP
    except Exception:  # pragma: no cover - scapy without contrib
        CoAP = None  # noqa: N806
    _coap_cls = CoAP
    from scapy.config import conf

    if getattr(conf, "dot15d4_protocol", None) is None:
        conf.dot15d4_protocol = "sixlowpan"  # what a serial probe carries (no warning)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Scapy's warnings are dropped inside this block (this thread only)."""
    if not _loaded:
        load()
    local = _quiet_filter.local
    local.depth = getattr(local, "depth", 0) + 1
    try:
        yield
    finally:
        local.depth -= 1


def _coap() -> type[Packet] | None:
    """Scapy's CoAP dissector (None if unavailable)."""
    if not _loaded:
        load()
    return _coap_cls


def _not_ip(data: bytes) -> str:
    return f"not IP ({len(data)} B) {data[:16].hex()}".rstrip()


def _ip_version(data: bytes) -> int:
    """4 or 6 if ``data`` starts with a complete IPv4/IPv6 header, else 0."""
    if not data:
        return 0
    version = data[0] >> 4
    if version == 6 and len(data) >= 40:
        return 6
    if (
        version == 4
        and len(data) >= 20
        and (data[0] & 0x0F) >= 5
        and len(data) >= (data[0] & 0x0F) * 4
    ):
        return 4
    return 0


def clean(text: str, limit: int = 80) -> str:
    """Make untrusted text safe for a one-line log message."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _raw_bytes(layer: Packet) -> bytes:
    original = getattr(layer, "original", None)
    return bytes(original) if original is not None else bytes(layer)


def summarize(packet: bytes) -> str:
    """One-line summary of a raw IPv4/IPv6 packet; never raises."""
    try:
        data = bytes(packet)
    except Exception:
        return "not IP (? B)"
    try:
        version = _ip_version(data)
        if version:
            with quiet():
                return _summarize6(data) if version == 6 else _summarize4(data)
    except Exception:  # a dissector bug must not kill the caller
        return _header_only(data)
    return _not_ip(data)


def _header_only(data: bytes) -> str:
    """Fallback when Scapy cannot dissect the packet: decode the fixed IP header by hand."""
    try:
        if data[0] >> 4 == 6:
            src = socket.inet_ntop(socket.AF_INET6, data[8:24])
            dst = socket.inet_ntop(socket.AF_INET6, data[24:40])
            head, proto = f"IPv6 {src} > {dst}", data[6]
        else:
            src = socket.inet_ntop(socket.AF_INET, data[12:16])
            dst = socket.inet_ntop(socket.AF_INET, data[16:20])
            head, proto = f"IPv4 {src} > {dst}", data[9]
        name = _IPV6_NH.get(proto, f"proto {proto}")
        return f"{head} {name} (malformed) {len(data)} B"
    except Exception:
        return _not_ip(data)


def _summarize6(data: bytes) -> str:
    pkt = inet6.IPv6(data)
    parts = [f"IPv6 {pkt.src} > {pkt.dst}"]
    nh = pkt.nh
    layer = pkt.payload
    first_fragment = True
    while isinstance(layer, _IPV6_EXT):
        if isinstance(layer, _IPV6_FRAG):
            off = (layer.offset or 0) * 8
            parts.append(f"frag id 0x{layer.id or 0:x} off {off}{' MF' if layer.m else ''}")
            first_fragment = off == 0
        nh = layer.nh
        layer = layer.payload
    parts.append(_upper(layer, nh, _IPV6_NH.get(nh), first_fragment, icmp6=True))
    if pkt.plen is not None and 40 + pkt.plen > len(data) and pkt.plen:
        parts.append("truncated")
    parts.append(f"{len(data)} B")
    return " ".join(p for p in parts if p)


def _summarize4(data: bytes) -> str:
    pkt = inet.IP(data)
    parts = [f"IPv4 {pkt.src} > {pkt.dst}"]
    more = bool(int(pkt.flags) & 1)
    off = (pkt.frag or 0) * 8
    if more or off:
        parts.append(f"frag id 0x{pkt.id:x} off {off}{' MF' if more else ''}")
    proto_name = _IPV6_NH.get(pkt.proto) if pkt.proto not in (0, 43, 44, 60) else None
    if proto_name is None:
        try:
            proto_name = pkt.get_field("proto").i2repr(pkt, pkt.proto)
        except Exception:
            proto_name = None
        if proto_name == str(pkt.proto):
            proto_name = None
    parts.append(_upper(pkt.payload, pkt.proto, proto_name, off == 0, icmp6=False))
    if pkt.len is not None and pkt.len > len(data):
        parts.append("truncated")
    parts.append(f"{len(data)} B")
    return " ".join(p for p in parts if p)


def _upper(
    layer: Packet, proto: int, proto_name: str | None, first_fragment: bool, icmp6: bool
) -> str:
    """Describe the transport / ICMP layer."""
    if not first_fragment:
        return f"{proto_name or f'proto {proto}'} data"
    if isinstance(layer, inet.UDP):
        return _udp(layer)
    if isinstance(layer, inet.TCP):
        return f"TCP {layer.sport} > {layer.dport} [{layer.flags}]"
    if icmp6 and proto == 58:
        return _icmp6(layer)
    if not icmp6 and isinstance(layer, inet.ICMP):
        return _icmp4(layer)
    if proto_name:
        return clean(proto_name)
    if not isinstance(layer, Raw | NoPayload) and layer.name:
        return clean(layer.name)
    return f"proto {proto}"


def _udp(udp: Packet) -> str:
    text = f"UDP {udp.sport} > {udp.dport}"
    if udp.sport in _COAP_PORTS or udp.dport in _COAP_PORTS:
        payload = udp.payload
        if not isinstance(payload, NoPayload):
            hint = _coap_hint(_raw_bytes(payload))
            if hint:
                text += " " + hint
    return text


def _coap_hint(payload: bytes) -> str | None:
    # CoAP version 1, token length <= 8; DTLS records (CoAPS) start with 20..25.
    if len(payload) < 4:
        return None
    if 20 <= payload[0] <= 25 and payload[1] == 0xFE:
        return "DTLS"
    if payload[0] >> 6 != 1 or payload[0] & 0x0F > 8 or payload[1] >> 5 not in (0, 2, 4, 5):
        return None
    coap_cls = _coap()
    if coap_cls is None:
        return None
    try:
        msg = coap_cls(payload)
        mtype = _COAP_TYPES[msg.type]
        code = int(msg.code)
        code_name = _coap_code(code)
        paths: list[str] = []
        queries: list[str] = []
        for opt in msg.options or []:
            name, value = opt[0], opt[1]
            if name == "Uri-Path":
                paths.append(_opt_text(value))
            elif name == "Uri-Query":
                queries.append(_opt_text(value))
    except Exception:
        return None
    text = f"CoAP {mtype} {code_name}"
    if paths or (1 <= code <= 31):  # request (class 0): always show the path
        uri = "/" + "/".join(paths)
        if queries:
            uri += "?" + "&".join(queries)
        text += " " + clean(uri)
    return text


_COAP_CODES = {
    0: "EMPTY",
    1: "GET",
    2: "POST",
    3: "PUT",
    4: "DELETE",
    5: "FETCH",
    6: "PATCH",
    7: "iPATCH",
    95: "2.31 Continue",
    136: "4.08 Request Entity Incomplete",
    137: "4.09 Conflict",
}


def _coap_code(code: int) -> str:
    name = _COAP_CODES.get(code)
    if name is None and code >= 32:
        from scapy.contrib.coap import coap_codes

        name = coap_codes.get(code)
    return name or f"{code >> 5}.{code & 0x1F:02d}"


def _opt_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _icmp6(layer: Packet) -> str:
    raw = _raw_bytes(layer) if not isinstance(layer, NoPayload) else b""
    if not raw:
        return "ICMPv6"
    icmp_type = raw[0]
    name = _ICMP6_TYPES.get(icmp_type, f"type {icmp_type}")
    text = f"ICMPv6 {name}"
    if isinstance(layer, inet6.ICMPv6EchoRequest | inet6.ICMPv6EchoReply):
        text += f" (id 0x{layer.id:x} seq {layer.seq})"
    elif isinstance(layer, inet6.ICMPv6ND_NS | inet6.ICMPv6ND_NA):
        text += f" (tgt {layer.tgt})"
    elif icmp_type not in _ICMP6_TYPES or icmp_type < 128:
        text += f" (code {raw[1]})" if len(raw) > 1 else ""
    return text


def _icmp4(layer: Packet) -> str:
    icmp_type, code = layer.type, layer.code
    name = _ICMP_TYPES.get(icmp_type, f"type {icmp_type}")
    text = f"ICMP {name}"
    if icmp_type in (0, 8, 13, 14, 15, 16, 17, 18):
        text += f" (id 0x{layer.id:x} seq {layer.seq})"
    else:
        code_name = _ICMP_CODES.get(icmp_type, {}).get(code)
        text += f" {code_name}" if code_name else f" (code {code})"
    return text


def dump(packet: bytes) -> str:
    """Full multi-line Scapy dump of a raw IP packet (hexdump if not IP); never raises."""
    try:
        data = bytes(packet)
    except Exception:
        return "not IP (? B)"
    try:
        version = _ip_version(data)
        if version:
            _coap()  # let scapy dissect CoAP on 5683 as well
            with quiet():
                pkt = inet6.IPv6(data) if version == 6 else inet.IP(data)
                return str(pkt.show(dump=True)).rstrip("\n")
    except Exception as exc:
        head = f"{summarize(data)}\n(dump failed: {type(exc).__name__}: {clean(str(exc))})"
    else:
        head = _not_ip(data)
    try:
        return head + ("\n" + hexdump(data, dump=True) if data else "")
    except Exception:
        return head
