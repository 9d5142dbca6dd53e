"""The pure parts of bench.quiet and bench.hops: goals, figures, pcap reading, TCP
reassembly, finding one echo at every hop and the delays between hops."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NS, IPv6

from agent.bus import wire
from agent.bus.frames import PublishEncoder, encode_properties
from bench import hops
from bench.common import percentile
from bench.quiet import busy_pct, evaluate, together_figures

# -- goals ------------------------------------------------------------------------------


def _quiet(idle_p99: float | None, p99: float | None, loss: float | None = 0.0) -> str:
    return evaluate({"p99_ms": idle_p99}, {"p99_ms": p99, "loss_pct": loss}, {})["quiet p99"]


def test_quiet_goal_is_five_times_idle_under_50_ms_and_no_loss() -> None:
    assert _quiet(3.0, 15.0) == "PASS"
    assert _quiet(3.0, 15.1) == "FAIL"  # more than 5x idle
    assert _quiet(12.0, 50.0) == "FAIL"  # 50 ms is not under 50 ms
    assert _quiet(12.0, 49.9) == "PASS"
    assert _quiet(3.0, 4.0, loss=0.33) == "FAIL"  # one echo of 300 lost
    assert _quiet(3.0, None, loss=100.0) == "FAIL"  # nothing came back
    assert _quiet(None, 4.0) == "-"  # no idle figure: no verdict


def test_collapse_and_starvation_goals() -> None:
    def goals(mbits: list[float], alone: float | None, errors: int = 0) -> dict[str, str]:
        return evaluate({}, {}, together_figures(mbits, alone), errors)

    g = goals([10.0, 20.0, 40.0], 100.0)  # 0.7 of one alone, slowest 0.25 of the fastest
    assert (g["no collapse"], g["no starvation"]) == ("PASS", "PASS")
    g = goals([9.0, 20.0, 40.0], 100.0)
    assert (g["no collapse"], g["no starvation"]) == ("FAIL", "FAIL")
    assert goals([30.0, 40.0], None)["no collapse"] == "-"  # the lone run failed
    g = goals([30.0, 40.0, 0.0], 80.0, errors=1)  # a bulk session's iperf3 failed
    assert (g["no collapse"], g["no starvation"]) == ("FAIL", "FAIL")


def test_together_figures() -> None:
    f = together_figures([10.0, 20.0, 40.0], 100.0)
    assert f == {"aggregate_mbit": 70.0, "of_alone": 0.7, "slowest_of_fastest": 0.25}
    assert together_figures([], 100.0)["slowest_of_fastest"] is None
    assert together_figures([0.0, 0.0], 0.0) == {
        "aggregate_mbit": 0.0, "of_alone": None, "slowest_of_fastest": None}


@given(st.floats(0.1, 100), st.floats(0.1, 200), st.floats(0.1, 200))
def test_a_lower_loaded_p99_never_turns_pass_into_fail(idle: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if _quiet(idle, high) == "PASS":
        assert _quiet(idle, low) == "PASS"


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=50), st.floats(0, 100), st.floats(0, 100))
def test_percentile_is_within_the_values_and_monotone(v: list[float], p: float, q: float) -> None:
    lo, hi = sorted((p, q))
    a, b = percentile(v, lo), percentile(v, hi)
    assert a is not None and b is not None
    assert min(v) <= a <= b <= max(v)


def test_percentile_known_values() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_busy_share_per_cpu() -> None:
    a = {"cpu0": (100, 1000), "cpu1": (500, 1000)}
    b = {"cpu0": (110, 1100), "cpu1": (600, 1100)}
    assert busy_pct(a, b) == {"cpu0": 90.0, "cpu1": 0.0}


# -- captures -----------------------------------------------------------------------------

A_PORT, B_PORT, R_PORT = 40001, 40002, 40003
ROLES = {A_PORT: "agent_1", B_PORT: "agent_2", R_PORT: "router"}


def _echo(kind: int, ident: int, seq: int) -> bytes:
    icmp = (ICMPv6EchoRequest if kind == hops.ECHO_REQUEST else ICMPv6EchoReply)(
        id=ident, seq=seq, data=bytes(range(56)))
    src, dst = ("bbbb::1", "bbbb::2") if kind == hops.ECHO_REQUEST else ("bbbb::2", "bbbb::1")
    return bytes(IPv6(src=src, dst=dst) / icmp)


def _pcap(linktype: int, records: list[tuple[float, bytes]]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for t, data in records:
        sec = int(t)
        out += struct.pack("<IIII", sec, round((t - sec) * 1e6), len(data), len(data)) + data
    return out


def _tcp_frame(sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    """Ethernet / IPv4 / TCP as tcpdump sees it on lo (checksums not checked here)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def _message(packet: bytes, channel: int = 1) -> bytes:
    """One fast-wire bus message carrying the packet, as our agents publish it."""
    enc = PublishEncoder(channel, 131072, "amq.topic")
    props = encode_properties(wire.FAST_CONTENT_TYPE)
    return b"".join(enc.publish("fromAgent.agent_1.ip.tun.packet.raw", props,
                                wire.encode_batch([packet])))


