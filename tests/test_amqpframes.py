"""The data path's AMQP frames (agent.bus.frames) against pika's own marshalling."""

from __future__ import annotations

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from agent.bus.frames import (
    Confirm,
    Delivery,
    FrameError,
    FrameReader,
    Passthrough,
    PublishEncoder,
    encode_properties,
)

CH = 1
PACED = 3  # the channel our paced publishes go on (agent.bus.connection)
shortstr = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
keys = st.text(st.characters(codec="ascii", min_codepoint=33, max_codepoint=126), max_size=120)
bodies = st.binary(max_size=3000)
frame_maxes = st.integers(min_value=9, max_value=2000) | st.just(131072)
ctypes = st.none() | st.sampled_from(["application/json", "application/x-ip-packet-batch"])
encodings = st.none() | st.just("utf-8")


def pika_publish(ch: int, frame_max: int, exchange: str, key: str, props: pika.BasicProperties,
                 body: bytes) -> bytes:
    """What pika's Connection._send_message writes for one basic_publish."""
    out = [
        frame.Method(ch, spec.Basic.Publish(exchange=exchange, routing_key=key)).marshal(),
        frame.Header(ch, len(body), props).marshal(),
    ]
    step = frame_max - 8
    out += [frame.Body(ch, body[i : i + step]).marshal() for i in range(0, len(body), step)]
    return b"".join(out)


@given(shortstr, keys, ctypes, encodings, bodies, frame_maxes, st.integers(1, 65535))
def test_publish_is_byte_identical_to_pika(exchange, key, ctype, enc, body, frame_max, ch) -> None:
    encoder = PublishEncoder(ch, frame_max, exchange)
    ours = b"".join(encoder.publish(key, encode_properties(ctype, enc), body))
    props = pika.BasicProperties(content_type=ctype, content_encoding=enc)
    assert ours == pika_publish(ch, frame_max, exchange, key, props, body)
    # the cached method frame is reused, and still right
    assert b"".join(encoder.publish(key, encode_properties(ctype, enc), body)) == ours


@given(st.integers(0, 2**64 - 1), st.booleans())
def test_ack_is_byte_identical_to_pika(tag: int, multiple: bool) -> None:
    ours = PublishEncoder(CH, 131072, "amq.topic").ack(tag, multiple)
    assert ours == frame.Method(CH, spec.Basic.Ack(tag, multiple)).marshal()


def test_publish_refuses_a_key_longer_than_amqp_allows() -> None:
    with pytest.raises(ValueError, match="255"):
        PublishEncoder(CH, 131072, "amq.topic").publish("k" * 256, b"\x00\x00", b"x")


# -- reading --------------------------------------------------------------------------------


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[bytes], Delivery | None, object]:
    """The frames of one delivery as the broker sends them, and what the reader should say."""
    ch = draw(st.sampled_from([CH, CH, CH, 2]))  # mostly ours, sometimes another channel
    tag = draw(st.integers(1, 2**64 - 1))
    key = draw(keys)
    ctype = draw(ctypes)
    headers = draw(st.none() | st.just({"x": 1}))
    props = pika.BasicProperties(content_type=ctype, headers=headers, delivery_mode=2)
    body = draw(bodies)
    step = draw(frame_maxes) - 8
    frames = [
        frame.Method(ch, spec.Basic.Deliver(draw(shortstr), tag, draw(st.booleans()),
                                            draw(shortstr), key)).marshal(),
        frame.Header(ch, len(body), props).marshal(),
    ]
    frames += [frame.Body(ch, body[i : i + step]).marshal() for i in range(0, len(body), step)]
    if ch != CH:
        return frames, None, None
    return frames, Delivery(tag, key, ctype, body), None


@st.composite
def confirms(draw: st.DrawFn) -> tuple[list[bytes], Confirm | None, object]:
    """A publisher confirm (ack or nack) as the broker sends it; ours on CH and on the
    reader's confirm channel (PACED), another channel's (2) passes through."""
    ch = draw(st.sampled_from([CH, CH, PACED, 2]))
    tag = draw(st.integers(0, 2**64 - 1))
    multiple = draw(st.booleans())
    nack = draw(st.booleans())
    if nack:
        method = spec.Basic.Nack(tag, multiple, draw(st.booleans()))
    else:
        method = spec.Basic.Ack(tag, multiple)
    raw = frame.Method(ch, method).marshal()
    if ch not in (CH, PACED):
        return [raw], None, None
    return [raw], Confirm(tag, multiple, nack), None


