"""Tests for agent.slip.framing, written against RFC 1055 and the product requirements."""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from agent.slip.framing import (
    END,
    ESC,
    ESC_END,
    ESC_ESC,
    FrameKind,
    SlipDecoder,
    SlipError,
    classify,
    encode_frame,
    escape,
    ip_length,
    prefix_answer,
    split_text,
    unescape,
)

E = bytes([END])
S = bytes([ESC])
MTU = 64

# --------------------------------------------------------------------------- constants


def test_rfc1055_constants() -> None:
    # RFC 1055: "#define END 0300", "ESC 0333", "ESC_END 0334", "ESC_ESC 0335" (octal)
    assert (END, ESC, ESC_END, ESC_ESC) == (0o300, 0o333, 0o334, 0o335)


# --------------------------------------------------------------------------- encoding

ENCODE_VECTORS = [
    (b"", b"\xc0"),
    (b"hello", b"hello\xc0"),
    (b"\xc0", b"\xdb\xdc\xc0"),
    (b"\xdb", b"\xdb\xdd\xc0"),
    (b"\xdb\xdc", b"\xdb\xdd\xdc\xc0"),  # ESC_END alone is a plain byte
    (b"\xdc\xdd", b"\xdc\xdd\xc0"),
    (b"a\xc0b\xdbc", b"a\xdb\xdcb\xdb\xddc\xc0"),
    (b"\xc0\xc0", b"\xdb\xdc\xdb\xdc\xc0"),
    (b"\xdb\xc0", b"\xdb\xdd\xdb\xdc\xc0"),
    (bytes(range(0x20)), bytes(range(0x20)) + b"\xc0"),
]


@pytest.mark.parametrize(("payload", "wire"), ENCODE_VECTORS)
def test_encode_vectors(payload: bytes, wire: bytes) -> None:
    assert encode_frame(payload) == wire


@pytest.mark.parametrize(("payload", "wire"), ENCODE_VECTORS)
def test_encode_vectors_leading_end(payload: bytes, wire: bytes) -> None:
    assert encode_frame(payload, leading_end=True) == b"\xc0" + wire


@pytest.mark.parametrize(("payload", "wire"), [v for v in ENCODE_VECTORS if v[0]])
def test_decode_vectors(payload: bytes, wire: bytes) -> None:
    assert SlipDecoder(mtu=MTU).feed(wire) == [payload]
    assert SlipDecoder(mtu=MTU).feed(b"\xc0" + wire) == [payload]


def test_encoded_body_contains_no_end() -> None:
    wire = encode_frame(bytes(range(256)) * 2)
    assert wire.count(E) == 1 and wire.endswith(E)


# --------------------------------------------------------------------------- decoding


def test_back_to_back_frames_share_one_end() -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(b"a" + E + b"b" + E) == [b"a", b"b"]
    assert dec.stats.frames == 2


def test_empty_frames_ignored_and_counted() -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(E + E + E + b"x" + E + E) == [b"x"]
    assert dec.stats.empty == 4
    assert dec.stats.frames == 1
    assert dec.stats.dropped == 0


def test_partial_frame_kept_across_feeds() -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(b"ab" + S) == []
    assert dec.in_frame
    assert dec.feed(bytes([ESC_END]) + b"c") == []
    assert dec.feed(E) == [b"ab\xc0c"]
    assert not dec.in_frame


@pytest.mark.parametrize(
    "bad",
    [
        S + b"x",  # ESC followed by an ordinary byte
        b"ab" + S + S + b"\xdc",  # ESC ESC
        b"ab" + S,  # ESC END: ESC followed by the frame delimiter
        S + b"\x00",
    ],
)
def test_invalid_escape_drops_only_that_frame(bad: bytes) -> None:
    dec = SlipDecoder(mtu=MTU)
    stream = encode_frame(b"first") + bad + E + encode_frame(b"\xc0third\xdb")
    assert dec.feed(stream) == [b"first", b"\xc0third\xdb"]
    assert dec.stats.dropped_invalid == 1
    assert dec.stats.frames == 2


