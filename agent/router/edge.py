"""The router's session edge: feeds the pure session model (agent.router.session) with
the bus facts and the time, carries out what it answers, and serves `agent status`.

Besides the router's data channel it uses pika channels of its own on the same
connection (`Bus.open_channel`): one for status requests (queue `packetrouting@router.status`,
bound to `routing.status.request`, replies over RabbitMQ's direct reply-to), and a
short-lived one per queue probe (a passive declare of a silent agent's queue: 404 is
gone, 405, locked by its owner's connection, is alive; either closes that channel).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic
from typing import Any

import orjson
import pika
import pika.exceptions as pex

from agent.bus import wire
from agent.bus.connection import Bus
from agent.config import ConfigError, plan_from_bus
from agent.counters import Counters
from agent.router.session import Announce, Forget, Probe, Session
from agent.router.status import STATUS_KEY, STATUS_QUEUE, snapshot

TICK_S = 1.0
REPLY_PREFIX = "amq.rabbitmq.reply-to."  # the only queues a status reply goes to


class SessionEdge:
    def __init__(
        self,
        bus: Bus,
        counters: Counters,
        forget: Callable[[str], None],
        announce: Callable[[], None],
        log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
        fast_wire: bool = True,
    ) -> None:
        self.bus = bus
        self.counters = counters
        self.session = Session(fast_wire=fast_wire)
        self._forget = forget
        self._announce = announce
        self.log = log
        self._announcing = False
        self._tick: asyncio.TimerHandle | None = None
        self._status_channel: Any = None
        self.probes = 0  # queue probes sent (tests, metrics)

    # -- facts from the router's messages -------------------------------------------------

    def up(self, epoch: str) -> None:
        self._apply(self.session.up(epoch, monotonic()))
        self._status_channel = None
        self.bus.open_channel(self._on_status_channel)
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(TICK_S, self._on_tick)

    def ready(self, msg: wire.Ready) -> None:
        if isinstance(msg.component, str) and not msg.from_router:
            self.session.ready(msg.component)

    def started(self, msg: wire.TunStarted) -> None:
        """WireError if its configuration is not usable (the router counts and logs it)."""
        try:
            plan = plan_from_bus(msg.fields)
        except ConfigError as exc:
            raise wire.WireError(f"invalid tun.started: {exc}") from None
        fields = msg.fields
        actions = self.session.started(
            msg.agent, wire.incarnation(fields), msg.fast, monotonic(),
            addresses=[str(a) for a in wire.addresses_of(plan)],
            networks=[str(n) for n in plan.reroute_prefixes],
            epoch=wire.router_epoch(fields),
        )
        if actions:
            record = self.session.agents[msg.agent]
            self.log.info("%s: new incarnation %s", msg.agent, record.incarnation)
        self._apply(actions, msg.agent)

    def stopped(self, msg: wire.TunStopped) -> None:
        actions = self.session.stopped(msg.agent, wire.incarnation(msg.fields))
        if actions:
            self.log.info("%s stopped", msg.agent)
        self._apply(actions)

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    # -- actions ------------------------------------------------------------------------

    def _apply(self, actions: list[Any], begun: str | None = None) -> None:
        for action in actions:
            if isinstance(action, Forget):
                self._forget(action.name)
            elif isinstance(action, Announce):
                if not self._announcing:
                    self._announcing = True
                    asyncio.get_running_loop().call_soon(self._announce_now)
            elif isinstance(action, Probe):
                self._probe(action.name)
        record = self.session.agents.get(begun) if begun else None
        if record is not None and record.base is None:
            record.base = self._counts(record.name)

    def _announce_now(self) -> None:
        self._announcing = False
        self._announce()

    def _counts(self, name: str) -> tuple[int, int, int, int, int]:
        c = self.counters
        sent, got = f"{name}>", f">{name}"
        return (c.packets[sent], c.bytes[sent], c.packets[got], c.bytes[got],
                c.drops[f"spoofed by {name}"])

    def _on_tick(self) -> None:
        self._tick = asyncio.get_running_loop().call_later(TICK_S, self._on_tick)
        if not self.bus.up:
            return
        packets = self.counters.packets
        counts = {
            name: (packets[f"{name}>"], packets[f">{name}"]) for name in self.session.agents
        }
        self._apply(self.session.tick(monotonic(), counts))

    # -- queue probes -------------------------------------------------------------------

    def _probe(self, name: str) -> None:
        queue = f"{name}@agent"

        def on_open(channel: Any) -> None:
            channel.add_on_close_callback(lambda _ch, exc: self._probed(name, exc))
            try:
                channel.queue_declare(queue, passive=True, callback=lambda _f: channel.close())
            except (pex.AMQPError, ValueError):
                channel.close()

        if self.bus.open_channel(on_open):
            self.probes += 1

    def _probed(self, name: str, exc: BaseException) -> None:
        code = getattr(exc, "reply_code", None)
        if code == 404:
            self.log.info("%s is gone (its queue is gone)", name)
            self._apply(self.session.gone(name))
        elif code in (None, 200, 405):  # closed by us after a declare-ok, or locked: alive
            self.session.alive(name, monotonic())

    def standby(self) -> None:
        """Another router is active: leave `agent status` to it (our status queue, exclusive,
        would keep its answers from being asked)."""
        channel, self._status_channel = self._status_channel, None
        if channel is not None and channel.is_open:
            channel.close()

    # -- agent status -------------------------------------------------------------------

    def _on_status_channel(self, channel: Any) -> None:
        self._status_channel = channel
        channel.add_on_close_callback(self._status_closed)
        try:
            channel.queue_declare(
                STATUS_QUEUE, exclusive=True, auto_delete=True,
                arguments={"x-message-ttl": 5000, "x-max-length": 100},
                callback=lambda _f: channel.queue_bind(
                    STATUS_QUEUE, self.bus.exchange, STATUS_KEY,
                    callback=lambda _f2: channel.basic_consume(
                        STATUS_QUEUE, self._on_status_request, auto_ack=True
                    ),
                ),
            )
        except (pex.AMQPError, ValueError) as exc:
            self.log.warning("agent status not served: %s", exc)

    def _status_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is self._status_channel and getattr(exc, "reply_code", 0) == 403:
            self.log.warning(  # packets still flow; only `agent status` goes unanswered
                "agent status not served: %s (a session account made before agent status: "
                "docs/operating.md)", getattr(exc, "reply_text", exc)
            )

    def _on_status_request(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        reply_to = props.reply_to or ""
        if not reply_to.startswith(REPLY_PREFIX) or len(body) > 4096:
            self.counters.drop("bad status request")
            return
        answer = snapshot(self.session, self.counters, monotonic(), self.bus.url)
        try:
            channel.basic_publish(
                "", reply_to, orjson.dumps(answer),
                pika.BasicProperties(
                    content_type=wire.CONTENT_TYPE, correlation_id=props.correlation_id
                ),
            )
        except (pex.AMQPError, ValueError) as exc:
            self.log.debug("status reply not sent: %s", exc)
