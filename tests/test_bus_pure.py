"""Tests for the pure parts of agent.bus.connection: reconnect backoff, the one-line error a user
reads when the broker cannot be used, and the pika connection parameters."""

from __future__ import annotations

import os
import random
import socket
import ssl
from urllib.parse import quote

import pika
import pika.exceptions as pex
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorAMQPHandshakeError,
    AMQPConnectorSocketConnectError,
    AMQPConnectorStackTimeout,
    AMQPConnectorTransportSetupError,
)

from agent.bus.connection import connection_parameters, describe_error, queue_arguments
from agent.bus.failover import Backoff
from agent.bus.url import parse_url

PASSWORD = "Sup3r-S3cret!"  # noqa: S105 (test value)
URL = parse_url("amqp://paul:Sup3r-S3cret%21@broker.example:5673/session05")


# ----------------------------------------------------------------------------- Backoff


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    backoff = Backoff(base=0.5, cap=10.0, rng=random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    for ceiling in ceilings:
        delay = backoff.next()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.attempt == len(ceilings)


def test_backoff_is_capped_forever() -> None:
    """A broker down for hours: thousands of attempts, the delay stays <= cap."""
    backoff = Backoff(base=0.5, cap=10.0, rng=random.Random(2))
    delays = [backoff.next() for _ in range(5000)]
    assert max(delays) <= 10.0
    assert min(delays[10:]) >= 5.0


def test_backoff_is_jittered() -> None:
    """Agents that lost the broker together must not all come back in the same instant."""
    backoffs = [Backoff(base=0.5, cap=10.0) for _ in range(20)]
    for b in backoffs:
        for _ in range(6):
            b.next()
    sixth = {round(b.next(), 6) for b in backoffs}
    assert len(sixth) > 10


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(base=0.5, cap=10.0, rng=random.Random(3))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.attempt == 0
    assert 0.25 <= backoff.next() <= 0.5


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.01, 5.0),
    st.floats(0.01, 60.0),
    st.integers(0, 200),
    st.integers(0, 2**32),
)
def test_backoff_never_exceeds_cap_nor_goes_negative(
    base: float, cap: float, steps: int, seed: int
) -> None:
    backoff = Backoff(base=base, cap=cap, rng=random.Random(seed))
    for i in range(steps + 1):
        delay = backoff.next()
        ceiling = min(cap, base * 2**i)
        assert ceiling / 2 <= delay <= ceiling


# ----------------------------------------------------------------------------- describe_error


def check_line(message: str) -> None:
    assert message
    assert "\n" not in message
    assert PASSWORD not in message
    assert "Sup3r-S3cret%21" not in message
    assert "Traceback" not in message


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(111, "Connection refused")


@pytest.mark.parametrize(
    "exc",
    [
        pex.ProbableAuthenticationError(
            "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using "
            "authentication mechanism PLAIN. For details see the broker logfile.'"
        ),
        pex.AuthenticationError("PLAIN"),
        # pika's handshake failure, as the connection workflow reports it
        AMQPConnectionWorkflowFailed(
            [AMQPConnectorAMQPHandshakeError(pex.ProbableAuthenticationError("403"))]
        ),
    ],
)
def test_wrong_credentials(exc: BaseException) -> None:
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message
    assert "'paul'" in message
    assert "password" in message  # "wrong user or password", not the password itself


@pytest.mark.parametrize(
    "exc",
    [
        pex.ProbableAccessDeniedError(
            "ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost session05 not found'"
        ),
        pex.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost session05 not found"),
        AMQPConnectionWorkflowFailed(
            [
                AMQPConnectorAMQPHandshakeError(
                    pex.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost session05 not found")
                )
            ]
        ),
    ],
)
def test_unknown_vhost(exc: BaseException) -> None:
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message
    assert "'session05'" in message
    assert "vhost" in message


def test_closed_by_broker_403_names_the_user() -> None:
    exc = pex.ConnectionClosedByBroker(403, "ACCESS_REFUSED - Login was refused")
    message = describe_error(exc, URL)
    check_line(message)
    assert "'paul'" in message and "ACCESS_REFUSED" in message


