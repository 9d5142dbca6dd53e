"""Declaring on a pika channel: exchange, queues, bindings, prefetch, consume; the check.

Both are chains of pika callbacks, each step started by the answer to the one before;
the adapter (agent.bus.connection) starts them and hears the end (`done`, or the
channel's close when the broker refuses a step, which agent.bus.core decides on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika.exceptions as pex

from agent.bus.queues import CONTROL_QUEUE_ARGUMENTS, QueueSpec, control_queue_name

Consumer = Callable[[Any, Any, Any, bytes], None]  # pika's (channel, method, props, body)


class Declaration:
    """The exchange (unless an amq.* one), the queue and its bindings, the control queue
    and its bindings, the prefetch, then consuming both; `done()` at the end, with
    `queue_name` / `control_queue_name` as the broker named them."""

    def __init__(
        self,
        channel: Any,
        exchange: str,
        queue: QueueSpec,
        consumer: Consumer,
        done: Callable[[], None],
    ) -> None:
        self.channel = channel
        self.exchange = exchange
        self.queue = queue
        self.consumer = consumer
        self.done = done
        self.queue_name = queue.name
        self.control_queue_name = control_queue_name(queue.name)

    def start(self) -> None:
        if self.exchange.startswith("amq."):
            self._declare_queue()
            return
        self.channel.exchange_declare(
            self.exchange,
            exchange_type="topic",
            durable=True,
            auto_delete=False,
            callback=lambda _f: self._declare_queue(),
        )

    def _declare_queue(self) -> None:
        q = self.queue
        self.channel.queue_declare(
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
        self.channel.queue_declare(
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
        self.channel.queue_bind(
            queue,
            self.exchange,
            routing_key=key,
            callback=lambda _f: self._bind(queue, remaining, then),
        )

    def _qos(self) -> None:
        self.channel.basic_qos(prefetch_count=self.queue.prefetch, callback=self._consume)

    def _consume(self, _frame: Any) -> None:
        if self.queue.control:
            self.channel.basic_consume(self.control_queue_name, self.consumer, auto_ack=False)
        self.channel.basic_consume(self.queue_name, self.consumer, auto_ack=False)
        self.done()


class QueueCheck:
    """A passive declare of each name in turn: `done()` when all answered, or when one
    could not be sent (try again next time). A refusal closes the channel instead (the
    adapter hears it). `alive()` is asked before each step: False stops quietly."""

    def __init__(
        self,
        channel: Any,
        names: list[str],
        alive: Callable[[], bool],
        done: Callable[[], None],
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.channel, self.names, self.alive, self.done, self.log = (
            channel, list(names), alive, done, log,
        )

    def next(self) -> None:
        channel = self.channel
        if not self.alive() or not channel.is_open:
            return
        if not self.names:
            self.done()
            return
        name = self.names.pop(0)
        try:
            channel.queue_declare(name, passive=True, callback=lambda _f: self.next())
        except (pex.AMQPError, ValueError) as exc:
            self.log.debug("queue check not sent: %s", exc)
            self.done()
