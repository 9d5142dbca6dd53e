"""IP mode: a serial line as one more re-route port of the agent, named "serial".

Packets whose destination is inside a re-route prefix leave by this port, SLIP-encoded;
frames read from the line are classified (`agent.slip.framing.classify`):

* IPv6 / IPv4 packets enter the agent's switch (`Agent.forward(packet, "serial")`): to the
  TUN when addressed to this host, else to the bus;
* text (Contiki debug output) is logged at INFO as the mote's output, counted and never
  forwarded; when a line of text was written without SLIP framing just before a frame,
  the IP packet after it is recovered (`agent.slip.framing.split_text`) and forwarded;
* a tunslip6 prefix request ``?P`` is answered with ``!P`` + the first IPv6 re-route
  prefix, so that a Contiki border router learns its prefix;
* anything else is dropped and counted.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.config import AddressPlan, IPNetwork
from agent.reroute.options import RerouteOptions
from agent.slip.framing import FrameKind, classify, prefix_answer, split_text
from agent.slip.port import SerialPort, SerialSettings

if TYPE_CHECKING:
    from agent.node import Agent

log = logging.getLogger(__name__)

PORT_NAME = "serial"


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
    """The serial line in IP mode: the agent's port "serial" (see the module docstring).

    Build it, `open()` it before the loop runs (a missing or busy device is a
    SerialPortError), `attach()` it to the agent, then `run()` the agent through
    `run_agent()` which starts and closes the port.
    """

    name = PORT_NAME

    def __init__(
        self,
        agent: Agent,
        settings: SerialSettings,
        reroute: RerouteOptions | None = None,
    ) -> None:
        self.agent = agent
        self.reroute = reroute or RerouteOptions()
        self.port = SerialPort(settings, self._on_frame, on_drop=self._on_drop)
        self._routed: list[IPNetwork] = []
        self._answer: bytes | None = None

    def open(self) -> None:
        self.port.open()

    def attach(self) -> None:
        """Become the agent's port "serial" and route the re-route prefixes to it."""
        self.agent.ports[PORT_NAME] = self
        self.agent.plan_hooks.append(self.amend_plan)
        self._route(self.reroute.prefixes)

    def amend_plan(self, plan: AddressPlan) -> AddressPlan:
        """Apply the command line's re-route values to a plan; route its networks here.

        With a serial port the re-route networks are behind the line: an interface named
        by a tun.start (re_route_packets_if) is ignored, so no interface port is opened.
        """
        plan = self.reroute.apply(plan)
        if plan.reroute_if not in (None, PORT_NAME):
            log.warning(
                "ignored re_route_packets_if %s: the re-route networks are on the serial line",
                plan.reroute_if,
            )
            plan = dataclasses.replace(plan, reroute_if=None)
        self._route(plan.reroute_prefixes)
        return plan

    def _route(self, networks: Sequence[IPNetwork]) -> None:
        for net in networks:
            if net not in self._routed:
                self._routed.append(net)
                self.agent.switch.add_reroute(net, PORT_NAME)
        announced = answer_prefix(self._routed)
        self._answer = prefix_answer(announced) if announced is not None else None

    # -- the port interface --------------------------------------------------------------

    def send(self, packet: bytes) -> bool:
        return self.port.send(packet)

    @property
    def drop_reason(self) -> str:
        """Why the last send() failed (the agent counts it as a drop)."""
        return "serial queue full" if self.port.is_open else "serial down"

    # -- frames from the line ------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        counters = self.agent.counters
        parts = split_text(frame)  # None for a frame that is exactly one IP packet
        if parts is not None:  # an unframed text line, then a frame: keep both
            text, packet = parts
            counters.count("serial>log", len(text))
            log.info("serial text: %s", text_line(text))
            self.agent.forward(packet, PORT_NAME)
            return
        kind = classify(frame)
        if kind is FrameKind.IPV6 or kind is FrameKind.IPV4:
            self.agent.forward(frame, PORT_NAME)
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
        self.agent.counters.drops[f"serial {reason}"] += count
        log.debug("serial: dropped %d frame(s): %s", count, reason)

    def close(self) -> None:
        self.port.close()


async def run_agent(agent: Agent, link: SerialLink | None) -> int:
    """Run the agent with its serial link watched by the same loop; close it at the end."""
    if link is None:
        return await agent.run()
    link.port.start()
    try:
        return await agent.run()
    finally:
        link.close()
