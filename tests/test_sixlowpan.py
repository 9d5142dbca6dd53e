"""agent.inspect.sixlowpan: 802.15.4 frames read down to the IPv6 / UDP / CoAP inside.

The frames are built byte by byte after the RFCs (tests/tools/wpan.py), not by the code
under test; tshark's decode of the same frames, written by the agent's pcapng writer, is
the second opinion.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrHopByHop

from agent.inspect.filter import Filter
from agent.inspect.pcapng import LINKTYPE_IEEE802_15_4_NOFCS, PcapNgWriter
from agent.inspect.sixlowpan import Fragments, WpanDecoder, dump_wpan, summarize_wpan
from tests.conftest import ROOT
from tests.tools import wpan
from tests.tools.pcap import TSHARK
from tests.tools.pcap import tshark_fields as _tshark

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

# ------------------------------------------------------------------------ summaries


def test_iphc_everything_elided() -> None:
    frame, _ = wpan.multicast_rd()
    assert summarize_wpan(frame) == (
        "802.15.4 0x1234 > 0xffff 6LoWPAN IPHC fe80::ff:fe00:1234 > ff02::1a "
        f"UDP 5683 > 5683 CoAP NON GET /rd {len(frame)} B"
    )


def test_iphc_inline_fields_and_extended_addresses() -> None:
    frame, _ = wpan.inline_fields()
    assert summarize_wpan(frame) == (
        "802.15.4 00:12:4b:00:00:01:02:03 > 00:12:4b:00:00:04:05:06 6LoWPAN IPHC "
        f"bbbb::1 > bbbb::2 UDP 40001 > 5683 CoAP CON GET /.well-known/core {len(frame)} B"
    )


def test_the_decompressed_packet_is_the_one_sent() -> None:
    frame, inner = wpan.inline_fields()
    got = WpanDecoder().decode(frame).ipv6
    assert got is not None
    pkt = IPv6(got)
    assert (pkt.src, pkt.dst, pkt.hlim, pkt.nh) == (inner.src, inner.dst, 64, 17)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (inner.sport, inner.dport)
    assert bytes(pkt[UDP])[8:] == frame[-len(bytes(pkt[UDP])) + 8 :]
    assert pkt.plen == len(got) - 40


def test_decompressed_datagrams_are_byte_exact() -> None:
    """Decompression (and reassembly) gives back the very IPv6 packet that was compressed,
    UDP length and checksum included."""
    frags, big = wpan.fragmented()
    decoder = WpanDecoder()
    got = [decoder.decode(f).ipv6 for f in frags][-1]
    body = wpan.coap(0, 2, 0x0BAD, ("big",), bytes(range(65, 91)) * 5)
    sent = IPv6(src=big.src, dst=big.dst, hlim=64) / UDP(sport=61616, dport=5683) / body
    assert got == bytes(sent)
    frame, wk = wpan.inline_fields()
    body = wpan.coap(0, 1, 0x0102, (".well-known", "core"))
    sent = IPv6(src=wk.src, dst=wk.dst, hlim=64) / UDP(sport=40001, dport=5683) / body
    assert WpanDecoder().decode(frame).ipv6 == bytes(sent)
    frame, rpl = wpan.rpl_hop_by_hop()
    option = HBHOptUnknown(otype=0x63, optdata=b"\x00\x1e\x02\x00")
    sent = (
        IPv6(src=rpl.src, dst=rpl.dst, hlim=64)
        / IPv6ExtHdrHopByHop(options=[option])
        / UDP(sport=5683, dport=5683)
        / wpan.coap(0, 4, 0x4444, ("x",))
    )
    assert WpanDecoder().decode(frame).ipv6 == bytes(sent)


def test_mesh_header() -> None:
    frame, _ = wpan.meshed()
    assert summarize_wpan(frame) == (
        "802.15.4 0x0003 > 0x0004 6LoWPAN MESH 0x0001 > 0x0002 hops 5 IPHC fe80::1 > fe80::2 "
        f"UDP 5683 > 49152 CoAP ACK 2.05 Content {len(frame)} B"
    )


def test_context_based_addresses_are_flagged() -> None:
    frame, inner = wpan.stateful()
    assert summarize_wpan(frame) == (
        f"802.15.4 0x0003 > 0x0004 6LoWPAN IPHC (context 0/0, prefix unknown) {inner.src} > "
        f"{inner.dst} UDP 5683 > 5683 CoAP CON PUT /ctx {len(frame)} B"
    )


def test_uncompressed_ipv6_dispatch() -> None:
    frame, _ = wpan.uncompressed_echo()
    assert summarize_wpan(frame).startswith(
        "802.15.4 0x0005 > 0x0006 6LoWPAN IPv6 bbbb::3 > bbbb::4 ICMPv6 Echo Request (id 0x1 seq 1)"
    )


def _lines(frames: list[bytes], decoder: WpanDecoder | None = None) -> list[str]:
    decoder = decoder or WpanDecoder()
    return [decoder.decode(f).text.split(" 6LoWPAN ", 1)[1] for f in frames]


def test_fragments_reassembled_on_the_last_one() -> None:
    frags, inner = wpan.fragmented(tag=7)
    decoder = WpanDecoder()
    assert _lines(frags, decoder) == [
        "FRAG1 tag 7 offset 0 size 188",
        "FRAGN tag 7 offset 96 size 188",
        f"FRAGN tag 7 offset 152 size 188 reassembled IPHC {inner.src} > {inner.dst} "
        "UDP 61616 > 5683 CoAP CON POST /big",
    ]
    assert len(decoder.fragments) == 0  # done: forgotten
    whole = WpanDecoder()
    for f in frags[:-1]:
        assert whole.decode(f).ipv6 is None
    got = whole.decode(frags[-1]).ipv6
    assert got is not None and len(got) == 188
    assert IPv6(got)[UDP].dport == 5683


def test_fragments_in_any_order_and_repeated() -> None:
    frags, _ = wpan.fragmented(tag=9)
    for order in ([2, 0, 1], [1, 2, 0], [0, 2, 2, 1]):
        lines = _lines([frags[i] for i in order])
        assert [("reassembled" in line) for line in lines] == [False] * (len(order) - 1) + [True]


@settings(max_examples=60, deadline=None)
@given(st.permutations([0, 1, 2]), st.lists(st.integers(0, 2), max_size=3))
def test_reassembly_in_any_order_property(order: list[int], repeats: list[int]) -> None:
    """Any order, with repeated fragments before the last new one: the datagram is
    complete exactly on the frame bringing its last missing fragment, and it is the one
    sent."""
    frags, inner = wpan.fragmented(tag=11)
    sequence = [order[0], order[1], *[r for r in repeats if r in order[:2]], order[2]]
    decoder = WpanDecoder()
    got = [decoder.decode(frags[i]).ipv6 for i in sequence]
    assert all(g is None for g in got[:-1])
    last = got[-1]
    assert last is not None
    pkt = IPv6(last)
    assert (pkt.src, pkt.dst, pkt[UDP].sport, pkt[UDP].dport) == (
        inner.src, inner.dst, inner.sport, inner.dport
    )
    assert len(decoder.fragments) == 0


def test_a_missing_fragment_means_no_datagram() -> None:
    frags, _ = wpan.fragmented(tag=3)
    decoder = WpanDecoder()
    assert not any(decoder.decode(f).ipv6 for f in (frags[0], frags[2]))
    # a datagram with the same tag from another sender does not fill the gap
    other = [f[:5] + bytes([f[5] ^ 1]) + f[6:] for f in frags]  # other destination address
    assert decoder.decode(other[1]).ipv6 is None
    assert decoder.decode(frags[1]).ipv6 is not None


def test_fragment_table_bounded_and_timed_out() -> None:
    table = Fragments(limit=2, timeout=60.0)
    for tag in range(5):
        table.add((1, 2, tag, 100), 16, b"x" * 8, False, now=0.0)
    assert len(table) == 2
    assert table.add((1, 2, 9, 100), 16, b"x" * 8, False, now=61.0) is None
    assert len(table) == 1  # the old ones expired
    now = [0.0]
    decoder = WpanDecoder(clock=lambda: now[0])
    frags, _ = wpan.fragmented(tag=4)
    decoder.decode(frags[0])
    decoder.decode(frags[1])
    now[0] = 61.0  # the first two are forgotten after 60 s
    assert decoder.decode(frags[2]).ipv6 is None


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (wpan.cut_short(), "[IPHC header cut short"),
        (wpan.not_lowpan(), "[not 6LoWPAN: dispatch 0x01]"),
        (wpan.mac_short(1, 2) + b"\x42\x00", "[HC1 compression (obsolete) not decoded]"),
        (wpan.mac_short(1, 2) + b"\x7e\x33\xee\x00", "NHC IPv6 header not decoded]"),
        (wpan.mac_short(1, 2) + b"\x7e\x33\x80\x00", "unknown NHC header 0x80]"),
        (wpan.mac_short(1, 2) + b"\x7e\x33\xe1\x06\x63", "NHC extension header cut short]"),
        (wpan.mac_short(1, 2) + b"\xc0\x50", "[fragment header cut short]"),
        (wpan.mac_short(1, 2), "[no payload]"),
        (b"\x49\x88\x01\xcd\xab\x02\x00\x01\x00" + b"\x05" + bytes(12), "[secured: payload"),
        (b"\x41", "802.15.4 [802.15.4 header cut short]"),
    ],
)
def test_undecodable_frames_show_a_short_reason(frame: bytes, reason: str) -> None:
    decoded = WpanDecoder().decode(frame)
    assert reason in decoded.text and decoded.ipv6 is None
    assert decoded.text.startswith("802.15.4 ")
    assert "Traceback" not in decoded.text and len(decoded.text) < 200


def test_ack_and_dump() -> None:
    assert summarize_wpan(wpan.ack(9)) == "802.15.4 Ack seq 9 3 B"
    frame, _ = wpan.multicast_rd()
    text = dump_wpan(frame, WpanDecoder().decode(frame).ipv6)
    assert "###[ 802.15.4 ]###" in text and "###[ CoAP ]###" in text
    assert "Uri-Path" in text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"", wpan.mac_short(0x1234, 0xFFFF), wpan.mac_long(1, 2), b"\x41\xc8\x00"]),
    st.sampled_from([b"", b"\x7f", b"\x7e", b"\x78\x00", b"\x41", b"\xb5", b"\xc0", b"\xe0"]),
    st.binary(max_size=120),
)
def test_decoding_arbitrary_bytes_never_raises(mac: bytes, dispatch: bytes, rest: bytes) -> None:
    decoder = WpanDecoder()
    for frame in (mac + dispatch + rest, rest):
        decoded = decoder.decode(frame)
        assert decoded.text.startswith("802.15.4")
        assert "\n" not in decoded.text
        if decoded.ipv6 is not None:
            assert decoded.ipv6[0] >> 4 == 6
        assert isinstance(dump_wpan(frame, decoded.ipv6), str)


# ------------------------------------------------------------------------ filters


def test_filter_ip_words_match_the_decompressed_packet() -> None:
    frames = [f for f, _ in wpan.mixed()]  # the fragments' last completes the datagram
    decoder = WpanDecoder()
    decoded = [decoder.decode(f) for f in frames]
    f5683 = Filter("udp port 5683")
    assert f5683.needs_inner
    pairs = list(zip(frames, decoded, strict=True))
    picked = [d.text for f, d in pairs if f5683.matches(f, True, d.ipv6)]
    assert len(picked) == 5, picked  # /rd, /.well-known/core, the POST, the mesh ACK, /ctx
    # as tcpdump, `udp` does not look past an IPv6 extension header (RPL's hop-by-hop
    # option); `ip6 protochain 17` does
    rpl, _ = wpan.rpl_hop_by_hop()
    rpl_ipv6 = WpanDecoder().decode(rpl).ipv6
    assert not f5683.matches(rpl, True, rpl_ipv6)
    assert Filter("ip6 protochain 17").matches(rpl, True, rpl_ipv6)
    assert Filter("ip6 protochain 17 and ip6[50:2] = 5683").matches(rpl, True, rpl_ipv6)
    assert all("UDP" in t and "5683" in t for t in picked)
    assert sum("reassembled" in t for t in picked) == 1
    # other IP words, and the agent's own
    icmp6 = Filter("icmp6")
    assert [f for f, d in pairs if icmp6.matches(f, True, d.ipv6)] == [wpan.uncompressed_echo()[0]]
    src = Filter("src host bbbb::1 and coap")
    assert sum(src.matches(f, True, d.ipv6) for f, d in pairs) == 1
    assert not Filter("wpan and udp").matches(frames[0], True, None)  # no packet: no match
    assert Filter("wpan and udp").matches(frames[0], True, decoded[0].ipv6)
    assert not Filter("not wpan and udp").matches(frames[0], True, decoded[0].ipv6)
    # frame-level expressions still run on the frame itself
    assert not Filter("wpan").needs_inner
    assert Filter("wpan").matches(wpan.ack(), True, None)


# ------------------------------------------------------------------------ tshark


_CODES = {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE", 69: "2.05"}


@needs_tshark
def test_summaries_agree_with_tshark(tmp_path: Path) -> None:
    """A capture of mixed frames, written by the agent's writer: where tshark finds an
    IPv6 packet the agent's line names the same addresses, ports and CoAP code, and where
    it finds none the agent shows no inner packet either."""
    mixed = wpan.mixed()
    path = tmp_path / "mixed.pcapng"
    with PcapNgWriter(path) as writer:
        iface = writer.add_interface("serial", LINKTYPE_IEEE802_15_4_NOFCS)
        for frame, _ in mixed:
            writer.write(iface, frame)
    rows = _tshark(
        path, "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport", "coap.code", "frame.len"
    )
    assert len(rows) == len(mixed)
    decoder = WpanDecoder()
    agreed = 0
    for (frame, expected), row in zip(mixed, rows, strict=True):
        decoded = decoder.decode(frame)
        src, dst, sport, dport, code, length = (row + [""] * 6)[:6]
        assert int(length) == len(frame)
        if not src:
            assert decoded.ipv6 is None, (decoded.text, row)
            continue
        assert decoded.ipv6 is not None, (decoded.text, row)
        pkt = IPv6(decoded.ipv6)
        assert (pkt.src, pkt.dst) == (src, dst), (decoded.text, row)
        assert f"{src} > {dst}" in decoded.text
        if sport:
            assert f"UDP {sport} > {dport}" in decoded.text, (decoded.text, row)
            assert "CoAP " in decoded.text and _CODES[int(code)] in decoded.text
            assert expected is not None and (expected.src, expected.dport) == (src, int(dport))
            agreed += 1
    assert agreed == 6  # /rd, /.well-known/core, reassembled POST, mesh ACK, /ctx, RPL /x


# ------------------------------------------------------------------------ cost


def test_probe_without_v_loads_no_decoder() -> None:
    """The probe's per-frame path (no -v) neither imports the decoder nor Scapy."""
    code = (
        "import sys, agent.cli, agent.slip.probe, agent.slip.options\n"
        "bad = [m for m in sys.modules if m.startswith('scapy') or m.endswith('sixlowpan')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
