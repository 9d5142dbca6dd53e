"""What can go wrong with the broker, in one line for a user (pure).

`describe_error` names host:port, user or vhost, never the password; `BusFatal` is a
failure that no retry can fix.
"""

from __future__ import annotations

import socket
import ssl

import pika.exceptions as pex
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from agent.bus.url import AmqpUrl


class BusFatal(Exception):
    """The bus cannot be used at all (bad credentials, duplicate name...)."""


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
