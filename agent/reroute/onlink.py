"""The on-link routes of an interface port: added for re-route networks no route leads out
of the interface to (a bare cable, link-local addresses only), deleted when it stops.

The check is the kernel's own lookup for the network's address restricted to the
interface (as the port's send socket, bound to it, is routed): when it fails or picks
another interface, `ip route add NET dev IFACE proto 172` is made, logged, and later
deleted, that one only (matched by network, interface index and proto). A route the user
made is never changed: if adding ours fails because one exists, that is logged and left
alone. Taking a link down deletes its IPv6 routes, ours too: `ensure` is called again
when it comes back up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from agent.config import IPNetwork
from agent.tun.netns import Netlink

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

log = logging.getLogger(__name__)

RTPROT_AGENT = 172  # the `proto` of the on-link routes the agent adds (and deletes)


class OnLinkRoutes:
    """The routes one interface port adds to its networks, and takes away again."""

    def __init__(self, ifname: str, where: str, prefixes: Sequence[IPNetwork]) -> None:
        self.ifname = ifname
        self.where = where  # " in namespace NS", or ""
        self.prefixes = tuple(prefixes)
        self.netlink: Netlink | None = None  # of the interface's namespace, once checked
        self.added: list[tuple[IPNetwork, int]] = []  # (network, interface index then)
        self.closing = False

    def _usable(self) -> bool:
        return self.netlink is not None and self.netlink.is_open

    async def _leads_out(self, ipr: AsyncIPRoute, net: IPNetwork, index: int) -> bool:
        """True if the kernel routes net's address out of interface `index`."""
        try:
            found = await ipr.route("get", dst=str(net.network_address), oif=index)
        except NetlinkError:
            return False  # e.g. IPv6 with no route at all: network unreachable
        return any(msg.get("RTA_OIF") == index for msg in found)

    async def ensure(self, index: int) -> None:
        """Add an on-link route out of interface `index` for each network no route leads
        out of it to."""
        if not self._usable():
            return
        assert self.netlink is not None
        ipr = await self.netlink.ipr()
        for net in self.prefixes:
            if self.closing:
                return
            if await self._leads_out(ipr, net, index):
                continue
            try:
                await ipr.route("add", dst=str(net), oif=index, proto=RTPROT_AGENT)
            except NetlinkError as exc:
                log.warning(
                    "no route to %s leads out of %s%s, and adding one failed: %s (left as it is)",
                    net,
                    self.ifname,
                    self.where,
                    os.strerror(exc.code),
                )
                continue
            self.added = [(n, i) for n, i in self.added if n != net]
            self.added.append((net, index))
            log.info(
                "route %s dev %s%s added (on-link: no route to it led out of %s); "
                "removed when the agent stops",
                net,
                self.ifname,
                self.where,
                self.ifname,
            )
        if self.closing:  # stopped while we were adding: take them away again
            await self.remove()

    async def remove(self) -> None:
        """Delete the routes we added; none is added from now on."""
        self.closing = True
        if not self.added or not self._usable():
            return
        assert self.netlink is not None
        ipr = await self.netlink.ipr()
        while self.added:
            net, index = self.added.pop()
            try:
                await ipr.route("del", dst=str(net), oif=index, proto=RTPROT_AGENT)
            except NetlinkError as exc:
                log.debug("route %s dev %s already gone: %s", net, self.ifname, exc)
                continue
            log.info("route %s dev %s removed", net, self.ifname)