def test_invalid_escape_split_across_feeds() -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(b"ab" + S) == []
    assert dec.feed(b"Z" + E + b"ok" + E) == [b"ok"]
    assert dec.stats.dropped_invalid == 1


def test_frame_of_exactly_mtu_is_accepted() -> None:
    dec = SlipDecoder(mtu=MTU)
    worst = b"\xc0" * MTU  # escaped size 2 * MTU, the buffer bound
    assert dec.feed(encode_frame(worst) + encode_frame(b"x" * MTU)) == [worst, b"x" * MTU]
    assert dec.stats.dropped_too_big == 0


@pytest.mark.parametrize("big", [b"x" * (MTU + 1), b"\xc0" * (MTU + 1), b"y" * (10 * MTU)])
def test_too_big_frame_dropped_and_counted(big: bytes) -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(encode_frame(big) + encode_frame(b"next")) == [b"next"]
    assert dec.stats.dropped_too_big == 1
    assert dec.stats.frames == 1


def test_too_big_frame_fed_bytewise() -> None:
    dec = SlipDecoder(mtu=MTU)
    out: list[bytes] = []
    for b in encode_frame(b"z" * (3 * MTU)) + encode_frame(b"next"):
        out += dec.feed(bytes([b]))
        assert dec.buffered <= dec.max_buffer
    assert out == [b"next"]
    assert dec.stats.dropped_too_big == 1


def test_garbage_prefix_then_good_frame() -> None:
    # Line joined mid-frame: the tail of a previous frame arrives before the first END.
    # It is delivered as a frame of its own (valid escapes), the real frame follows intact.
    dec = SlipDecoder(mtu=MTU)
    garbage = b"\x13\x37garbage"
    good = bytes(IPv6(dst="cccc::1") / ICMPv6EchoRequest())
    frames = dec.feed(garbage + encode_frame(good, leading_end=True))
    assert frames == [garbage, good]
    assert classify(frames[0]) in (FrameKind.OTHER, FrameKind.TEXT)
    assert classify(frames[1]) == FrameKind.IPV6


def test_garbage_prefix_with_invalid_escape_is_dropped() -> None:
    dec = SlipDecoder(mtu=MTU)
    assert dec.feed(b"junk" + S + b"q" + encode_frame(b"good", leading_end=True)) == [b"good"]
    assert dec.stats.dropped_invalid == 1


def test_unterminated_flood_keeps_memory_bounded_and_recovers() -> None:
    dec = SlipDecoder(mtu=MTU)
    chunk = bytes(range(0x100)).replace(E, b"")  # no END at all, includes ESC sequences
    for _ in range(1000):
        assert dec.feed(chunk) == []
        assert dec.buffered <= dec.max_buffer == 2 * MTU
    assert dec.in_frame
    assert dec.feed(E + encode_frame(b"after flood")) == [b"after flood"]
    assert dec.stats.dropped_too_big == 1
    assert dec.buffered == 0


def test_reset_discards_partial_frame() -> None:
    dec = SlipDecoder(mtu=MTU)
    dec.feed(b"partial")
    dec.reset()
    assert dec.feed(b"new" + E) == [b"new"]


def test_mtu_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SlipDecoder(mtu=0)


# --------------------------------------------------------------------------- properties

payloads = st.lists(st.binary(min_size=1, max_size=MTU), max_size=12)
# Payloads biased towards the special bytes.
special_payloads = st.lists(
    st.lists(
        st.sampled_from([END, ESC, ESC_END, ESC_ESC, 0x00, 0x41]), min_size=1, max_size=MTU
    ).map(bytes),
    max_size=12,
)