# (point, echo type, time) of one echo's journey; the hops are 1..12 ms apart
JOURNEY = [
    ("tun_a", 128, 0.000), ("agent_1>broker", 128, 0.001), ("broker>router", 128, 0.003),
    ("router>broker", 128, 0.006), ("broker>agent_2", 128, 0.010), ("tun_b", 128, 0.015),
    ("tun_b", 129, 0.021), ("agent_2>broker", 129, 0.028), ("broker>router", 129, 0.036),
    ("router>broker", 129, 0.045), ("broker>agent_1", 129, 0.055), ("tun_a", 129, 0.066),
]


def _write_captures(tmp: Path, base: float, seqs: list[int], ident: int = 0x4242) -> dict:
    tun: dict[str, list[tuple[float, bytes]]] = {"tun_a": [], "tun_b": []}
    lo: list[tuple[float, bytes]] = []
    tcp_seq: dict[tuple[int, int], int] = {}
    for n, seq in enumerate(seqs):
        t0 = base + n * 0.1
        for point, kind, dt in JOURNEY:
            pkt = _echo(kind, ident, seq)
            if point in tun:
                tun[point].append((t0 + dt, pkt))
                continue
            a, b = point.split(">")
            port = next(p for p, r in ROLES.items() if r in (a, b))
            sport, dport = (port, 5672) if b == "broker" else (5672, port)
            msg = _message(pkt)
            s = tcp_seq.setdefault((sport, dport), 1000 * sport)
            lo.append((t0 + dt, _tcp_frame(sport, dport, s, msg)))
            tcp_seq[(sport, dport)] = s + len(msg)
    files = {"tun_a": tmp / "a.pcap", "tun_b": tmp / "b.pcap", "lo": tmp / "lo.pcap"}
    files["tun_a"].write_bytes(_pcap(101, tun["tun_a"]))
    files["tun_b"].write_bytes(_pcap(101, tun["tun_b"]))
    files["lo"].write_bytes(_pcap(1, lo))
    return files


def test_one_echo_is_found_at_every_hop_and_each_hop_gets_its_delay(tmp_path: Path) -> None:
    files = _write_captures(tmp_path, 1_700_000_000.0, [1, 2, 3])
    result = hops.analyse(files, ROLES)
    expected = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # ms, the JOURNEY's steps in HOP_NAMES order
    for name, ms in zip(hops.HOP_NAMES, [*expected, 66], strict=True):
        h = result["hops"][name]
        assert h["n"] == 3, name
        assert h["p50_ms"] == pytest.approx(ms, abs=0.002), name
    assert result["seen"]["broker>router"] == 6  # 3 requests and 3 replies
    parts = hops.shares(result["hops"])  # the broker's 4 passes: 2+4+8+10 ms
    assert parts["broker"] == pytest.approx(24, abs=0.01)
    assert parts["router"] == pytest.approx(3 + 9, abs=0.01)
    assert parts["agents"] == pytest.approx(1 + 5 + 7 + 11, abs=0.01)
    assert parts["echo"] == pytest.approx(6, abs=0.01)
    assert sum(v for k, v in parts.items() if k != "round trip") == pytest.approx(
        parts["round trip"], abs=0.01)
    assert result["publish_channels"]["agent_1"] == {1: 3}


def test_an_echo_missing_at_one_point_only_drops_the_two_hops_around_it(tmp_path: Path) -> None:
    files = _write_captures(tmp_path, 1_700_000_000.0, [5])
    linktype, frames = hops.read_pcap(files["tun_b"].read_bytes())
    files["tun_b"].write_bytes(_pcap(linktype, frames[1:]))  # the request never seen on tun_b
    h = hops.analyse(files, ROLES)["hops"]
    assert h["request: agent_2 (delivery -> TUN write)"]["n"] == 0
    assert h["echo: agent_2's kernel"]["n"] == 0
    assert h["reply: agent_2 (TUN read -> publish)"]["n"] == 1
    assert h["round trip on agent_1's TUN"]["n"] == 1


def test_echo_key_agrees_with_scapy() -> None:
    assert hops.echo_key(_echo(128, 0xBEEF, 300)) == (128, 0xBEEF, 300)
    assert hops.echo_key(_echo(129, 1, 65535)) == (129, 1, 65535)
    assert hops.echo_key(bytes(IPv6(dst="bbbb::2") / (b"x" * 60))) is None  # not ICMPv6
    assert hops.echo_key(bytes(IPv6(dst="bbbb::2") / ICMPv6ND_NS(tgt="bbbb::2"))) is None


