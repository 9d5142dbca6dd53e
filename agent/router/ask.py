"""`agent status`: ask the active router for the session, over RabbitMQ's direct reply-to.

The request goes to `routing.status.request` on the session exchange with `reply_to`
`amq.rabbitmq.reply-to`; the broker delivers the answer only to this connection, and
only a publish by the default exchange can make one, which the session accounts allow
the router alone (docs/security.md). Blocking pika: a command, not a service.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
import pika
import pika.exceptions as pex

from agent.bus import wire
from agent.bus.connection import connection_parameters, describe_error
from agent.bus.url import AmqpUrl
from agent.router.status import STATUS_KEY, plain

REPLY_TO = "amq.rabbitmq.reply-to"
TIMEOUT_S = 2.0


class StatusError(Exception):
    """One line for the user; exit 1."""


class Asker:
    """One connection to one of the session's nodes; `ask()` as often as needed."""

    def __init__(self, urls: list[AmqpUrl], exchange: str, ca_file: str | None = None) -> None:
        self.exchange = exchange
        self.url = urls[0]
        self._answer: dict[str, Any] | None = None
        self._wanted = ""
        errors = []
        for url in urls:  # the nodes of a cluster, in turn
            try:
                params = connection_parameters(url, ca_file)
                params.heartbeat = 0  # --watch may sleep between two requests
                self.conn = pika.BlockingConnection(params)
                self.url = url
                break
            except Exception as exc:  # noqa: BLE001 (pika's errors: reported in one line)
                errors.append(describe_error(exc, url))
        else:
            raise StatusError(errors[-1])
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()  # a refused request fails at once, not after 2 s
        self.channel.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)

    def _on_reply(self, _ch: Any, _method: Any, props: Any, body: bytes) -> None:
        if props.correlation_id != self._wanted:
            return  # an answer to an earlier request, late
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(answer, dict):
            self._answer = answer

    def ask(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        self._answer, self._wanted = None, os.urandom(8).hex()
        props = pika.BasicProperties(
            reply_to=REPLY_TO, correlation_id=self._wanted, content_type=wire.CONTENT_TYPE,
            expiration=str(int(timeout * 1000)),
        )
        try:
            self.channel.basic_publish(self.exchange, STATUS_KEY, b"{}", props)
            deadline = time.monotonic() + timeout
            while self._answer is None and time.monotonic() < deadline:
                self.conn.process_data_events(time_limit=max(deadline - time.monotonic(), 0))
        except pex.ChannelClosedByBroker as exc:
            raise StatusError(
                f"broker refused the status request of user {self.url.user!r}: "
                f"{exc.reply_code} {exc.reply_text} (use the session's observer URL)"
            ) from None
        except pex.AMQPError as exc:
            raise StatusError(describe_error(exc, self.url)) from None
        if self._answer is None:
            raise StatusError(
                f"no router answered on {self.url.vhost} within {timeout:g} s"
            )
        return self._answer

    def close(self) -> None:
        try:
            self.conn.close()
        except pex.AMQPError:
            pass


def render(status: dict[str, Any], terminal: bool) -> Any:
    """A rich table on a terminal (rich imported here only), plain text otherwise."""
    if not terminal:
        return plain(status)
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from agent.router.status import COLUMNS, router_line, rows

    table = Table(*COLUMNS, box=None, header_style="bold")
    for row in rows(status):
        table.add_row(*row)
    return Group(Text(router_line(status)), table)


def run(asker: Asker, as_json: bool, watch: float) -> int:
    """Print the status once, or every `watch` s in place until Ctrl-C."""
    terminal = sys.stdout.isatty()
    if as_json:
        out = lambda s: sys.stdout.write(orjson.dumps(s).decode() + "\n")  # noqa: E731
    else:
        out = None
    if not watch:
        status = asker.ask()
        if out:
            out(status)
        else:
            _print(render(status, terminal), terminal)
        return 0
    if out or not terminal:
        while True:
            status = asker.ask()
            out(status) if out else print(plain(status) + "\n", flush=True)
            time.sleep(watch)
    from rich.live import Live

    with Live(render(asker.ask(), True), auto_refresh=False) as live:
        while True:
            time.sleep(watch)
            live.update(render(asker.ask(), True), refresh=True)


def _print(what: Any, terminal: bool) -> None:
    if terminal:
        from rich.console import Console

        Console().print(what)
    else:
        print(what, flush=True)
