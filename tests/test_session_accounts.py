"""The session accounts' permissions and URLs (pure): what each account may publish, bind
and declare, compared with the keys and queues our agent, router and sniffer use."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bus import wire
from agent.bus.connection import agent_queue, control_queue_name
from agent.bus.url import parse_url
from agent.inspect import sniff
from agent.router.status import STATUS_KEY, STATUS_QUEUE
from agent.session.accounts import (
    AccountError,
    account_url,
    agent_grant,
    check_agents,
    check_url_base,
    observer_grant,
    router_grant,
    session_grants,
)
from agent.session.ops import describe, parse_description

names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True).filter(
    lambda n: n not in ("router", "observer")
)
exchanges = st.sampled_from(["amq.topic", "session.x", "ex-1:2"])


def agent_publishes(n: str) -> list[str]:
    return [wire.READY_KEY, wire.uplink_key(n), wire.started_key(n), wire.serial_uplink_key(n),
            wire.serial_started_key(n), wire.stopped_key(n)]


def agent_binds(n: str) -> list[str]:
    # agent.node.Agent and agent.slip.probe bind these
    return [wire.downlink_key(n), wire.start_key(n), "fromAgent.*.ip.tun.started",
            wire.READY_KEY, wire.serial_downlink_key(n)]


@given(names, names, exchanges, st.booleans())
def test_an_agent_may_do_its_own_and_nothing_of_another(a: str, b: str, x: str, compat: bool):
    g = agent_grant("s05", a, x, compat)
    for q in (agent_queue(a, []).name, control_queue_name(agent_queue(a, []).name)):
        assert g.allows("configure", q) and g.allows("write", q) and g.allows("read", q)
    assert g.allows("write", x) and g.allows("read", x)
    assert not g.allows("write", "amq.default")  # never straight into a queue
    for key in agent_publishes(a):
        assert g.allows("topic_write", key), key
    for key in agent_binds(a):
        assert g.allows("topic_read", key), key
    for key in ("#", "fromAgent.#", "toAgent.#", "toAgent.*.ip.tun.packet.raw",
                f"toAgent.{a}.#", f"fromAgent.{a}.#", "testingtool.terminate"):
        assert not g.allows("topic_read", key), key
    assert not g.allows("topic_write", wire.start_key(a))  # tun.start is the testing tool's
    assert not g.allows("topic_write", wire.downlink_key(a))
    if a != b:
        for qb in (agent_queue(b, []).name, control_queue_name(agent_queue(b, []).name)):
            assert not any(g.allows(w, qb) for w in ("configure", "write", "read"))
        for key in [*agent_publishes(b)[1:], wire.downlink_key(b), wire.start_key(b)]:
            assert not g.allows("topic_write", key), key
        for key in agent_binds(b)[:2]:
            assert not g.allows("topic_read", key), key


@given(names, exchanges, st.booleans())
def test_the_router_routes_to_any_agent_and_binds_what_it_binds(a: str, x: str, compat: bool):
    g = router_grant("s05", x, compat)
    assert g.allows("configure", "packetrouting@router") and g.allows("write", x)
    assert all(g.allows(w, "packetrouting@router.control") for w in ("configure", "write", "read"))
    for key in ("fromAgent.*.ip.tun.packet.raw", "fromAgent.*.ip.tun.started",
                "fromAgent.*.ip.tun.stopped", wire.READY_KEY, wire.LOSSY_KEY, STATUS_KEY):
        assert g.allows("topic_read", key)
    # agent status: its own queue, and the replies by the default exchange (direct reply-to)
    assert all(g.allows(w, STATUS_QUEUE) for w in ("configure", "write", "read"))
    assert g.allows("write", "amq.default")
    assert g.allows("topic_write", wire.downlink_key(a)) and g.allows("topic_write", wire.READY_KEY)
    for key in (wire.uplink_key(a), wire.started_key(a), wire.start_key(a), "#",
                "toAgent.#.ip.tun.packet.raw", "toAgent.*.ip.tun.packet.raw"):
        assert not g.allows("topic_write", key), key
    assert not g.allows("configure", agent_queue(a, []).name)
    assert not g.allows("topic_read", "#") and not g.allows("topic_read", "toAgent.#")
    compat_queue = f"{wire.uplink_key(a)}@packet_router"  # ioppytest's router
    assert g.allows("configure", compat_queue) == compat


@given(st.lists(names, max_size=3, unique=True), exchanges)
def test_the_observer_binds_what_sniff_binds_and_publishes_nothing(some: list[str], x: str):
    g = observer_grant("s05", x)
    for key in sniff.bindings(some):
        assert g.allows("topic_read", key), key
    assert re.fullmatch(g.configure, "0123456789abcdef@sniff")
    assert not g.allows("configure", "agent_1@agent")
    assert not g.allows("read", "agent_1@agent") and not g.allows("read", "packetrouting@router")
    # it publishes on the exchange (agent status) the one request key, nothing else, and
    # never by the default exchange (straight into a queue, or a reply to an asker)
    assert g.allows("write", x) and g.allows("topic_write", STATUS_KEY)
    assert not g.allows("write", "amq.default")
    for key in ("testingtool.component.ready", "fromAgent.agent_1.ip.tun.packet.raw",
                "fromAgent.agent_1.ip.tun.stopped", "toAgent.agent_1.ip.tun.start",
                STATUS_KEY + ".x", "x" + STATUS_KEY):
        assert not g.allows("topic_write", key)
    assert not any(g.allows(w, STATUS_QUEUE) for w in ("configure", "write", "read"))


def test_sniff_queue_matches_the_observer_account() -> None:
    s = sniff.Sniffer(parse_url("amqp://u:p@localhost/v"))
    assert observer_grant("v").allows("configure", s.bus.queue.name)
    assert s.bus.queue.name != sniff.Sniffer(parse_url("amqp://u:p@localhost/v")).bus.queue.name


def test_accounts_of_a_session() -> None:
    grants = session_grants("s05", ["agent_1", "coap_server"])
    assert [g.user for g in grants] == ["s05.agent_1", "s05.coap_server", "s05.router",
                                        "s05.observer"]


@pytest.mark.parametrize("bad", [[], ["a.b"], ["a*"], ["#"], ["a b"], [""], ["a", "a"],
                                 ["router"], ["observer"], ["x" * 65]])
def test_bad_agent_names(bad: list[str]) -> None:
    with pytest.raises(AccountError):
        check_agents(bad)


@given(
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    names,
    st.sampled_from(["amqp://h", "amqps://broker.example.org:5671", "amqp://[::1]:5673/"]),
)
def test_account_url_round_trips_through_the_agents_parser(user, password, vhost, base):
    url = parse_url(account_url(base, user, password, vhost))
    assert (url.user, url.password, url.vhost) == (user, password, vhost)
    assert url.tls == base.startswith("amqps")
    assert url.port == (5671 if "5671" in base else 5673 if "5673" in base else 5672)


@pytest.mark.parametrize("bad", ["http://h", "amqp://", "amqp://u:p@h", "amqp://h/vhost",
                                 "amqp://h?heartbeat=1", "amqp://h:99999", "h:5672"])
def test_bad_url_base(bad: str) -> None:
    with pytest.raises(AccountError):
        check_url_base(bad)


@given(st.sampled_from(["amq.topic", "x.y", "a:b-c"]), st.booleans())
def test_session_marker_round_trips(exchange: str, compat: bool) -> None:
    assert parse_description(describe(exchange, compat)) == (exchange, compat)
    assert parse_description("some other vhost") is None
