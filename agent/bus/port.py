"""The bus as a port of the agent (agent/port.py): packets to and from the session.

Up: fromAgent.<name>.ip.tun.packet.raw, as ioppytest's JSON or our fast wire (batches).
Down: the bus hands every delivery to `on_message`, which parses it once (agent/wire.py):
the packets of toAgent.<name>.ip.tun.packet.raw go to the `deliver` given to `open()`
like any port's; every other message (tun.start, tun.started, ready...) goes, typed, to
the agent's `on_control`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Protocol

from agent.bus import wire
from agent.bus.connection import FAST_PROPS, Bus, agent_queue
from agent.bus.url import Urls
from agent.config import IPNetwork
from agent.counters import Counters
from agent.port import LINKTYPE_RAW, Deliver
from agent.soon import Soon
from agent.switch import BUS

log = logging.getLogger(__name__)

# uplink coalescing amid a stream (see BusPort.flush and docs/scale.md)
COALESCE_S = 0.001  # hold a burst at most this long (epoll's resolution is 1 ms)...
STREAM_GAP_S = 0.002  # ...and only if the previous message left less than this ago
# batches wait while this many of our messages wait for the broker's confirm (Bus.window_open):
# chosen from bench.sessions runs of 0 (off), 1 and 2 (docs/scale.md)
CONFIRM_WINDOW = 2
HOLD_MAX_S = 0.2  # a batch held for the broker's confirms leaves after this at the latest
# a batch of this many packets turns the confirms on (Bus.pace): a stream, not a few lone
# packets that happened to meet (pings 1 ms apart make batches of 2 now and then)
PACE_FROM = 4


class BusPort:
    """Packets to the session on fromAgent.<name>.ip.tun.packet.raw.

    JSON (ioppytest's wire, one packet a message) unless `fast` is on: then the packets
    handed in during one burst leave as one fast-wire message (adaptive batching: one
    packet when idle, many when they queue up; amid a stream held up to COALESCE_S; held
    while CONFIRM_WINDOW of our messages wait for the broker's confirm, see `flush`).
    """

    name = BUS
    linktype = LINKTYPE_RAW

    bus: Bus  # set by its owner once made (the Bus is given this port's on_message)

    def __init__(
        self,
        key: str,
        counters: Counters,
        agent: str = "",
        on_control: Callable[[wire.Message], None] | None = None,
    ) -> None:
        self.key = key
        self.counters = counters
        self.agent = agent  # packets on toAgent.<agent>.ip.tun.packet.raw are ours
        self._on_control = on_control
        self._deliver: Deliver | None = None
        self._deliver_key = BUS
        self.interface_name = "tun0"  # the TUN's name once it exists (peers classify by it)
        self.fast = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_soon = Soon(self._flush_batch)
        self._hold: asyncio.TimerHandle | None = None  # a held burst's send time
        self._window_hold: asyncio.TimerHandle | None = None  # held for confirms: its deadline
        self._last_sent = -1.0  # monotonic() of the last fast-wire message

    async def open(self, deliver: Deliver, key: str) -> None:
        """From now on the packets of our deliveries go to deliver(packets, key)."""
        self._deliver, self._deliver_key = deliver, key

    def on_message(self, routing_key: str, body: bytes, content_type: str | None) -> None:
        """The bus's delivery handler: packets to `deliver`, the rest to `on_control`.
        A malformed message is counted and logged, never raised."""
        try:
            msg = wire.parse(routing_key, body, content_type)
            if type(msg) is wire.Packets:
                deliver = self._deliver
                if deliver is not None and msg.agent == self.agent and not msg.uplink:
                    deliver(msg.packets(), self._deliver_key)
            elif self._on_control is not None:
                self._on_control(msg)
        except wire.WireError as exc:
            self.counters.drop(exc.reason)
            log.warning("dropped a malformed message on %s: %s", routing_key, exc)
        except Exception:  # a handler bug must not kill the agent
            self.counters.drop("error")
            log.exception("error handling a message on %s", routing_key)

    async def close(self) -> None:
        """Publish what is pending; the agent closes the connection itself (Bus.close)."""
        self._deliver = None
        self.drain()

    def send(self, packet: bytes) -> str | None:
        if not self.fast:
            if self.bus.publish(self.key, wire.encode_packet(packet, self.interface_name)):
                return None
            return self.bus.drop_reason or "bus down"
        if not self.bus.up:
            self.bus.drop_reason = "bus down"
            return "bus down"
        self._pending.append(packet)
        self._pending_bytes += len(packet) + 2
        if wire.batch_full(self._pending_bytes):
            self._flush_batch()
        elif self._hold is None and self._window_hold is None:
            self._flush_soon()
        return None

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """Nothing to do: re-route networks never leave by the bus."""

    def flush(self) -> None:
        """The end of a burst: publish the batch, then write what waits for the broker.

        Amid a stream (the previous message left under STREAM_GAP_S ago, less than half a
        batch pending) the batch is held up to COALESCE_S for more packets: batches stay
        large when processes share the cores (fewer broker messages per packet), while a
        lone packet (ping, an idle session) leaves at once.

        While the broker has not confirmed CONFIRM_WINDOW of our messages
        (`Bus.window_open`), the batch waits, and grows, until a confirm opens the window
        (`release`, from Bus.before_flush) or HOLD_MAX_S passed; a full batch never waits.
        A quick broker confirms in well under a millisecond (no delay to speak of); a slow
        one (a busy host) gets fewer, fuller messages instead of a queue of small ones.
        """
        if self._pending:
            if not self.bus.window_open:
                self._flush_soon.cancel()  # the next confirm (Bus.before_flush) sends it
                if self._window_hold is None:
                    self._window_hold = asyncio.get_running_loop().call_later(
                        HOLD_MAX_S, self.drain
                    )
            elif (
                self._pending_bytes < wire.MAX_BATCH_BYTES // 2
                and monotonic() - self._last_sent < STREAM_GAP_S
            ):
                if self._hold is None:
                    self._flush_soon.cancel()
                    self._hold = asyncio.get_running_loop().call_later(COALESCE_S, self.drain)
            else:
                self._flush_batch()
        self.bus.flush()

    def release(self) -> None:
        """Bus.before_flush: a batch held for the broker's confirms leaves once the window
        is open again."""
        if self._window_hold is not None and self.bus.window_open:
            self._flush_batch()

    def drain(self) -> None:
        """Publish everything pending now (held or not), then write to the broker."""
        self._flush_batch()
        self.bus.flush()

    def _flush_batch(self) -> None:
        self._flush_soon.cancel()
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self._window_hold is not None:
            self._window_hold.cancel()
            self._window_hold = None
        packets, self._pending, self._pending_bytes = self._pending, [], 0
        if packets:
            self._last_sent = monotonic()
            if len(packets) >= PACE_FROM:
                self.bus.pace()  # batching matters now: confirms on (once)
        for body, count in wire.batches(packets):
            if not self.bus.publish(self.key, body, FAST_PROPS):
                self.counters.drops[self.bus.drop_reason] += count


class BusOwner(Protocol):
    """What the agent's bus port reports to its agent (agent.node.Agent)."""

    counters: Counters

    def on_control(self, msg: wire.Message) -> None:
        """A typed bus message that is not packets (tun.start, tun.started, ready)."""

    def on_bus_up(self) -> None:
        """The connection is up (first time, or again after a reconnection)."""

    def on_fatal(self, reason: str) -> None:
        """The bus cannot be used: end the run with this one line."""


def agent_bus_port(
    name: str, url: Urls, exchange: str, ca_file: str | None, wire_mode: str, owner: BusOwner
) -> BusPort:
    """The bus port of the agent called name, with its connection: the one place the two
    are wired to each other (deliveries -> port.on_message, publishes -> port.bus, a
    batch held for the broker's confirms -> port.release at the bus's flush). Nothing
    connects until the agent calls `port.bus.start()`."""
    port = BusPort(wire.uplink_key(name), owner.counters, name, owner.on_control)
    port.bus = Bus(
        url,
        exchange,
        agent_queue(
            name,
            [wire.downlink_key(name)],
            control=[wire.start_key(name), "fromAgent.*.ip.tun.started", wire.READY_KEY],
        ),
        on_message=port.on_message,  # packets -> the agent's switch, the rest -> on_control
        on_up=owner.on_bus_up,
        on_fatal=owner.on_fatal,
        ca_file=ca_file,
        confirm_window=CONFIRM_WINDOW,
    )
    port.bus.before_flush = port.release
    port.fast = wire_mode == "fast"
    return port
