"""`agent sniff --filter`: a small tcpdump-like (BPF-like) filter language, pure Python.

Evaluated on the raw bytes of each packet by a fixed-offset header parser (no Scapy, no
libpcap, no compilation to BPF). The grammar, a subset of pcap-filter(7):

    expr      := or
    or        := and { ("or" | "||") and }
    and       := unary { ("and" | "&&") unary }
    unary     := ("not" | "!") unary | "(" expr ")" | primitive
    primitive := ip | ip6 | icmp | icmp6 | udp | tcp | coap | wpan
               | [src | dst] host ADDR           (also "src ADDR", "dst ADDR")
               | [src | dst] net ADDR/LEN        (a bare ADDR means one host)
               | [src | dst] port PORT
               | [src | dst] portrange PORT-PORT
               | proto PROTO                     (transport protocol, after IPv6 ext headers)
               | less N | greater N              (packet length <= N, >= N bytes)

`ip`, `ip6`, `udp`, `tcp` may be followed by a primitive that narrows them, as in tcpdump:
`udp port 5683` is `udp and port 5683`, `ip6 host bbbb::1` is `ip6 and host bbbb::1`.
PORT is a number or `coap` (5683) / `coaps` (5684); PROTO a number or icmp, tcp, udp,
icmp6. `coap` is `udp and (port 5683 or port 5684)`. `wpan` matches 802.15.4 frames (the
serial mode); every IP primitive is false on them. ADDR is an IPv4 or IPv6 literal
(no host names). Ports match only in the first fragment of a fragmented packet.

Differences from tcpdump: `and` binds tighter than `or` (tcpdump gives them equal
precedence, left to right: use parentheses when mixing them); a qualifier is not carried
over (`host a or b` is an error: write `host a or host b`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.ipheader import ipv6_upper_layer

__all__ = ["Filter", "FilterError", "Header", "compile_filter", "parse", "parse_header"]

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmp6": 58}
PORT_NAMES = {"coap": 5683, "coaps": 5684}
COAP_PORTS = (5683, 5684)
_MAX_DEPTH = 64  # nesting of parentheses / not


class FilterError(ValueError):
    """A filter expression that cannot be parsed; str() says what and where."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position + 1})")
        self.position = position


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Prim:
    """One primitive. kind: a protocol word, "host", "net", "port", "portrange",
    "proto", "less" or "greater"; qual: "", "src" or "dst"; value: canonical text."""

    kind: str
    qual: str = ""
    value: str = ""

    def __str__(self) -> str:
        return " ".join(p for p in (self.qual, self.kind, self.value) if p)


@dataclass(frozen=True)
class Not:
    expr: Node

    def __str__(self) -> str:
        return f"not {self.expr}"


@dataclass(frozen=True)
class And:
    left: Node
    right: Node

    def __str__(self) -> str:
        return f"({self.left} and {self.right})"


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node

    def __str__(self) -> str:
        return f"({self.left} or {self.right})"


Node = Prim | Not | And | Or

_WORD_PROTOS = ("ip", "ip6", "icmp", "icmp6", "udp", "tcp", "coap", "wpan")
_NARROWABLE = ("ip", "ip6", "udp", "tcp")
_QUALIFIED = ("host", "net", "port", "portrange")
_NARROWING = ("src", "dst", "proto", *_QUALIFIED)
_TOKEN_RE = re.compile(r"\s*(\(|\)|&&|\|\||!|[^\s()!&|]+|[&|])")


