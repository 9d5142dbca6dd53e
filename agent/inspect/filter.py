"""`agent sniff --filter`: tcpdump's filter language (pcap-filter(7)), by libpcap itself.

The expression is compiled by libpcap (``pcap_compile`` on a dead handle of link type
raw IP, as ``tcpdump -r`` does for a raw-IP capture) and each packet is run through the
resulting BPF program by libpcap's ``bpf_filter``, through ctypes: a filter selects
exactly the packets tcpdump would select, operator precedence included (``and`` and
``or`` have equal precedence and associate left to right).

Two words of the agent's own are translated before libpcap sees the expression:

* ``coap``: CoAP, ``(udp port 5683 or udp port 5684)``; after ``port`` / ``portrange``
  ``coap`` is 5683 and ``coaps`` 5684 (the names need not be in /etc/services);
* ``wpan``: 802.15.4 frames (the serial probe mode). On IP packets it is false; an
  802.15.4 frame is run through the expression compiled for link type
  IEEE802_15_4_NOFCS with ``wpan`` true when libpcap can compile it for that link type
  (``wpan``, ``greater 40``...). An expression with IP words (``udp port 5683``,
  ``coap``, ``host fe80::1``) cannot be: libpcap does not look inside 6LoWPAN. Such an
  expression is then run, with ``wpan`` true, on the IPv6 packet the frame carries,
  decompressed (agent.inspect.sixlowpan; a fragmented datagram on the frame that
  completes it). A frame without a whole IPv6 packet (an ack, a fragment that does not
  complete its datagram, an undecodable frame) fails it.

Host names are resolved when the filter is compiled, as tcpdump does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from functools import cache

__all__ = ["Filter", "FilterError", "compile_filter", "translate"]

COAP_EXPR = "(udp port 5683 or udp port 5684)"
PORT_NAMES = {"coap": "5683", "coaps": "5684"}
SNAPLEN = 65535
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
DLT_IEEE802_15_4_NOFCS = 230
_ALWAYS = "greater 0"  # every packet is at least 0 bytes long
_NEVER = "less 0"  # and never at most 0: a true and a false primitive for any link type
_WORD = re.compile(r"(?<![\w.:/-])(coaps?|wpan)(?![\w.:/-])")
_PREV_WORD = re.compile(r"([\w-]+)\W*$")


class FilterError(ValueError):
    """A filter libpcap cannot compile (or libpcap missing); str() is one line."""


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@cache
def _libpcap() -> ctypes.CDLL:
    lib = None
    for name in (ctypes.util.find_library("pcap"), "libpcap.so.0.8", "libpcap.so.1"):
        if name:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
    if lib is None:
        raise FilterError("--filter needs libpcap: install it (Debian: apt-get install libpcap0.8)")
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.restype = ctypes.c_int
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Program),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_close.restype = None
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.restype = None
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_datalink_name_to_val.restype = ctypes.c_int
    lib.pcap_datalink_name_to_val.argtypes = [ctypes.c_char_p]
    lib.bpf_filter.restype = ctypes.c_uint
    lib.bpf_filter.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
    return lib


def translate(text: str, wpan: bool = False) -> str:
    """The pcap-filter expression for text: the agent's words replaced (module docstring)."""

    def word(m: re.Match[str]) -> str:
        prev = _PREV_WORD.search(text, 0, m.start())
        after_port = prev is not None and prev.group(1) in ("port", "portrange")
        name = m.group(1)
        if name in PORT_NAMES and after_port:
            return PORT_NAMES[name]
        if name == "coap":
            return COAP_EXPR
        if name == "wpan":
            return _ALWAYS if wpan else _NEVER
        return name  # coaps outside a port: left to libpcap (and its error)

    return _WORD.sub(word, text)


class _Bpf:
    """One compiled BPF program for a link type; freed with the object."""

    def __init__(self, lib: ctypes.CDLL, expression: str, linktype: int) -> None:
        self._lib = lib
        self._prog = _Program()
        handle = lib.pcap_open_dead(linktype, SNAPLEN)
        if not handle:
            raise FilterError("libpcap could not open a handle to compile the filter")
        try:
            rc = lib.pcap_compile(
                handle, ctypes.byref(self._prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN
            )
            if rc != 0:
                err = (lib.pcap_geterr(handle) or b"cannot compile").decode(errors="replace")
                raise FilterError(err.splitlines()[0] if err else "cannot compile")
        finally:
            lib.pcap_close(handle)
        self.insns = self._prog.bf_insns

    def __del__(self) -> None:
        if getattr(self, "insns", None):
            self.insns = None
            try:
                self._lib.pcap_freecode(ctypes.byref(self._prog))
            except Exception:  # noqa: S110 (interpreter shutdown: ctypes may be half gone)
                pass


class Filter:
    """A compiled filter: `matches(packet)` on raw IP bytes (or an 802.15.4 frame)."""

    def __init__(self, text: str) -> None:
        self.text = text
        if not text.strip():
            raise FilterError("empty filter expression")
        if "\x00" in text:
            raise FilterError("a filter cannot contain a NUL character")
        lib = _libpcap()
        raw = lib.pcap_datalink_name_to_val(b"RAW")
        try:
            ip = _Bpf(lib, translate(text), raw)
        except FilterError as exc:
            raise FilterError(f"{exc} in {text!r}") from None
        self._ip = ip
        self._filter = lib.bpf_filter
        self._inner: _Bpf | None = None
        try:
            self._wpan: _Bpf | None = _Bpf(lib, translate(text, wpan=True), DLT_IEEE802_15_4_NOFCS)
        except FilterError:  # IP words: run on the IPv6 packet inside 802.15.4 frames
            self._wpan = None
            self._inner = _Bpf(lib, translate(text, wpan=True), raw)

    @property
    def needs_inner(self) -> bool:
        """True if an 802.15.4 frame is matched on the IPv6 packet inside it."""
        return self._wpan is None

    def matches(self, packet: bytes, wpan: bool = False, inner: bytes | None = None) -> bool:
        """``packet``: raw IP, or (``wpan``) an 802.15.4 frame, then ``inner`` is the
        decompressed IPv6 packet it carries, if any (used when needs_inner)."""
        if wpan:
            if self._wpan is not None:
                prog = self._wpan
            elif self._inner is not None and inner is not None:
                prog, packet = self._inner, inner
            else:
                return False
            return bool(self._filter(prog.insns, packet, len(packet), len(packet)))
        return bool(self._filter(self._ip.insns, packet, len(packet), len(packet)))

    def __str__(self) -> str:
        return self.text


def compile_filter(text: str) -> Filter:
    return Filter(text)
