"""One batcher for agents and routers: fast-wire packets queued per routing key, published
as few messages as fit, held while the broker is behind.

A burst (the agent: a TUN read; the router: a read from the broker) queues its packets
with `add`; at its end `flush` publishes them, one message per routing key while they fit
(wire.batches), unless:

- the broker has not confirmed our last messages (the bus's `window_open`, agent.bus.pacing):
  the batch waits, and grows, until a confirm opens the window (`release`, from the bus's
  before_flush) or HOLD_MAX_S passed; a full batch never waits;
- amid a stream (`coalesce`, the agent: the previous message left under STREAM_GAP_S ago,
  less than half a batch pending): held up to COALESCE_S for more packets, so batches stay
  large when processes share the cores, while a lone packet (ping) leaves at once.

A batch of PACE_FROM packets or more asks the bus for confirm pacing (`Bus.pace`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

from agent.bus import wire
from agent.bus.datapath import FAST_PROPS
from agent.counters import Counters
from agent.soon import Soon

COALESCE_S = 0.001  # hold a burst at most this long (epoll's resolution is 1 ms)...
STREAM_GAP_S = 0.002  # ...and only if the previous message left less than this ago
# batches wait while this many of our messages wait for the broker's confirm (the bus's
# window_open): chosen from bench.sessions runs of 0 (off), 1 and 2 (docs/scale.md)
CONFIRM_WINDOW = 2
HOLD_MAX_S = 0.2  # a batch held for the broker's confirms leaves after this at the latest
# a batch of this many packets turns the confirms on (Bus.pace): a stream, not a few lone
# packets that happened to meet (pings 1 ms apart make batches of 2 now and then)
PACE_FROM = 4


class Publisher(Protocol):
    """What the batcher needs of agent.bus.connection.Bus."""

    @property
    def window_open(self) -> bool: ...

    def publish(self, routing_key: str, body: bytes, props: bytes | None = None) -> str | None: ...

    def pace(self) -> None: ...

    def flush(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Any]  # asyncio's call_later


class Batcher:
    """Packets per routing key to publish as fast-wire batches. `sent_path`: a counter
    path for each message published (the router's "tx fast"); drops are counted by the
    bus's reason, one per packet. `clock` and `call_later` default to monotonic and the
    running loop's (tests give their own); `soon`: see `add`."""

    def __init__(
        self,
        bus: Publisher | None,
        counters: Counters,
        *,
        coalesce: bool = False,
        soon: bool = False,
        sent_path: str | None = None,
        clock: Callable[[], float] = monotonic,
        call_later: CallLater | None = None,
    ) -> None:
        self.bus = bus
        self.counters = counters
        self.coalesce = coalesce
        self.sent_path = sent_path
        self.clock = clock
        self._call_later = call_later
        self.pending: dict[str, list[bytes]] = {}
        self.pending_bytes = 0
        self._hold: Any = None  # a burst held amid a stream: its send time
        self._window_hold: Any = None  # held for the broker's confirms: its deadline
        self.last_sent = -1.0  # clock() of the last publish
        self._soon = Soon(self.publish) if soon else None

    def add(self, key: str, packet: bytes) -> bool:
        """Queue packet for key; True when the pending packets make a full batch (then
        publish now: a full batch never waits). With `soon`, packets that no flush()
        follows leave at the end of the loop turn (unless held)."""
        try:
            self.pending[key].append(packet)
        except KeyError:
            self.pending[key] = [packet]
        self.pending_bytes += len(packet) + 2
        if self.pending_bytes >= wire.MAX_BATCH_BYTES:
            return True
        soon = self._soon
        if soon is not None and self._hold is None and self._window_hold is None:
            soon()
        return False

    @property
    def full(self) -> bool:
        return wire.batch_full(self.pending_bytes)

    @property
    def held(self) -> bool:
        """Is a timer holding the pending packets?"""
        return self._hold is not None or self._window_hold is not None

    def flush(self) -> None:
        """The end of a burst: publish what is pending, or hold it (see the module)."""
        if self._soon is not None:
            self._soon.cancel()
        if not self.pending:
            return
        assert self.bus is not None
        if not self.bus.window_open and not self.full:
            if self._window_hold is None:
                self._window_hold = self._later(HOLD_MAX_S, self.drain)
            return
        if (
            self.coalesce
            and self.pending_bytes < wire.MAX_BATCH_BYTES // 2
            and self.clock() - self.last_sent < STREAM_GAP_S
        ):
            if self._hold is None:
                self._hold = self._later(COALESCE_S, self.drain)
            return
        self.publish()

    def release(self) -> None:
        """The bus is about to send: a batch held for its confirms leaves if the window
        is open again."""
        if self._window_hold is not None and self.bus is not None and self.bus.window_open:
            self.publish()

    def drain(self) -> None:
        """Publish everything pending now (held or not), then have the bus send it."""
        self.publish()
        if self.bus is not None:
            self.bus.flush()

    def publish(self) -> None:
        """Publish everything pending now, as few messages per key as fit."""
        if self._soon is not None:
            self._soon.cancel()
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._window_hold is not None:
            self._window_hold.cancel()
            self._window_hold = None
        pending, self.pending, self.pending_bytes = self.pending, {}, 0
        if not pending:
            return
        self.last_sent = self.clock()
        bus, counters, sent_path = self.bus, self.counters, self.sent_path
        assert bus is not None
        for key, packets in pending.items():
            if len(packets) >= PACE_FROM:
                bus.pace()  # batching matters now: confirms on (once)
            for body, count in wire.batches(packets):
                reason = bus.publish(key, body, FAST_PROPS)
                if reason is None:
                    counters.batches[count] += 1  # packets per message (--metrics)
                    if sent_path is not None:
                        counters.count(sent_path, len(body))
                else:
                    counters.drops[reason] += count

    def _later(self, delay: float, fn: Callable[[], None]) -> Any:
        call_later = self._call_later or asyncio.get_running_loop().call_later
        return call_later(delay, fn)