def test_closed_by_broker_other_codes_keep_code_and_text() -> None:
    exc = pex.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure")
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message
    assert "320" in message and "CONNECTION_FORCED" in message


@pytest.mark.parametrize(
    "exc",
    [
        AMQPConnectionWorkflowFailed([refused()]),
        AMQPConnectionWorkflowFailed([AMQPConnectorSocketConnectError(refused())]),
        # what pika hands to on_open_error_callback when the TCP connect fails
        pex.AMQPConnectionError(
            AMQPConnectionWorkflowFailed([AMQPConnectorSocketConnectError(refused())])
        ),
        AMQPConnectionWorkflowFailed(
            [AMQPConnectorSocketConnectError(TimeoutError("timed out")), refused()]
        ),
        refused(),
    ],
)
def test_connection_refused_names_host_and_port(exc: BaseException) -> None:
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message
    assert "refused" in message


@pytest.mark.parametrize(
    "exc",
    [
        AMQPConnectionWorkflowFailed([TimeoutError("timed out")]),
        AMQPConnectionWorkflowFailed([AMQPConnectorSocketConnectError(TimeoutError())]),
        AMQPConnectionWorkflowFailed(
            [
                AMQPConnectorAMQPHandshakeError(
                    AMQPConnectorStackTimeout("Timeout during AMQP handshake")
                )
            ]
        ),
    ],
)
def test_timeouts_name_host_and_port(exc: BaseException) -> None:
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message
    assert "timed out" in message


@pytest.mark.parametrize(
    "exc",
    [
        AMQPConnectionWorkflowFailed([socket.gaierror(-2, "Name or service not known")]),
        socket.gaierror(-3, "Temporary failure in name resolution"),
    ],
)
def test_unresolvable_host(exc: BaseException) -> None:
    message = describe_error(exc, URL)
    check_line(message)
    assert "'broker.example'" in message


def test_wrong_port_or_plain_amqp_on_a_tls_port() -> None:
    message = describe_error(pex.IncompatibleProtocolError("StreamLostError"), URL)
    check_line(message)
    assert "broker.example:5673" in message and "AMQP" in message


def test_tls_certificate_not_trusted() -> None:
    exc = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    )
    exc.verify_message = "self-signed certificate"  # set by _ssl when it raises this
    exc.verify_code = 18
    tls = parse_url("amqps://paul:Sup3r-S3cret%21@broker.example/session05")
    wrapped = AMQPConnectionWorkflowFailed([AMQPConnectorTransportSetupError(exc)])
    for error in (exc, wrapped):
        message = describe_error(error, tls)
        check_line(message)
        assert "broker.example:5671" in message
        assert "self-signed certificate" in message


def test_tls_errors_built_outside_the_ssl_module_do_not_break_the_description() -> None:
    """ssl.py itself builds SSLError(errno, text) without .reason; never an AttributeError."""
    for exc in (
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        ssl.SSLCertVerificationError(1, "certificate verify failed"),
    ):
        message = describe_error(exc, URL)
        check_line(message)
        assert "broker.example:5673" in message


def test_other_errors_never_show_the_password() -> None:
    exc = RuntimeError(f"something odd with paul:{PASSWORD}@broker.example")
    message = describe_error(exc, URL)
    check_line(message)
    assert "broker.example:5673" in message


@settings(max_examples=150, deadline=None)
@given(
    st.text(min_size=6, max_size=20).filter(lambda p: p.strip() == p and "\n" not in p),
    st.sampled_from(
        [
            lambda pw: RuntimeError(f"login paul/{pw} failed"),
            lambda pw: pex.AMQPConnectionError(f"bad {pw}"),
            lambda pw: AMQPConnectionWorkflowFailed([OSError(f"oops {pw}")]),
            lambda pw: pex.ConnectionClosedByBroker(403, "ACCESS_REFUSED"),
            lambda pw: pex.ProbableAuthenticationError(pw),
            lambda pw: pex.StreamLostError(f"Stream connection lost: {pw}"),
            lambda pw: AMQPConnectionWorkflowFailed([]),
            lambda pw: pex.AMQPConnectionError(),
        ]
    ),
)
def test_describe_error_never_shows_any_password(password: str, make: object) -> None:
    url = parse_url(f"amqp://paul:{quote('§' + password, safe='')}@h.example/v")
    exc = make(url.password)  # type: ignore[operator]
    message = describe_error(exc, url)
    assert url.password not in message
    assert "h.example:5672" in message