def _tokens(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            break  # only trailing white space is left
        out.append((m.group(1), m.start(1)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    # -- helpers

    def peek(self) -> str | None:
        return self.toks[self.i][0].lower() if self.i < len(self.toks) else None

    def pos(self) -> int:
        return self.toks[self.i][1] if self.i < len(self.toks) else len(self.text)

    def take(self) -> str:
        tok = self.toks[self.i][0]
        self.i += 1
        return tok

    def fail(self, message: str) -> FilterError:
        tok = self.peek()
        found = f"{self.toks[self.i][0]!r}" if tok is not None else "end of expression"
        return FilterError(f"{message}, found {found}", self.pos())

    # -- grammar

    def parse(self) -> Node:
        if not self.toks:
            raise FilterError("empty filter expression", 0)
        node = self.or_()
        if self.peek() is not None:
            raise self.fail("expected 'and', 'or' or the end")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek() in ("or", "||"):
            self.take()
            node = Or(node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.unary()
        while self.peek() in ("and", "&&"):
            self.take()
            node = And(node, self.unary())
        return node

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise FilterError("expression nested too deeply", self.pos())
        try:
            tok = self.peek()
            if tok in ("not", "!"):
                self.take()
                return Not(self.unary())
            if tok == "(":
                self.take()
                node = self.or_()
                if self.peek() != ")":
                    raise self.fail("expected ')'")
                self.take()
                return node
            return self.primitive()
        finally:
            self.depth -= 1

    def primitive(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise self.fail("expected a primitive (host, port, udp, icmp6...)")
        if tok in _WORD_PROTOS:
            self.take()
            node: Node = Prim(tok)
            nxt = self.peek()
            if tok in _NARROWABLE and nxt in _NARROWING:
                node = And(node, self.primitive())
            return node
        if tok in ("src", "dst"):
            self.take()
            kind = self.peek()
            if kind in _QUALIFIED:
                self.take()
                return self.qualified(kind, tok)
            if kind is not None and kind not in ("(", ")", "and", "or", "not", "!", "&&", "||"):
                return self.qualified("host", tok)  # tcpdump: "src ADDR" is "src host ADDR"
            raise self.fail(f"expected host, net, port or an address after {tok!r}")
        if tok in _QUALIFIED:
            self.take()
            return self.qualified(tok, "")
        if tok == "proto":
            self.take()
            return Prim("proto", "", str(self.number_or_name(PROTOCOLS, 255, "protocol")))
        if tok in ("less", "greater"):
            self.take()
            return Prim(tok, "", str(self.number_or_name({}, 65535, "length")))
        raise self.fail("expected a primitive (host, port, udp, icmp6...)")

    def qualified(self, kind: str, qual: str) -> Prim:
        if kind == "port":
            return Prim("port", qual, str(self.number_or_name(PORT_NAMES, 65535, "port")))
        if kind == "portrange":
            start = self.pos()
            if self.peek() is None:
                raise self.fail("expected a port range like 5683-5684")
            text = self.take()
            lo, sep, hi = text.lower().partition("-")
            if not sep:
                raise FilterError(f"expected a port range like 5683-5684, found {text!r}", start)
            a, b = _port_value(lo, start), _port_value(hi, start)
            if a > b:
                raise FilterError(f"empty port range {text!r}", start)
            return Prim("portrange", qual, f"{a}-{b}")
        start = self.pos()
        if self.peek() is None:
            raise self.fail(f"expected an address after {kind!r}")
        text = self.take()
        if kind == "host":
            try:
                return Prim("host", qual, str(ipaddress.ip_address(text)))
            except ValueError:
                raise FilterError(f"not an IP address: {text!r}", start) from None
        try:
            return Prim("net", qual, str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise FilterError(f"not a network (ADDR/LEN): {text!r}", start) from None

    def number_or_name(self, names: dict[str, int], most: int, what: str) -> int:
        start = self.pos()
        tok = self.peek()
        if tok is None:
            raise self.fail(f"expected a {what}")
        self.take()
        if tok in names:
            return names[tok]
        if not tok.isdigit() or len(tok) > 6 or int(tok) > most:
            raise FilterError(f"invalid {what} {tok!r}", start)
        return int(tok)


def _port_value(text: str, start: int) -> int:
    if text in PORT_NAMES:
        return PORT_NAMES[text]
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise FilterError(f"invalid port {text!r}", start)
    return int(text)


def parse(text: str) -> Node:
    """The syntax tree of a filter expression; FilterError if it is not one."""
    return _Parser(text).parse()


# --------------------------------------------------------------------------- header parser


@dataclass(frozen=True)
class Header:
    """What the filter looks at. version 0: not IP (wpan: an 802.15.4 frame)."""

    length: int
    version: int = 0
    src: bytes = b""
    dst: bytes = b""
    proto: int = -1  # transport protocol (after IPv6 extension headers); -1 unknown
    sport: int = -1  # -1: no ports (not UDP/TCP, later fragment, truncated)
    dport: int = -1
    wpan: bool = False


def parse_header(packet: bytes, wpan: bool = False) -> Header:
    """Read the fields the filter uses; never raises (short or odd packets give less)."""
    n = len(packet)
    if wpan:
        return Header(n, wpan=True)
    if n < 1:
        return Header(n)
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if n < 20 or ihl < 20:
            return Header(n)
        proto = packet[9]
        first = (int.from_bytes(packet[6:8], "big") & 0x1FFF) == 0
        return _ports(packet, n, 4, packet[12:16], packet[16:20], proto, ihl, first)
    if version == 6:
        if n < 40:
            return Header(n)
        nh, off, first, _seen = ipv6_upper_layer(packet, n)
        return _ports(packet, n, 6, packet[8:24], packet[24:40], nh, off, first)
    return Header(n)


def _ports(
    packet: bytes, n: int, version: int, src: bytes, dst: bytes, proto: int, off: int, first: bool
) -> Header:
    sport = dport = -1
    if first and proto in (6, 17) and off + 4 <= n:
        sport = int.from_bytes(packet[off : off + 2], "big")
        dport = int.from_bytes(packet[off + 2 : off + 4], "big")
    return Header(n, version, bytes(src), bytes(dst), proto, sport, dport)


# --------------------------------------------------------------------------- evaluation

Test = Callable[[Header], bool]


def _addr_test(qual: str, match: Callable[[bytes], bool], version: int) -> Test:
    if qual == "src":
        return lambda h: h.version == version and match(h.src)
    if qual == "dst":
        return lambda h: h.version == version and match(h.dst)
    return lambda h: h.version == version and (match(h.src) or match(h.dst))


def _port_test(qual: str, lo: int, hi: int) -> Test:
    if qual == "src":
        return lambda h: lo <= h.sport <= hi
    if qual == "dst":
        return lambda h: lo <= h.dport <= hi
    return lambda h: lo <= h.sport <= hi or lo <= h.dport <= hi


def _prim_test(p: Prim) -> Test:
    kind = p.kind
    if kind == "ip":
        return lambda h: h.version == 4
    if kind == "ip6":
        return lambda h: h.version == 6
    if kind == "icmp":
        return lambda h: h.version == 4 and h.proto == 1
    if kind == "icmp6":
        return lambda h: h.version == 6 and h.proto == 58
    if kind in ("udp", "tcp"):
        proto = PROTOCOLS[kind]
        return lambda h: h.version != 0 and h.proto == proto
    if kind == "coap":
        return lambda h: (
            h.version != 0 and h.proto == 17 and (h.sport in COAP_PORTS or h.dport in COAP_PORTS)
        )
    if kind == "wpan":
        return lambda h: h.wpan
    if kind == "host":
        addr = ipaddress.ip_address(p.value)
        packed = addr.packed
        return _addr_test(p.qual, lambda a: a == packed, addr.version)
    if kind == "net":
        net = ipaddress.ip_network(p.value)
        base, plen, width = int(net.network_address), net.prefixlen, net.max_prefixlen
        shift = width - plen
        return _addr_test(
            p.qual, lambda a: (int.from_bytes(a, "big") >> shift) == (base >> shift), net.version
        )
    if kind == "port":
        port = int(p.value)
        return _port_test(p.qual, port, port)
    if kind == "portrange":
        lo, hi = (int(x) for x in p.value.split("-"))
        return _port_test(p.qual, lo, hi)
    if kind == "proto":
        proto = int(p.value)
        return lambda h: h.version != 0 and h.proto == proto
    if kind == "less":
        size = int(p.value)
        return lambda h: h.length <= size
    if kind == "greater":
        size = int(p.value)
        return lambda h: h.length >= size
    raise ValueError(f"unknown primitive {kind!r}")  # pragma: no cover (parser makes no such)


def _compile(node: Node) -> Test:
    if isinstance(node, Prim):
        return _prim_test(node)
    if isinstance(node, Not):
        inner = _compile(node.expr)
        return lambda h: not inner(h)
    left, right = _compile(node.left), _compile(node.right)
    if isinstance(node, And):
        return lambda h: left(h) and right(h)
    return lambda h: left(h) or right(h)


class Filter:
    """A compiled filter: `matches(packet)` on raw IP bytes (or an 802.15.4 frame)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tree = parse(text)
        self._test = _compile(self.tree)

    def matches(self, packet: bytes, wpan: bool = False) -> bool:
        return self._test(parse_header(packet, wpan))

    def __str__(self) -> str:
        return str(self.tree)


def compile_filter(text: str) -> Filter:
    return Filter(text)
