"""The one batcher of agents and routers, and the one dispatch of bus clients, without a
loop or a broker: fake timers and a fake bus (agent.bus.batcher, agent.bus.dispatch)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bus import wire
from agent.bus.batcher import COALESCE_S, HOLD_MAX_S, PACE_FROM, STREAM_GAP_S, Batcher
from agent.bus.datapath import FAST_PROPS
from agent.bus.dispatch import dispatcher
from agent.counters import Counters


class Timer:
    def __init__(self, at: float, fn: Callable[[], None]) -> None:
        self.at, self.fn, self.cancelled = at, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """A clock and call_later whose time moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(self.now + delay, fn)
        self.timers.append(timer)
        return timer

    def advance(self, to: float) -> None:
        while True:
            due = [t for t in self.timers if not t.cancelled and t.at <= to]
            if not due:
                break
            timer = min(due, key=lambda t: t.at)
            self.timers.remove(timer)
            self.now = max(self.now, timer.at)
            timer.fn()
        self.now = max(self.now, to)


class FakeBus:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.window_open = True
        self.sent: list[tuple[float, str, list[bytes]]] = []
        self.paced = 0
        self.refuse: str | None = None
        self.before_flush: Callable[[], None] | None = None

    def publish(self, key: str, body: bytes, props: bytes | None = None) -> str | None:
        assert props is FAST_PROPS
        if self.refuse:
            return self.refuse
        self.sent.append((self.clock.now, key, wire.decode_batch(body)))
        return None

    def pace(self) -> None:
        self.paced += 1

    def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()


def make(coalesce: bool = False, sent_path: str | None = None) -> tuple[Clock, FakeBus, Batcher]:
    clock = Clock()
    bus = FakeBus(clock)
    b = Batcher(bus, Counters(), coalesce=coalesce, sent_path=sent_path, clock=clock,
                call_later=clock.call_later)
    bus.before_flush = b.release
    return clock, bus, b


def pkt(n: int, size: int = 60) -> bytes:
    return bytes([0x60]) + n.to_bytes(4, "big") + bytes(size - 5)


def test_a_burst_leaves_as_one_message_per_key_and_a_stream_asks_for_pacing() -> None:
    _clock, bus, b = make(sent_path="tx fast")
    for i in range(PACE_FROM):
        b.add("k1", pkt(i))
    b.add("k2", pkt(99))
    b.flush()
    assert [(k, n) for _, k, n in bus.sent] == [
        ("k1", [pkt(i) for i in range(PACE_FROM)]), ("k2", [pkt(99)]),
    ]
    assert bus.paced == 1  # k1's batch, not k2's lone packet
    assert b.counters.packets["tx fast"] == 2


def test_held_while_the_window_is_closed_released_by_a_confirm_or_the_deadline() -> None:
    clock, bus, b = make()
    bus.window_open = False
    b.add("k", pkt(1))
    b.flush()
    b.add("k", pkt(2))
    b.flush()
    assert bus.sent == [] and b.held
    bus.flush()  # a read from the broker without the confirm: still held
    assert bus.sent == []
    bus.window_open = True
    bus.flush()  # the confirm
    assert bus.sent == [(0.0, "k", [pkt(1), pkt(2)])] and not b.held
    bus.window_open = False
    b.add("k", pkt(3))
    b.flush()
    clock.advance(HOLD_MAX_S - 0.001)
    assert len(bus.sent) == 1
    clock.advance(HOLD_MAX_S)  # no confirm came: out anyway
    assert bus.sent[-1] == (HOLD_MAX_S, "k", [pkt(3)])


def test_a_full_batch_never_waits_for_the_window() -> None:
    _clock, bus, b = make()
    bus.window_open = False
    while not b.full:
        b.add("k", pkt(0, 1400))
    b.flush()
    assert len(bus.sent) == 1 and not b.pending


