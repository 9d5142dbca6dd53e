"""Merging of TCP segments before the TUN write (agent.tun.gro): unit and
property tests against an independent checksum, and end to end through a real tunnel."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.tun.gro import merge_segments
from tests.conftest import Session, listening, needs_root, ns_run, tun_links, wait_for

A4, B4 = ipaddress.ip_address("10.2.0.1").packed, ipaddress.ip_address("10.2.0.2").packed
A6, B6 = ipaddress.ip_address("bbbb::1").packed, ipaddress.ip_address("bbbb::2").packed
LOCAL = {B4, B6}
TS = b"\x01\x01\x08\x0a" + struct.pack("!II", 1234, 99)  # NOP NOP timestamp
ACK, PSH, FIN, SYN = 0x10, 0x08, 0x01, 0x02


def ref_sum(data: bytes) -> int:
    """Ones' complement sum, the slow and obvious way (the code under test uses another)."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo(src: bytes, dst: bytes, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, 6, length)
    return src + dst + struct.pack("!IxxxB", length, 6)


def tcp_ok(p: bytes) -> bool:
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4
        return (
            ref_sum(p[:ihl]) == 0xFFFF
            and ref_sum(pseudo(p[12:16], p[16:20], len(p) - ihl) + p[ihl:]) == 0xFFFF
        )
    return ref_sum(pseudo(p[8:24], p[24:40], len(p) - 40) + p[40:]) == 0xFFFF


def segment(
    src: bytes,
    dst: bytes,
    seq: int,
    payload: bytes,
    flags: int = ACK,
    opts: bytes = TS,
    sport: int = 40000,
    ack: int = 7,
    window: int = 500,
) -> bytes:
    doff = 20 + len(opts)
    tcp = (
        struct.pack(
            "!HHIIBBHHH", sport, 5201, seq & 0xFFFFFFFF, ack, (doff // 4) << 4, flags, window, 0, 0
        )
        + opts
    )
    c = 0xFFFF - ref_sum(pseudo(src, dst, len(tcp) + len(payload)) + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    if len(src) == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, src, dst
        )
        ip = ip[:10] + struct.pack("!H", 0xFFFF - ref_sum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp) + len(payload), 6, 64, src, dst)
    return ip + tcp + payload


def payload_of(p: bytes) -> bytes:
    ihl = (p[0] & 15) * 4 if p[0] >> 4 == 4 else 40
    return p[ihl + (p[ihl + 12] >> 4) * 4 :]


def stream(
    src: bytes, dst: bytes, n: int, size: int = 1448, seq: int = 1000, last_psh: bool = True
) -> list[bytes]:
    out = []
    for i in range(n):
        flags = ACK | (PSH if last_psh and i == n - 1 else 0)
        out.append(segment(src, dst, seq + i * size, os.urandom(size), flags))
    return out