def _feed_split(dec: SlipDecoder, stream: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    prev = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        out += dec.feed(stream[prev:cut])
        prev = cut
    out += dec.feed(stream[prev:])
    return out


cuts_st = st.lists(st.integers(min_value=0, max_value=10_000), max_size=20)


@settings(max_examples=200, deadline=None)
@given(frames=st.one_of(payloads, special_payloads), cuts=cuts_st, leading=st.booleans())
def test_roundtrip_arbitrary_split(frames: list[bytes], cuts: list[int], leading: bool) -> None:
    stream = b"".join(encode_frame(f, leading_end=leading) for f in frames)
    dec = SlipDecoder(mtu=MTU)
    assert _feed_split(dec, stream, cuts) == frames
    assert dec.stats.frames == len(frames)
    assert dec.stats.dropped == 0
    assert not dec.in_frame


@settings(max_examples=200, deadline=None)
@given(
    frames=st.one_of(payloads, special_payloads),
    extra_ends=st.lists(st.integers(min_value=0, max_value=3), min_size=13, max_size=13),
    cuts=cuts_st,
)
def test_roundtrip_with_extra_end_bytes(
    frames: list[bytes], extra_ends: list[int], cuts: list[int]
) -> None:
    stream = b"".join(E * n + encode_frame(f) for f, n in zip(frames, extra_ends, strict=False))
    stream += E * extra_ends[-1]
    dec = SlipDecoder(mtu=MTU)
    assert _feed_split(dec, stream, cuts) == frames


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=600), cuts=cuts_st)
def test_split_invariance_on_arbitrary_bytes(stream: bytes, cuts: list[int]) -> None:
    # Any byte soup (garbage, invalid escapes, oversized frames) decodes the same however
    # it is split, the buffer stays bounded, and a following good frame always decodes.
    whole = SlipDecoder(mtu=MTU)
    expected = whole.feed(stream)
    split = SlipDecoder(mtu=MTU)
    assert _feed_split(split, stream, cuts) == expected
    assert split.stats == whole.stats
    assert split.buffered <= split.max_buffer
    assert all(0 < len(f) <= MTU for f in expected)
    # The leading END terminates whatever unterminated tail is pending (which may then be
    # delivered as a frame of its own); the good frame itself always comes out intact.
    after = split.feed(encode_frame(b"sync", leading_end=True))
    assert after[-1] == b"sync" and len(after) <= 2
    assert not split.in_frame


# --------------------------------------------------------------------------- classify


def test_classify_ipv6() -> None:
    pkt = bytes(IPv6(dst="cccc::1") / ICMPv6EchoRequest())
    assert classify(pkt) == FrameKind.IPV6
    assert classify(bytes(IPv6(src="fe80::1", dst="ff02::1") / UDP() / (b"x" * 100))) == (
        FrameKind.IPV6
    )


def test_classify_ipv4() -> None:
    assert classify(bytes(IP(dst="10.0.0.1") / ICMP())) == FrameKind.IPV4
    assert classify(bytes(IP(dst="10.0.0.1", options=b"\x01" * 4) / UDP())) == FrameKind.IPV4


def test_classify_truncated_ip_is_not_ip() -> None:
    v6 = bytes(IPv6(dst="cccc::1") / ICMPv6EchoRequest(data=b"p" * 20))
    v4 = bytes(IP(dst="10.0.0.1") / ICMP() / (b"p" * 20))
    assert classify(v6[:-1]) != FrameKind.IPV6  # payload length field exceeds frame
    assert classify(v6[:39]) != FrameKind.IPV6
    assert classify(v4[:-1]) != FrameKind.IPV4  # total length exceeds frame
    assert classify(v4[:19]) != FrameKind.IPV4
    bad_ihl = bytearray(v4)
    bad_ihl[0] = 0x44  # IHL 4 < 5
    assert classify(bytes(bad_ihl)) != FrameKind.IPV4


def test_classify_prefix_messages() -> None:
    assert classify(b"?P") == FrameKind.PREFIX_REQUEST
    assert classify(b"!P" + bytes.fromhex("cccc000000000000")) == FrameKind.PREFIX_ANSWER


@pytest.mark.parametrize(
    "text",
    [b"hello world\r\n", b"Rime started with address 0.18.116.0.18.0.0.0\r\n", b"\ttab\n"],
)
def test_classify_text(text: bytes) -> None:
    assert classify(text) == FrameKind.TEXT


