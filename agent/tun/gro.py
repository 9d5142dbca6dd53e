"""Receive offload in user space (GRO) for the TUN: consecutive TCP segments of one flow,
addressed to this host, become one large segment before they are written (what a network
card's GRO does). Pure, no I/O.

Why: every packet written into a TUN is one system call and one pass through the
kernel's TCP receive path, and the receiving TCP answers about every second segment with
an ACK that then crosses the whole tunnel back (read, publish, broker, router, broker,
write). Written as one segment of up to 64 KiB, a burst of 20-40 segments costs one write
and draws one ACK.

What merges (the rules of Linux's GRO for TCP, simplified): IPv4 without options and
not fragmented, or IPv6 with TCP right after the fixed header; the destination is one of
the addresses given (this host's: a packet the host forwards elsewhere must keep its
size, or it would exceed the next link's MTU); flags ACK or ACK+PSH only (a PSH ends a
run); same addresses, ports, ACK number, window, TCP options, TOS/traffic class and
TTL/hop limit; each segment starts where the last ended; all segments but the last have
the first one's payload size, which must be even (the checksum's 16-bit words then stay
aligned); the result stays within 65535 bytes of IP length. Anything else is passed
through unchanged, in order with its own flow's segments.

Checksums: the merged TCP checksum is derived from the segments' own checksums (RFC 1624
style arithmetic modulo 0xffff), never computed afresh from the payload: a corrupt
segment keeps the merged segment's checksum wrong, and the kernel drops it as it would
have dropped the segment (two corrupt segments in one run could cancel out, with about the
odds of one corrupt segment passing TCP's 16-bit checksum; checking every segment would
double the cost of merging).
"""

from __future__ import annotations

import struct
from collections.abc import Collection

MAX_IP_LEN = 65535
M = 0xFFFF  # ones' complement sums are sums modulo 0xffff (2**16 == 1 modulo 0xffff)
_ACK, _PSH = 0x10, 0x08


def _sum16(data: bytes) -> int:
    """Ones' complement sum of 16-bit big-endian words (even length), modulo 0xffff."""
    return int.from_bytes(data, "big") % M


class _Run:
    """Segments of one flow waiting to be merged (in `merge_segments`'s output list, in the place
    of the first)."""

    __slots__ = (
        "first",
        "ip_hl",
        "hl",
        "segs",
        "size",
        "next_seq",
        "total",
        "same",
        "open",
    )

    def __init__(
        self, packet: bytes, ip_hl: int, hl: int, seq: int, plen: int, same: tuple[object, ...]
    ) -> None:
        self.first = packet
        self.ip_hl = ip_hl
        self.hl = hl  # IP + TCP header length
        self.segs = [packet]
        self.size = plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        self.total = len(packet)
        self.same = same
        # a short (or odd-sized) segment or a PSH ends the run
        self.open = plen % 2 == 0 and not packet[ip_hl + 13] & _PSH


_V4 = struct.Struct("!BBHHHBB2x4s4sHHIIBBH2xH")
"""IPv4 (no options) + TCP: version/IHL, TOS, length, id, flags/offset, TTL, protocol,
source, destination; ports, seq, ack, data offset, flags, window, urgent pointer"""
_V6 = struct.Struct("!IHBB16s16sHHIIBBH2xH")
"""IPv6 + TCP: version/class/flow label, payload length, next header, hop limit, source,
destination; then TCP as above"""

Flow = tuple[bytes, bytes, int, int]
Parsed = tuple[Flow, int, int, int, int, tuple[object, ...]]


