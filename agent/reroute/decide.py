"""The agent's one per-packet decision: which port does this packet leave by?

Pure and cheap: it reads the version nibble and the destination address bytes at fixed
offsets (agent.ipheader.destination), never a full dissection.

Ports are named by kind: "tun" (the local TUN), "bus" (the AMQP session), and one name
per re-route port (a physical interface such as "eth1", or "serial").
"""

from __future__ import annotations

from agent.config import IPNetwork
from agent.ipheader import PrefixTable, destination, is_group

TUN = "tun"
BUS = "bus"

# Decisions that are not a port: the packet is dropped, the value is the counter name.
DROP_NOT_IP = "!not ip"
DROP_NOT_OURS = "!not for us"
DROP_HAIRPIN = "!hairpin"


def is_drop(decision: str) -> bool:
    return decision[0] == "!"


class Switch:
    """Destination -> port, for packets entering by the TUN, the bus or a re-route port."""

    def __init__(self, accept_any: bool = True) -> None:
        self.reroute: PrefixTable[str] = PrefixTable()
        self.owned: PrefixTable[bool] = PrefixTable()
        self.local: set[bytes] = set()
        self.accept_any = accept_any
        self._rerouting = False  # any re-route prefix at all (the common case: none)

    def add_reroute(self, network: IPNetwork, port: str) -> None:
        self.reroute.add(network, port)
        self.owned.add(network, True)
        self._rerouting = True

    def set_local(self, networks: list[IPNetwork]) -> None:
        """This agent's own TUN addresses (host networks) and other owned networks."""
        for net in networks:
            self.owned.add(net, True)
            if net.prefixlen == net.max_prefixlen:
                self.local.add(net.network_address.packed)

    def decide(self, packet: bytes, came_from: str) -> str:
        dst = destination(packet)
        if dst is None:
            return DROP_NOT_IP
        port = self.reroute.lookup(*dst) if self._rerouting else None
        if came_from == TUN:
            return port or BUS
        if came_from == BUS:
            if port is not None:
                return port
            if not self.accept_any and not is_group(*dst) and self.owned.lookup(*dst) is None:
                return DROP_NOT_OURS
            return TUN
        # from a re-route port
        if dst[1] in self.local:
            return TUN
        if port == came_from:
            return DROP_HAIRPIN
        return port or BUS
