"""Re-routing given on the command line (--re-route-if/-prefix/-host). Pure.

The same options serve every re-route port (a physical interface, a serial line): the
prefixes and host describe the network behind this agent, the interface names the port
they are reached through when it is a network interface.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from agent.config import AddressPlan, IPNetwork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerouteOptions:
    """What the command line says; it wins over the re_route_packets_* of a tun.start."""

    prefixes: tuple[IPNetwork, ...] = ()
    host: str | None = None
    ifname: str | None = None
    port: str | None = None
    """a port of the agent that is not a network interface owns the networks (the serial
    line, "serial"): an interface named by a tun.start is then ignored"""

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.host or self.ifname or self.port)

    def apply(self, plan: AddressPlan) -> AddressPlan:
        """plan with the given values replacing its re-route fields (idempotent)."""
        changes: dict[str, object] = {}
        if self.prefixes:
            changes["reroute_prefixes"] = tuple(dict.fromkeys(self.prefixes))
        if self.host is not None:
            changes["reroute_host"] = self.host
        if self.ifname is not None:
            changes["reroute_if"] = self.ifname
        elif self.port is not None and plan.reroute_if not in (None, self.port):
            log.warning(
                "ignored re_route_packets_if %s: the re-route networks are on the %s port",
                plan.reroute_if,
                self.port,
            )
            changes["reroute_if"] = None
        return dataclasses.replace(plan, **changes) if changes else plan  # type: ignore[arg-type]
