"""Receive coalescing for the TUN: consecutive TCP segments of one flow, addressed to
this host, become one large segment before they are written (what a network card's GRO
does). Pure, no I/O.

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

from collections.abc import Collection

MAX_IP_LEN = 65535
M = 0xFFFF  # ones' complement sums are sums modulo 0xffff (2**16 == 1 modulo 0xffff)
_ACK, _PSH = 0x10, 0x08


def _sum16(data: bytes) -> int:
    """Ones' complement sum of 16-bit big-endian words (even length), modulo 0xffff."""
    return int.from_bytes(data, "big") % M


class _Run:
    """Segments of one flow waiting to be merged, and the slot their result takes."""

    __slots__ = (
        "first",
        "ip_hl",
        "hl",
        "segs",
        "size",
        "next_seq",
        "total",
        "slot",
        "same",
        "open",
    )

    def __init__(
        self, packet: bytes, ip_hl: int, hl: int, seq: int, plen: int, same: bytes, slot: int
    ) -> None:
        self.first = packet
        self.ip_hl = ip_hl
        self.hl = hl  # IP + TCP header length
        self.segs = [packet]
        self.size = plen
        self.next_seq = (seq + plen) & 0xFFFFFFFF
        self.total = len(packet)
        self.slot = slot
        self.same = same
        # a short (or odd-sized) segment or a PSH ends the run
        self.open = plen % 2 == 0 and not packet[ip_hl + 13] & _PSH


def _parse(
    packet: bytes, local: Collection[bytes]
) -> tuple[bytes, int, int, int, int, bytes] | None:
    """(flow, IP header length, IP+TCP header length, seq, payload length, fields that must
    match) of a segment that may merge, else None."""
    n = len(packet)
    if n < 40:
        return None
    v = packet[0]
    if v == 0x45:
        if (
            packet[9] != 6
            or packet[6] & 0x3F
            or packet[7]
            or int.from_bytes(packet[2:4], "big") != n
            or packet[16:20] not in local
        ):
            return None
        ip_hl = 20
        flow = packet[12:24]
        same_ip = packet[1:2] + bytes((packet[6] & 0x40, packet[8]))
    elif v >> 4 == 6:
        if n < 60 or packet[6] != 6 or int.from_bytes(packet[4:6], "big") + 40 != n:
            return None
        if packet[24:40] not in local:
            return None
        ip_hl = 40
        flow = packet[8:44]
        same_ip = packet[0:4] + packet[7:8]
    else:
        return None
    t = ip_hl
    doff = (packet[t + 12] >> 4) * 4
    flags = packet[t + 13]
    hl = t + doff
    if doff < 20 or hl > n or flags & ~_PSH != _ACK:
        return None
    plen = n - hl
    if plen <= 0:
        return None
    seq = int.from_bytes(packet[t + 4 : t + 8], "big")
    # ACK number, data offset, window, urgent pointer, options
    same = same_ip + packet[t + 8 : t + 13] + packet[t + 14 : t + 16] + packet[t + 18 : hl]
    return flow, ip_hl, hl, seq, plen, same


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


def coalesce(packets: list[bytes], local: Collection[bytes]) -> list[bytes]:
    """The packets to write for `packets` (in arrival order): runs of mergeable TCP
    segments to one of the `local` addresses (4 or 16 address bytes) merged, each in the
    place of its first segment; everything else unchanged. Order within a flow is kept."""
    if len(packets) < 2 or not local:
        return packets
    out: list[bytes | _Run] = []
    runs: dict[bytes, _Run] = {}
    for p in packets:
        parsed = _parse(p, local)
        if parsed is None:
            if runs and len(p) >= 40:
                # anything between the same two hosts (a FIN, a pure ACK, a segment with
                # IP options) goes after what we hold: no later segment may overtake it
                pair = p[12:20] if p[0] >> 4 == 4 else p[8:40]
                for key in [k for k in runs if k.startswith(pair)]:
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
        run = _Run(p, ip_hl, hl, seq, plen, same, len(out))
        runs[flow] = run
        out.append(run)
    return [x if type(x) is bytes else _merge(x) for x in out]  # type: ignore[arg-type]