def test_classify_other() -> None:
    assert classify(b"") == FrameKind.OTHER
    assert classify(bytes(range(0x80, 0x100))) == FrameKind.OTHER
    assert classify(b"\x00\x01\x02\x03\xff\xfe\xfd" * 10) == FrameKind.OTHER
    # 802.15.4 data frame header (FCF 0x41 0xd8...) is non-IP binary.
    assert classify(bytes.fromhex("41d8ab cdab ffff 0100000000000000 7a3b3a1a") * 2) == (
        FrameKind.OTHER
    )


def test_classify_random_binary_is_other() -> None:
    rnd = bytes(b | 0x80 for b in os.urandom(200))  # high-bit bytes: never printable, never IP
    assert classify(rnd) == FrameKind.OTHER


# --------------------------------------------------------------------------- prefix_answer


def test_prefix_answer() -> None:
    net = ipaddress.IPv6Network("cccc::/64")
    assert prefix_answer(net) == b"!P" + bytes.fromhex("cccc000000000000")
    assert classify(prefix_answer(net)) == FrameKind.PREFIX_ANSWER
    assert prefix_answer(ipaddress.IPv6Network("2001:db8:1:2::/64")) == (
        b"!P" + bytes.fromhex("20010db800010002")
    )


def test_prefix_answer_roundtrips_through_slip() -> None:
    # Prefix bytes may contain END/ESC; framing must carry them transparently.
    net = ipaddress.IPv6Network("c0db::/64")
    answer = prefix_answer(net)
    assert SlipDecoder(mtu=MTU).feed(encode_frame(answer)) == [answer]


def test_prefix_answer_rejects_longer_than_64() -> None:
    with pytest.raises(ValueError):
        prefix_answer(ipaddress.IPv6Network("cccc::/96"))


# --------------------------------------------------------------------------- the codec


def _reference_unescape(body: bytes) -> bytes | None:
    """RFC 1055 RECV_PACKET for one frame body, byte by byte; None for a bad escape."""
    out, it = bytearray(), iter(body)
    for byte in it:
        if byte != ESC:
            out.append(byte)
            continue
        nxt = next(it, None)
        if nxt == ESC_END:
            out.append(END)
        elif nxt == ESC_ESC:
            out.append(ESC)
        else:
            return None
    return bytes(out)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_escape_roundtrip_and_no_end(payload: bytes) -> None:
    body = escape(payload)
    assert END not in body
    assert unescape(body) == payload == _reference_unescape(body)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([END, ESC, ESC_END, ESC_ESC, 0x00, 0x41]), max_size=24))
def test_unescape_agrees_with_rfc1055_on_any_body(body_list: list[int]) -> None:
    body = bytes(b for b in body_list if b != END)
    want = _reference_unescape(body)
    if want is None:
        with pytest.raises(SlipError):
            unescape(body)
    else:
        assert unescape(body) == want


# --------------------------------------------------------------------------- text, then a frame

printable_line = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60
).map(lambda t: t.encode() + b"\r\n")
ip_payloads = st.binary(min_size=0, max_size=200).map(lambda b: b + b"\n" + b)  # holds 0x0A


@st.composite
def ip_packets(draw: st.DrawFn) -> bytes:
    data = draw(ip_payloads)
    if draw(st.booleans()):
        return bytes(IPv6(src="bbbb::1", dst="cccc::1", fl=draw(st.integers(0, 0xFFFFF))) / data)
    return bytes(IP(src="10.2.0.1", dst="192.0.2.1", id=draw(st.integers(0, 0xFFFF))) / data)


@settings(max_examples=300, deadline=None)
@given(text=printable_line, packet=ip_packets())
def test_text_line_then_packet_is_split_exactly(text: bytes, packet: bytes) -> None:
    # A frame that is itself exactly one IP packet by its own header is never split (the
    # next tests): such a frame reads both ways, see the test after this one.
    assume(ip_length(text + packet) != len(text + packet))
    assert split_text(text + packet) == (text, packet)