others = st.sampled_from([
    frame.Heartbeat().marshal(),
    frame.Method(CH, spec.Basic.QosOk()).marshal(),
    frame.Method(CH, spec.Basic.ConsumeOk("ctag")).marshal(),
    frame.Method(PACED, spec.Channel.OpenOk()).marshal(),
    frame.Method(PACED, spec.Confirm.SelectOk()).marshal(),
    frame.Method(0, spec.Connection.Blocked("low on memory")).marshal(),
    frame.Method(CH, spec.Channel.Close(406, "PRECONDITION_FAILED", 50, 10)).marshal(),
])


@settings(max_examples=300)
@given(
    st.lists(deliveries() | confirms() | others.map(lambda f: ([f], None, f)), max_size=12),
    st.data(),
)
def test_reader_assembles_deliveries_and_passes_the_rest_in_order(items, data) -> None:
    stream = b"".join(b"".join(frames) for frames, _, _ in items)
    expected: list[object] = []
    for frames, delivery, other in items:
        if delivery is not None:
            expected.append(delivery)
        elif other is not None:
            expected.append(Passthrough(other))
        else:  # another channel's delivery: each of its frames passes through
            expected += [Passthrough(f) for f in frames]
    # fed in random pieces: the split points must not matter
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = FrameReader(CH)
    reader.confirm_channel = PACED
    got: list[object] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[a:b])
    assert got == expected
    assert reader.buffered == 0
    # what passes through is what pika decodes the same way
    for event in got:
        if isinstance(event, Passthrough):
            n, value = frame.decode_frame(event.raw)
            assert n == len(event.raw) and value is not None


@settings(max_examples=500)
@given(st.binary(max_size=400), st.data())
def test_reader_garbage_is_a_frame_error_or_waits(garbage: bytes, data) -> None:
    """Whatever the bytes, the reader raises FrameError or keeps them: never anything else."""
    reader = FrameReader(CH)
    cut = data.draw(st.integers(0, len(garbage)))
    try:
        reader.feed(garbage[:cut])
        reader.feed(garbage[cut:])
    except FrameError:
        pass


def test_reader_refuses_content_out_of_order() -> None:
    deliver = frame.Method(CH, spec.Basic.Deliver("c", 1, False, "amq.topic", "k")).marshal()
    header = frame.Header(CH, 5, pika.BasicProperties()).marshal()
    with pytest.raises(FrameError, match="content header"):
        FrameReader(CH).feed(deliver + frame.Body(CH, b"hello").marshal())
    with pytest.raises(FrameError, match="interrupted"):
        FrameReader(CH).feed(deliver + header + frame.Method(CH, spec.Basic.QosOk()).marshal())
    with pytest.raises(FrameError, match="longer"):
        FrameReader(CH).feed(deliver + header + frame.Body(CH, b"hello!").marshal())
    with pytest.raises(FrameError, match="frame-end"):
        FrameReader(CH).feed(frame.Heartbeat().marshal()[:-1] + b"\x00")
    # a frame longer than the negotiated frame_max: refused at its header, not buffered
    with pytest.raises(FrameError, match="frame_max"):
        FrameReader(CH, 4096).feed(frame.Body(CH, b"x" * 5000).marshal()[:100])


def test_reader_joins_a_large_frame_once_complete() -> None:
    """A body frame arriving in many small chunks is buffered, then read as one."""
    deliver = frame.Method(CH, spec.Basic.Deliver("c", 3, False, "amq.topic", "k")).marshal()
    body = bytes(range(256)) * 200
    stream = deliver + frame.Header(CH, len(body), pika.BasicProperties()).marshal() \
        + frame.Body(CH, body).marshal()
    reader = FrameReader(CH)
    got = []
    for i in range(0, len(stream), 1000):
        got += reader.feed(stream[i : i + 1000])
        if not got:
            assert reader.buffered <= 1000 * (i // 1000 + 1)
    assert got == [Delivery(3, "k", None, body)] and reader.buffered == 0


def test_reader_empty_body_and_no_content_type() -> None:
    deliver = frame.Method(CH, spec.Basic.Deliver("c", 7, False, "amq.topic", "a.b")).marshal()
    header = frame.Header(CH, 0, pika.BasicProperties(delivery_mode=1)).marshal()
    assert FrameReader(CH).feed(deliver + header) == [Delivery(7, "a.b", None, b"")]
