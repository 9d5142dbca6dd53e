"""The agent: a switch between ports (TUN, bus, re-route ports), control messages, stop.

Per-packet path, every direction, in one place (`Agent.forward`):
    a port hands in (packet, port it came from)
    -> Switch.decide reads the destination -> the port it leaves by (or a drop reason)
    -> taps (packet trace, capture) -> port.send -> counters
TUN reads arrive from `_on_tun_readable`, bus packets from `_downlink`; re-route ports
call `forward` themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import wire
from agent.bus import FAST_PROPS, Bus, agent_queue
from agent.config import AddressPlan, ConfigError, IPNetwork, plan_from_bus
from agent.counters import Counters
from agent.reroute.decide import BUS, TUN, Switch, is_drop
from agent.reroute.iface import IfaceError, IfacePort, open_for_plan
from agent.reroute.options import RerouteOptions
from agent.service import Service
from agent.tun import Tun, TunError
from agent.url import AmqpUrl

log = logging.getLogger(__name__)

MAX_ANNOUNCED_ROUTES = 32


class Port(Protocol):
    """Where packets leave the agent. `name` is what logs and captures show."""

    name: str

    def send(self, packet: bytes) -> bool: ...


Tap = Callable[[bytes, str, str], None]  # (packet, from port, to port)


class BusPort:
    """Packets to the session on fromAgent.<name>.ip.tun.packet.raw.

    JSON (ioppytest's wire, one packet a message) unless `fast` is on: then the packets
    handed in during one loop iteration leave as one fast-wire message (adaptive
    batching: one packet when idle, many when they queue up; no timer, no added delay).
    """

    name = "bus"

    def __init__(self, bus: Bus, key: str, counters: Counters) -> None:
        self.bus = bus
        self.key = key
        self.counters = counters
        self.interface_name = "tun0"  # the TUN's name once it exists (peers classify by it)
        self.fast = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None

    def send(self, packet: bytes) -> bool:
        if not self.fast:
            return self.bus.publish(self.key, wire.encode_packet(packet, self.interface_name))
        if not self.bus.up:
            self.bus.drop_reason = "bus down"
            return False
        self._pending.append(packet)
        self._pending_bytes += len(packet) + 2
        if self._pending_bytes >= wire.MAX_BATCH_BYTES:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)
        return True

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        packets, self._pending, self._pending_bytes = self._pending, [], 0
        if packets and not self.bus.publish(self.key, wire.encode_batch(packets), FAST_PROPS):
            self.counters.drops[self.bus.drop_reason] += len(packets)

    @property
    def drop_reason(self) -> str:
        """Why the last send() failed: "bus down", "queue full" (counted as a drop)."""
        return self.bus.drop_reason


@dataclass
class AgentOptions:
    name: str
    url: AmqpUrl
    exchange: str = "amq.topic"
    plan: AddressPlan | None = None
    bootstrap: bool = True
    tun_name: str | None = None
    mtu: int = 1500
    netns: str | None = None
    ca_file: str | None = None
    stats_interval: float = 0.0
    accept_any: bool = False
    wire: str = "auto"  # "json": ioppytest's only; "fast": always ours; "auto": negotiated
    extra_started: dict[str, Any] = field(default_factory=dict)
    # --re-route-if/-prefix/-host: applied to every plan (CLI or tun.start), they win
    reroute: RerouteOptions = field(default_factory=RerouteOptions)


class Agent(Service):
    fatal_errors = (TunError, IfaceError)

    def __init__(self, opts: AgentOptions) -> None:
        super().__init__(log, opts.stats_interval)
        self.opts = opts
        self.name = opts.name
        self.plan = opts.plan
        self.tun: Tun | None = None
        self._uplink_key = wire.uplink_key(self.name)
        self._downlink_key = wire.downlink_key(self.name)
        self._start_key = wire.start_key(self.name)
        self._started_key = wire.started_key(self.name)
        self._announced: dict[str, set[IPNetwork]] = {}
        self._bootstrapping = False
        self.switch = Switch(accept_any=opts.accept_any)
        self.ports: dict[str, Port] = {}
        self.taps: list[Tap] = []
        # called with each plan before its TUN comes up; may amend it (re-route ports)
        self.plan_hooks: list[Callable[[AddressPlan], AddressPlan]] = []
        self.iface: IfacePort | None = None  # the --re-route-if port (agent.reroute.iface)
        self.bus = Bus(
            opts.url,
            opts.exchange,
            agent_queue(
                self.name,
                [self._downlink_key, self._start_key, "fromAgent.*.ip.tun.started", wire.READY_KEY],
            ),
            on_message=self._on_message,
            on_up=self._on_bus_up,
            on_fatal=self.on_fatal,
            ca_file=opts.ca_file,
        )
        self.bus_port = BusPort(self.bus, self._uplink_key, self.counters)
        self.bus_port.fast = opts.wire == "fast"
        self.ports[BUS] = self.bus_port

    # -- start / stop (the run loop is agent.service.Service.run) -------------------------

    async def start(self) -> None:
        if self.plan is not None and self.opts.bootstrap:
            await self._bring_up_tun(self.plan)
        else:
            log.info("waiting for a tun.start on %s", self._start_key)
        log.info("connecting to %s as %s", self.opts.url.redacted(), self.name)
        self.bus.start()

    async def cleanup(self) -> None:
        self.bus_port.flush()
        await self.bus.close(timeout=1.0)
        if self.iface is not None:
            self.iface, iface = None, self.iface
            await iface.remove_routes()  # the on-link routes it added, if any
            iface.close()
        if self.tun is not None:
            tun, self.tun = self.tun, None
            if tun.fd >= 0:
                asyncio.get_running_loop().remove_reader(tun.fd)
            name = tun.name
            await tun.close()
            log.info("removed %s and its routes", name)
        for tap in self.taps:  # taps with a close() (capture files): flush and close
            close = getattr(tap, "close", None)
            if close is not None:
                close()

    # -- TUN ----------------------------------------------------------------------------

    async def _bring_up_tun(self, plan: AddressPlan) -> None:
        plan = self.opts.reroute.apply(plan)
        for hook in self.plan_hooks:
            plan = hook(plan)
        self.iface = self.iface or open_for_plan(plan, self.opts.netns, self.forward)
        tun = Tun.create(self.opts.tun_name, self.opts.netns)
        self.tun = tun
        await tun.configure(plan, self.opts.mtu)
        self.plan = plan
        self.switch.set_local(plan.owns())
        if self.iface is not None:
            await self.iface.start(self)
        self.ports[TUN] = tun
        self.bus_port.interface_name = tun.name
        addrs = ", ".join(str(i) for i in plan.interfaces())
        where = f" in namespace {self.opts.netns}" if self.opts.netns else ""
        log.info("TUN %s up%s: %s, mtu %d", tun.name, where, addrs, self.opts.mtu)
        asyncio.get_running_loop().add_reader(tun.fd, self._on_tun_readable)
        for nets in list(self._announced.values()):
            for net in nets:
                await tun.add_route(net)

    def _on_tun_readable(self) -> None:
        tun = self.tun
        if tun is None:
            return
        forward = self.forward
        for packet in tun.read_batch():
            forward(packet, TUN)
        # all that was waiting has been read: send it now, not a loop iteration later
        if self.bus_port.fast:
            self.bus_port.flush()
        self.bus.flush()

    # -- the switch ----------------------------------------------------------------------

    def forward(self, packet: bytes, came_from: str) -> None:
        """One packet entering by port `came_from`: decide, tap, send, count."""
        decision = self.switch.decide(packet, came_from)
        if is_drop(decision):
            self.counters.drop(decision[1:])
            return
        port = self.ports.get(decision)
        if port is None:
            self.counters.drop(f"no {decision}")
            return
        for tap in self.taps:
            tap(packet, came_from, decision)
        if port.send(packet):
            self.counters.count(f"{came_from}>{decision}", len(packet))
        else:
            self.counters.drop(getattr(port, "drop_reason", "") or f"{decision} down")

    # -- bus ----------------------------------------------------------------------------

    def _on_bus_up(self) -> None:
        self.bus.publish(wire.READY_KEY, wire.encode_ready(self.name))
        log.info("connected to %s; published ready", self.opts.url.where)
        self._publish_started()

    def _publish_started(self) -> None:
        if self.plan is not None and self.tun is not None:
            extra = dict(self.opts.extra_started)
            if self.opts.wire != "json":
                extra[wire.WIRE_FIELD] = [wire.FAST_WIRE]
            body = wire.encode_tun_started(self.name, self.plan, **extra)
            self.bus.publish(self._started_key, body)

    def _on_message(self, key: str, body: bytes, content_type: str | None) -> None:
        try:
            if key == self._downlink_key:
                self._downlink(body, content_type)
            elif key == self._start_key:
                self._on_tun_start(body)
            elif key == wire.READY_KEY:
                msg = wire.decode_control(body)
                if msg.get("component") == wire.ROUTER_COMPONENT:
                    if self.opts.wire == "auto" and self.bus_port.fast != wire.speaks_fast(msg):
                        self.bus_port.flush()
                        self.bus_port.fast = not self.bus_port.fast
                        log.info("uplink wire: %s", "fast" if self.bus_port.fast else "json")
                    log.info("packet router announced itself; re-publishing tun.started")
                    self._publish_started()
            elif key.endswith(".ip.tun.started"):
                peer = wire.agent_of(key)
                if peer and peer != self.name:
                    self._on_peer_started(peer, wire.decode_control(body))
        except wire.WireError as exc:
            self.counters.drop(exc.reason)
            log.warning("dropped a malformed message on %s: %s", key, exc)
        except Exception:  # a handler bug must not kill the agent
            self.counters.drop("error")
            log.exception("error handling a message on %s", key)

    def _downlink(self, body: bytes, content_type: str | None) -> None:
        if content_type == wire.FAST_CONTENT_TYPE:
            for packet in wire.decode_batch(body):
                self.forward(packet, BUS)
        else:
            self.forward(wire.decode_packet(body), BUS)

    def _on_tun_start(self, body: bytes) -> None:
        msg = wire.decode_control(body)
        try:
            plan = plan_from_bus(msg)
        except ConfigError as exc:
            self.counters.drop("bad tun.start")
            log.warning("refused tun.start: %s", exc)
            return
        if self.tun is not None or self._bootstrapping:
            log.info("tun.start received; already started, answering with current configuration")
            self._publish_started()
            return
        self._bootstrapping = True
        asyncio.get_running_loop().create_task(self._bootstrap(plan))

    async def _bootstrap(self, plan: AddressPlan) -> None:
        try:
            await self._bring_up_tun(plan)
        except (TunError, IfaceError) as exc:
            self.on_fatal(str(exc))
            return
        finally:
            self._bootstrapping = False
        self._publish_started()

    def _on_peer_started(self, peer: str, msg: dict[str, Any]) -> None:
        """Route the networks another agent announces into our TUN."""
        try:
            plan = plan_from_bus(msg)
        except ConfigError as exc:
            log.warning("ignored tun.started of %s: %s", peer, exc)
            return
        wanted = set(plan.reroute_prefixes)
        mine = set(self.plan.owns()) if self.plan else set()
        wanted = {
            n for n in wanted if not any(n.overlaps(m) for m in mine if m.version == n.version)
        }
        old = self._announced.get(peer, set())
        if wanted == old:
            return
        total = sum(len(v) for p, v in self._announced.items() if p != peer) + len(wanted)
        if total > MAX_ANNOUNCED_ROUTES:
            log.warning(
                "ignored networks of %s: more than %d announced routes", peer, MAX_ANNOUNCED_ROUTES
            )
            return
        self._announced[peer] = wanted
        if self.tun is not None:
            asyncio.get_running_loop().create_task(self._sync_routes(old, wanted))

    async def _sync_routes(self, old: set[IPNetwork], new: set[IPNetwork]) -> None:
        tun = self.tun
        if tun is None:
            return
        still = set().union(*self._announced.values()) if self._announced else set()
        for net in old - new:
            if net not in still:
                await tun.remove_route(net)
        for net in new - old:
            await tun.add_route(net)