def test_amid_a_stream_a_burst_is_held_for_followers() -> None:
    clock, bus, b = make(coalesce=True)
    b.add("k", pkt(1))
    b.flush()  # idle: at once
    clock.advance(STREAM_GAP_S / 2)
    b.add("k", pkt(2))
    b.flush()  # right after a message: held
    clock.advance(clock.now + COALESCE_S / 2)
    b.add("k", pkt(3))
    b.flush()
    assert len(bus.sent) == 1
    clock.advance(STREAM_GAP_S / 2 + COALESCE_S)
    assert bus.sent[-1][2] == [pkt(2), pkt(3)]


def test_drops_are_counted_per_packet_by_the_bus_reason() -> None:
    _clock, bus, b = make()
    bus.refuse = "queue full"
    for i in range(3):
        b.add("k", pkt(i))
    b.flush()
    assert b.counters.drops == {"queue full": 3}


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["k1", "k2"]), st.integers(40, 1500)),
        st.tuples(st.just("flush"), st.just(""), st.just(0)),
        st.tuples(st.just("window"), st.just(""), st.integers(0, 1)),
        st.tuples(st.just("read"), st.just(""), st.just(0)),
        st.tuples(st.just("wait"), st.just(""), st.integers(0, 300)),  # in ms
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(STEPS, st.booleans())
def test_a_held_batch_is_always_released_by_the_timer(steps: list, coalesce: bool) -> None:
    """Whatever the window does: every packet is published once, in order per key, and
    none waits more than HOLD_MAX_S after the end of its burst (flush)."""
    clock, bus, b = make(coalesce=coalesce)
    added: dict[str, list[bytes]] = {"k1": [], "k2": []}
    flushed_at: dict[bytes, float] = {}
    n = 0

    def published() -> set[bytes]:
        return {p for _, _, ps in bus.sent for p in ps}

    for what, key, arg in steps:
        if what == "add":
            n += 1
            p = pkt(n, arg)
            added[key].append(p)
            b.add(key, p)
        elif what == "flush":
            for k in added:
                for p in added[k]:
                    flushed_at.setdefault(p, clock.now)
            b.flush()
        elif what == "window":
            bus.window_open = bool(arg)
        elif what == "read":
            bus.flush()
        else:
            clock.advance(clock.now + arg / 1000)
        out = published()
        for p, t in flushed_at.items():
            assert p in out or clock.now - t <= HOLD_MAX_S + 1e-9
    for k in added:  # the end of a burst, then the window stays shut
        for p in added[k]:
            flushed_at.setdefault(p, clock.now)
    b.flush()
    bus.window_open = False
    clock.advance(clock.now + HOLD_MAX_S)
    for k, packets in added.items():
        assert [p for _, key, ps in bus.sent if key == k for p in ps] == packets
    assert not b.pending and not b.held


def test_dispatch_hands_typed_messages_on_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = Counters()
    got: list[wire.Message] = []

    def handle(msg: wire.Message) -> None:
        if isinstance(msg, wire.TunStarted):
            raise RuntimeError("a handler bug")
        got.append(msg)

    on_message = dispatcher(handle, counters, logging.getLogger("test"))
    on_message("toAgent.a.ip.tun.packet.raw", wire.encode_packet(pkt(1), "tun0"), None)
    on_message(wire.READY_KEY, b"{not json", None)
    on_message("fromAgent.b.ip.tun.started", b"{}", None)
    assert [type(m) for m in got] == [wire.Packets]
    assert counters.drops["error"] == 1 and sum(counters.drops.values()) == 2
    assert "dropped a malformed message on testingtool.component.ready" in caplog.text
    assert "a handler bug" in caplog.text  # with its traceback
    seen: list[str] = []
    on_message = dispatcher(handle, counters, logging.getLogger("test"),
                            malformed=lambda key, exc: seen.append(key))
    on_message(wire.READY_KEY, b"[]", None)
    assert seen == [wire.READY_KEY]