@pytest.mark.parametrize("src,dst", [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_a_burst_of_one_flow_becomes_one_segment(src: bytes, dst: bytes) -> None:
    segs = stream(src, dst, 30)
    (merged,) = merge_segments(segs, LOCAL)
    assert tcp_ok(merged)
    assert payload_of(merged) == b"".join(payload_of(s) for s in segs)
    ihl = 20 if src == A4 else 40
    addrs = slice(12, 20) if src == A4 else slice(8, 40)
    assert merged[addrs] == segs[0][addrs]
    assert merged[ihl : ihl + 4] == segs[0][ihl : ihl + 4]  # ports
    assert merged[ihl + 8 : ihl + 12] == segs[0][ihl + 8 : ihl + 12]  # ACK number
    assert merged[ihl + 4 : ihl + 8] == segs[0][ihl + 4 : ihl + 8]  # first segment's seq
    assert merged[ihl + 13] == ACK | PSH  # the last segment's PSH


def test_not_to_this_host_is_left_alone() -> None:
    segs = stream(A4, ipaddress.ip_address("10.9.0.5").packed, 10)
    assert merge_segments(segs, LOCAL) == segs
    segs = stream(A4, B4, 10)
    assert merge_segments(segs, set()) == segs


def test_too_long_is_split_at_64k() -> None:
    segs = stream(A6, B6, 50)
    out = merge_segments(segs, LOCAL)
    assert len(out) == 2 and all(len(p) <= 65535 + 40 for p in out)
    assert all(tcp_ok(p) for p in out)
    assert b"".join(map(payload_of, out)) == b"".join(map(payload_of, segs))
    v4 = merge_segments(stream(A4, B4, 50), LOCAL)
    assert len(v4) == 2 and all(len(p) <= 65535 for p in v4)


def test_gap_fin_psh_short_and_odd_segments_end_a_run() -> None:
    s = stream(A4, B4, 4, last_psh=False)
    gap = segment(A4, B4, 1000 + 5 * 1448, os.urandom(1448))
    assert len(merge_segments(s + [gap], LOCAL)) == 2
    fin = segment(A4, B4, 1000 + 4 * 1448, b"", ACK | FIN)
    after = segment(A4, B4, 1000 + 4 * 1448 + 1, os.urandom(1448))
    out = merge_segments(s[:2] + [fin] + s[2:], LOCAL)
    assert out[1] == fin and len(out) == 3  # what came after the FIN stays after it
    out = merge_segments(s + [fin, after], LOCAL)
    assert out[1:] == [fin, after]
    psh = stream(A4, B4, 3)  # PSH on the third
    more = segment(A4, B4, 1000 + 3 * 1448, os.urandom(1448))
    assert len(merge_segments(psh + [more], LOCAL)) == 2
    short = [segment(A4, B4, 1000, os.urandom(1000)), segment(A4, B4, 2000, os.urandom(1448))]
    assert len(merge_segments(short, LOCAL)) == 2  # a short segment ends the run
    odd = [segment(A4, B4, 1000, os.urandom(1001)), segment(A4, B4, 2001, os.urandom(1001))]
    assert merge_segments(odd, LOCAL) == odd


def test_different_options_window_or_ack_do_not_merge() -> None:
    a = segment(A4, B4, 1000, os.urandom(1448))
    for b in (
        segment(
            A4, B4, 2448, os.urandom(1448), opts=b"\x01\x01\x08\x0a" + struct.pack("!II", 1235, 99)
        ),
        segment(A4, B4, 2448, os.urandom(1448), window=501),
        segment(A4, B4, 2448, os.urandom(1448), ack=8),
        segment(A4, B4, 2448, os.urandom(1448), flags=ACK | 0x40),  # ECE
    ):
        assert merge_segments([a, b], LOCAL) == [a, b]


def test_two_flows_each_merged_in_the_place_of_its_first_segment() -> None:
    f1 = stream(A4, B4, 6)
    f2 = [segment(A4, B4, 9000 + i * 1448, os.urandom(1448), sport=40001) for i in range(6)]
    ping = bytes.fromhex("4500001c0001000040010000") + B4 + A4 + bytes(8)
    mixed = [f1[0], f2[0], ping, *[x for pair in zip(f1[1:], f2[1:], strict=True) for x in pair]]
    out = merge_segments(mixed, LOCAL)
    assert len(out) == 3
    assert payload_of(out[0]) == b"".join(map(payload_of, f1))
    assert payload_of(out[1]) == b"".join(map(payload_of, f2))
    assert out[2] == ping


def test_a_corrupt_segment_leaves_the_merged_checksum_wrong() -> None:
    segs = stream(A4, B4, 5)
    bad = bytearray(segs[2])
    bad[-7] ^= 0x40
    out = merge_segments(segs[:2] + [bytes(bad)] + segs[3:], LOCAL)
    assert len(out) == 1 and not tcp_ok(out[0])


def test_garbage_passes_unchanged() -> None:
    junk = [b"", b"\x45", os.urandom(39), b"\x45" + os.urandom(60), b"\x60" + os.urandom(80)]
    assert merge_segments(junk, LOCAL) == junk


FLOWS = [(A4, B4, 40000), (A4, B4, 40001), (A6, B6, 40000), (A4, b"\x0a\x09\x00\x05", 40000)]


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[bytes], int]:
    """Segments of up to four flows (one not to us), in runs, sometimes with gaps,
    flags other than ACK, odd or short sizes, a corrupt byte, and non-TCP packets."""
    seqs = {f: draw(st.integers(0, 2**32 - 1)) for f in FLOWS}
    out: list[bytes] = []
    corrupt = 0
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            out.append(draw(st.binary(max_size=80)))
            continue
        src, dst, sport = draw(st.sampled_from(FLOWS))
        flow = (src, dst, sport)
        size = draw(st.sampled_from([1448, 1448, 1448, 1448, 700, 1001, 0]))
        flags = draw(st.sampled_from([ACK, ACK, ACK, ACK | PSH, ACK | FIN, SYN, ACK | 0x40]))
        if draw(st.integers(0, 9)) == 0:
            seqs[flow] += draw(st.integers(1, 3000))  # a gap or a repeat
        p = segment(src, dst, seqs[flow], os.urandom(size), flags, sport=sport)
        if draw(st.integers(0, 19)) == 0:
            b = bytearray(p)
            b[-1 if size else 10] ^= 1
            p = bytes(b)
            corrupt += 1
        seqs[flow] = (seqs[flow] + size) & 0xFFFFFFFF
        out.append(p)
    return out, corrupt


def _key(p: bytes) -> bytes:
    """The address pair of an IPv4/IPv6 TCP packet, b"other" for anything else (random
    bytes that begin like an IPv6 header but hold no TCP header, among them)."""
    if len(p) >= 40 and p[0] == 0x45 and p[9] == 6:
        return p[12:20]
    if len(p) >= 60 and p[0] >> 4 == 6 and p[6] == 6:
        return p[8:40]
    return b"other"


def _flow(p: bytes) -> bytes:
    return _key(p) + p[20:24] if p[0] == 0x45 else _key(p) + p[40:44]


def _barrier(p: bytes) -> bool:
    """Not a segment that may merge: no payload, or flags other than ACK [+ PSH]."""
    t = 20 if p[0] == 0x45 else 40
    return not payload_of(p) or p[t + 13] & ~PSH != ACK


def _streams(packets: list[bytes]) -> tuple[dict[bytes, bytes], dict[bytes, dict[bytes, int]]]:
    """Per TCP flow the payload bytes in order (every other packet whole, per address
    pair); and at each barrier packet, how many bytes each flow of its pair had before."""
    out: dict[bytes, list[bytes]] = {}
    sent: dict[bytes, int] = {}
    seen: dict[bytes, dict[bytes, int]] = {}
    for p in packets:
        key = _key(p)
        if key == b"other":
            out.setdefault(key, []).append(p)
            continue
        flow = _flow(p)
        if _barrier(p):
            seen[p] = {f: n for f, n in sent.items() if f.startswith(key)}
        data = payload_of(p)
        out.setdefault(flow, []).append(data if data else p)
        sent[flow] = sent.get(flow, 0) + len(data)
    return {k: b"".join(v) for k, v in out.items()}, seen


@settings(max_examples=300, deadline=None)
@given(traffic())
def test_property_same_bytes_in_order_valid_checksums(case: tuple[list[bytes], int]) -> None:
    packets, corrupt = case
    out = merge_segments(packets, LOCAL)
    assert len(out) <= len(packets)
    streams_in, barriers_in = _streams(packets)
    streams_out, barriers_out = _streams(out)
    assert streams_out == streams_in  # each flow's bytes, in order
    assert barriers_out == barriers_in  # nothing overtook a FIN, SYN, pure ACK...
    originals = set(packets)
    for p in out:
        if p in originals:
            continue
        # a merged segment: to us, within 64 KiB, made only of valid segments
        assert p[16:20] == B4 or p[24:40] == B6
        assert len(p) <= 65535 + (40 if p[0] >> 4 == 6 else 0)
        assert corrupt or tcp_ok(p)
    # a corrupt segment is never made valid by merging (two corrupt segments merged into
    # one can cancel out, with the odds of any corruption passing TCP's 16-bit checksum)
    tcp_out = [p for p in out if _key(p) != b"other"]
    assert corrupt != 1 or any(not tcp_ok(p) for p in tcp_out)
    not_ours = [p for p in packets if _key(p) == A4 + b"\x0a\x09\x00\x05"]
    assert [p for p in out if _key(p) == A4 + b"\x0a\x09\x00\x05"] == not_ours
    others = [p for p in packets if _key(p) == b"other"]
    assert [p for p in out if _key(p) == b"other"] == others


# -- end to end -------------------------------------------------------------------------

SINK = r"""
import hashlib, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5999)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"""

SOURCE = r"""
import os, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
data = bytes.fromhex(sys.argv[2]) * (int(sys.argv[3]) // 32)
c = socket.create_connection((sys.argv[1], 5999), timeout=20)
c.sendall(data); c.close()
"""


def _transfer(session: Session, dst: str, size: int, sink_ns: str | None = None) -> None:
    seed = hashlib.sha256(dst.encode()).hexdigest()
    data = bytes.fromhex(seed) * (size // 32)
    ns1, ns2 = session.ns["agent_1"], sink_ns or session.ns["agent_2"]
    sink = subprocess.Popen(
        ["ip", "netns", "exec", ns2, sys.executable, "-c", SINK, dst],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "listening"
        src = ns_run(ns1, sys.executable, "-c", SOURCE, dst, seed, str(size), timeout=60)
        assert src.returncode == 0, src.stderr
        n, digest = sink.stdout.readline().split()
        assert int(n) == len(data) and digest == hashlib.sha256(data).hexdigest()
    finally:
        if sink.poll() is None:
            sink.kill()
        sink.wait()


def _merged(proc) -> int:  # type: ignore[no-untyped-def]
    m = proc.status(r"merged (\d+)")
    return int(m.group(1)) if m else 0


@pytest.mark.e2e
@needs_root
def test_bulk_tcp_arrives_intact_with_segments_merged(session: Session) -> None:
    """20 MB each way of IPv6 and IPv4 TCP arrive byte for byte (the kernel checked every
    merged checksum); agent_2 merged segments (its status line says how many), and an
    agent started with --no-gro merges none and still carries the stream."""
    session.start_router()
    session.start_agent("agent_1")
    a2 = session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    for dst in ("bbbb::2", "10.2.0.2"):
        _transfer(session, dst, 20_000_000)
    assert _merged(a2) > 1000, a2.output[-2000:]
    a2.stop(signal.SIGTERM)
    assert "merged into one" in a2.output
    a2 = session.start_agent("agent_2", "--no-gro")
    assert wait_for(
        lambda: ns_run(session.ns["agent_1"], "ping", "-c1", "-W1", "bbbb::2").returncode == 0, 15
    )
    _transfer(session, "bbbb::2", 5_000_000)
    assert a2.status(r"\| ") and _merged(a2) == 0, a2.output[-2000:]
    assert "Traceback" not in a2.output


@pytest.mark.e2e
@needs_root
def test_iperf3_through_merging_agents(session: Session) -> None:
    """iperf3 TCP both ways for 2 s each: no error, megabytes through."""
    session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns2, "iperf3", "-s", "-B", "10.2.0.2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: listening(ns2, 5201), 10), "iperf3 server did not start"
        for extra in ([], ["-R"]):
            out = ns_run(ns1, "iperf3", "-c", "10.2.0.2", "-t", "2", "-J", *extra, timeout=30)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr
            assert orjson.loads(out.stdout)["end"]["sum_received"]["bytes"] > 1_000_000
    finally:
        server.kill()
        server.wait()


@pytest.mark.e2e
@needs_root
def test_segments_the_host_forwards_are_not_merged(
    session: Session, netns: Callable[[], str]
) -> None:
    """TCP to a host behind agent_2 (its namespace forwards to a third one over a veth with
    MTU 1500): agent_2 writes those segments as they came (a merged one would exceed the
    veth's MTU and be dropped), and 5 MB arrive intact."""
    session.start_router()
    session.start_agent("agent_1")
    a2 = session.start_agent("agent_2", "--accept-any")  # takes the flooded 10.9.0.5
    assert session.learned("agent_1", "agent_2")
    ns1, ns2, ns3 = session.ns["agent_1"], session.ns["agent_2"], netns()
    for cmd in (
        [
            "ip",
            "-n",
            ns2,
            "link",
            "add",
            "gro0",
            "type",
            "veth",
            "peer",
            "name",
            "gro1",
            "netns",
            ns3,
        ],
        ["ip", "-n", ns2, "addr", "add", "10.9.0.1/24", "dev", "gro0"],
        ["ip", "-n", ns3, "addr", "add", "10.9.0.5/24", "dev", "gro1"],
        ["ip", "-n", ns2, "link", "set", "gro0", "up"],
        ["ip", "-n", ns3, "link", "set", "gro1", "up"],
        ["ip", "-n", ns3, "route", "add", "default", "via", "10.9.0.1"],
        ["ip", "netns", "exec", ns2, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ["ip", "-n", ns1, "route", "add", "10.9.0.0/24", "dev", tun_links(ns1)[0]],
    ):
        subprocess.run(cmd, check=True)
    assert wait_for(lambda: ns_run(ns1, "ping", "-c1", "-W1", "10.9.0.5").returncode == 0, 15)
    _transfer(session, "10.9.0.5", 5_000_000, sink_ns=ns3)
    assert _merged(a2) == 0, a2.output[-2000:]
    assert "Traceback" not in a2.output
