"""One way every bus client handles a delivery: parse it once, hand the typed message on,
count and log what is malformed, never raise (pure, no I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.bus import wire
from agent.counters import Counters

Handler = Callable[[str, bytes, "str | None"], None]  # the Bus's on_message
if TYPE_CHECKING:  # Python 3.10 cannot subscript LoggerAdapter at run time
    Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


def dispatcher(
    handle: Callable[[wire.Message], None],
    counters: Counters,
    log: Log,
    malformed: Callable[[str, wire.WireError], None] | None = None,
) -> Handler:
    """The bus's delivery handler: `wire.parse`, then handle(message). A WireError (from
    the parse or raised by handle) is counted by its reason and logged as one line
    (`malformed(key, error)` instead, when given); any other error is counted ("error")
    and logged with its traceback: a handler bug must not end the process."""

    def on_message(routing_key: str, body: bytes, content_type: str | None) -> None:
        try:
            handle(wire.parse(routing_key, body, content_type))
        except wire.WireError as exc:
            counters.drop(exc.reason)
            if malformed is None:
                log.warning("dropped a malformed message on %s: %s", routing_key, exc)
            else:
                malformed(routing_key, exc)
        except Exception:
            counters.drop("error")
            log.exception("error handling a message on %s", routing_key)

    return on_message
