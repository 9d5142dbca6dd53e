"""The packet router: a switch between agents.

`RoutingTable` is pure (learn, decide); `Router` is its bus loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.bus import wire
from agent.bus.batcher import CONFIRM_WINDOW, Batcher
from agent.bus.connection import Bus, QueueSpec, queue_arguments
from agent.bus.dispatch import dispatcher
from agent.bus.url import AmqpUrl, Urls
from agent.config import ConfigError, plan_from_bus
from agent.ipheader import (
    PrefixTable,
    destination,
    is_group,
    is_link_local_or_unspecified,
    source,
    to_address,
)
from agent.logs import labelled
from agent.lossy import LOSSY_KEY, LossyCommandError, LossyLink, packets_to_drop_in
from agent.router.edge import SessionEdge
from agent.service import Service

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

    def forget(self, agent: str) -> None:
        """An agent's incarnation ended: its addresses and networks are free again."""
        for network in self.agents.pop(agent, ()):
            if self._table.lookup_exact(network) == agent:
                self._table.remove(network)

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


class Router(Service):
    def __init__(
        self,
        url: Urls,
        exchange: str = "amq.topic",
        table: RoutingTable | None = None,
        ca_file: str | None = None,
        stats_interval: float = 0.0,
        fast_wire: bool = True,
        label: str = "",
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        """label: the session, in every log line (a RouterSet serves several); on_fatal:
        what ends the run on a fatal error (default: this router's own run)."""
        super().__init__(labelled(log, label), stats_interval)
        self.label = label
        self.url = url
        self.table = table or RoutingTable()
        self.fast_wire = fast_wire  # offer our fast wire to agents that announce it
        self.lossy = LossyLink()  # ioppytest's routing.lossy.link.start (agent.lossy)
        self._on_message = dispatcher(self._handle, self.counters, self.log, self._malformed)
        self.bus = Bus(
            url,
            exchange,
            QueueSpec(
                name="packetrouting@router",
                bindings=["fromAgent.*.ip.tun.packet.raw"],
                control=[
                    "fromAgent.*.ip.tun.started", "fromAgent.*.ip.tun.stopped", wire.READY_KEY,
                    LOSSY_KEY,
                ],
                arguments=queue_arguments(max_length=10000),
                prefetch=512,
                in_use_message="a packet router is already running on this vhost",
            ),
            on_message=self._on_message,
            on_up=self._on_up,
            on_fatal=on_fatal or self.on_fatal,
            ca_file=ca_file,
            on_standby=self._on_standby,
            label=label,
            confirm_window=CONFIRM_WINDOW,
        )
        # downlink batches (agent.bus.batcher) are sent when the bus sends (after each
        # read from the broker, same loop turn): the packets of several uplink messages
        # for one target share one
        self.batcher = Batcher(self.bus, self.counters, sent_path="tx fast")
        self.bus.before_flush = self._flush
        # the session: one record per agent incarnation (agent.router.session), `agent status`
        self.edge = SessionEdge(
            self.bus, self.counters, self.table.forget, self._announce, self.log, fast_wire
        )
        self.fast_agents = self.edge.session.fast  # the agents sent the fast wire

    # -- start / stop (the run loop is agent.service.Service.run) -------------------------

    async def start(self) -> None:
        if trace.isEnabledFor(logging.INFO):
            import agent.inspect.taps  # noqa: F401  (-v: load Scapy now, not on the first packet)
        self.log.info("connecting to %s", self.bus.url.redacted())
        self.bus.start()

    async def cleanup(self) -> None:
        self.edge.close()
        self.batcher.publish()
        await self.bus.close(timeout=1.0)

    def _announce(self) -> None:
        extra: dict[str, Any] = {wire.EPOCH_FIELD: self.edge.session.epoch}
        if self.fast_wire:
            extra[wire.WIRE_FIELD] = [wire.FAST_WIRE]
        self.bus.publish(wire.READY_KEY, wire.encode_ready(wire.ROUTER_COMPONENT, **extra))

    def _on_up(self) -> None:
        # a new epoch on every connection: agents answer it once with their tun.started
        # (our queue is new, what they said while we were away is lost; the session starts
        # from nothing). os.urandom: what secrets.token_hex does, without hashlib's RSS
        self.edge.up(os.urandom(6).hex())
        self.log.info("active on %s; announced as %s", self.bus.url.where, wire.ROUTER_COMPONENT)

    def _on_standby(self) -> None:
        self.edge.standby()
        self.log.info(
            "another router is active on this vhost; standing by on %s to take over when it goes",
            self.bus.url.where,
        )

    def _handle(self, msg: wire.Message) -> None:
        """One delivery, typed (agent.bus.dispatch counts and logs what this raises)."""
        if isinstance(msg, wire.Packets) and msg.uplink:
            agent, body = msg.agent, msg.body
            if msg.fast:
                packets = msg.packets()
                self.counters.count("rx fast", len(body))
                for packet in packets:
                    self._forward(agent, packet, None, len(packet))
            else:
                self.counters.count("rx json", len(body))
                head, size = wire.peek_packet(body)  # no full parse to route it
                self._forward(agent, head, body, size)
        elif isinstance(msg, wire.TunStarted) and msg.uplink:
            self.edge.started(msg)  # a new incarnation forgets the old one's addresses
            try:
                self.table.learn_started(msg.agent, msg.fields)
            except ConfigError as exc:
                raise wire.WireError(f"invalid tun.started: {exc}") from None
            self.log.info("learned %s", msg.agent)
        elif isinstance(msg, wire.Ready):
            self.edge.ready(msg)
        elif isinstance(msg, wire.TunStopped) and msg.uplink:
            self.edge.stopped(msg)
        elif isinstance(msg, wire.LossyLinkStart):
            self._on_lossy(msg)
        elif isinstance(msg, wire.Other) and msg.topic.agent is None:
            raise wire.WireError(f"unexpected routing key {msg.topic.kind!r}")
        elif isinstance(msg, wire.Terminate):  # not bound: not for us
            raise wire.WireError(f"unexpected routing key {wire.TERMINATE_KEY!r}")

    def _malformed(self, key: str, exc: wire.WireError) -> None:
        self.log.warning("dropped a message from %s: %s", wire.topic(key).agent or key, exc)

    def _on_lossy(self, msg: wire.LossyLinkStart) -> None:
        try:
            count = packets_to_drop_in(msg.body)
        except LossyCommandError as exc:
            self.counters.drop("bad lossy command")
            self.log.warning("ignored %s: %s", LOSSY_KEY, exc)
            return
        if self.lossy.pending:
            self.log.info("lossy link: %d packet(s) were still to drop", self.lossy.pending)
        self.lossy.start(count)
        self.log.info("lossy link: dropping the next %d packet(s) from any agent", count)

    def _forward(self, agent: str, packet: bytes, json_body: bytes | None, size: int) -> None:
        """One packet from agent: check, decide, send to each target on its own wire.

        json_body is the message it came in, when that was a JSON packet message: then
        `packet` may be only its first bytes (enough to route), JSON targets get the body
        unchanged, and the full packet is decoded only if a fast target needs it. Fast
        targets get the packets of one incoming message batched (see _flush).
        """
        if self.lossy.pending and self.lossy.take():
            self.counters.drop("lossy link")
            if trace.isEnabledFor(logging.INFO):
                from agent.inspect.taps import summarize

                whole = wire.decode_packet(json_body) if json_body else packet
                _trace_line(self.label, f"{agent} > - (lossy link, dropped)  {summarize(whole)}")
            if not self.lossy.pending:
                self.log.info(
                    "lossy link: dropped %d packet(s); forwarding again", self.lossy.dropped
                )
            return
        table = self.table
        if not table.check_source(agent, packet):
            self.counters.drop(f"spoofed by {agent}")
            if trace.isEnabledFor(logging.INFO):
                whole = wire.decode_packet(json_body) if json_body else packet
                _trace(self.label, agent, None, whole)
            return
        targets = table.targets(agent, packet)
        if trace.isEnabledFor(logging.INFO):
            whole = wire.decode_packet(json_body) if json_body else packet
            _trace(self.label, agent, targets, whole)
        if not targets:
            self.counters.drop("no route")
            return
        self.counters.count(f"{agent}>", size)
        full = json_body is None
        for target in targets:
            if target in self.fast_agents:
                if not full:
                    packet, full = wire.decode_packet(json_body), True  # type: ignore[arg-type]
                self.batcher.add(wire.downlink_key(target), packet)
                self.counters.count(f">{target}", size)
                continue
            if json_body is None:
                json_body = wire.encode_packet(packet, "tun0")
            reason = self.bus.publish(wire.downlink_key(target), json_body, None)
            if reason is None:
                self.counters.count(f">{target}", size)
                self.counters.count("tx json", len(json_body))
            else:
                self.counters.drop(reason)

    def _flush(self) -> None:
        """Bus.before_flush: send each fast target the packets queued for it, as few
        messages as fit, unless the broker is behind (agent.bus.batcher holds them)."""
        self.batcher.flush()


def _trace(label: str, agent: str, targets: list[str] | None, packet: bytes) -> None:
    """The router's -v line for one packet (only called when -v is on)."""
    from agent.inspect.taps import router_line

    _trace_line(label, router_line(agent, targets, packet))


def _trace_line(label: str, line: str) -> None:
    """One -v packet line, "[label] " first when the process routes several sessions."""
    if label:
        trace.info("[%s] %s", label, line)
    else:
        trace.info("%s", line)


class RouterSet(Service):
    """Several sessions routed by one process (`agent router` given URLs of several vhosts).

    Each session keeps what a router of its own would have: its connection (and failover
    list), its exclusive queue, its routing table, its counters and standby logic; only
    the process and its event loop are shared. Log lines start with "[vhost] ". A fatal
    error in any session (a refused login, a missing permission) ends the process, as it
    would end a router of its own: it is a setting to fix, not a passing fault.
    """

    def __init__(
        self,
        sessions: list[list[AmqpUrl]],
        make: Callable[..., Router],
        stats_interval: float = 0.0,
    ) -> None:
        super().__init__(log, stats_interval)
        self.routers = [
            make(urls, label=urls[0].vhost, on_fatal=self._fatal_in(urls[0].vhost))
            for urls in sessions
        ]

    def _fatal_in(self, label: str) -> Callable[[str], None]:
        return lambda reason: self.on_fatal(f"session {label}: {reason}")

    async def start(self) -> None:
        log.info("routing %d sessions: %s", len(self.routers),
                 ", ".join(r.label for r in self.routers))
        for router in self.routers:
            await router.start()

    async def cleanup(self) -> None:
        await asyncio.gather(*(router.cleanup() for router in self.routers))
        if not self._fatal:
            for router in self.routers:
                if router.counters.packets or router.counters.drops:
                    router.log.info("counters:\n%s", router.counters.table())

    def print_status(self) -> None:
        for router in self.routers:
            router.print_status()
