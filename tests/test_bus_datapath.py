"""The Bus's own data path (agent.bus.frames under pika) against the real broker.

Small frame_max so bodies span many body frames; a small prefetch so a missing ack
stalls the stream; heartbeat frames passing through to pika while the reader owns the
socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import pika
import pytest

from agent.bus import pikaedge
from agent.bus.connection import FAST_PROPS, JSON_PROPS, Bus, QueueSpec
from agent.bus.pacing import PACE_IDLE_S, PaceState, confirms_late
from agent.bus.url import parse_url
from agent.bus.wire import CONTENT_TYPE, FAST_CONTENT_TYPE
from tests.conftest import Listener, PublishTrace, until

pytestmark = pytest.mark.e2e

SIZES = [0, 1, 4087, 4088, 4089, 20000, *random.Random(5).choices(range(9000), k=150)]


async def _with_bus(
    url: str, keys: list[str], body: Callable[[Bus, list], object], confirm_window: int = 0
) -> list:
    got: list[tuple[str, bytes, str | None]] = []
    up = asyncio.Event()
    fatal: list[str] = []
    bus = Bus(
        parse_url(url),
        "amq.topic",
        QueueSpec(name="", bindings=keys, prefetch=8),
        on_message=lambda k, b, c: got.append((k, b, c)),
        on_up=up.set,
        on_fatal=fatal.append,
        confirm_window=confirm_window,
    )
    bus.start()
    try:
        await asyncio.wait_for(up.wait(), 10)
        await body(bus, got)  # type: ignore[misc]
    finally:
        await bus.close()
    assert not fatal
    return got


def _blocking_publish(url: str, messages: list[tuple[str, bytes, str | None]]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for key, body, ctype in messages:
            ch.basic_publish("amq.topic", key, body, pika.BasicProperties(content_type=ctype))
    finally:
        conn.close()


def test_deliveries_in_order_across_body_frames_and_acked(vhost: str) -> None:
    url = vhost + "?frame_max=4096"
    rng = random.Random(1)
    sent = [
        (f"dp.in.{i % 3}", rng.randbytes(size), [CONTENT_TYPE, FAST_CONTENT_TYPE, None][i % 3])
        for i, size in enumerate(SIZES)
    ]

    async def body(_bus: Bus, got: list) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _blocking_publish, vhost, sent)
        # prefetch 8: all of them arrive only if the reader's acks reach the broker
        await until(lambda: len(got) >= len(sent), 20)

    got = asyncio.run(_with_bus(url, ["dp.in.*"], body))
    assert len(got) == len(sent)
    assert got == sent


def test_publishes_read_back_by_pika_unchanged(vhost: str) -> None:
    url = vhost + "?frame_max=4096"
    rng = random.Random(2)
    msgs = [(rng.randbytes(size), [JSON_PROPS, FAST_PROPS][i % 2]) for i, size in enumerate(SIZES)]
    listener = Listener(vhost, ["dp.out"])
    try:
        async def body(bus: Bus, _got: list) -> None:
            for payload, props in msgs:
                assert bus.publish("dp.out", payload, props) is None
            bus.flush()
            assert await until(lambda: listener.count() == len(msgs), 5)

        asyncio.run(_with_bus(url, ["dp.unused"], body))
        for payload, props in msgs:
            msg = listener.get(timeout=5)
            assert msg is not None
            key, got, p = msg
            assert (key, got) == ("dp.out", payload)
            want = (CONTENT_TYPE, "utf-8") if props is JSON_PROPS else (FAST_CONTENT_TYPE, None)
            assert (p.content_type, p.content_encoding) == want  # type: ignore[attr-defined]
        assert listener.get(timeout=0.3) is None
    finally:
        listener.close()


def test_confirms_come_back_through_our_reader_and_open_the_window(vhost: str) -> None:
    """confirm_window=2: once paced, our publishes go on the confirm channel and the
    broker confirms each (read by our reader, not pika); the bus learns its quickest
    confirm, and the window is open again once they are all confirmed. Before pace(), and
    PACE_IDLE_S after the last pace() once all are confirmed: no confirms, publishes on the
    first channel (the broker's firehose says which channel each came by). The order of
    the messages is kept across both moves."""
    listener = Listener(vhost, ["dp.conf"])
    trace = PublishTrace(vhost)
    try:
        async def body(bus: Bus, _got: list) -> None:
            await until(lambda: bus.path.reader is not None and bus.pacer.available, 5)
            assert bus.window_open and bus.in_flight == 0
            assert bus.publish("dp.conf", b"before", FAST_PROPS) is None  # no confirms yet
            bus.flush()
            assert await until(lambda: listener.count() == 1, 5)
            assert bus.in_flight == 0 and bus.pacer.quickest == float("inf")
            bus.pace()  # batching starts: confirms on, once the first channel answered
            assert bus.publish("dp.conf", b"moving", FAST_PROPS) is None  # still the 1st channel
            assert bus.in_flight == 0
            await until(lambda: bus.pacer.state is PaceState.ON, 5)
            for i in range(50):
                assert bus.publish("dp.conf", b"m%d" % i, FAST_PROPS) is None
            assert bus.in_flight == 50
            bus.flush()
            await until(lambda: bus.in_flight == 0, 5)
            assert bus.window_open and 0 < bus.pacer.quickest < 1
            assert bus.publish("dp.conf", b"last", FAST_PROPS) is None
            assert bus.in_flight == 1 and bus.window_open  # 1 < 2
            bus.flush()
            await until(lambda: bus.in_flight == 0, 5)
            # no pace() since: confirms off within two PACE_IDLE_S, publishes unconfirmed
            await until(lambda: bus.pacer.state is PaceState.OFF, 3 * PACE_IDLE_S)
            assert bus.publish("dp.conf", b"after", FAST_PROPS) is None
            assert bus.in_flight == 0
            bus.flush()
            bus.pace()  # a stream again: on again, on the same confirm channel
            await until(lambda: bus.pacer.state is PaceState.ON, 5)
            assert bus.publish("dp.conf", b"again", FAST_PROPS) is None
            assert bus.in_flight == 1
            bus.flush()
            await until(lambda: bus.in_flight == 0, 5)

        asyncio.run(_with_bus(vhost, ["dp.unused"], body, confirm_window=2))
        want = [b"before", b"moving"] + [b"m%d" % i for i in range(50)]
        want += [b"last", b"after", b"again"]
        got = [listener.get(timeout=5) for _ in want]
        assert [m[1] for m in got if m] == want
        assert listener.get(timeout=0.3) is None
        channel = {body: ch for _key, ch, body in trace.drain("dp.conf")}
        first, paced = channel[b"before"], channel[b"m0"]
        assert first != paced
        assert [body for body in want if channel[body] == first] == [b"before", b"moving", b"after"]
        assert all(channel[body] == paced for body in want[2:-2] + [b"again"])
    finally:
        trace.close()
        listener.close()


def test_heartbeats_pass_through_while_the_reader_owns_the_socket(vhost: str) -> None:
    """heartbeat=1: the broker sends a heartbeat frame every 0.5 s. pika must still see
    them (its checker counts them) and see bytes coming in (it drops a connection whose
    byte count stands still), although our reader now owns the socket."""
    url = vhost + "?heartbeat=1"

    async def body(bus: Bus, got: list) -> None:
        assert await until(lambda: bus.path.reader is not None, 5), "the reader did not take over"
        conn = bus._conn
        checker = conn._heartbeat_checker  # type: ignore[union-attr]
        bytes0, beats0 = conn.bytes_received, checker._heartbeat_frames_received  # type: ignore[union-attr]
        # one every 0.5 s: three within 2.5 s
        await until(lambda: checker._heartbeat_frames_received - beats0 >= 3, 2.5)
        assert checker._heartbeat_frames_received - beats0 >= 3
        assert conn.bytes_received - bytes0 >= 3 * 8  # type: ignore[union-attr]
        assert bus.up and bus._conn is conn and bus.reconnects == 0
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _blocking_publish, vhost, [("dp.hb", b"x", None)])
        await until(lambda: bool(got), 5)

    got = asyncio.run(_with_bus(url, ["dp.hb"], body))
    assert got == [("dp.hb", b"x", None)]


def test_lean_path_is_active_on_the_pinned_pika(
    vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On the pika setup.py pins, our reader owns the input and publishes leave by one
    send() on the socket: if a pika upgrade breaks agent.bus.pikaedge, this fails (the bus
    itself would only fall back, slower, with a WARNING)."""
    caplog.set_level(logging.WARNING, logger="agent.bus")

    async def body(bus: Bus, got: list) -> None:
        await until(lambda: bus.lean, 5)
        assert bus.path.reader is not None, "deliveries are not on our reader"
        writer = bus.path.writer
        assert writer is not None and writer.lean, "publishes are not sent directly"
        assert bus.publish("dp.lean", b"x") is None
        await until(lambda: bool(got), 5)

    got = asyncio.run(_with_bus(vhost, ["dp.lean"], body))
    assert got == [("dp.lean", b"x", CONTENT_TYPE)]
    assert "falls back" not in caplog.text


def test_without_pika_internals_the_bus_still_works(
    vhost: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pika whose internals agent.bus.pikaedge does not find: deliveries, acks and
    publishes go through pika's own API, with one WARNING each, and nothing raises."""
    caplog.set_level(logging.WARNING, logger="agent.bus")
    monkeypatch.setattr(pikaedge, "_warned", set())
    monkeypatch.setattr(pikaedge, "take_over", lambda conn: pikaedge._fallback("receiving", "x"))
    monkeypatch.setattr(pikaedge, "writer", lambda conn: pikaedge._fallback("publishing", "y"))
    sent = [(f"dp.fb.{i}", bytes([i]) * (i * 100), CONTENT_TYPE) for i in range(20)]

    async def body(bus: Bus, got: list) -> None:
        await until(lambda: caplog.text.count("falls back") == 2, 5)  # both paths tried
        assert not bus.lean
        for key, payload, _ctype in sent:
            assert bus.publish(key, payload, JSON_PROPS) is None
        await until(lambda: len(got) >= len(sent), 10)

    got = asyncio.run(_with_bus(vhost + "?frame_max=4096", ["dp.fb.*"], body))
    assert got == sent
    assert caplog.text.count("falls back") == 2


@pytest.mark.parametrize(
    ("in_flight", "window", "age", "quickest", "late"),
    [
        (0, 2, 1.0, 0.0001, False),  # nothing out
        (1, 2, 1.0, 0.0001, False),  # under the window
        (2, 2, 0.0001, 0.0001, False),  # at the window, but younger than usual
        (2, 2, 0.0008, 0.0001, True),  # older than 2 x quickest + 0.5 ms: the broker is slow
        (5, 2, 0.05, 0.030, False),  # a distant broker (30 ms round trip) is not a slow one
        (5, 2, 0.061, 0.030, True),
        (5, 2, 10.0, float("inf"), False),  # no confirm seen yet: no idea, do not hold
        (99, 0, 10.0, 0.0001, False),  # window 0: confirms off, never hold
    ],
)
def test_confirms_late(in_flight: int, window: int, age: float, quickest: float,
                       late: bool) -> None:
    assert confirms_late(in_flight, window, age, quickest) is late