AMBIGUOUS_TEXT = b"`\r\n"  # 0x60: the first byte of an IPv6 header


@example(payload=b"\x00" * 8 + b"\n" + b"\x00" * 8)  # what hypothesis once found
@given(payload=st.binary(min_size=17, max_size=17))
def test_a_frame_that_reads_both_ways_is_kept_whole(payload: bytes) -> None:
    """'`' CR LF and a 37-byte IPv4 packet are also exactly one 40-byte IPv6 packet (payload
    length 0: the IPv4 header's second and third bytes). The rule that protects real
    packets holding 0x0A wins: the frame is not split, it goes on as the IPv6 packet it
    says it is (and the IPv6 stack that gets it drops it)."""
    packet = bytes(IP(src="10.2.0.1", dst="192.0.2.1") / payload)
    assert len(packet) == 37
    frame = AMBIGUOUS_TEXT + packet
    assert ip_length(frame) == len(frame) == 40
    assert split_text(frame) is None
    assert classify(frame) is FrameKind.IPV6


@settings(max_examples=300, deadline=None)
@given(packet=ip_packets())
def test_a_packet_holding_newlines_is_never_cut(packet: bytes) -> None:
    # the whole frame is an IP packet by its own length: never split, classified as IP
    assert split_text(packet) is None
    assert classify(packet) in (FrameKind.IPV4, FrameKind.IPV6)
    decoded = SlipDecoder(mtu=1500).feed(encode_frame(packet))
    assert decoded == [packet]


def test_packet_starting_with_printable_bytes_and_newline_is_recovered_whole() -> None:
    # 0x60 0x0A...: an IPv6 header whose first bytes are "`\n"; the earliest split wins
    packet = bytes(IPv6(src="bbbb::1", dst="cccc::1", tc=0xA0 >> 4 << 4, fl=0) / b"x\ny")
    packet = b"\x60\x0a" + packet[2:]
    assert split_text(b"hello\n" + packet) == (b"hello\n", packet)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_split_text_only_returns_printable_text_and_one_exact_packet(frame: bytes) -> None:
    parts = split_text(frame)
    if parts is None:
        return
    text, packet = parts
    assert text + packet == frame and text.endswith(b"\n")
    assert all(0x20 <= b < 0x7F or b in (0x09, 0x0A, 0x0D) for b in text)
    assert classify(packet) in (FrameKind.IPV4, FrameKind.IPV6)


def test_text_not_ending_in_newline_or_truncated_packet_is_not_split() -> None:
    packet = bytes(IPv6(src="bbbb::1", dst="cccc::1") / b"payload")
    assert split_text(b"no newline" + packet) is None
    assert split_text(b"line\r\n" + packet[:-1]) is None  # shorter than its header says
    assert split_text(b"line\r\n" + packet + b"x") is None  # longer: not one packet
    assert split_text(b"line\r\n") is None
    assert split_text(b"\x00bin\n" + packet) is None  # binary before the newline


@settings(max_examples=200, deadline=None)
@given(
    noise=st.binary(min_size=1, max_size=400).map(lambda b: b.replace(E, b"\x00")),
    packet=ip_packets(),
    cuts=cuts_st,
)
def test_noise_burst_or_overlong_frame_then_good_frame(
    noise: bytes, packet: bytes, cuts: list[int]
) -> None:
    """Random bytes (ended by END) and an over-long frame cost nothing but themselves."""
    dec = SlipDecoder(mtu=300)
    overlong = encode_frame(b"\x01" * 301) + encode_frame(b"z" * 5000)
    stream = noise + E + overlong + encode_frame(packet)
    frames = _feed_split(dec, stream, cuts)
    assert frames[-1] == packet
    assert dec.stats.dropped_too_big == 2
    assert len(frames) + dec.stats.dropped + dec.stats.empty == 4
    assert not dec.in_frame and dec.buffered == 0
