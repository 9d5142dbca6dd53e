"""`agent status`'s answer and table, and the --metrics collectors, without a broker."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.bus.url import parse_url
from agent.cli import cli
from agent.counters import Counters
from agent.inspect.metrics import AgentCollector, MetricsError, RouterCollector, parse_address
from agent.router.session import Session
from agent.router.status import COLUMNS, duration, plain, snapshot

SCHEMA_FIELDS = {"name", "addresses", "networks", "wire", "since_s", "last_seen_s",
                 "packets_in", "packets_out", "bytes_in", "bytes_out", "drops"}


def _session() -> tuple[Session, Counters]:
    s, c = Session(), Counters()
    s.up("e1", 0.0)
    c.count("agent_1>", 100)  # before agent_1's incarnation: not its
    s.started("agent_1", "i1", True, 1.0, ["bbbb::1"], [])
    s.agents["agent_1"].base = (1, 100, 0, 0, 0)
    s.started("agent_2", None, False, 2.0, ["bbbb::2"], ["cccc::/64"])
    s.agents["agent_2"].base = (0, 0, 0, 0, 0)
    for _ in range(3):
        c.count("agent_1>", 50)
        c.count(">agent_2", 50)
    c.drop("spoofed by agent_2")
    return s, c


def test_snapshot_has_the_documented_schema_and_counts_this_incarnation() -> None:
    s, c = _session()
    answer = snapshot(s, c, 10.0, parse_url("amqp://u:s3cr3tpw@broker:5672/s05"))
    assert set(answer) == {"schema", "routers", "agents"}
    assert answer["routers"][0]["vhost"] == "s05" and answer["routers"][0]["agents"] == 2
    a1, a2 = answer["agents"]
    assert all(SCHEMA_FIELDS <= set(a) for a in (a1, a2))
    assert (a1["packets_in"], a1["bytes_in"], a1["wire"], a1["since_s"]) == (3, 150, "fast", 9.0)
    assert (a2["packets_out"], a2["drops"], a2["networks"], a2["wire"]) == (
        3, 1, ["cccc::/64"], "json")
    assert "s3cr3tpw" not in str(answer)  # the URL's password never appears


def test_plain_table_one_row_per_agent() -> None:
    s, c = _session()
    text = plain(snapshot(s, c, 75.0, parse_url("amqp://u:p@broker/s05")))
    lines = text.splitlines()
    assert lines[0].startswith("router on s05 at broker:5672, up for 1 min 15 s, 2 agents")
    assert lines[1].split()[:4] == list(COLUMNS[:4])
    assert lines[2].split()[:4] == ["agent_1", "bbbb::1", "-", "fast"]
    assert "cccc::/64" in lines[3] and len(lines) == 4


@given(st.floats(min_value=0, max_value=1e7))
def test_durations_are_short(seconds: float) -> None:
    text = duration(seconds)
    assert len(text) <= 12 and text[0].isdigit()


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)), ("localhost:0", ("localhost", 0)),
])
def test_metrics_addresses(text: str, want: tuple[str, int]) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["9464", "host:", "host:70000", "a b:1", "[zz]:1", ""])
def test_bad_metrics_addresses(text: str) -> None:
    with pytest.raises(MetricsError):
        parse_address(text)


def _scrape(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_router_collector_per_agent_and_batches() -> None:
    s, c = _session()
    c.batches.update({1: 4, 3: 2})
    bus = SimpleNamespace(up=True, reconnects=2, confirms=7,
                          url=parse_url("amqp://u:p@broker/s05"))
    router = SimpleNamespace(bus=bus, counters=c, edge=SimpleNamespace(session=s))
    m = _scrape(RouterCollector(router))
    lab = lambda a, d: (("agent", a), ("direction", d), ("vhost", "s05"))  # noqa: E731
    assert m[("agent_router_packets_total", lab("agent_1", "in"))] == 4
    assert m[("agent_router_bytes_total", lab("agent_2", "out"))] == 150
    assert m[("agent_router_agents", (("vhost", "s05"),))] == 2
    assert m[("agent_router_bus_reconnects_total", (("vhost", "s05"),))] == 2
    assert m[("agent_router_batch_packets_bucket", (("le", "2.0"),))] == 4
    assert m[("agent_router_batch_packets_count", ())] == 6
    assert m[("agent_router_batch_packets_sum", ())] == 10
    spoofed = (("reason", "spoofed by agent_2"), ("vhost", "s05"))
    assert m[("agent_router_drops_total", spoofed)] == 1


def test_agent_collector_paths() -> None:
    c = Counters()
    c.count("tun>bus", 60)
    c.count("bus>tun", 70)
    c.drop("no route")
    agent = SimpleNamespace(counters=c, bus=SimpleNamespace(up=False, reconnects=0, confirms=0))
    m = _scrape(AgentCollector(agent))
    assert m[("agent_packets_total", (("from_port", "tun"), ("to_port", "bus")))] == 1
    assert m[("agent_bytes_total", (("from_port", "bus"), ("to_port", "tun")))] == 70
    assert m[("agent_drops_total", (("reason", "no route"),))] == 1
    assert m[("agent_bus_up", ())] == 0


def test_status_options_are_checked_in_one_line() -> None:
    res = CliRunner().invoke(cli, ["status", "--watch", "0"])
    assert res.exit_code == 2 and "--watch" in res.output
    res = CliRunner().invoke(cli, ["router", "--metrics", "nope"])
    assert res.exit_code == 2 and "is not HOST:PORT" in res.output
