"""The contract every port of the agent fulfils: where packets enter and leave it.

A port is the TUN (agent/tun/device.py), the bus (agent/bus/port.py), a network
interface (agent/reroute/iface.py) or a serial line (agent/slip/link.py). The agent
builds none of them: they are handed in (`agent.node.Ports`, made by agent/assembly.py,
fakes in the tests), some as makers called when the address plan is known. The agent
owns them once it has them: it keeps them in `Agent.ports` under the name the switch uses
(agent/switch.py), opens them, hands each the function that takes in its packets, and
closes them. A port never reaches into the agent.

Adding a port: one module with a class that fulfils `Port`, and one line where the agent
is assembled (`agent.assembly.ports`); the switch's `routes()` says which networks leave
by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agent.config import AddressPlan, IPNetwork

LINKTYPE_RAW = 101  # bare IPv4/IPv6 packets (agent.inspect.pcapng has the others)

Deliver = Callable[[list[bytes], str], None]
"""deliver(packets, came_from): a burst of packets that entered by the port named
came_from, in order; the agent decides, sends, counts, then flushes the ports it sent to."""

class Port(Protocol):
    """Packets in by `open(deliver)`, out by `send`; `flush` ends a burst."""

    name: str
    """what logs and captures show (the TUN's device name, "bus", "eth1", "serial")"""
    linktype: int
    """the pcap linktype of its packets (LINKTYPE_RAW: bare IPv4/IPv6)"""

    async def open(self, deliver: Deliver, key: str) -> None:
        """Start reading on the running loop: packets go to deliver(packets, key)."""
        ...

    def send(self, packet: bytes) -> str | None:
        """Queue or write one packet; None when taken, else the drop counter's name."""
        ...

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """The networks the switch routes to this port (agent.switch.routes), all of them,
        each time they change; most ports need not know (the serial line answers ``?P``)."""
        ...

    def flush(self) -> None:
        """The end of a burst: write what send() queued (a no-op where nothing waits)."""
        ...

    async def close(self) -> None:
        """Stop reading and undo what the port set up; safe to call twice."""
        ...


class TunPort(Port, Protocol):
    """The TUN: a port that also takes the address plan and routes into it."""

    async def configure(self, plan: AddressPlan, mtu: int) -> None:
        """Addresses, MTU, link up (once, before open)."""
        ...

    async def add_route(self, network: IPNetwork) -> bool:
        """Route network into the TUN; False if that could not be done."""
        ...

    async def remove_route(self, network: IPNetwork) -> None:
        """Remove a route add_route made."""
        ...
