"""The packet router: a switch between agents.

`RoutingTable` is pure (learn, decide); `Router` is its bus loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agent import wire
from agent.bus import Bus, QueueSpec, queue_arguments
from agent.config import ConfigError, plan_from_bus
from agent.counters import Counters
from agent.ipheader import (
    PrefixTable,
    destination,
    is_group,
    is_link_local_or_unspecified,
    source,
    to_address,
)
from agent.url import AmqpUrl

log = logging.getLogger(__name__)
trace = logging.getLogger("agent.packets")

MAX_AGENTS = 1024
MAX_LEARNED_PER_AGENT = 64


@dataclass
class RoutingTable:
    """Who owns which address; where a packet from an agent goes."""

    mirrors: tuple[str, ...] = ()
    links: dict[str, set[str]] | None = None  # static full-mesh links, no learning
    agents: dict[str, set[Any]] = field(default_factory=dict)  # name -> its table keys
    _table: PrefixTable[str] = field(default_factory=PrefixTable)

    @classmethod
    def with_links(
        cls, groups: Iterable[Iterable[str]], mirrors: Iterable[str] = ()
    ) -> RoutingTable:
        links: dict[str, set[str]] = {}
        for group in groups:
            members = list(group)
            for a in members:
                links.setdefault(a, set()).update(m for m in members if m != a)
        return cls(mirrors=tuple(mirrors), links=links)

    def know(self, agent: str) -> bool:
        """Register an agent; False when the table is full."""
        if agent in self.agents:
            return True
        if len(self.agents) >= MAX_AGENTS:
            return False
        self.agents[agent] = set()
        return True

    def _own(self, agent: str, network: Any) -> None:
        previous = self._table.lookup_exact(network)
        if previous == agent:
            return
        if previous is not None:
            self.agents.get(previous, set()).discard(network)
        owned = self.agents[agent]
        if len(owned) >= MAX_LEARNED_PER_AGENT:
            return
        owned.add(network)
        self._table.add(network, agent)

    def learn_started(self, agent: str, body: dict[str, Any]) -> None:
        """Addresses and announced networks from an agent's tun.started."""
        plan = plan_from_bus(body)  # ConfigError for the caller
        if not self.know(agent):
            return
        for addr in wire.addresses_of(plan):
            self._own(agent, ipaddress.ip_network(addr))
        for net in plan.reroute_prefixes:
            self._own(agent, net)

    def check_source(self, agent: str, packet: bytes) -> bool:
        """Learn packet's source address as agent's; False if it is another agent's (spoof).

        Link-local and unspecified sources are always allowed; a multicast source never.
        """
        src = source(packet)
        if src is None:
            return False
        version, addr = src
        if is_group(version, addr):
            return False
        if addr == bytes(len(addr)):
            return True
        owner = self._table.lookup(version, addr)
        if owner == agent:
            return True
        if owner is not None:
            return is_link_local_or_unspecified(version, addr)
        if self.know(agent):
            self._own(agent, ipaddress.ip_network(to_address(version, addr)))
        return True

    def targets(self, agent: str, packet: bytes) -> list[str]:
        """Agents that get a copy of packet sent by agent (never agent itself)."""
        if self.links is not None:
            out = list(self.links.get(agent, ()))
        else:
            dst = destination(packet)
            owner = None
            if dst is not None and not is_group(*dst):
                owner = self._table.lookup(*dst)
            if owner is not None:
                out = [owner] if owner != agent else []
            else:
                out = [a for a in self.agents if a != agent]
        for m in self.mirrors:
            if m != agent and m not in out:
                out.append(m)
        return out

    def owner_of(self, version: int, addr: bytes) -> str | None:
        return self._table.lookup(version, addr)


class Router:
    def __init__(
        self,
        url: AmqpUrl,
        exchange: str = "amq.topic",
        table: RoutingTable | None = None,
        ca_file: str | None = None,
        stats_interval: float = 0.0,
    ) -> None:
        self.url = url
        self.table = table or RoutingTable()
        self.counters = Counters()
        self.stats_interval = stats_interval
        self._stop = asyncio.Event()
        self._fatal: str | None = None
        self.bus = Bus(
            url,
            exchange,
            QueueSpec(
                name="packetrouting@router",
                bindings=["fromAgent.*.ip.tun.packet.raw", "fromAgent.*.ip.tun.started"],
                arguments=queue_arguments(max_length=10000),
                prefetch=512,
                in_use_message="a packet router is already running on this vhost",
            ),
            on_message=self._on_message,
            on_up=self._on_up,
            on_fatal=self._on_fatal,
            ca_file=ca_file,
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: log.warning("status: %s", self.counters.status_line())
        )
        log.info("connecting to %s", self.url.redacted())
        self.bus.start()
        stats = asyncio.create_task(self._stats_loop()) if self.stats_interval else None
        try:
            await self._stop.wait()
        finally:
            if stats:
                stats.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
                loop.remove_signal_handler(sig)
            await self.bus.close(timeout=1.0)
            if self.counters.packets or self.counters.drops:
                log.info("counters:\n%s", self.counters.table())
        if self._fatal:
            log.error("%s", self._fatal)
            return 1
        return 0

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            log.warning("status: %s", self.counters.status_line())

    def stop(self) -> None:
        self._stop.set()

    def _on_fatal(self, reason: str) -> None:
        self._fatal = reason
        self._stop.set()

    def _on_up(self) -> None:
        self.bus.publish(wire.READY_KEY, wire.encode_ready(wire.ROUTER_COMPONENT))
        log.info("connected to %s; announced as %s", self.url.where, wire.ROUTER_COMPONENT)

    def _on_message(self, key: str, body: bytes, props: Any) -> None:
        agent = wire.agent_of(key)
        try:
            if agent is None:
                raise wire.WireError(f"unexpected routing key {key!r}")
            if key.endswith(".ip.tun.packet.raw"):
                self._forward(agent, body)
            elif key.endswith(".ip.tun.started"):
                try:
                    self.table.learn_started(agent, wire.decode_control(body))
                except ConfigError as exc:
                    raise wire.WireError(f"invalid tun.started: {exc}") from None
                log.info("learned %s", agent)
        except wire.WireError as exc:
            self.counters.drop("malformed")
            log.warning("dropped a message from %s: %s", agent or key, exc)
        except Exception:
            self.counters.drop("error")
            log.exception("error handling a message on %s", key)

    def _forward(self, agent: str, body: bytes) -> None:
        packet = wire.decode_packet(body)
        table = self.table
        if not table.check_source(agent, packet):
            self.counters.drop(f"spoofed by {agent}")
            return
        targets = table.targets(agent, packet)
        if trace.isEnabledFor(logging.INFO):
            trace.info("%s > %s  %d B", agent, ",".join(targets) or "-", len(packet))
        if not targets:
            self.counters.drop("no route")
            return
        self.counters.count(f"{agent}>", len(packet))
        for target in targets:
            if self.bus.publish(wire.downlink_key(target), body):
                self.counters.count(f">{target}", len(packet))
            else:
                self.counters.drop("bus down")
