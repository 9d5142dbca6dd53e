"""The bus as a port of the agent (agent/port.py): packets to and from the session.

Up: fromAgent.<name>.ip.tun.packet.raw, as ioppytest's JSON or our fast wire (batches,
agent.bus.batcher). Down: the bus hands every delivery to `on_message`, which parses it
once (agent.bus.dispatch): the packets of toAgent.<name>.ip.tun.packet.raw go to the
`deliver` given to `open()` like any port's; every other message (tun.start,
tun.started, ready...) goes, typed, to the agent's `on_control`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.bus import wire
from agent.bus.batcher import (  # noqa: F401  (the batching constants, as before)
    COALESCE_S,
    CONFIRM_WINDOW,
    HOLD_MAX_S,
    PACE_FROM,
    STREAM_GAP_S,
    Batcher,
)
from agent.bus.connection import Bus, agent_queue
from agent.bus.dispatch import dispatcher
from agent.bus.url import Urls
from agent.config import IPNetwork
from agent.counters import Counters
from agent.port import LINKTYPE_RAW, Deliver
from agent.switch import BUS

log = logging.getLogger(__name__)


class BusPort:
    """Packets to the session on fromAgent.<name>.ip.tun.packet.raw.

    JSON (ioppytest's wire, one packet a message) unless `fast` is on: then the packets
    handed in during one burst leave as one fast-wire message (agent.bus.batcher: one
    packet when idle, many when they queue up; amid a stream held up to COALESCE_S; held
    while CONFIRM_WINDOW of our messages wait for the broker's confirm).
    """

    name = BUS
    linktype = LINKTYPE_RAW
    _bus: Bus

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
        # soon: a burst nobody flushed (packets sent outside Agent.receive) leaves at the
        # end of the loop turn
        self.batcher = Batcher(None, counters, coalesce=True, soon=True)
        self.on_message = dispatcher(self._handle, counters, log)
        """The bus's delivery handler: packets to `deliver`, the rest to `on_control`.
        A malformed message is counted and logged, never raised."""

    @property
    def bus(self) -> Bus:
        """The bus (set by its owner once made: the Bus is given this port's on_message)."""
        return self._bus

    @bus.setter
    def bus(self, bus: Bus) -> None:
        self._bus = self.batcher.bus = bus

    async def open(self, deliver: Deliver, key: str) -> None:
        """From now on the packets of our deliveries go to deliver(packets, key)."""
        self._deliver, self._deliver_key = deliver, key

    def _handle(self, msg: wire.Message) -> None:
        if type(msg) is wire.Packets:
            deliver = self._deliver
            if deliver is not None and msg.agent == self.agent and not msg.uplink:
                deliver(msg.packets(), self._deliver_key)
        elif self._on_control is not None:
            self._on_control(msg)

    async def close(self) -> None:
        """Publish what is pending; the agent closes the connection itself (Bus.close)."""
        self._deliver = None
        self.drain()

    def send(self, packet: bytes) -> str | None:
        bus = self._bus
        if not self.fast:
            return bus.publish(self.key, wire.encode_packet(packet, self.interface_name), None)
        if not bus.up:
            return "bus down"
        if self.batcher.add(self.key, packet):
            self.batcher.publish()
        return None

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """Nothing to do: re-route networks never leave by the bus."""

    def flush(self) -> None:
        """The end of a burst: publish the batch or hold it (agent.bus.batcher), then
        write what waits for the broker."""
        self.batcher.flush()
        self.bus.flush()

    def release(self) -> None:
        """Bus.before_flush: a batch held for the broker's confirms leaves once the window
        is open again."""
        self.batcher.release()

    def drain(self) -> None:
        """Publish everything pending now (held or not), then write to the broker."""
        self.batcher.drain()


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
