"""Packet capture helpers: a small pcapng writer and one-line packet summaries.

The writer produces files that Wireshark / ``tshark -r`` can read at any time,
including while the writer is still open: blocks are only ever written whole
and, by default, pushed to the file after every packet.

The summaries are meant for debugging output (``-v`` / ``-vv``) and never raise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from scapy.layers import inet, inet6
from scapy.packet import NoPayload, Packet, Raw
from scapy.utils import hexdump

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IEEE802_15_4_NOFCS",
    "LINKTYPE_RAW",
    "INBOUND",
    "OUTBOUND",
    "PcapNgWriter",
    "dump",
    "summarize",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, what the tunnel carries
LINKTYPE_IEEE802_15_4_NOFCS = 230

# epb_flags direction bits (pcapng spec): the packet was received / sent on its interface
INBOUND = 1
OUTBOUND = 2

# --------------------------------------------------------------------------- pcapng writer

_BT_SHB = 0x0A0D0D0A
_BT_IDB = 0x00000001
_BT_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_EPB_FLAGS = 2
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3

_MAX_OPT_LEN = 0xFFFF
_MAX_PENDING = 4096  # blocks buffered with autoflush=False before a forced write
_PAD = b"\x00\x00\x00"


def _pad4(n: int) -> int:
    return -n & 3


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    """Encode a pcapng option list (empty bytes if there are no options)."""
    if not opts:
        return b""
    parts = []
    for code, value in opts:
        value = value[:_MAX_OPT_LEN]
        parts.append(struct.pack("<HH", code, len(value)))
        parts.append(value)
        parts.append(_PAD[: _pad4(len(value))])
    parts.append(struct.pack("<HH", _OPT_ENDOFOPT, 0))
    return b"".join(parts)


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if len(data) > _MAX_OPT_LEN:  # cut on a character boundary
        data = data[:_MAX_OPT_LEN].decode("utf-8", "ignore").encode("utf-8")
    return data


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)  # type + 2 x length + body (body is already 32-bit aligned)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """Minimal pcapng writer (little-endian, microsecond timestamps), no threads.

    ``path_or_file`` is a path (created or truncated) or a binary file object;
    a file object given by the caller is flushed but not closed by :meth:`close`.

    By default every block is written to the file as soon as it is produced, so the
    file is always a complete, readable capture. With ``autoflush=False`` packets stay
    buffered until the caller calls :meth:`flush` (or :meth:`close`): for a caller with
    its own event loop that flushes once per loop iteration. Interface blocks are
    always written at once, and blocks are never split, so the file on disk is always a
    valid pcapng prefix.
    """

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | BinaryIO,
        autoflush: bool = True,
    ) -> None:
        self._pending: list[bytes] = []
        self._autoflush = autoflush
        self._linktypes: list[int] = []
        self._snaplens: list[int] = []
        self._closed = False
        if isinstance(path_or_file, str | os.PathLike):
            self.name = os.fspath(path_or_file)
            try:
                # Unbuffered: we buffer whole blocks ourselves, so a flush is one write().
                self._file: BinaryIO = open(self.name, "wb", buffering=0)
            except OSError as exc:
                raise _open_error(self.name, exc) from exc
            self._owns_file = True
        else:
            self._file = path_or_file
            self.name = getattr(path_or_file, "name", "<file>")
            self._owns_file = False
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([(_SHB_USERAPPL, b"ioppytest agent")])
        try:
            self._emit(_block(_BT_SHB, body), force_flush=True)
        except BaseException:
            self._closed = True
            if self._owns_file:
                self._file.close()
            raise

    # -- public API

    def add_interface(
        self,
        name: str,
        linktype: int = LINKTYPE_RAW,
        description: str | None = None,
        snaplen: int = 0,
    ) -> int:
        """Write an Interface Description Block; return the new interface id.

        May be called at any time, also after packets were written.
        ``snaplen`` 0 means unlimited; longer packets are truncated to it.
        """
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"invalid linktype {linktype}")
        if not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"invalid snaplen {snaplen}")
        opts = [(_IF_NAME, _text(name))]
        if description is not None:
            opts.append((_IF_DESCRIPTION, _text(description)))
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(opts)
        self._check_open()
        iface_id = len(self._linktypes)
        self._linktypes.append(linktype)
        self._snaplens.append(snaplen)
        self._emit(_block(_BT_IDB, body), force_flush=True)
        return iface_id

    def write(
        self,
        iface_id: int,
        packet: bytes,
        timestamp: float | None = None,
        comment: str | None = None,
        flags: int | None = None,
    ) -> None:
        """Write one packet as an Enhanced Packet Block.

        ``timestamp`` is in seconds since the epoch (default: now). ``flags`` is the
        epb_flags option (``INBOUND`` / ``OUTBOUND`` direction bits), omitted if None.
        """
        data = bytes(packet)
        if timestamp is None:
            ts = time.time_ns() // 1000
        else:
            ts = round(timestamp * 1_000_000)
            if ts < 0:
                raise ValueError(f"negative timestamp {timestamp}")
        orig_len = len(data)
        opt_list: list[tuple[int, bytes]] = []
        if comment is not None:
            opt_list.append((_OPT_COMMENT, _text(comment)))
        if flags is not None:
            opt_list.append((_EPB_FLAGS, struct.pack("<I", flags & 0xFFFFFFFF)))
        opts = _options(opt_list)
        self._check_open()
        if not 0 <= iface_id < len(self._linktypes):
            raise ValueError(f"unknown interface id {iface_id}")
        snaplen = self._snaplens[iface_id]
        if snaplen and orig_len > snaplen:
            data = data[:snaplen]
        head = struct.pack(
            "<IIIII", iface_id, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, len(data), orig_len
        )
        body = b"".join((head, data, _PAD[: _pad4(len(data))], opts))
        self._emit(_block(_BT_EPB, body))

    def flush(self) -> None:
        """Write all buffered blocks to the file."""
        if not self._closed:
            self._write_pending()

    def close(self) -> None:
        """Flush and close (the file is only closed if the writer opened it). Idempotent."""
        if self._closed:
            return
        try:
            self._write_pending()
        finally:
            self._closed = True
            if self._owns_file:
                self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PcapNgWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("pcapng writer is closed")

    def _emit(self, block: bytes, force_flush: bool = False) -> None:
        self._pending.append(block)
        if force_flush or self._autoflush or len(self._pending) >= _MAX_PENDING:
            self._write_pending()  # (a caller's late flush must not grow memory unbounded)

    def _write_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if self._owns_file:  # raw FileIO: write() may be partial
                view = memoryview(data)
                while view:
                    view = view[self._file.write(view) :]
            else:
                self._file.write(data)
        if not self._owns_file:
            flush = getattr(self._file, "flush", None)
            if flush is not None:
                flush()


def _open_error(path: str, exc: OSError) -> OSError:
    reason = exc.strerror or str(exc)
    err = type(exc)(f"cannot open capture file {path!r}: {reason}")
    err.errno = exc.errno  # keep errno, but without the "[Errno N]" prefix in str()
    return err


# --------------------------------------------------------------------------- summaries

_IPV6_EXT = inet6._IPv6ExtHdr  # hop-by-hop, routing, fragment, destination options
_IPV6_FRAG = inet6.IPv6ExtHdrFragment
_ICMP6_TYPES: dict[int, str] = inet6.icmp6types
_IPV6_NH: dict[int, str] = inet6.ipv6nh
_ICMP_TYPES: dict[int, str] = inet.icmptypes
_ICMP_CODES: dict[int, dict[int, str]] = inet.icmpcodes
_COAP_PORTS = (5683, 5684)
_COAP_TYPES = ("CON", "NON", "ACK", "RST")


class _QuietFilter(logging.Filter):
    """Drops Scapy's dissection warnings (e.g. malformed CoAP options) in _quiet() blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_quiet_filter = _QuietFilter()
