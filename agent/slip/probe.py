"""802.15.4 probe mode (`connect --serial-mode 802154`): serial line <-> bus, no TUN.

Compatible with the original agent's serial connector: each SLIP frame read from the
line (an 802.15.4 MAC frame without FCS) is published on
``fromAgent.<name>.802154.serial.packet.raw`` with `data` (the frame) and `data_slip`
(the frame as it is on the line: ``END``, the escaped frame, ``END``); the `data` of each
message on ``toAgent.<name>.802154.serial.packet.raw`` is SLIP-encoded to the line.
``fromAgent.<name>.802154.serial.started`` is published whenever the port is open and
the bus is up (first connection, reconnection, port reopened after an unplug).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.bus import wire
from agent.bus.connection import Bus, agent_queue
from agent.bus.dispatch import dispatcher
from agent.bus.url import Urls
from agent.service import Service
from agent.slip.framing import encode_frame
from agent.slip.port import SerialPort, SerialSettings

log = logging.getLogger(__name__)

INTERFACE_NAME = "serial"  # peers classify captures by it (802.15.4 without FCS)


def data_slip(frame: bytes) -> bytes:
    """The frame as on the line, delimiters included (SLIP escaping is canonical)."""
    return encode_frame(frame, leading_end=True)


class SerialProbe(Service):
    """One serial line bridged to the bus as raw 802.15.4 frames."""

    def __init__(
        self,
        name: str,
        url: Urls,
        settings: SerialSettings,
        exchange: str = "amq.topic",
        ca_file: str | None = None,
        stats_interval: float = 0.0,
    ) -> None:
        super().__init__(log, stats_interval)
        self.name = name
        self.url = url
        self.settings = settings
        self._uplink_key = wire.serial_uplink_key(name)
        self._downlink_key = wire.serial_downlink_key(name)
        self._started_key = wire.serial_started_key(name)
        # `-v`: called with (frame, "up" / "down") for each frame (agent.inspect.taps.WpanTrace)
        self.trace: Callable[[bytes, str], None] | None = None
        self.port = SerialPort(
            settings, self._on_frame, on_open=self._on_port_open, on_drop=self._on_drop
        )
        self.bus = Bus(
            url,
            exchange,
            agent_queue(name, [self._downlink_key]),
            on_message=dispatcher(self._on_message, self.counters, log),
            on_up=self._on_bus_up,
            on_fatal=self.on_fatal,
            ca_file=ca_file,
        )

    def open(self) -> None:
        """Open the serial port now (SerialPortError with a one-line reason if it cannot)."""
        self.port.open()

    # -- start / stop (the run loop is agent.service.Service.run) -------------------------

    async def start(self) -> None:
        self.port.start()
        log.info(
            "serial port %s open at %d baud (802.15.4 probe mode)",
            self.settings.device,
            self.settings.baudrate,
        )
        log.info("connecting to %s as %s", self.bus.url.redacted(), self.name)
        self.bus.start()

    async def cleanup(self) -> None:
        self.port.close()
        await self.bus.close(timeout=1.0)

    # -- serial -> bus -------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        body = wire.encode_serial_packet(frame, data_slip(frame), INTERFACE_NAME)
        reason = self.bus.publish(self._uplink_key, body, None)
        if reason is None:
            self.counters.count("serial>bus", len(frame))
            if self.trace is not None:
                self.trace(frame, "up")
        else:
            self.counters.drop(reason)

    def _on_drop(self, reason: str, count: int) -> None:
        self.counters.drops[f"serial {reason}"] += count

    def _on_port_open(self) -> None:
        if self.bus.up:
            self._publish_started()

    def _publish_started(self) -> None:
        body = wire.encode_serial_started(self.name, self.settings.device, self.settings.baudrate)
        self.bus.publish(self._started_key, body, None)

    # -- bus -> serial -------------------------------------------------------------------

    def _on_bus_up(self) -> None:
        self.bus.publish(wire.READY_KEY, wire.encode_ready(self.name), None)
        log.info("connected to %s; published ready", self.bus.url.where)
        if self.port.is_open:
            self._publish_started()

    def _on_message(self, msg: wire.Message) -> None:
        """One delivery, typed (agent.bus.dispatch counts and logs what this raises)."""
        if not isinstance(msg, wire.Frames) or msg.uplink or msg.agent != self.name:
            return
        frame = msg.frame()
        if self.port.send(frame):
            self.counters.count("bus>serial", len(frame))
            if self.trace is not None:
                self.trace(frame, "down")
        else:
            self.counters.drop("serial queue full" if self.port.is_open else "serial down")
