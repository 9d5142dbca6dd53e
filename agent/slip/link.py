"""IP mode: a serial line as one more re-route port of the agent, named "serial".

Packets whose destination is inside a re-route prefix leave by this port, SLIP-encoded;
frames read from the line are classified (`agent.slip.framing.classify`):

* IPv6 / IPv4 packets enter the agent's switch (`deliver([packet], "serial")`, see
  agent/port.py): to the TUN when addressed to this host, else to the bus;
* text (Contiki debug output) is logged at INFO as the mote's output, counted and never
  forwarded; when a line of text was written without SLIP framing just before a frame,
  the IP packet after it is recovered (`agent.slip.framing.split_text`) and forwarded;
* a tunslip6 prefix request ``?P`` is answered with ``!P`` + the first IPv6 re-route
  prefix, so that a Contiki border router learns its prefix;
* anything else is dropped and counted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from agent.config import IPNetwork
from agent.counters import Counters
from agent.port import LINKTYPE_RAW, Deliver
from agent.slip.framing import FrameKind, classify, prefix_answer, split_text
from agent.slip.port import SerialPort, SerialSettings
from agent.switch import SERIAL

log = logging.getLogger(__name__)

PORT_NAME = SERIAL


def answer_prefix(prefixes: Sequence[IPNetwork]) -> ipaddress.IPv6Network | None:
    """The network announced in reply to ``?P``: the first IPv6 prefix of at most /64."""
    for net in prefixes:
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen <= 64:
            return net
    return None


def text_line(frame: bytes) -> str:
    """A debug text frame as one printable log line."""
    return frame.decode("ascii", "replace").strip().replace("\r", "\\r").replace("\n", "\\n")


class SerialLink:
    """The serial line in IP mode: the agent's port "serial" (agent/port.py; see the
    module docstring).

    `check()` opens the device before the loop runs (a missing or busy device is a
    SerialPortError); the agent then `open()`s it (reading on its loop), tells it the
    re-route networks (`routed`, for the ``?P`` answer) and `close()`s it.
    """

    name = PORT_NAME
    linktype = LINKTYPE_RAW

    def __init__(self, settings: SerialSettings, counters: Counters) -> None:
        self.counters = counters
        self.port = SerialPort(settings, self._on_frame, on_drop=self._on_drop)
        self._answer: bytes | None = None
        self._deliver: Deliver | None = None
        self._key = PORT_NAME

    def check(self) -> None:
        self.port.open()

    # -- the port interface --------------------------------------------------------------

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """The networks behind the line: the first IPv6 one answers ``?P``."""
        announced = answer_prefix(networks)
        self._answer = prefix_answer(announced) if announced is not None else None

    async def open(self, deliver: Deliver, key: str) -> None:
        self._deliver, self._key = deliver, key
        self.port.start()

    def send(self, packet: bytes) -> str | None:
        if self.port.send(packet):
            return None
        return "serial queue full" if self.port.is_open else "serial down"

    def flush(self) -> None:
        """Nothing to do: the line's writer drains its queue as the line allows."""

    async def close(self) -> None:
        self.port.close()

    # -- frames from the line ------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        counters = self.counters
        parts = split_text(frame)  # None for a frame that is exactly one IP packet
        if parts is not None:  # an unframed text line, then a frame: keep both
            text, packet = parts
            counters.count("serial>log", len(text))
            log.info("serial text: %s", text_line(text))
            if self._deliver is not None:
                self._deliver([packet], self._key)
            return
        kind = classify(frame)
        if kind is FrameKind.IPV6 or kind is FrameKind.IPV4:
            if self._deliver is not None:
                self._deliver([frame], self._key)
        elif kind is FrameKind.TEXT:
            counters.count("serial>log", len(frame))
            log.info("serial text: %s", text_line(frame))
        elif kind is FrameKind.PREFIX_REQUEST:
            if self._answer is None:
                counters.drop("serial ?P unanswered")
                log.debug("serial: ?P request, but no IPv6 re-route prefix to answer with")
            elif self.port.send(self._answer):
                counters.count("serial ?P>!P", len(self._answer))
                log.info("serial: answered a prefix request with %s", self._answer[2:].hex())
            else:
                counters.drop("serial down")
        else:
            counters.drop(f"serial {kind.value}")
            log.debug("serial: dropped a %d-byte %s frame", len(frame), kind.value)

    def _on_drop(self, reason: str, count: int) -> None:
        """Frames the decoder dropped (bad escape, over the MTU) count as agent drops."""
        self.counters.drops[f"serial {reason}"] += count
        log.debug("serial: dropped %d frame(s): %s", count, reason)
