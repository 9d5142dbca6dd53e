"""The AMQP edge: one connection, one channel, one queue, driven by the asyncio loop.

`Bus` connects, declares its queue and bindings, consumes, publishes, and after a
connection loss reconnects with capped exponential backoff. The first connection is
different: if it fails, the reason is reported as fatal (a user typo should not spin
forever).

pika runs the connection; the per-packet messages take a shorter road once consuming
(see "data path" below and agent.bus.frames): deliveries are read from the socket's
bytes without pika's frame objects, publishes and acks are encoded once per routing key
and sent in one send() per burst. What that needs of pika's internals is in
agent.bus.pikaedge, and only there.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from agent.bus import pikaedge
from agent.bus.failover import NodeOrder
from agent.bus.frames import (
    Confirm,
    Delivery,
    FrameError,
    FrameReader,
    PublishEncoder,
    encode_properties,
)
from agent.bus.url import AmqpUrl, Urls, as_list
from agent.bus.wire import CONTENT_ENCODING, CONTENT_TYPE, FAST_CONTENT_TYPE
from agent.logs import labelled
from agent.soon import Soon

log = logging.getLogger(__name__)

WRITE_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes pending to the broker before we drop
# pika 1.x sends a heartbeat every heartbeat/2 s and checks every heartbeat + 5 s that some
# bytes came since the previous check: a silent (frozen) broker is noticed 1 to 2 check
# intervals after its last byte, 7 to 14 s with 2 (docs/cluster.md). The broker gives up on
# us after 2 missed heartbeats (4 s of a stalled loop).
DEFAULT_HEARTBEAT = 2
STANDBY_POLL = 0.5  # s between two tries of a standby to take the queue
# while up, our exclusive queues are checked (passive declare) this often: after a node's
# death a broker race can leave a queue without its record, or give its name to another
# connection (docs/cluster.md); we then reconnect, which releases whatever we still hold
QUEUE_CHECK_S = 5.0
# ...and once this soon after each (re)connection or takeover: the race comes with the
# declare that follows a node's death, and a split found then costs ~1 s of silence, not 5
QUEUE_CHECK_FIRST_S = 1.0
# the confirm window (Bus.window_open) closes only when our oldest unconfirmed message is
# older than this many times the quickest confirm of the connection, plus the margin
CONFIRM_SLACK = 2.0
CONFIRM_MARGIN_S = 0.0005
CONFIRM_GIVE_UP_S = 1.0  # an unconfirmed message this old: the count is off, start afresh
# paced publishing (publisher confirms) ends once, for this long, no batch asked for it
# (`pace`), fewer than PACE_IDLE_MESSAGES were published (a stream sends hundreds a second
# even in small batches; pings a few) and the broker confirmed all: lone packets then go
# unconfirmed again
PACE_IDLE_S = 1.0
PACE_IDLE_MESSAGES = 50

Handler = Callable[[str, bytes, "str | None"], None]  # (routing key, body, content type)

# encoded content-header properties of the two kinds of packet message
JSON_PROPS = encode_properties(CONTENT_TYPE, CONTENT_ENCODING)
FAST_PROPS = encode_properties(FAST_CONTENT_TYPE)
# the same, for pika's own publish (when agent.bus.pikaedge finds no transport to write on)
_PIKA_PROPS = {
    JSON_PROPS: pika.BasicProperties(content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING),
    FAST_PROPS: pika.BasicProperties(content_type=FAST_CONTENT_TYPE),
}


def confirms_late(in_flight: int, window: int, oldest_age: float, quickest: float) -> bool:
    """Should batches wait for the broker? Yes when at least `window` messages are
    unconfirmed and the oldest of them (oldest_age s) has waited longer than the broker's
    quickest confirm on this connection allows (CONFIRM_SLACK x quickest +
    CONFIRM_MARGIN_S). window 0: never."""
    return (
        window > 0
        and in_flight >= window
        and oldest_age >= quickest * CONFIRM_SLACK + CONFIRM_MARGIN_S
    )


class BusFatal(Exception):
    """The bus cannot be used at all (bad credentials, duplicate name...)."""


@dataclass
class QueueSpec:
    """The queue a Bus consumes. `name` "" asks the broker for a fresh server-named queue
    (on every connection); use it with exclusive=True."""

    name: str
    bindings: list[str]
    exclusive: bool = True
    auto_delete: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)
    prefetch: int = 256
    in_use_message: str = "queue {queue} is in use by another process"
    # control keys (announcements) get a queue of their own, consumed on the same channel,
    # so that a data queue full of packets (drop-head) never drops an announcement
    control: list[str] = field(default_factory=list)


# the control queue: no TTL (an announcement stays true), a bound only against a flood;
# it carries a constant number of messages per agent joining (see docs/scale.md)
CONTROL_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-length": 100000, "x-overflow": "drop-head"}


def control_queue_name(queue_name: str) -> str:
    """The control queue beside queue_name ("" stays "": server-named, as its data queue)."""
    return f"{queue_name}.control" if queue_name else ""


def queue_arguments(ttl_ms: int = 5000, max_length: int = 1000) -> dict[str, Any]:
    """Stale packets are worthless: bounded length (drop oldest) and a short TTL."""
    return {"x-message-ttl": ttl_ms, "x-max-length": max_length, "x-overflow": "drop-head"}


def agent_queue(name: str, bindings: list[str], control: list[str] | None = None) -> QueueSpec:
    """The queue of the agent called name: exclusive, so a second one is refused."""
    return QueueSpec(
        name=f"{name}@agent",
        bindings=bindings,
        control=list(control or []),
        arguments=queue_arguments(),
        in_use_message=(
            f"an agent named {name!r} is already connected to this bus "
            "(pick another --name, or stop the other one)"
        ),
    )


def connection_parameters(url: AmqpUrl, ca_file: str | None = None) -> pika.ConnectionParameters:
    ssl_options = None
    if url.tls:
        context = ssl.create_default_context(cafile=ca_file)
        ssl_options = pika.SSLOptions(context, server_hostname=url.host)
    p = url.params
    return pika.ConnectionParameters(
        host=url.host,
        port=url.port,
        virtual_host=url.vhost,
        credentials=pika.PlainCredentials(url.user, url.password, erase_on_connect=False),
        heartbeat=int(p.get("heartbeat", DEFAULT_HEARTBEAT)),
        connection_attempts=int(p.get("connection_attempts", 1)),
        retry_delay=float(p.get("retry_delay", 1.0)),
        socket_timeout=float(p.get("socket_timeout", 5.0)),
        stack_timeout=float(p.get("stack_timeout", 10.0)),
        blocked_connection_timeout=p.get("blocked_connection_timeout"),
        channel_max=int(p.get("channel_max", 16)),
        frame_max=int(p.get("frame_max", 131072)),
        ssl_options=ssl_options,
        client_properties={"connection_name": "ioppytest-agent"},
    )


def describe_error(exc: BaseException, url: AmqpUrl) -> str:
    """One line for a user, naming host:port, user or vhost, never the password."""
    exc = _root_cause(exc)
    where = url.where
    if isinstance(exc, (pex.ProbableAuthenticationError, pex.AuthenticationError)):
        return f"broker at {where} refused the login of user {url.user!r} (wrong user or password)"
    if isinstance(exc, pex.ProbableAccessDeniedError):
        return (
            f"broker at {where} refused access to vhost {url.vhost!r} "
            "(unknown vhost or no permission)"
        )
    if isinstance(exc, pex.ConnectionClosedByBroker):
        if exc.reply_code == 530:
            return f"broker at {where} refused vhost {url.vhost!r}: {exc.reply_text}"
        if exc.reply_code == 403:
            return f"broker at {where} refused user {url.user!r}: {exc.reply_text}"
        return f"broker at {where} closed the connection: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pex.IncompatibleProtocolError):
        return f"{where} does not speak AMQP 0-9-1 (wrong port, or TLS expected?)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc  # absent if not raised by _ssl
        return f"TLS certificate of {where} not trusted: {why}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach broker at {where}: connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {url.host!r}"
    if isinstance(exc, TimeoutError):
        return f"cannot reach broker at {where}: timed out"
    text = str(exc) or type(exc).__name__
    if url.password and url.password in text:
        text = text.replace(url.password, "***")
    low = text.lower()
    if "refused" in low:
        return f"cannot reach broker at {where}: connection refused"
    if "timed out" in low or "timeout" in low:
        return f"cannot reach broker at {where}: timed out"
    if "name or service not known" in low or "getaddrinfo" in low or "nodename" in low:
        return f"cannot resolve broker host {url.host!r}"
    return f"connection to broker at {where} failed: {text}"


def _root_cause(exc: BaseException) -> BaseException:
    """pika wraps the interesting error in workflow and connector exceptions."""
    for _ in range(8):
        if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
            exc = exc.exceptions[-1]
        elif isinstance(getattr(exc, "exception", None), BaseException):
            exc = exc.exception  # type: ignore[attr-defined]
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return exc


class Bus:
    """One AMQP connection and channel; publishes on an exchange, consumes one queue."""

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
        """confirm_window > 0: publisher confirms may be turned on (`pace`), and then
        `window_open` says whether fewer than that many of our messages wait for the
        broker (the pace of batching, see `window_open`)."""
        self.log = labelled(log, label)  # label: the session, when a process serves several
        self.urls = as_list(url)
        self.order = NodeOrder(len(self.urls))
        self.exchange = exchange
        self.queue = queue
        self._on_message = on_message
        self._on_up = on_up
        self._on_fatal = on_fatal
        self._params = [connection_parameters(u, ca_file) for u in self.urls]
        self._on_standby = on_standby  # set: a queue in use (405) means wait for it
        self.standby = False
        self._first_errors: list[str] = []
        self._props = JSON_PROPS
        self._conn: AsyncioConnection | None = None
        self._channel: Any = None
        self._ever_up = False
        self._closing = False
        self._closed = asyncio.Event()
        self._retry: asyncio.TimerHandle | None = None
        self._queue_check: asyncio.TimerHandle | None = None
        self._checking = False  # a passive declare of ours is under way
        self._ack_tag = 0  # the newest delivery to acknowledge (multiple) at the next flush
        # the data path (agent.bus.frames), per connection once its channel is open
        self._encoder: PublishEncoder | None = None
        self._reader: FrameReader | None = None
        self._pika_in: pikaedge.Reader | None = None  # our reader's hold on pika's input
        self._writer: pikaedge.Writer | None = None
        self._out: list[bytes] = []  # frames to send at the next flush
        self._out_bytes = 0
        self._flush_soon = Soon(self.flush)  # at the end of this loop turn, once
        self._loop: asyncio.AbstractEventLoop | None = None
        self.queue_name = queue.name  # the broker's name for a server-named queue, once declared
        self.control_queue_name = control_queue_name(queue.name)
        self.up = False
        self.reconnects = 0
        self.drop_reason = ""  # why the last publish() returned False
        # called at the start of every flush: a last chance to publish what was held back
        self.before_flush: Callable[[], None] | None = None
        # publisher confirms (see `pace`): on a channel of their own, opened with the
        # connection; publishes go there while a stream is paced, on the first otherwise
        self.confirm_window = confirm_window
        self._confirming = False  # our publishes go on the confirm channel now
        self._paced_channel: Any = None  # that channel (pika), in confirm mode
        self._paced_encoder: PublishEncoder | None = None  # its frames, once it is open
        self._switching = False  # waiting for the first channel's barrier (`pace`)
        self._paces = 0  # pace() calls so far (the idle check compares)
        self._pace_seen = 0
        self._published_seen = 0
        self._pace_check: asyncio.TimerHandle | None = None
        self._pace_logged = False  # the INFO line: once per connection
        self._published = 0  # messages on the confirm channel / confirmed by the broker
        self._confirmed = 0
        self._sent_at: deque[tuple[int, float]] = deque()  # (tag, monotonic) unconfirmed
        self._min_confirm = float("inf")  # the quickest confirm seen on this connection

    @property
    def url(self) -> AmqpUrl:
        """The URL of the node connected to (or tried next)."""
        return self.urls[self.order.index]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed.clear()
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        if self._closing:
            return
        self.log.debug("connecting to %s", self.url.redacted())
        self._conn = AsyncioConnection(
            self._params[self.order.index],
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=asyncio.get_running_loop(),
        )

    async def close(self, timeout: float = 1.0) -> None:
        """Close the channel and connection cleanly; give up after timeout seconds."""
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._stop_queue_check()
        conn = self._conn
        if conn is None or conn.is_closed:
            return
        if not conn.is_closing:
            self.flush()
            self._unpace()
            try:
                conn.close()
            except pex.ConnectionWrongStateError:
                return
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
        except TimeoutError:
            self.log.debug("broker did not confirm the close in %.1f s", timeout)

    # -- connection callbacks ---------------------------------------------------------------

    def _on_open(self, conn: AsyncioConnection) -> None:
        pikaedge.tune_reads(conn)
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, conn: AsyncioConnection, exc: BaseException) -> None:
        self._closed.set()
        self._lost(describe_error(exc, self.url), exc)

    def _on_closed(self, conn: AsyncioConnection, exc: BaseException) -> None:
        self._closed.set()
        was_up = self.up
        self.up = False
        self._channel = None
        self._forget_data_path()
        if self._closing:
            return
        if was_up:
            self.log.debug("connection closed: %s", exc)
        self._lost(describe_error(exc, self.url), exc, was_up)

    def _lost(self, reason: str, exc: BaseException, was_up: bool = False) -> None:
        if self._closing:
            return
        several = len(self.urls) > 1
        first = not (self._ever_up or self.standby)
        if first and several:
            self._first_errors.append(reason)
        lost_at = self.url.where
        delay = self.order.failed()
        if isinstance(exc, BusFatal) or (first and self.order.round_done):
            # the first round failed on every node: a typo should not spin forever
            self._closing = True
            self._on_fatal("; ".join(self._first_errors) if several else reason)
            return
        if was_up:
            self.log.warning("lost the broker at %s: %s; reconnecting", lost_at, reason)
        elif delay:
            self.log.info(
                "still no broker (%s); next try %s in %.1f s", reason, self.url.where, delay
            )
        else:
            self.log.info("%s; trying %s", reason, self.url.where)
        self._retry = asyncio.get_running_loop().call_later(delay, self._connect)

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        conn = self._conn
        assert conn is not None
        self._writer = pikaedge.writer(conn)
        self._encoder = PublishEncoder(channel.channel_number, conn.params.frame_max, self.exchange)
        channel.add_on_close_callback(self._on_channel_closed)
        self._unpace()
        if self.exchange.startswith("amq."):
            self._declare_queue()
        else:
            channel.exchange_declare(
                self.exchange,
                exchange_type="topic",
                durable=True,
                auto_delete=False,
                callback=lambda _f: self._declare_queue(),
            )

    def _on_channel_closed(self, channel: Any, exc: BaseException) -> None:
        self._encoder = None  # nothing more on this channel: publishes are dropped
        if self._closing or self._conn is None:
            return
        if not isinstance(exc, pex.ChannelClosedByBroker):
            return  # the connection went: _on_closed reports and reconnects
        if self._checking:  # our queue check was refused: the queue is gone or not ours
            self._checking = False
            if exc.reply_code in (404, 405):
                self.log.warning(
                    "our queue is gone or held by another connection (%s); reconnecting",
                    exc.reply_text,
                )
                self._safe_close()
                return
        reason = f"channel closed: {exc}"
        if isinstance(exc, pex.ChannelClosedByBroker):
            if exc.reply_code == 405 and (self._on_standby is not None or self._ever_up):
                # a standby waits for the queue; after a failover it may still be held by
                # our own lost connection on a node not yet declared down: wait on this
                # (healthy) node rather than move on, perhaps to the lost node itself
                self._wait_for_queue()
                return
            if exc.reply_code == 405:
                reason = self.queue.in_use_message.format(queue=self.queue.name)
                if not self._ever_up:
                    self._give_up(reason)
                    return
            elif exc.reply_code == 403 or (exc.reply_code in (404, 406) and not self._ever_up):
                # 403: the account may not (publish on that key, bind, declare): retrying
                # cannot help, so one line naming what was refused, and the end
                if exc.reply_code == 403:
                    self._give_up(self._refused(exc))
                else:
                    self._give_up(f"broker refused a declaration: {exc.reply_text}")
                return
        self.log.warning("%s; reconnecting", reason)
        self._safe_close()

    def _wait_for_queue(self) -> None:
        """The queue is held by another connection: try again on a new channel in a moment."""
        if not self.standby:
            self.standby = True  # from now on a lost connection is retried
            self.order.connected()
            if self._on_standby is not None:
                self._on_standby()
            else:
                self.log.warning(
                    "queue %s is held by another connection (our lost one, on a node "
                    "not yet declared down?); waiting for it on %s",
                    self.queue.name,
                    self.url.where,
                )
        conn = self._conn

        def retry() -> None:
            if conn is self._conn and conn is not None and conn.is_open and not self._closing:
                conn.channel(on_open_callback=self._on_channel)

        asyncio.get_running_loop().call_later(STANDBY_POLL, retry)

    def _refused(self, exc: pex.ChannelClosedByBroker) -> str:
        return f"broker at {self.url.where} refused: {exc.reply_text}"

    def _give_up(self, reason: str) -> None:
        """A setting to fix (refused permission, a name in use): one line, and the end."""
        self._closing = True
        self._on_fatal(reason)
        self._safe_close()

    def _safe_close(self) -> None:
        conn = self._conn
        if conn is not None and not (conn.is_closed or conn.is_closing):
            conn.close()

    def _declare_queue(self) -> None:
        q = self.queue
        self._channel.queue_declare(
            q.name,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=q.arguments,
            callback=self._declared,
        )

    def _declared(self, frame: Any) -> None:
        self.queue_name = frame.method.queue or self.queue.name
        self._bind(self.queue_name, list(self.queue.bindings), self._declare_control)

    def _declare_control(self) -> None:
        q = self.queue
        if not q.control:
            self._qos()
            return
        self._channel.queue_declare(
            control_queue_name(q.name),
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=CONTROL_QUEUE_ARGUMENTS,
            callback=self._control_declared,
        )

    def _control_declared(self, frame: Any) -> None:
        self.control_queue_name = frame.method.queue
        self._bind(self.control_queue_name, list(self.queue.control), self._qos)

    def _bind(self, queue: str, remaining: list[str], then: Callable[[], None]) -> None:
        if not remaining:
            then()
            return
        key = remaining.pop(0)
        self._channel.queue_bind(
            queue,
            self.exchange,
            routing_key=key,
            callback=lambda _f: self._bind(queue, remaining, then),
        )

    def _qos(self) -> None:
        self._channel.basic_qos(prefetch_count=self.queue.prefetch, callback=self._consume)

    def _consume(self, _frame: Any) -> None:
        if self.queue.control:
            self._channel.basic_consume(self.control_queue_name, self._deliver, auto_ack=False)
        self._channel.basic_consume(self.queue_name, self._deliver, auto_ack=False)
        asyncio.get_running_loop().call_soon(self._take_over_reading, self._conn)
        self.up = True
        self.standby = False
        if self._ever_up:
            self.reconnects += 1
            self.log.warning("broker connection restored: reconnected to %s", self.url.where)
        elif len(self.urls) > 1:
            self.log.info(
                "connected to node %s (URL %d of %d)",
                self.url.where,
                self.order.index + 1,
                len(self.urls),
            )
        self._ever_up = True
        self.order.connected()
        self._arm_queue_check(QUEUE_CHECK_FIRST_S)  # a declare that raced a node's death
        self._on_up()

    def _arm_queue_check(self, delay: float = QUEUE_CHECK_S) -> None:
        if self.queue.exclusive and self._queue_check is None and not self._closing:
            self._queue_check = asyncio.get_running_loop().call_later(delay, self._check_queues)

    def _stop_queue_check(self) -> None:
        if self._queue_check is not None:
            self._queue_check.cancel()
            self._queue_check = None
        self._checking = False

    def _check_queues(self) -> None:
        """Every QUEUE_CHECK_S while up: are our exclusive queues still there and ours?
        A passive declare of each; a refusal closes the channel (`_on_channel_closed`)."""
        self._queue_check = None
        names = [self.queue_name]
        if self.queue.control:
            names.append(self.control_queue_name)
        self._check_next(names)

    def _check_next(self, names: list[str]) -> None:
        channel = self._channel
        self._checking = False
        if self._closing or not self.up or channel is None or not channel.is_open:
            return
        if not names:
            self._arm_queue_check()
            return
        name = names.pop(0)
        try:
            channel.queue_declare(name, passive=True, callback=lambda _f: self._check_next(names))
        except (pex.AMQPError, ValueError) as exc:
            self.log.debug("queue check not sent: %s", exc)
            self._arm_queue_check()  # try again next time
            return
        self._checking = True

    # -- data path -------------------------------------------------------------------------
    #
    # pika opens the connection and channel, declares, consumes, sends heartbeats and
    # closes. Once consuming, the per-packet traffic takes a shorter road: bytes from the
    # socket go through a FrameReader (deliveries straight to the handler, every other
    # frame to pika, in order), publishes and acks are encoded by a PublishEncoder into
    # one buffer, sent in one send() per burst. Without the pika internals this needs,
    # deliveries stay on pika's own path (`_deliver`).

    @property
    def lean(self) -> bool:
        """Is the lean data path on (our reader owns the input, one send() per burst)?"""
        return self._reader is not None and self._writer is not None and self._writer.lean

    def _take_over_reading(self, conn: AsyncioConnection | None) -> None:
        if conn is None or conn is not self._conn or not conn.is_open or self._channel is None:
            return
        pika_in = pikaedge.take_over(conn)
        if pika_in is None:
            return  # deliveries stay on pika's path (a WARNING said so)
        self._pika_in = pika_in
        self._reader = FrameReader(self._channel.channel_number, conn.params.frame_max)
        leftover = pika_in.install(self._data_received)
        if leftover:  # a partial frame pika had not consumed (nor counted) yet
            self._data_received(leftover)
        if self.confirm_window and self._paced_channel is None:
            conn.channel(on_open_callback=self._on_paced_channel)

    def _on_paced_channel(self, channel: Any) -> None:
        """The confirm channel is open: confirms on (nowait), its confirms read by ours."""
        conn, reader = self._conn, self._reader
        if self._closing or conn is None or not conn.is_open or reader is None:
            if channel.is_open:
                channel.close()
            return
        channel.add_on_close_callback(self._on_paced_channel_closed)
        try:
            channel.confirm_delivery(self._pika_confirm)  # nowait: no Confirm.SelectOk
        except (pex.AMQPError, ValueError) as exc:
            self.log.debug("no publisher confirms: %s", exc)
            return
        self._paced_channel = channel
        reader.confirm_channel = channel.channel_number
        self._paced_encoder = PublishEncoder(
            channel.channel_number, conn.params.frame_max, self.exchange
        )
        self._published = self._confirmed = 0  # the broker numbers them from 1

    def _on_paced_channel_closed(self, channel: Any, exc: BaseException) -> None:
        if channel is not self._paced_channel:
            return
        self._unpace()
        self._paced_channel = self._paced_encoder = None
        if self._reader is not None:
            self._reader.confirm_channel = None
        if self._closing or self._conn is None or not isinstance(exc, pex.ChannelClosedByBroker):
            return  # the connection went: _on_closed reports and reconnects
        if exc.reply_code == 403:  # a publish refused: as on the first channel, the end
            self._give_up(self._refused(exc))
            return
        self.log.warning("confirm channel closed: %s; batches go unpaced", exc)

    def _forget_data_path(self) -> None:
        self._stop_queue_check()
        self._encoder = self._reader = self._pika_in = self._writer = None
        self._out.clear()
        self._out_bytes = 0
        self._ack_tag = 0
        self._unpace()  # a new connection starts without confirms
        self._paced_channel = self._paced_encoder = None
        self._pace_logged = False
        self._published = self._confirmed = 0
        self._min_confirm = float("inf")

    def _data_received(self, data: bytes) -> None:
        conn, reader, pika_in = self._conn, self._reader, self._pika_in
        if conn is None or reader is None or pika_in is None:
            return
        pika_in.count(len(data))
        try:
            events = reader.feed(data)
        except FrameError as exc:
            self.log.warning("unreadable data from the broker (%s); reconnecting", exc)
            self._reader = None
            pika_in.abort()
            return
        handler = self._on_message
        for event in events:
            kind = type(event)
            if kind is Delivery:
                self._ack_tag = event.delivery_tag
                try:
                    handler(event.routing_key, event.body, event.content_type)
                except Exception:  # handlers catch their own; this is the last resort
                    self.log.exception("error handling a message on %s", event.routing_key)
            elif kind is Confirm:
                self._confirm(event.delivery_tag)
            else:
                pika_in.to_pika(event.raw)  # heartbeats, RPC replies, channel.close...
                if conn is not self._conn or conn.is_closed or self._reader is not reader:
                    return
        self.flush()  # publishes made while handling, and the ack, in one send()

    def _deliver(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        """pika's delivery callback: used until the reader takes over (and without it)."""
        self._ack_tag = method.delivery_tag
        self._flush_soon()
        self._on_message(method.routing_key, body, props.content_type)

    def _pika_confirm(self, frame: Any) -> None:
        """A confirm pika read (before our reader takes over the input)."""
        self._confirm(getattr(frame.method, "delivery_tag", 0))
        self._flush_soon()

    def _confirm(self, tag: int) -> None:
        if tag <= self._confirmed:
            return
        self._confirmed = tag
        sent_at, last = self._sent_at, 0.0
        while sent_at and sent_at[0][0] <= tag:
            last = sent_at.popleft()[1]
        if last:
            took = monotonic() - last
            if took < self._min_confirm:
                self._min_confirm = took

    def pace(self) -> None:
        """A batch of several packets is about to be published: our publishes move to
        the confirm channel (if confirm_window > 0 and it is open), where the broker
        confirms each, so that `window_open` can pace the batches. Not before, and not
        after: once the stream is over and all are confirmed, they move back
        (`_pace_idle`), so lone packets (pings, CoAP exchanges) never pay for confirms (a
        frame from the broker and a wake-up of ours per message).

        Order is kept: the move waits for the answer to a Basic.Qos (the prefetch we
        have) on the first channel, which the broker gives after it has routed every
        message published there before; the move back waits for every confirm."""
        self._paces += 1
        if self._confirming or self._switching or self._paced_encoder is None:
            return
        channel = self._channel
        if not self.up or channel is None or not channel.is_open:
            return
        self._switching = True
        self._send_out()  # what was published before goes before the barrier
        try:
            channel.basic_qos(prefetch_count=self.queue.prefetch, callback=self._paced_on)
        except (pex.AMQPError, ValueError) as exc:
            self._switching = False
            self.log.debug("no pacing: %s", exc)

    def _paced_on(self, _frame: Any) -> None:
        if not self._switching or self._paced_encoder is None:
            return  # the connection went meanwhile
        self._switching = False
        self._confirming = True
        self._sent_at.clear()
        self._pace_seen, self._published_seen = self._paces, self._published
        self._pace_check = asyncio.get_running_loop().call_later(PACE_IDLE_S, self._pace_idle)
        if not self._pace_logged:
            self._pace_logged = True
            self.log.info("batching: publisher confirms on (they pace the fast-wire batches)")
        else:
            self.log.debug("batching: publisher confirms on")

    def _pace_idle(self) -> None:
        """Every PACE_IDLE_S while paced: back to the first channel once, since the last
        look, no batch asked for pacing, fewer than PACE_IDLE_MESSAGES were published, and
        the broker has confirmed everything."""
        self._pace_check = None
        if not self._confirming:
            return
        sent_at = self._sent_at
        settled = self._published == self._confirmed or (
            sent_at and monotonic() - sent_at[0][1] > CONFIRM_GIVE_UP_S  # one never came
        )
        quiet = self._published - self._published_seen < PACE_IDLE_MESSAGES
        if self._paces == self._pace_seen and quiet and settled:
            self._confirmed = self._published  # (a confirm that never came: given up)
            self._unpace()
            self.log.debug("batching: publisher confirms off (no stream)")
            return
        self._pace_seen, self._published_seen = self._paces, self._published
        self._pace_check = asyncio.get_running_loop().call_later(PACE_IDLE_S, self._pace_idle)

    def _unpace(self) -> None:
        self._confirming = self._switching = False
        self._sent_at.clear()
        if self._pace_check is not None:
            self._pace_check.cancel()
            self._pace_check = None

    @property
    def in_flight(self) -> int:
        """Our messages the broker has not confirmed yet (0 without confirms)."""
        return self._published - self._confirmed if self._confirming else 0

    @property
    def window_open(self) -> bool:
        """May a batch leave now? Yes unless our publishes are moving to the confirm
        channel (`pace`: one round trip), or confirms are on and confirm_window of our
        messages wait for the broker longer than it usually takes (`confirms_late`).

        Those who batch (agent.bus.port, the router) hold their packets while it is closed:
        when the broker is behind (a busy host), its confirms come late and the batches
        grow, so it handles fewer, fuller messages; when it is quick, or only distant (a
        WAN round trip is then its quickest confirm), nothing is held. A confirm counts as
        covering every tag below it (the broker confirms in order)."""
        if not self._confirming:
            return not self._switching  # moving to the confirm channel: batches wait
        if self._published - self._confirmed < self.confirm_window:
            return True
        sent_at = self._sent_at
        if not sent_at:
            return True  # published through pika (no lean path): no age
        age = monotonic() - sent_at[0][1]
        if age > CONFIRM_GIVE_UP_S:  # a confirm we will never see: start counting afresh
            self.log.debug("no confirm for %.1f s; window reset", age)
            self._confirmed = self._published
            sent_at.clear()
            return True
        return not confirms_late(
            self._published - self._confirmed, self.confirm_window, age, self._min_confirm
        )

    def publish(self, routing_key: str, body: bytes, props: bytes | None = None) -> bool:
        """Queue a message for the next flush (at the latest one loop iteration later).

        props: encoded properties (JSON_PROPS, FAST_PROPS); False means it was dropped
        (not connected, or the broker is not keeping up).
        """
        encoder = self._encoder
        if not self.up or encoder is None:
            self.drop_reason = "bus down"
            return False
        writer = self._writer
        if writer is None:
            return self._pika_publish(routing_key, body, props)
        if self._out_bytes + writer.backlog() > WRITE_BUFFER_LIMIT:
            self.drop_reason = "queue full"
            return False
        paced = self._paced_encoder if self._confirming else None
        try:
            self._out += (paced or encoder).publish(routing_key, props or self._props, body)
        except ValueError:  # a routing key over 255 bytes
            self.drop_reason = "bus error"
            return False
        self._out_bytes += len(body)
        if paced is not None:
            self._published += 1
            self._sent_at.append((self._published, monotonic()))
        self._flush_soon()
        return True

    def _pika_publish(self, routing_key: str, body: bytes, props: bytes | None) -> bool:
        """publish() through pika's channel: only when agent.bus.pikaedge found no writer."""
        channel = self._channel
        if channel is None or not channel.is_open:
            self.drop_reason = "bus down"
            return False
        try:
            channel.basic_publish(
                self.exchange, routing_key, body, _PIKA_PROPS[props or self._props]
            )
        except (pex.AMQPError, ValueError):
            self.drop_reason = "bus error"
            return False
        return True

    def flush(self) -> None:
        """Send what publish() queued, and the pending ack, now."""
        if self.before_flush is not None:
            self.before_flush()
        self._send_out()

    def _send_out(self) -> None:
        self._flush_soon.cancel()
        out = self._out
        if self._ack_tag:
            channel = self._channel
            if self._encoder is not None and channel is not None and channel.is_open:
                if self._writer is not None:
                    out.append(self._encoder.ack(self._ack_tag))
                else:
                    channel.basic_ack(self._ack_tag, multiple=True)
            self._ack_tag = 0
        if not out:
            return
        data = b"".join(out)
        out.clear()
        self._out_bytes = 0
        self._write(data)

    def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is not None:
            writer.write(data)
