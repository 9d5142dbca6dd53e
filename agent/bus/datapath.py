"""The per-packet traffic of one bus connection: the lean reader and writer.

pika opens the connection and channel, declares, consumes, sends heartbeats and closes.
Once consuming, the per-packet traffic takes a shorter road: bytes from the socket go
through a FrameReader (deliveries straight to the handler, confirms to the pacer, every
other frame to pika, in order), publishes and acks are encoded by a PublishEncoder into
one buffer, sent in one send() per burst. Without the pika internals this needs
(agent.bus.pikaedge), deliveries and publishes stay on pika's own path.

While paced (agent.bus.pacing), publishes go on a second channel in confirm mode; the
move there waits for a barrier on the first channel (`pace`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import Any

import pika
import pika.exceptions as pex

from agent.bus import pikaedge
from agent.bus.core import BusCore
from agent.bus.frames import (
    Confirm,
    Delivery,
    FrameError,
    FrameReader,
    PublishEncoder,
    encode_properties,
)
from agent.bus.pacing import PaceState
from agent.bus.state import ConnState
from agent.bus.wire import CONTENT_ENCODING, CONTENT_TYPE, FAST_CONTENT_TYPE
from agent.soon import Soon

WRITE_BUFFER_LIMIT = 4 * 1024 * 1024  # bytes pending to the broker before we drop

Handler = Callable[[str, bytes, "str | None"], None]  # (routing key, body, content type)

# encoded content-header properties of the two kinds of packet message
JSON_PROPS = encode_properties(CONTENT_TYPE, CONTENT_ENCODING)
FAST_PROPS = encode_properties(FAST_CONTENT_TYPE)
# the same, for pika's own publish (when agent.bus.pikaedge finds no transport to write on)
_PIKA_PROPS = {
    JSON_PROPS: pika.BasicProperties(content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING),
    FAST_PROPS: pika.BasicProperties(content_type=FAST_CONTENT_TYPE),
}
ACTIVE, ON = ConnState.ACTIVE, PaceState.ON


class DataPath:
    """Publishes, acks, deliveries and confirms of the current connection; publishes
    only while the core says ACTIVE, paced as its pacer says."""

    def __init__(
        self,
        exchange: str,
        handler: Handler,
        core: BusCore,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        prefetch: int,
    ) -> None:
        self.exchange = exchange
        self.handler = handler
        self.core = core
        self.pacer = core.pacer
        self.log = log
        self.prefetch = prefetch
        self.conn: Any = None
        self.channel: Any = None
        self.props = JSON_PROPS
        self.ack_tag = 0  # the newest delivery to acknowledge (multiple) at the next flush
        self.encoder: PublishEncoder | None = None
        self.reader: FrameReader | None = None
        self.pika_in: pikaedge.Reader | None = None  # our reader's hold on pika's input
        self.writer: pikaedge.Writer | None = None
        self.out: list[bytes] = []  # frames to send at the next flush
        self.out_bytes = 0
        self.paced_channel: Any = None  # the confirm channel (pika), once open
        self.paced_encoder: PublishEncoder | None = None
        self.flush_soon = Soon(self.flush)  # at the end of this loop turn, once
        # called at the start of every flush: a last chance to publish what was held back
        self.before_flush: Callable[[], None] | None = None
        self.timer_changed: Callable[[], None] = lambda: None  # the pacer's timer moved

    @property
    def lean(self) -> bool:
        """Is the lean data path on (our reader owns the input, one send() per burst)?"""
        return self.reader is not None and self.writer is not None and self.writer.lean

    # -- per connection ----------------------------------------------------------------

    def attach(self, conn: Any, channel: Any) -> None:
        """The first channel is open: our writer and encoder for it."""
        self.conn, self.channel = conn, channel
        self.writer = pikaedge.writer(conn)
        self.encoder = PublishEncoder(channel.channel_number, conn.params.frame_max, self.exchange)

    def take_over(self) -> bool:
        """Consuming: our reader takes the input over from pika. True when it did."""
        conn = self.conn
        pika_in = pikaedge.take_over(conn)
        if pika_in is None:
            return False  # deliveries stay on pika's path (a WARNING said so)
        self.pika_in = pika_in
        self.reader = FrameReader(self.channel.channel_number, conn.params.frame_max)
        leftover = pika_in.install(self.data_received)
        if leftover:  # a partial frame pika had not consumed (nor counted) yet
            self.data_received(leftover)
        return True

    def paced_channel_open(self, channel: Any) -> bool:
        """The confirm channel is open: confirms on (nowait), read by our reader."""
        try:
            channel.confirm_delivery(self.pika_confirm)  # nowait: no Confirm.SelectOk
        except (pex.AMQPError, ValueError) as exc:
            self.log.debug("no publisher confirms: %s", exc)
            return False
        self.paced_channel = channel
        if self.reader is not None:
            self.reader.confirm_channel = channel.channel_number
        self.paced_encoder = PublishEncoder(
            channel.channel_number, self.conn.params.frame_max, self.exchange
        )
        self.pacer.ready()
        return True

    def paced_channel_closed(self) -> None:
        self.pacer.lost()
        self.paced_channel = self.paced_encoder = None
        if self.reader is not None:
            self.reader.confirm_channel = None

    def forget(self) -> None:
        """The connection is gone: nothing of it is kept."""
        self.conn = self.channel = None
        self.encoder = self.reader = self.pika_in = self.writer = None
        self.out.clear()
        self.out_bytes = 0
        self.ack_tag = 0
        self.paced_channel = self.paced_encoder = None
        self.pacer.reset()  # a new connection starts without confirms

    # -- pacing ------------------------------------------------------------------------

    def pace(self) -> None:
        """A batch of several packets is about to be published: our publishes move to
        the confirm channel (if there is one), where the broker confirms each, so that
        the pacer's window can pace the batches. Order is kept: the move waits for the
        answer to a Basic.Qos (the prefetch we have) on the first channel, which the
        broker gives after it has routed every message published there before; the move
        back (the pacer's idle check) waits for every confirm."""
        if not self.pacer.request():
            return
        channel = self.channel
        if self.core.state is not ACTIVE or channel is None or not channel.is_open:
            return
        self.pacer.moving()
        self.send_out()  # what was published before goes before the barrier
        try:
            channel.basic_qos(prefetch_count=self.prefetch, callback=self._moved)
        except (pex.AMQPError, ValueError) as exc:
            self.pacer.off()
            self.log.debug("no pacing: %s", exc)

    def _moved(self, _frame: Any) -> None:
        first = self.pacer.moved(monotonic())
        self.timer_changed()
        if first:
            self.log.info("batching: publisher confirms on (they pace the fast-wire batches)")
        elif first is not None:
            self.log.debug("batching: publisher confirms on")

    # -- in ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        conn, reader, pika_in = self.conn, self.reader, self.pika_in
        if conn is None or reader is None or pika_in is None:
            return
        pika_in.count(len(data))
        try:
            events = reader.feed(data)
        except FrameError as exc:
            self.log.warning("unreadable data from the broker (%s); reconnecting", exc)
            self.reader = None
            pika_in.abort()
            return
        handler = self.handler
        for event in events:
            kind = type(event)
            if kind is Delivery:
                self.ack_tag = event.delivery_tag
                try:
                    handler(event.routing_key, event.body, event.content_type)
                except Exception:  # handlers catch their own; this is the last resort
                    self.log.exception("error handling a message on %s", event.routing_key)
            elif kind is Confirm:
                self.pacer.on_confirm(event.delivery_tag, monotonic())
            else:
                pika_in.to_pika(event.raw)  # heartbeats, RPC replies, channel.close...
                if conn is not self.conn or conn.is_closed or self.reader is not reader:
                    return
        self.flush()  # publishes made while handling, and the ack, in one send()

    def deliver(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        """pika's delivery callback: used until the reader takes over (and without it)."""
        self.ack_tag = method.delivery_tag
        self.flush_soon()
        self.handler(method.routing_key, body, props.content_type)

    def pika_confirm(self, frame: Any) -> None:
        """A confirm pika read (before our reader takes over the input)."""
        self.pacer.on_confirm(getattr(frame.method, "delivery_tag", 0), monotonic())
        self.flush_soon()

    # -- out -----------------------------------------------------------------------------

    def publish(self, routing_key: str, body: bytes, props: bytes | None = None) -> str | None:
        """Queue a message for the next flush (at the latest one loop iteration later).

        props: encoded properties (JSON_PROPS, FAST_PROPS). None when queued, else why it
        was dropped: "bus down" (not connected), "queue full" (the broker is not keeping
        up), "bus error" (a routing key over 255 bytes)."""
        encoder = self.encoder
        if encoder is None or self.core.state is not ACTIVE:
            return "bus down"
        writer = self.writer
        if writer is None:
            return self._pika_publish(routing_key, body, props)
        if self.out_bytes + writer.backlog() > WRITE_BUFFER_LIMIT:
            return "queue full"
        pacer = self.pacer
        paced = self.paced_encoder if pacer.state is ON else None
        try:
            self.out += (paced or encoder).publish(routing_key, props or self.props, body)
        except ValueError:  # a routing key over 255 bytes
            return "bus error"
        self.out_bytes += len(body)
        if paced is not None:
            pacer.on_publish(monotonic())
        self.flush_soon()
        return None

    def _pika_publish(self, routing_key: str, body: bytes, props: bytes | None) -> str | None:
        """publish() through pika's channel: only when agent.bus.pikaedge found no writer."""
        channel = self.channel
        if channel is None or not channel.is_open:
            return "bus down"
        try:
            channel.basic_publish(
                self.exchange, routing_key, body, _PIKA_PROPS[props or self.props]
            )
        except (pex.AMQPError, ValueError):
            return "bus error"
        return None

    def flush(self) -> None:
        """Send what publish() queued, and the pending ack, now."""
        if self.before_flush is not None:
            self.before_flush()
        self.send_out()

    def send_out(self) -> None:
        self.flush_soon.cancel()
        out = self.out
        if self.ack_tag:
            channel = self.channel
            if self.encoder is not None and channel is not None and channel.is_open:
                if self.writer is not None:
                    out.append(self.encoder.ack(self.ack_tag))
                else:
                    channel.basic_ack(self.ack_tag, multiple=True)
            self.ack_tag = 0
        if not out:
            return
        data = b"".join(out)
        out.clear()
        self.out_bytes = 0
        writer = self.writer
        if writer is not None:
            writer.write(data)
