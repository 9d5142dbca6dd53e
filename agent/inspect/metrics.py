"""`--metrics HOST:PORT`: Prometheus' text format at /metrics (prometheus_client).

Nothing is counted for it on the packet path: at each scrape a collector reads the
counters the process keeps anyway (agent.counters, the bus's reconnects and confirms, the
router's session records) and turns them into metric families. The HTTP server is a few
lines on the process's own asyncio loop, so a scrape reads the counters between two
bursts, never while they change.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

try:  # the text format every Prometheus 2.x reads (newer clients also offer 1.0.0)
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # prometheus_client before 0.22
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as CONTENT_TYPE

from agent.counters import Counters

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_ADDR = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$")


class MetricsError(ValueError):
    """A --metrics value or a server that cannot start: one line for the user."""


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[v6]:PORT` -> (host, port); port 0: a
    free one, which the log line says."""
    m = _ADDR.match(text or "")
    if m is None or not 0 <= int(m.group(3)) < 65536:
        raise MetricsError(f"--metrics {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return (m.group(1) or m.group(2) or "0.0.0.0"), int(m.group(3))


def _bus_families(prefix: str, bus: Any) -> Iterator[Metric]:
    yield GaugeMetricFamily(f"{prefix}_bus_up", "1 while connected to the broker and consuming",
                            value=1 if bus.up else 0)
    yield CounterMetricFamily(f"{prefix}_bus_reconnects", "Connections made again after a loss",
                              value=bus.reconnects)
    yield CounterMetricFamily(f"{prefix}_bus_confirms", "Messages the broker confirmed (paced)",
                              value=getattr(bus, "confirms", 0))


def _batch_family(prefix: str, counters: Counters) -> Metric:
    """Packets per fast-wire message, as a histogram (from the counts per size)."""
    buckets, total, packets = [], 0, 0
    sizes = sorted(counters.batches.items())
    for bound in BATCH_BUCKETS:
        n = sum(c for size, c in sizes if size <= bound)
        buckets.append((str(float(bound)), n))  # le="2.0", as prometheus_client writes it
    for size, c in sizes:
        total += c
        packets += size * c
    buckets.append(("+Inf", total))
    return HistogramMetricFamily(
        f"{prefix}_batch_packets", "Packets per fast-wire message published",
        buckets=buckets, sum_value=packets,
    )


def _drops(prefix: str, counters: Counters) -> Metric:
    fam = CounterMetricFamily(f"{prefix}_drops", "Packets or messages dropped, by reason",
                              labels=["reason"])
    for reason, n in sorted(counters.drops.items()):
        fam.add_metric([reason], n)
    return fam


class AgentCollector:
    """`agent connect`: packets and bytes by path (the port they came in by, the port they
    left by), drops by reason, the bus, batch sizes."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        c: Counters = self.agent.counters
        packets = CounterMetricFamily("agent_packets", "Packets forwarded, by in and out port",
                                      labels=["from_port", "to_port"])
        size = CounterMetricFamily("agent_bytes", "Bytes forwarded, by in and out port",
                                   labels=["from_port", "to_port"])
        for path, n in sorted(c.packets.items()):
            src, _, dst = path.partition(">")
            packets.add_metric([src, dst], n)
            size.add_metric([src, dst], c.bytes[path])
        yield packets
        yield size
        yield _drops("agent", c)
        yield CounterMetricFamily("agent_gro_merged", "TCP segments merged before the TUN write",
                                  value=c.merged)
        yield from _bus_families("agent", self.agent.bus)
        yield _batch_family("agent", c)


class RouterCollector:
    """`agent router`: per agent packets and bytes in (from it) and out (to it), the
    session's agents, silence per agent, drops by reason, the bus, batch sizes."""

    def __init__(self, service: Any) -> None:
        """service: a Router, or a RouterSet (its `routers`)."""
        self.routers: Callable[[], list[Any]] = lambda: getattr(service, "routers", [service])

    def collect(self) -> Iterator[Metric]:
        labels = ["vhost", "agent", "direction"]
        packets = CounterMetricFamily("agent_router_packets",
                                      "Packets per agent: in from it, out to it", labels=labels)
        size = CounterMetricFamily("agent_router_bytes",
                                   "Bytes per agent: in from it, out to it", labels=labels)
        agents = GaugeMetricFamily("agent_router_agents", "Agents in the session",
                                   labels=["vhost"])
        silent = GaugeMetricFamily("agent_router_agent_last_packet_age_seconds",
                                   "Seconds since the agent's last packet or announcement",
                                   labels=["vhost", "agent", "wire"])
        drops = CounterMetricFamily("agent_router_drops", "Dropped, by reason",
                                    labels=["vhost", "reason"])
        up = GaugeMetricFamily("agent_router_bus_up", "1 while this router is the active one",
                               labels=["vhost"])
        reconnects = CounterMetricFamily("agent_router_bus_reconnects",
                                         "Connections made again after a loss", labels=["vhost"])
        confirms = CounterMetricFamily("agent_router_bus_confirms",
                                       "Messages the broker confirmed (paced)", labels=["vhost"])
        now = monotonic()
        batches = Counters()
        for r in self.routers():
            vhost, c, session = r.bus.url.vhost, r.counters, r.edge.session
            for path, n in c.packets.items():
                if path.endswith(">") and path != ">":
                    name, direction = path[:-1], "in"
                elif path.startswith(">"):
                    name, direction = path[1:], "out"
                else:
                    continue
                packets.add_metric([vhost, name, direction], n)
                size.add_metric([vhost, name, direction], c.bytes[path])
            agents.add_metric([vhost], len(session.agents))
            for rec in session.agents.values():
                silent.add_metric([vhost, rec.name, rec.wire], now - rec.last_seen)
            for reason, n in sorted(c.drops.items()):
                drops.add_metric([vhost, reason], n)
            up.add_metric([vhost], 1 if r.bus.up else 0)
            reconnects.add_metric([vhost], r.bus.reconnects)
            confirms.add_metric([vhost], getattr(r.bus, "confirms", 0))
            batches.batches.update(c.batches)
        yield from (packets, size, agents, silent, drops, up, reconnects, confirms)
        yield _batch_family("agent_router", batches)


class MetricsServer:
    """GET /metrics on the loop: the registry's text; anything else 404."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        try:
            self.server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise MetricsError(f"--metrics {host}:{port}: {exc.strerror or exc}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("metrics at http://%s:%d/metrics", host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            first = request.split(b"\r\n", 1)[0].split()
            if len(first) >= 2 and first[0] == b"GET" and first[1].split(b"?")[0] == b"/metrics":
                body, status, ctype = generate_latest(self.registry), "200 OK", CONTENT_TYPE
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (
            TimeoutError, asyncio.TimeoutError,  # not the same class before Python 3.11
            asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError,
        ):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def run_with_metrics(service: Any, address: tuple[str, int] | None, collector: Any) -> int:
    """Run the service (agent.service.Service) with /metrics served beside it."""
    if address is None:
        return int(await service.run())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server = MetricsServer(registry)
    try:
        await server.start(*address)
    except MetricsError as exc:
        service.log.error("%s", exc)
        return 1
    try:
        return int(await service.run())
    finally:
        server.close()
