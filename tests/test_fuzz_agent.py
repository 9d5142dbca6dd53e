"""Fuzz the agent's and the router's message handlers in process (hypothesis).

No handler may raise, and none may hit the catch-all that counts "error" (that would be a
bug caught, not input refused). Refused input is counted as a drop with a reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bus import wire
from agent.bus.url import parse_url
from agent.config import plan_from_bus
from agent.node import Agent
from agent.router.router import Router
from agent.switch import TUN
from tests.conftest import FakeTun, make_agent

URL = parse_url("amqp://guest:guest@127.0.0.1:1/fuzz")  # the router's: never connected


async def started_agent(tun: FakeTun | None = None) -> tuple[Agent, FakeTun]:
    """agent_1 on fakes, started as `agent connect --name agent_1` starts (TUN up)."""
    rig = make_agent("agent_1", tun=tun)
    await rig.agent.start()
    assert rig.agent.tun is rig.tun and rig.tun.plan is not None
    return rig.agent, rig.tun


json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(
    max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=6),
    max_leaves=30,
)
START_KEYS = ["ipv6_prefix", "ipv6_host", "ipv4_host", "ipv4_address", "ipv4_netmask",
              "re_route_packets_prefix", "re_route_packets_host", "re_route_packets_if", "name"]
start_bodies = st.dictionaries(st.sampled_from(START_KEYS), json_values | st.sampled_from(
    ["bbbb", "1", ":1", "10.2.0.1", "255.255.255.0", "cccc", "cccc::/64", "eth1", "a;b"]))
# valid plans with fuzzed extras (a random body is almost never a valid plan): these
# reach what a valid tun.start / tun.started starts, the TUN set-up and route tasks
BASES = [{"ipv6_host": "5"}, {"ipv4_address": "10.2.0.5"},
         {"ipv6_host": "5", "ipv4_address": "10.2.0.5", "re_route_packets_prefix": "cccc"}]
near_valid_starts = st.tuples(st.sampled_from(BASES), start_bodies, st.booleans()).map(
    lambda t: t[0] | t[1] if t[2] else t[1] | t[0])


def dumps(value: object) -> bytes:
    """stdlib json: unlike orjson it writes big ints and NaN, which peers could send."""
    return json.dumps(value).encode()


packet_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(dumps),
    st.dictionaries(st.just("data"), json_values).map(dumps),
    st.lists(st.integers(0, 255), max_size=120).map(lambda d: orjson.dumps({"data": d})),
)
KEYS = [
    "toAgent.agent_1.ip.tun.packet.raw",
    "toAgent.agent_1.ip.tun.start",
    "fromAgent.agent_2.ip.tun.started",
    "testingtool.component.ready",
]


_LOOP = asyncio.new_event_loop()
_TASKS: list[asyncio.Task[Any]] = []  # every task the handlers start (create_task)
_LOOP_ERRORS: list[dict[str, Any]] = []  # what the loop reports: failed callbacks, tasks


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, **kw)
    _TASKS.append(task)
    return task


_LOOP.set_task_factory(_task_factory)  # type: ignore[arg-type]
_LOOP.set_exception_handler(lambda _loop, context: _LOOP_ERRORS.append(context))


def _run(coro_fn) -> None:  # type: ignore[no-untyped-def]
    """Run one example; then every task it started must end without an exception, and
    no callback may have failed (errors there never reach a handler's own try)."""
    _TASKS.clear()
    _LOOP_ERRORS.clear()
    _LOOP.run_until_complete(coro_fn())
    started = [t for t in _TASKS if not t.done()]
    if started:
        _LOOP.run_until_complete(asyncio.wait(started, timeout=5))
    for task in _TASKS:
        assert task.done(), f"task still running: {task}"
        if not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"a task failed: {task}") from task.exception()
    _LOOP.run_until_complete(asyncio.sleep(0))  # call_soon callbacks (flushes)
    assert _LOOP_ERRORS == [], _LOOP_ERRORS


@pytest.fixture(autouse=True)
def _quiet_logs():  # type: ignore[no-untyped-def]
    """Each refused message logs a warning; thousands of them only slow the run."""
    log = logging.getLogger("agent")
    level = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(level)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(KEYS),
       body=packet_bodies | start_bodies.map(dumps) | near_valid_starts.map(dumps))
def test_agent_handlers_never_fail(key: str, body: bytes) -> None:
    async def go() -> None:
        agent, tun = await started_agent()
        agent.bus_port.on_message(key, body, None)
        await agent.idle()  # let route tasks run: their errors count too
        assert agent.task_errors == []
        assert agent.counters.drops["error"] == 0
        for pkt in tun.sent:
            assert pkt[0] >> 4 in (4, 6)

    _run(go)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=near_valid_starts.map(dumps) | start_bodies.map(dumps) | packet_bodies)