def _parse(packet: bytes, local: Collection[bytes]) -> Parsed | None:
    """(flow, IP header length, IP+TCP header length, seq, payload length, fields that must
    match) of a segment that may merge, else None."""
    n = len(packet)
    if n < 40:
        return None
    if packet[0] == 0x45:
        (_, tos, tl, _, frag, ttl, proto, src, dst, sp, dp, seq, ack, doff, flags, win, urg) = (
            _V4.unpack_from(packet)
        )
        if proto != 6 or frag & 0x3FFF or tl != n or dst not in local:
            return None
        ip_hl = 20
        same_ip: tuple[int, ...] = (tos, frag, ttl)
    elif packet[0] >> 4 == 6:
        if n < 60:
            return None
        (vtf, pl, nh, hlim, src, dst, sp, dp, seq, ack, doff, flags, win, urg) = _V6.unpack_from(
            packet
        )
        if nh != 6 or pl + 40 != n or dst not in local:
            return None
        ip_hl = 40
        same_ip = (vtf, hlim)
    else:
        return None
    hl = ip_hl + (doff >> 4) * 4
    if hl < ip_hl + 20 or hl > n or flags & ~_PSH != _ACK:
        return None
    plen = n - hl
    if plen <= 0:
        return None
    return (
        (src, dst, sp, dp),
        ip_hl,
        hl,
        seq,
        plen,
        (*same_ip, ack, doff, win, urg, packet[ip_hl + 20 : hl]),
    )


def _merge(run: _Run) -> bytes:
    segs = run.segs
    if len(segs) == 1:
        return segs[0]
    first, ip_hl, hl = run.first, run.ip_hl, run.hl
    t = ip_hl
    payload = b"".join([s[hl:] for s in segs])
    tcp_len_total = hl - t + len(payload)
    flags = first[t + 13] | (segs[-1][t + 13] & _PSH)
    tcp_hdr = bytearray(first[t:hl])
    tcp_hdr[13] = flags
    tcp_hdr[16:18] = b"\0\0"
    # C = -(P + H0) + sum over segments of (P_i + Hc_i), P = address sum + 6 + TCP length
    if ip_hl == 20:
        addr = _sum16(first[12:20])
    else:
        addr = _sum16(first[8:40])
    acc = 0
    for s in segs:
        acc += _sum16(s[t:hl]) + len(s) - t
    acc += len(segs) * (addr + 6)
    acc -= addr + 6 + tcp_len_total + _sum16(bytes(tcp_hdr))
    csum = acc % M
    tcp_hdr[16:18] = (csum or M).to_bytes(2, "big")
    if ip_hl == 20:
        # the header checksum updated for the new length only (RFC 1624): a header that
        # was corrupt stays so
        ip = bytearray(first[:20])
        ip[2:4] = (20 + tcp_len_total).to_bytes(2, "big")
        old = int.from_bytes(first[10:12], "big") + len(first) - 20 - tcp_len_total
        ip[10:12] = (old % M or M).to_bytes(2, "big")
    else:
        ip = bytearray(first[:40])
        ip[4:6] = tcp_len_total.to_bytes(2, "big")
    return bytes(ip) + bytes(tcp_hdr) + payload


def merge_segments(packets: list[bytes], local: Collection[bytes]) -> list[bytes]:
    """The packets to write for `packets` (in arrival order): runs of mergeable TCP
    segments to one of the `local` addresses (4 or 16 address bytes) merged, each in the
    place of its first segment; everything else unchanged. Order within a flow is kept."""
    if len(packets) < 2 or not local:
        return packets
    out: list[bytes | _Run] = []
    runs: dict[Flow, _Run] = {}
    for p in packets:
        parsed = _parse(p, local)
        if parsed is None:
            if runs and len(p) >= 40:
                # anything between the same two hosts (a FIN, a pure ACK, a segment with
                # IP options) goes after what we hold: no later segment may overtake it
                pair = (p[12:16], p[16:20]) if p[0] >> 4 == 4 else (p[8:24], p[24:40])
                for key in [k for k in runs if k[:2] == pair]:
                    del runs[key]
            out.append(p)
            continue
        flow, ip_hl, hl, seq, plen, same = parsed
        run = runs.get(flow)
        if (
            run is not None
            and run.open
            and seq == run.next_seq
            and plen <= run.size
            and same == run.same
            and run.total + plen <= MAX_IP_LEN
        ):
            run.segs.append(p)
            run.total += plen
            run.next_seq = (seq + plen) & 0xFFFFFFFF
            if plen < run.size or p[ip_hl + 13] & _PSH:
                run.open = False
            continue
        run = _Run(p, ip_hl, hl, seq, plen, same)
        runs[flow] = run
        out.append(run)
    return [x if type(x) is bytes else _merge(x) for x in out]  # type: ignore[arg-type]
