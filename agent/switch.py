"""The agent's switch: which port does a packet leave by? Pure.

`routes(plan, options)` is the one place that says which port owns the re-route networks
(`{prefix: port name}`); `Switch.decide(packet, came_from)` is the agent's one per-packet
decision. It reads the version nibble and the destination address bytes at fixed offsets
(agent.ipheader.destination), never a full dissection.

Ports are named by kind: "tun" (the local TUN), "bus" (the AMQP session), and one name
per re-route port (a network interface such as "eth1", or "serial").
"""

from __future__ import annotations

import logging

from agent.config import AddressPlan, IPNetwork
from agent.ipheader import PrefixTable, crosses_link, destination, is_group
from agent.reroute.options import RerouteOptions

log = logging.getLogger(__name__)

TUN = "tun"
BUS = "bus"
SERIAL = "serial"


def iface_port_name(ifname: str) -> str:
    """The switch's name for a network interface: its own, unless that is a reserved one."""
    return f"if-{ifname}" if ifname in (TUN, BUS, SERIAL) else ifname


def routes(plan: AddressPlan | None, options: RerouteOptions) -> dict[IPNetwork, str]:
    """{re-route prefix: port name}: the one place that says which port owns the networks
    behind this agent (empty when no port reaches them).

    The networks are the plan's with the command line's applied (the command line's alone
    while there is no plan yet). They leave by the port the options name (the serial
    line), else by the interface the plan names (re_route_packets_if).
    """
    if plan is None:
        prefixes, ifname = options.prefixes, options.ifname
    else:
        plan = options.apply(plan)
        prefixes, ifname = plan.reroute_prefixes, plan.reroute_if
    if options.port is not None:
        port: str | None = options.port
    elif ifname and ifname != SERIAL:
        port = iface_port_name(ifname)
    else:
        port = None
    return dict.fromkeys(prefixes, port) if port else {}


# Decisions that are not a port: the packet is dropped, the value is the counter name.
DROP_NOT_IP = "!not ip"
DROP_NOT_OURS = "!not for us"
DROP_HAIRPIN = "!hairpin"
DROP_LINK_LOCAL = "!link-local"
"""link-local scope (fe80::/10, ff02::/16, 169.254.0.0/16... by source or destination,
agent.ipheader.is_link_scope) entering or leaving by a re-route port: a device's link
and the session's are two links, such packets stay on theirs"""


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

    def add_routes(self, table: dict[IPNetwork, str]) -> None:
        """Route each network to its port (see routes())."""
        for network, port in table.items():
            self.add_reroute(network, port)

    def set_local(self, networks: list[IPNetwork]) -> None:
        """This agent's own TUN addresses (host networks) and other owned networks."""
        for net in networks:
            self.owned.add(net, True)
            if net.prefixlen == net.max_prefixlen:
                self.local.add(net.network_address.packed)

    def decide(self, packet: bytes, came_from: str) -> str:
        """The port a packet entering by `came_from` leaves by, or a drop reason (DROP_*).

        Between the TUN and the bus (the session's one link) everything goes; a packet of
        link-local scope never enters or leaves by a re-route port (DROP_LINK_LOCAL), the
        one rule for interfaces and serial lines alike.
        """
        dst = destination(packet)
        if dst is None:
            return DROP_NOT_IP
        port = self.reroute.lookup(*dst) if self._rerouting else None
        if came_from == TUN or came_from == BUS:
            if port is not None:
                return port if crosses_link(packet, *dst) else DROP_LINK_LOCAL
            if came_from == TUN:
                return BUS
            if not self.accept_any and not is_group(*dst) and self.owned.lookup(*dst) is None:
                return DROP_NOT_OURS
            return TUN
        # from a re-route port
        if not crosses_link(packet, *dst):
            return DROP_LINK_LOCAL
        if dst[1] in self.local:
            return TUN
        if port == came_from:
            return DROP_HAIRPIN
        return port or BUS