def test_bootstrap_from_any_tun_start_never_fails(body: bytes) -> None:
    """--wait-bootstrap: a tun.start's plan goes to the TUN set-up (a task) only if valid."""
    async def go() -> None:
        rig = make_agent("agent_1", plan=None)  # --wait-bootstrap
        agent = rig.agent
        await agent.start()
        assert agent.tun is None
        agent.bus_port.on_message("toAgent.agent_1.ip.tun.start", body, None)
        await agent.idle()  # the set-up runs as background work: its errors count too
        assert agent.task_errors == [] and agent.counters.drops["error"] == 0
        assert not agent._bootstrapping
        if rig.tun.plan is None:  # refused: no TUN, nothing announced
            assert agent.tun is None and rig.bus.sent[-1:] == []
        else:  # the TUN has a valid plan's addresses, and the agent said so
            assert agent.tun is rig.tun and rig.tun.plan.interfaces()
            key, started, _ = rig.bus.sent[-1]
            assert key == "fromAgent.agent_1.ip.tun.started", key
            said = plan_from_bus(orjson.loads(started))
            assert said.interfaces() == rig.tun.plan.interfaces()

    _run(go)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(packet=st.binary(max_size=120) | st.binary(min_size=40, max_size=120).map(
    lambda b: bytes([0x60]) + b[1:]) | st.binary(min_size=20, max_size=80).map(
    lambda b: bytes([0x45]) + b[1:]))
def test_tun_side_bytes_never_fail(packet: bytes) -> None:
    async def go() -> None:
        agent, _tun = await started_agent()
        agent.forward(packet, TUN)
        assert agent.counters.drops["error"] == 0
        total = sum(agent.counters.drops.values()) + sum(agent.counters.packets.values())
        assert total == 1  # sent somewhere or dropped with a reason, exactly once

    _run(go)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(["fromAgent.agent_2.ip.tun.packet.raw", "fromAgent.agent_3.ip.tun.started",
                         "fromAgent..ip.tun.packet.raw", "garbage"]),
    body=packet_bodies | start_bodies.map(dumps),
)
def test_router_handlers_never_fail(key: str, body: bytes) -> None:
    async def go() -> None:
        router = Router(URL)
        router._on_message(key, body, None)
        assert router.counters.drops["error"] == 0

    _run(go)


def test_valid_downlink_reaches_tun() -> None:
    """The fuzz harness itself works: a good packet for us is written."""
    async def go() -> None:
        agent, tun = await started_agent()
        pkt = bytes([0x60, 0, 0, 0, 0, 0, 59, 64]) + bytes.fromhex(
            "bbbb0000000000000000000000000002bbbb0000000000000000000000000001")
        down = agent.bus_port.on_message
        down("toAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(pkt, "t"), None)
        assert tun.sent == [pkt]
        other = pkt[:24] + bytes.fromhex("bbbb0000000000000000000000000007")
        down("toAgent.agent_1.ip.tun.packet.raw", wire.encode_packet(other, "t"), None)
        assert tun.sent == [pkt]
        assert agent.counters.drops["not for us"] == 1

    _run(go)


class SlowTun(FakeTun):
    """Route changes take a netlink round trip (an await) as on a real TUN, which keeps
    one route per network."""

    async def add_route(self, net: Any) -> bool:
        await asyncio.sleep(0.01)  # the netlink round trip, during which more work queues
        if net in self.routes:
            return True
        return await super().add_route(net)

    async def remove_route(self, net: Any) -> None:
        await asyncio.sleep(0.01)  # idem
        await super().remove_route(net)


def test_quick_announcements_leave_the_last_routes() -> None:
    """Two tun.started from one peer in one burst: the routes end as the second says, no
    stale route of the first; the route work is kept (not fire-and-forget) and in order."""
    async def go() -> None:
        agent, tun = await started_agent(SlowTun())
        assert isinstance(tun, SlowTun)
        key = "fromAgent.agent_2.ip.tun.started"
        first = {"ipv6_host": "2", "re_route_packets_prefix": "cccc"}
        second = {"ipv6_host": "2", "re_route_packets_prefix": "dddd"}
        agent.bus_port.on_message(key, orjson.dumps(first), None)
        agent.bus_port.on_message(key, orjson.dumps(second), None)
        agent.bus_port.on_message(key, orjson.dumps(first), None)
        agent.bus_port.on_message(key, orjson.dumps(second), None)
        await agent.idle()
        assert [str(n) for n in tun.routes] == ["dddd::/64"]
        assert agent.task_errors == []

    _run(go)


def test_errors_in_background_work_are_kept() -> None:
    """A bug in route work is logged, counted and kept for the tests to see."""
    async def go() -> None:
        agent, tun = await started_agent()

        async def broken(net: Any) -> bool:
            raise RuntimeError("bug")

        tun.add_route = broken  # type: ignore[method-assign]
        agent.bus_port.on_message("fromAgent.agent_2.ip.tun.started",
                          orjson.dumps({"ipv6_host": "2", "re_route_packets_prefix": "cccc"}), None)
        await agent.idle()
        assert [str(e) for e in agent.task_errors] == ["bug"]
        assert agent.counters.drops["error"] == 1

    _run(go)
