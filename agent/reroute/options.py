"""Re-routing given on the command line (--re-route-if/-prefix/-host). Pure.

The same options serve every re-route port (a physical interface, a serial line): the
prefixes and host describe the network behind this agent, the interface names the port
they are reached through when it is a network interface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agent.config import AddressPlan, IPNetwork


@dataclass(frozen=True)
class RerouteOptions:
    """What the command line says; it wins over the re_route_packets_* of a tun.start."""

    prefixes: tuple[IPNetwork, ...] = ()
    host: str | None = None
    ifname: str | None = None

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.host or self.ifname)

    def apply(self, plan: AddressPlan) -> AddressPlan:
        """plan with the given values replacing its re-route fields (idempotent)."""
        changes: dict[str, object] = {}
        if self.prefixes:
            changes["reroute_prefixes"] = tuple(dict.fromkeys(self.prefixes))
        if self.host is not None:
            changes["reroute_host"] = self.host
        if self.ifname is not None:
            changes["reroute_if"] = self.ifname
        return dataclasses.replace(plan, **changes) if changes else plan  # type: ignore[arg-type]