logging.getLogger("scapy.runtime").addFilter(_quiet_filter)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    local = _quiet_filter.local
    local.depth = getattr(local, "depth", 0) + 1
    try:
        yield
    finally:
        local.depth -= 1


_coap_cls: type[Packet] | None = None
_coap_loaded = False


def _coap() -> type[Packet] | None:
    """Import scapy's CoAP dissector on first use (None if unavailable)."""
    global _coap_cls, _coap_loaded
    if not _coap_loaded:
        _coap_loaded = True
        try:
            from scapy.contrib.coap import CoAP
        except Exception:  # pragma: no cover - scapy without contrib
            CoAP = None  # noqa: N806
        _coap_cls = CoAP
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


def _clean(text: str, limit: int = 80) -> str:
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
            with _quiet():
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
        return _clean(proto_name)
    if not isinstance(layer, Raw | NoPayload) and layer.name:
        return _clean(layer.name)
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
        text += " " + _clean(uri)
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
            with _quiet():
                pkt = inet6.IPv6(data) if version == 6 else inet.IP(data)
                return str(pkt.show(dump=True)).rstrip("\n")
    except Exception as exc:
        head = f"{summarize(data)}\n(dump failed: {type(exc).__name__}: {_clean(str(exc))})"
    else:
        head = _not_ip(data)
    try:
        return head + ("\n" + hexdump(data, dump=True) if data else "")
    except Exception:
        return head
