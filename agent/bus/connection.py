"""The AMQP edge: pika's asyncio connection, driven by the sans-I/O core (a thin adapter).

`Bus` connects, declares its queue and bindings, consumes, publishes, and after a
connection loss reconnects (next node, capped exponential backoff). Every decision is
agent.bus.core's (`BusCore`: states, failover, timers, fed pika's callbacks and the time,
answering with actions); this module only turns pika's callbacks into the core's events,
executes its actions and arms its one timer. The per-packet traffic is
agent.bus.datapath's (the lean reader and writer), confirm pacing agent.bus.pacing's.

The bus's other parts are imported from here too, as they were before the split.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

import pika.exceptions as pex
from pika.adapters.asyncio_connection import AsyncioConnection

from agent.bus import pikaedge
from agent.bus.core import (
    QUEUE_CHECK_S,
    STANDBY_POLL,
    Action,
    BusCore,
    CheckQueues,
    Connect,
    Declare,
    Drop,
    Fatal,
    StandingBy,
)
from agent.bus.datapath import FAST_PROPS, JSON_PROPS, WRITE_BUFFER_LIMIT, DataPath, Handler
from agent.bus.declare import Declaration, QueueCheck
from agent.bus.errors import BusFatal, describe_error
from agent.bus.pacing import (
    CONFIRM_GIVE_UP_S,
    CONFIRM_MARGIN_S,
    CONFIRM_SLACK,
    PACE_IDLE_MESSAGES,
    PACE_IDLE_S,
    Pacer,
    PaceState,
    confirms_late,
)
from agent.bus.params import DEFAULT_HEARTBEAT, connection_parameters
from agent.bus.queues import (
    CONTROL_QUEUE_ARGUMENTS,
    QueueSpec,
    agent_queue,
    control_queue_name,
    queue_arguments,
)
from agent.bus.state import ConnState
from agent.bus.url import AmqpUrl, Urls, as_list
from agent.logs import labelled

__all__ = [
    "CONFIRM_GIVE_UP_S", "CONFIRM_MARGIN_S", "CONFIRM_SLACK", "CONTROL_QUEUE_ARGUMENTS",
    "DEFAULT_HEARTBEAT", "FAST_PROPS", "JSON_PROPS", "PACE_IDLE_MESSAGES", "PACE_IDLE_S",
    "QUEUE_CHECK_S", "STANDBY_POLL", "WRITE_BUFFER_LIMIT", "Bus", "BusFatal", "Handler",
    "QueueSpec", "agent_queue", "confirms_late", "connection_parameters",
    "control_queue_name", "describe_error", "queue_arguments",
]

log = logging.getLogger(__name__)


class Publish(Protocol):
    """Bus.publish: None, or why the message was dropped."""

    def __call__(
        self, routing_key: str, body: bytes, props: bytes | None = None
    ) -> str | None: ...


ACTIVE, DECLARING, STANDBY = ConnState.ACTIVE, ConnState.DECLARING, ConnState.STANDBY
ENDED = (ConnState.CLOSING, ConnState.CLOSED)
PACE_OFF = PaceState.OFF


class Bus:
    """One AMQP connection and channel; publishes on an exchange, consumes one queue.

    `publish(key, body, props)` returns None, or why the message was dropped ("bus
    down", "queue full", "bus error"); `flush()` sends what was published now; `pace()`
    asks for confirm pacing, `window_open` says whether a held batch may leave."""

    def __init__(
        self,
        url: Urls,
        exchange: str,
        queue: QueueSpec,
        on_message: Handler,
        on_up: Callable[[], None],
        on_fatal: Callable[[str], None],
        ca_file: str | None = None,
        on_standby: Callable[[], None] | None = None,
        label: str = "",
        confirm_window: int = 0,
    ) -> None:
        """on_standby set: a queue in use (405) means wait for it (routers).
        confirm_window > 0: publisher confirms may be turned on (`pace`), and then
        `window_open` says whether fewer than that many of our messages wait for the
        broker (agent.bus.pacing)."""
        self.log = labelled(log, label)  # label: the session, when a process serves several
        self.urls = as_list(url)
        self.exchange = exchange
        self.queue = queue
        self._on_up = on_up
        self._on_fatal = on_fatal
        self._on_standby = on_standby
        self._params = [connection_parameters(u, ca_file) for u in self.urls]
        self.confirm_window = confirm_window
        self.pacer = Pacer(confirm_window)
        self.core = BusCore(
            [u.where for u in self.urls],
            can_stand_by=on_standby is not None,
            check_queues=queue.exclusive,
            pacer=self.pacer,
            log=self.log,
        )
        self.order = self.core.order
        self.path = DataPath(exchange, on_message, self.core, self.log, queue.prefetch)
        self.path.timer_changed = self._arm
        # the hot path, without a call of ours in between
        self.publish: Publish = self.path.publish
        self.flush = self.path.flush
        self.pace = self.path.pace
        self._conn: AsyncioConnection | None = None
        self._closed = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._declaration: Declaration | None = None
        self.queue_name = queue.name  # the broker's name for a server-named queue, once declared
        self.control_queue_name = control_queue_name(queue.name)

    # -- what the owner reads ----------------------------------------------------------------

    @property
    def url(self) -> AmqpUrl:
        """The URL of the node connected to (or tried next)."""
        return self.urls[self.order.index]

    @property
    def up(self) -> bool:
        return self.core.state is ACTIVE

    @property
    def standby(self) -> bool:
        return self.core.state is STANDBY

    @property
    def reconnects(self) -> int:
        return self.core.reconnects

    @property
    def lean(self) -> bool:  # our reader owns the input, one send() per burst
        return self.path.lean

    @property
    def confirms(self) -> int:
        """Messages the broker confirmed, all connections (--metrics)."""
        return self.pacer.confirms

    @property
    def in_flight(self) -> int:  # our messages the broker has not confirmed yet
        return self.pacer.in_flight

    @property
    def window_open(self) -> bool:
        """May a held batch leave now (agent.bus.pacing.Pacer.window_open)? Reads only."""
        pacer = self.pacer
        return pacer.state is PACE_OFF or pacer.window_open(monotonic())

    @property
    def before_flush(self) -> Callable[[], None] | None:
        """Called at the start of every flush: a last chance to publish what was held."""
        return self.path.before_flush

    @before_flush.setter
    def before_flush(self, hook: Callable[[], None] | None) -> None:
        self.path.before_flush = hook

    # -- lifecycle -----------------------------------------------------------------------

    def open_channel(self, on_open: Callable[[Any], None]) -> bool:
        """One more channel on the current connection, on pika's own path (the router's
        status replies and queue probes, agent.router.edge); False when not connected."""
        conn = self._conn
        if not self.up or conn is None or not conn.is_open:
            return False
        conn.channel(on_open_callback=on_open)
        return True

    def start(self) -> None:
        self._closed.clear()
        self._do(self.core.start())

    async def close(self, timeout: float = 1.0) -> None:
        """Close the channel and connection cleanly; give up after timeout seconds."""
        conn = self._conn
        closing = conn is not None and (conn.is_closed or conn.is_closing)
        if conn is not None and not closing:
            self.flush()  # what was published and held goes first
        self._do(self.core.close())
        if conn is None or conn.is_closed:
            self.core.closed()
            return
        if not closing:
            try:
                conn.close()
            except pex.ConnectionWrongStateError:
                return
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            self.log.debug("broker did not confirm the close in %.1f s", timeout)

    # -- the core's actions, and its one timer -----------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Connect):
                self._connect(action.index)
            elif isinstance(action, Declare):
                conn = self._conn
                if conn is not None and conn.is_open:
                    conn.channel(on_open_callback=self._on_channel)
            elif isinstance(action, Drop):
                conn = self._conn
                if conn is not None and not (conn.is_closed or conn.is_closing):
                    conn.close()
            elif isinstance(action, Fatal):
                self._on_fatal(action.reason)
            elif isinstance(action, CheckQueues):
                self._check_queues()
            elif isinstance(action, StandingBy):
                self._stood_by()
        self._arm()

    def _arm(self) -> None:
        at = self.core.next_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = asyncio.get_running_loop().call_later(
                max(0.0, at - monotonic()), self._on_timer
            )

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._do(self.core.handle_timer(monotonic()))

    def _connect(self, index: int) -> None:
        self.log.debug("connecting to %s", self.urls[index].redacted())
        self._conn = AsyncioConnection(
            self._params[index],
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=asyncio.get_running_loop(),
        )

    def _stood_by(self) -> None:
        if self._on_standby is not None:
            self._on_standby()
            return
        self.log.warning(
            "queue %s is held by another connection (our lost one, on a node "
            "not yet declared down?); waiting for it on %s",
            self.queue.name,
            self.url.where,
        )

    def _check_queues(self) -> None:
        """Are our exclusive queues still there and ours? A passive declare of each; a
        refusal closes the channel (`_on_channel_closed`, the core decides)."""
        if self.path.channel is not None:
            names = [self.queue_name] + ([self.control_queue_name] if self.queue.control else [])
            QueueCheck(self.path.channel, names, lambda: self.up, self._checked, self.log).next()

    def _checked(self) -> None:
        self.core.queues_checked(monotonic())
        self._arm()

    # -- pika's callbacks --------------------------------------------------------------------

    def _on_open(self, conn: AsyncioConnection) -> None:
        if conn is self._conn:
            pikaedge.tune_reads(conn)
            self._do(self.core.opened())

    def _on_open_error(self, conn: AsyncioConnection, exc: BaseException) -> None:
        self._closed.set()
        if conn is self._conn:
            self._lost(exc)

    def _on_closed(self, conn: AsyncioConnection, exc: BaseException) -> None:
        self._closed.set()
        if conn is not self._conn:
            return
        self.path.forget()
        self._declaration = None
        if self.core.active_connection and self.core.state not in ENDED:
            self.log.debug("connection closed: %s", exc)
        self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        reason = describe_error(exc, self.url)
        self._do(self.core.connection_lost(reason, monotonic(), isinstance(exc, BusFatal)))

    def _on_channel(self, channel: Any) -> None:
        conn = self._conn
        if conn is None or not conn.is_open or self.core.state is not DECLARING:
            return
        self.path.attach(conn, channel)
        channel.add_on_close_callback(self._on_channel_closed)
        self.pacer.off()
        self._declaration = Declaration(
            channel, self.exchange, self.queue, self.path.deliver, self._declared
        )
        self._declaration.start()

    def _declared(self) -> None:
        declaration = self._declaration
        if declaration is None or self.core.state is not DECLARING:
            return
        self.queue_name = declaration.queue_name
        self.control_queue_name = declaration.control_queue_name
        asyncio.get_running_loop().call_soon(self._take_over_reading, self._conn)
        self._do(self.core.declared(monotonic()))
        if self.core.state is ACTIVE:
            self._on_up()

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self.path.channel:
            return
        self.path.encoder = None  # nothing more on this channel: publishes are dropped
        by_broker = isinstance(exc, pex.ChannelClosedByBroker)
        self._do(self.core.channel_closed(
            exc.reply_code if by_broker else None,  # type: ignore[attr-defined]
            exc.reply_text if by_broker else "",  # type: ignore[attr-defined]
            monotonic(),
            in_use=self.queue.in_use_message.format(queue=self.queue.name),
            desc=str(exc),
        ))

    def _take_over_reading(self, conn: AsyncioConnection | None) -> None:
        if conn is None or conn is not self._conn or not conn.is_open or self.path.channel is None:
            return
        if self.path.take_over() and self.confirm_window and self.path.paced_channel is None:
            conn.channel(on_open_callback=self._on_paced_channel)

    def _on_paced_channel(self, channel: Any) -> None:
        conn = self._conn
        if (
            self.core.state in ENDED or conn is None or not conn.is_open
            or self.path.reader is None
        ):
            if channel.is_open:
                channel.close()
            return
        channel.add_on_close_callback(self._on_paced_channel_closed)
        self.path.paced_channel_open(channel)

    def _on_paced_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self.path.paced_channel:
            return
        self.path.paced_channel_closed()
        if self.core.state in ENDED or not isinstance(exc, pex.ChannelClosedByBroker):
            return  # the connection went: _on_closed reports and reconnects
        if exc.reply_code == 403:  # a publish refused: as on the first channel, the end
            self._do(self.core.refused(f"broker at {self.url.where} refused: {exc.reply_text}"))
            return
        self.log.warning("confirm channel closed: %s; batches go unpaced", exc)
