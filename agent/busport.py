"""The bus as a port of the agent (agent/port.py): packets to and from the session.

Up: fromAgent.<name>.ip.tun.packet.raw, as ioppytest's JSON or our fast wire (batches).
Down: the bus delivers every message to the agent, which parses it (agent/wire.py).
"""

from __future__ import annotations

from agent import wire
from agent.bus import FAST_PROPS, Bus
from agent.counters import Counters
from agent.port import LINKTYPE_RAW, Deliver
from agent.soon import Soon
from agent.switch import BUS


class BusPort:
    """Packets to the session on fromAgent.<name>.ip.tun.packet.raw.

    JSON (ioppytest's wire, one packet a message) unless `fast` is on: then the packets
    handed in during one loop iteration leave as one fast-wire message (adaptive
    batching: one packet when idle, many when they queue up; no timer, no added delay).
    """

    name = BUS
    linktype = LINKTYPE_RAW

    def __init__(self, bus: Bus, key: str, counters: Counters) -> None:
        self.bus = bus
        self.key = key
        self.counters = counters
        self.interface_name = "tun0"  # the TUN's name once it exists (peers classify by it)
        self.fast = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_soon = Soon(self._flush_batch)

    async def open(self, deliver: Deliver, key: str) -> None:
        """Nothing to start: the bus delivers every message to the agent, which parses
        it (wire.parse) and hands the packets of its Packets messages to the switch."""

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
        else:
            self._flush_soon()
        return None

    def flush(self) -> None:
        """The end of a burst: publish the batch, then write what waits for the broker."""
        self._flush_batch()
        self.bus.flush()

    def _flush_batch(self) -> None:
        self._flush_soon.cancel()
        packets, self._pending, self._pending_bytes = self._pending, [], 0
        for body, count in wire.batches(packets):
            if not self.bus.publish(self.key, body, FAST_PROPS):
                self.counters.drops[self.bus.drop_reason] += count