# ----------------------------------------------------------------------------- parameters


def test_connection_parameters_amqp() -> None:
    params = connection_parameters(URL)
    assert isinstance(params, pika.ConnectionParameters)
    assert params.host == "broker.example"
    assert params.port == 5673
    assert params.virtual_host == "session05"
    assert params.credentials.username == "paul"
    assert params.credentials.password == PASSWORD
    assert params.ssl_options is None
    assert params.heartbeat == 2  # a frozen node is left within 15 s (docs/cluster.md)
    assert params.connection_attempts == 1
    assert params.client_properties["connection_name"] == "ioppytest-agent"


def test_connection_parameters_percent_encoded_vhost_slash() -> None:
    params = connection_parameters(parse_url("amqp://guest:guest@localhost/%2F"))
    assert params.virtual_host == "/"
    assert params.port == 5672


def test_connection_parameters_amqps_uses_tls_with_verification() -> None:
    url = parse_url("amqps://paul:pw@broker.example/session05")
    params = connection_parameters(url)
    assert params.port == 5671
    assert params.ssl_options is not None
    assert params.ssl_options.server_hostname == "broker.example"
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_connection_parameters_ca_file() -> None:
    cafile = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    if not cafile or not os.path.exists(cafile):
        pytest.skip("no CA bundle file on this system")
    url = parse_url("amqps://paul:pw@broker.example/session05")
    params = connection_parameters(url, ca_file=cafile)
    assert params.ssl_options is not None
    assert params.ssl_options.context.cert_store_stats()["x509_ca"] > 0


def test_connection_parameters_missing_ca_file_is_an_os_error() -> None:
    url = parse_url("amqps://paul:pw@broker.example/session05")
    with pytest.raises(OSError):
        connection_parameters(url, ca_file="/nonexistent/ca.pem")


def test_connection_parameters_url_query() -> None:
    url = parse_url(
        "amqp://u:p@h/v?heartbeat=10&connection_attempts=3&retry_delay=2.5"
        "&socket_timeout=4&channel_max=8&frame_max=8192&blocked_connection_timeout=60"
    )
    params = connection_parameters(url)
    assert params.heartbeat == 10
    assert params.connection_attempts == 3
    assert params.retry_delay == 2.5
    assert params.socket_timeout == 4.0
    assert params.channel_max == 8
    assert params.frame_max == 8192
    assert params.blocked_connection_timeout == 60.0


@pytest.mark.parametrize(
    "query",
    [
        "heartbeat=0",
        "heartbeat=3600",
        "connection_attempts=100",
        "channel_max=65535",
        "frame_max=4096",
        "frame_max=131072",
        "retry_delay=0",
        "retry_delay=300",
        "socket_timeout=0.1",
        "stack_timeout=300",
        "blocked_connection_timeout=3600",
    ],
)
def test_every_url_parameter_value_is_accepted_by_pika(query: str) -> None:
    """What parse_url lets through must not blow up later in pika."""
    connection_parameters(parse_url(f"amqp://u:p@h/v?{query}"))


def test_queue_arguments_bound_the_queue() -> None:
    args = queue_arguments()
    assert args["x-max-length"] > 0
    assert args["x-overflow"] == "drop-head"
    assert args["x-message-ttl"] > 0
    assert queue_arguments(ttl_ms=100, max_length=7) == {
        "x-message-ttl": 100,
        "x-max-length": 7,
        "x-overflow": "drop-head",
    }
