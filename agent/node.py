"""The agent: a switch between ports (TUN, bus, re-route ports), control messages, stop.

Per-packet path, every direction, in one place (`Agent.receive` / `Agent.forward`):
    a port hands in a burst of packets and the name of the port they came by
    -> Switch.decide reads each destination -> the port it leaves by (or a drop reason)
    -> taps (packet trace, capture) -> port.send -> counters
    -> at the end of the burst, every other port flushes what it queued.
The agent owns its ports (agent/port.py) but builds none: they are handed in (`Ports`,
assembled by agent/assembly.py; fakes in the tests). It opens them, keeps them in `ports`
under the switch's names, and closes them. Bus messages arrive as typed messages
(agent/bus/wire.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.bus import wire
from agent.bus.port import BusOwner, BusPort
from agent.config import AddressPlan, ConfigError, IPNetwork, plan_from_bus
from agent.counters import Counters
from agent.port import Port, TunPort
from agent.reroute.iface import IfaceError
from agent.reroute.options import RerouteOptions
from agent.router.session import answers_ready
from agent.service import Service
from agent.switch import BUS, TUN, Switch, is_drop, routes
from agent.tun.device import TunError

log = logging.getLogger(__name__)

MAX_ANNOUNCED_ROUTES = 32


class Tap(Protocol):
    """Sees every forwarded packet (agent/taps.py: -v lines, --pcap capture)."""

    def __call__(self, packet: bytes, from_port: str, to_port: str) -> None: ...

    def close(self) -> None:
        """The agent stops: write out what is pending."""
        ...


@dataclass
class AgentOptions:
    name: str
    plan: AddressPlan | None = None  # None: wait for a tun.start
    mtu: int = 1500
    netns: str | None = None  # where the TUN is (for the log line; its maker puts it there)
    stats_interval: float = 0.0
    accept_any: bool = False
    wire: str = "auto"  # "json": ioppytest's only; "fast": always ours; "auto": negotiated
    extra_started: dict[str, Any] = field(default_factory=dict)
    # --re-route-if/-prefix/-host: applied to every plan (CLI or tun.start), they win
    reroute: RerouteOptions = field(default_factory=RerouteOptions)


def no_iface(_plan: AddressPlan) -> Port | None:
    return None


@dataclass(frozen=True)
class Ports:
    """The agent's ports, handed in: it builds none (agent/assembly.py does; tests hand
    in fakes). Makers are called when the agent needs the port."""

    bus: Callable[[BusOwner], BusPort]
    """at once, given the agent: the bus port, wired to its connection (not yet started)"""
    tun: Callable[[], TunPort]
    """when the address plan is known (at start, or on a tun.start): a new TUN"""
    iface: Callable[[AddressPlan], Port | None] = no_iface
    """idem: the interface port that plan names (re_route_packets_if), checked; or None"""
    others: tuple[Port, ...] = ()
    """made already (the serial line): opened at start, closed at the end"""


class Agent(Service):
    fatal_errors = (TunError, IfaceError)

    def __init__(self, opts: AgentOptions, ports: Ports, counters: Counters | None = None) -> None:
        super().__init__(log, opts.stats_interval)
        if counters is not None:
            self.counters = counters  # shared with ports made before the agent (serial)
        self.opts = opts
        self.name = opts.name
        self.plan = opts.plan
        self.tun: TunPort | None = None
        self._start_key = wire.start_key(self.name)
        self._started_key = wire.started_key(self.name)
        self._announced: dict[str, set[IPNetwork]] = {}
        self._bootstrapping = False
        self._router_epoch: str | None = None  # the router announcement last answered
        self.incarnation = ""  # new on each bus connection (agent.router.session)
        self.switch = Switch(accept_any=opts.accept_any)
        self.ports: dict[str, Port] = {}  # by the switch's names: "tun", "bus", "eth1"...
        self.taps: list[Tap] = []
        self.iface: Port | None = None  # the --re-route-if port (agent.reroute.iface)
        self._make_tun, self._make_iface = ports.tun, ports.iface
        self._routed: dict[str, list[IPNetwork]] = {}  # port name -> networks, in order
        # background work (bootstrap, route changes): kept, run one at a time, in order
        self._work: asyncio.Queue[Coroutine[Any, Any, None]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.task_errors: list[BaseException] = []
        self.bus_port = ports.bus(self)
        self.bus = self.bus_port.bus
        self.ports[BUS] = self.bus_port
        for port in ports.others:
            self.ports[port.name] = port
        if ports.others:  # each is told what `switch.routes` says it owns
            self._add_routes(routes(self.plan, self.opts.reroute))

    # -- start / stop (the run loop is agent.service.Service.run) -------------------------

    async def start(self) -> None:
        for key, port in list(self.ports.items()):
            await port.open(self.receive, key)  # the bus, the others (a serial line)
        if self.plan is not None:
            await self._bring_up_tun(self.plan)
        else:
            log.info("waiting for a tun.start on %s", self._start_key)
        log.info("connecting to %s as %s", self.bus.url.redacted(), self.name)
        self.bus.start()

    async def cleanup(self) -> None:
        self._stop_work()
        if self.bus.up and self.incarnation:  # goodbye: the router forgets us at once
            self.bus.publish(
                wire.stopped_key(self.name), wire.encode_tun_stopped(self.name, self.incarnation)
            )
        await self.bus_port.close()  # publishes what is pending
        await self.bus.close(timeout=1.0)
        closing = [port for key, port in self.ports.items() if key != BUS]
        for made in (self.iface, self.tun):  # made but not (yet) a port: close them too
            if made is not None and made not in closing:
                closing.append(made)
        tun, self.iface, self.tun = self.tun, None, None
        for port in reversed(closing):
            await port.close()
            if port is tun:
                log.info("removed %s and its routes", port.name)
        for tap in self.taps:  # capture files: flush and close
            tap.close()

    # -- background work -------------------------------------------------------------------

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work after the work queued before it, on the loop; errors are kept in
        task_errors and logged (a handler never awaits, so this is how it changes routes)."""
        if self._work is None:
            self._work = asyncio.Queue()
        self._work.put_nowait(work)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run_work())

    async def _run_work(self) -> None:
        assert self._work is not None
        while not self._work.empty():
            work = self._work.get_nowait()
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: keep the agent up, say so
                self.task_errors.append(exc)
                self.counters.drop("error")
                log.exception("error in background work")

    def _stop_work(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        while self._work is not None and not self._work.empty():
            self._work.get_nowait().close()  # never started: nothing to undo

    async def idle(self) -> None:
        """Wait until the queued background work is done (tests)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.sleep(0)

    # -- TUN ----------------------------------------------------------------------------

    async def _bring_up_tun(self, plan: AddressPlan) -> None:
        plan = self.opts.reroute.apply(plan)
        self.iface = self.iface or self._make_iface(plan)
        tun = self.tun = self._make_tun()
        await tun.configure(plan, self.opts.mtu)
        self.plan = plan
        self.switch.set_local(plan.owns())
        self._add_routes(routes(plan, self.opts.reroute))
        if self.iface is not None and self.iface.name not in self.ports:
            await self.iface.open(self.receive, self.iface.name)
            self.ports[self.iface.name] = self.iface
        self.ports[TUN] = tun
        self.bus_port.interface_name = tun.name
        addrs = ", ".join(str(i) for i in plan.interfaces())
        where = f" in namespace {self.opts.netns}" if self.opts.netns else ""
        log.info("TUN %s up%s: %s, mtu %d", tun.name, where, addrs, self.opts.mtu)
        await tun.open(self.receive, TUN)
        await self._route_own_networks(tun, routes(plan, self.opts.reroute))
        for nets in list(self._announced.values()):
            for net in nets:
                await tun.add_route(net)

    async def _route_own_networks(self, tun: TunPort, table: dict[IPNetwork, str]) -> None:
        """This host reaches the networks behind a port that is no interface of its own (a
        serial line) through the TUN, as the other agents' hosts do: a route into it for
        each, removed with the TUN. An interface port makes sure of its own routes
        (agent.reroute.iface: on-link, when no route leads out of it)."""
        iface = self.iface.name if self.iface is not None else None
        for net, key in table.items():
            if key != iface:
                await tun.add_route(net)

    def _add_routes(self, table: dict[IPNetwork, str]) -> None:
        """Route networks to ports; each port is told all the networks it owns."""
        self.switch.add_routes(table)
        for net, key in table.items():
            routed = self._routed.setdefault(key, [])
            if net not in routed:
                routed.append(net)
        for key in set(table.values()):
            port = self.ports.get(key)
            if port is not None:
                port.routed(self._routed[key])

    # -- the switch ----------------------------------------------------------------------

    def receive(self, packets: list[bytes], came_from: str) -> None:
        """A burst of packets entering by port `came_from`; then the other ports flush."""
        forward = self.forward
        for packet in packets:
            forward(packet, came_from)
        # all that was waiting has been read: send it now, not a loop iteration later
        for key, port in self.ports.items():
            if key != came_from:
                port.flush()

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
        reason = port.send(packet)
        if reason is None:
            self.counters.count(f"{came_from}>{decision}", len(packet))
        else:
            self.counters.drop(reason)

    # -- bus ----------------------------------------------------------------------------

    def on_bus_up(self) -> None:
        self._router_epoch = None  # our queues are new: answer the next router ready
        self.incarnation = os.urandom(6).hex()  # and the router is to see a new incarnation
        self.bus.publish(
            wire.READY_KEY,
            wire.encode_ready(self.name, **{wire.INCARNATION_FIELD: self.incarnation}),
        )
        log.info("connected to %s; published ready", self.bus.url.where)
        self._publish_started()

    def _publish_started(self) -> None:
        if self.plan is not None and self.tun is not None:
            extra = dict(self.opts.extra_started)
            extra[wire.INCARNATION_FIELD] = self.incarnation
            if self._router_epoch:  # the router ready we answer: it need not announce again
                extra[wire.EPOCH_FIELD] = self._router_epoch
            if self.opts.wire != "json":
                extra[wire.WIRE_FIELD] = [wire.FAST_WIRE]
            body = wire.encode_tun_started(self.name, self.plan, **extra)
            self.bus.publish(self._started_key, body)

    def on_control(self, msg: wire.Message) -> None:
        """A bus message that is not packets (the bus port delivers those): typed, from
        BusPort.on_message, which counts and logs what this raises."""
        if isinstance(msg, wire.TunStart):
            if msg.agent == self.name and not msg.uplink:
                self._on_tun_start(msg)
        elif isinstance(msg, wire.Ready):
            if msg.from_router:
                if self.opts.wire == "auto" and self.bus_port.fast != msg.fast:
                    self.bus_port.drain()
                    self.bus_port.fast = not self.bus_port.fast
                    log.info("uplink wire: %s", "fast" if self.bus_port.fast else "json")
                epoch = wire.router_epoch(msg.fields)
                # answer a router we have not told yet (or one that does not say):
                # once per router connection, not per ready (docs/scale.md). An agent
                # with networks behind it answers every ready: the router re-announces
                # for each new agent, which learns the routes from this answer.
                networks = self.plan is not None and bool(self.plan.reroute_prefixes)
                if answers_ready(epoch, self._router_epoch, networks):
                    self._router_epoch = epoch
                    log.info("packet router announced itself; re-publishing tun.started")
                    self._publish_started()
        elif isinstance(msg, wire.TunStarted):
            if msg.agent != self.name:
                self._on_peer_started(msg.agent, msg.fields)

    def _on_tun_start(self, msg: wire.TunStart) -> None:
        try:
            plan = plan_from_bus(msg.fields)
        except ConfigError as exc:
            self.counters.drop("bad tun.start")
            log.warning("refused tun.start: %s", exc)
            return
        if self.tun is not None or self._bootstrapping:
            log.info("tun.start received; already started, answering with current configuration")
            self._publish_started()
            return
        self._bootstrapping = True
        self._later(self._bootstrap(plan))

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
            self._later(self._sync_routes(old, wanted))

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