def test_read_pcap_rejects_other_files_and_drops_a_cut_record() -> None:
    with pytest.raises(ValueError, match="not a pcap"):
        hops.read_pcap(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40)  # pcapng
    data = _pcap(101, [(1.5, b"\x60" * 48), (2.0, b"\x60" * 48)])
    linktype, frames = hops.read_pcap(data[:-10])
    assert linktype == 101 and frames == [(1.5, b"\x60" * 48)]


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.binary(max_size=300),
    cuts=st.lists(st.integers(1, 2000), max_size=12),
    repeats=st.lists(st.integers(0, 30), max_size=4),
)
def test_reassembly_finds_an_echo_split_across_segments(
    prefix: bytes, cuts: list[int], repeats: list[int]
) -> None:
    """However the stream is cut into segments, and with retransmitted segments in
    between, the bytes come out once, in order, and the echo is timed by the segment
    that carried the last byte of its ICMPv6 header."""
    msg = _message(_echo(128, 7, 9), channel=2)
    data = prefix.replace(b"\x60", b"\x00") + msg + b"\xce" * 20
    bounds = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    segs = [(bounds[i], data[bounds[i]: bounds[i + 1]]) for i in range(len(bounds) - 1)]
    stream = hops.Stream()
    for i, (off, chunk) in enumerate(segs):
        stream.add(5000 + off, chunk, float(i))
        for r in repeats:  # a retransmission of something already seen
            if r <= i:
                old_off, old = segs[i - r]
                stream.add(5000 + old_off, old, float(i) + 0.5)
    assert bytes(stream.data) == data and stream.gaps == 0
    header_end = len(prefix) + msg.index(_echo(128, 7, 9)) + 47
    carrier = max(i for i, (off, _c) in enumerate(segs) if off <= header_end)
    seen = hops.echoes_in_stream(stream)
    assert set(seen) == {(128, 7, 9)}
    assert seen[(128, 7, 9)].t == float(carrier)
    assert seen[(128, 7, 9)].channel == 2


def test_a_hole_in_the_capture_is_counted() -> None:
    stream = hops.Stream()
    stream.add(100, b"abc", 1.0)
    stream.add(110, b"def", 2.0)  # 7 bytes never captured
    assert stream.gaps == 1 and bytes(stream.data) == b"abcdef"


def test_streams_are_split_by_connection_and_direction() -> None:
    frames = [
        (1.0, _tcp_frame(A_PORT, 5672, 1, b"up")),
        (2.0, _tcp_frame(5672, A_PORT, 9, b"down")),
        (3.0, _tcp_frame(50000, 5672, 1, b"someone else")),
    ]
    streams = hops.streams_of(frames, 1, ROLES)
    assert {n: bytes(s.data) for n, s in streams.items()} == {
        "agent_1>broker": b"up", "broker>agent_1": b"down"}


RUNTIME_THREAD_STATS = """\
Will collect runtime thread stats on rabbit@vm for 1 seconds...
Average thread real-time    : 1001203 us
Accumulated system run-time :    1737 us
Average scheduler run-time  :     677 us

        Thread      aux check_io emulator       gc    other     port    sleep

Stats per thread:
 scheduler( 1)    0.01%    0.00%    0.04%    0.00%    0.03%    0.00%   99.92%

Stats per type:
         async    0.00%    0.00%    0.00%    0.00%    0.00%    0.00%  100.00%
           aux    0.01%    0.00%    0.00%    0.00%    0.00%    0.00%   99.98%
dirty_cpu_sche    0.00%    0.00%    0.00%    0.00%    0.00%    0.00%  100.00%
     scheduler    2.50%    1.00%   40.00%    5.00%    1.50%    3.00%   47.00%
"""


def test_runtime_thread_stats_per_type() -> None:
    stats = hops.thread_stats(RUNTIME_THREAD_STATS)
    assert stats["scheduler"]["sleep"] == 47.0
    assert stats["scheduler"]["emulator"] == 40.0
    assert stats["aux"]["aux"] == 0.01
    assert "async" not in stats


def test_unread_bytes_from_ss() -> None:
    out = ("ESTAB 4096 0 127.0.0.1:5672 127.0.0.1:40001\n"
           "ESTAB 2048 10 127.0.0.1:5672 127.0.0.1:40002\n")
    assert hops.unread_kb(out) == 6


def test_tcp_over_ipv6_and_cooked_captures_are_read() -> None:
    tcp = struct.pack("!HHIIBBHHH", A_PORT, 5672, 77, 0, 5 << 4, 0x18, 65535, 0, 0) + b"hi"
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, b"\0" * 15 + b"\1",
                      b"\0" * 15 + b"\1") + tcp
    assert hops.tcp_segment(ip6) == (A_PORT, 5672, 77, b"hi")
    sll = b"\x00\x00\x03\x04\x00\x06" + b"\x00" * 8 + b"\x86\xdd" + ip6  # Linux cooked (113)
    assert hops.ip_of_frame(113, sll) == ip6
    assert hops.ip_of_frame(1, b"\x00" * 12 + b"\x08\x06" + b"arp") is None  # not IP
    assert hops.tcp_segment(bytes(_echo(128, 1, 1))) is None  # ICMPv6, not TCP
