"""pika's connection parameters from an AMQP URL (pure)."""

from __future__ import annotations

import ssl

import pika

from agent.bus.url import AmqpUrl

# pika 1.x sends a heartbeat every heartbeat/2 s and checks every heartbeat + 5 s that some
# bytes came since the previous check: a silent (frozen) broker is noticed 1 to 2 check
# intervals after its last byte, 7 to 14 s with 2 (docs/cluster.md). The broker gives up on
# us after 2 missed heartbeats (4 s of a stalled loop).
DEFAULT_HEARTBEAT = 2


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
