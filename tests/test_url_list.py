"""Several broker URLs (pure): parsing a ';' list, and the order nodes are tried in."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bus.failover import Backoff, NodeOrder
from agent.bus.url import UrlError, by_vhost, mask, parse_urls, resolve_url

SECRET = "s3cr%3Bet"  # an encoded ';' in the password must not split the list

hosts = st.sampled_from(["node1", "node2", "node3", "10.0.0.7", "[::1]", "rabbit.example"])
ports = st.one_of(st.none(), st.integers(1, 65535))
users = st.sampled_from(["guest", "paul", "u%40x"])


@st.composite
def entries(draw: st.DrawFn) -> str:
    port = draw(ports)
    where = draw(hosts) + (f":{port}" if port is not None else "")
    return f"amqp://{draw(users)}:{SECRET}@{where}/s05"


@given(st.lists(entries(), min_size=1, max_size=6), st.sampled_from([";", " ; ", ";;"]))
def test_list_round_trip(items: list[str], sep: str) -> None:
    urls = parse_urls(sep.join(items))
    singles = [parse_urls(i)[0] for i in items]
    # duplicates dropped, the first of each kept, in order
    assert [_key(u) for u in urls] == list(dict.fromkeys(_key(u) for u in singles))
    assert urls[0] == singles[0]
    assert all(u.password == "s3cr;et" and u.vhost == "s05" for u in urls)


def _key(u):  # type: ignore[no-untyped-def]
    return (u.scheme, u.host, u.port, u.vhost, u.user, u.password, tuple(u.params.items()))


@given(st.lists(entries(), min_size=1, max_size=4), st.integers(0, 4), st.sampled_from([
    "http://h/s05", "amqp://u:{pw}@/s05", "amqp://u:{pw}@h:99999/s05", "amqp://u:{pw}@h/a/b",
    "amqp://u:{pw}@h/s05?heartbeat=x", "amqp://u:{pw}@h/other",
]))
def test_bad_entry_named_by_position_password_masked(
    items: list[str], at: int, bad: str
) -> None:
    at = min(at, len(items))
    if bad.endswith("/other"):
        at = max(at, 1)  # the first entry sets the vhost; a later one differs
    bad = bad.format(pw="hunter2")
    items = [*items[:at], bad, *items[at:]]
    with pytest.raises(UrlError) as err:
        parse_urls(";".join(items))
    text = str(err.value)
    assert f"AMQP URL {at + 1} of {len(items)}" in text
    assert "hunter2" not in text and "s3cr" not in text


def test_one_url_keeps_its_own_message() -> None:
    with pytest.raises(UrlError, match="^AMQP URL has no host$"):
        parse_urls("amqp://u:p@/v")
    with pytest.raises(UrlError, match="empty"):
        parse_urls(" ; ")


def test_mask() -> None:
    assert mask("amqp://u:p@ss@h/v") == "amqp://u:***@h/v"
    assert mask("amqp://u@h/v") == "amqp://u@h/v"
    assert mask("amqp://h:5672/v") == "amqp://h:5672/v"


def test_resolve_repeated_url_option() -> None:
    assert resolve_url(("amqp://a/v", "amqp://b/v;amqp://c/v"), {}) == (
        "amqp://a/v;amqp://b/v;amqp://c/v"
    )
    assert resolve_url((), {"AMQP_URL": "amqp://e/v"}) == "amqp://e/v"
    assert resolve_url(None, {}) == "amqp://guest:guest@localhost/"


# ----------------------------------------------------------------------------- NodeOrder


def _order(n: int) -> NodeOrder:
    return NodeOrder(n, Backoff(base=0.5, cap=4.0, rng=random.Random(7)))


def test_first_url_first_then_next_after_a_loss() -> None:
    order = _order(3)
    assert order.index == 0
    order.connected()
    assert order.failed() == 0.0 and order.index == 1  # lost node 0: node 1 at once
    assert order.failed() == 0.0 and order.index == 2  # node 1 down too: node 2 at once
    delay = order.failed()  # node 2 down: the round failed -> back off, then node 0
    assert 0.25 <= delay <= 0.5 and order.index == 0 and order.round_done


def test_single_url_backs_off_before_each_try() -> None:
    order = _order(1)
    order.connected()
    delays = [order.failed() for _ in range(6)]
    assert all(d > 0 for d in delays) and order.index == 0
    assert delays[-1] <= 4.0 and delays[-1] >= 2.0  # capped


@given(st.integers(1, 6), st.lists(st.booleans(), max_size=60))
def test_order_properties(n: int, outcomes: list[bool]) -> None:
    """Round robin; pauses only after n consecutive failures; back-off reset on success."""
    order = _order(n)
    fails = 0
    for ok in outcomes:
        before = order.index
        if ok:
            order.connected()
            fails = 0
            assert order.index == before
            continue
        delay = order.failed()
        fails += 1
        assert order.index == (before + 1) % n
        if fails % n:
            assert delay == 0.0
        else:
            assert 0 < delay <= 4.0
            assert order.round_done


def test_order_needs_a_url() -> None:
    with pytest.raises(ValueError):
        NodeOrder(0)


# -- a router for several sessions: URLs grouped by the vhost they name ----------------


@given(st.lists(st.tuples(hosts, st.sampled_from(["s01", "s02", "%2F", "a%2Fb"])),
                min_size=1, max_size=8))
def test_by_vhost_groups_in_order_of_first_mention(pairs: list[tuple[str, str]]) -> None:
    text = ";".join(f"amqp://guest:{SECRET}@{h}/{v}" for h, v in pairs)
    urls = parse_urls(text, one_vhost=False)
    groups = by_vhost(urls)
    # one group per vhost, in the order the vhosts first appear; every URL in exactly one
    assert [g[0].vhost for g in groups] == list(dict.fromkeys(u.vhost for u in urls))
    assert sorted(map(_key, (u for g in groups for u in g))) == sorted(map(_key, urls))
    for g in groups:
        assert len({u.vhost for u in g}) == 1
        assert g == [u for u in urls if u.vhost == g[0].vhost]  # failover order kept


def test_several_vhosts_only_where_asked() -> None:
    text = "amqp://h1/s01;amqp://h2/s02;amqp://h3/s01"
    with pytest.raises(UrlError, match="same vhost"):
        parse_urls(text)
    groups = by_vhost(parse_urls(text, one_vhost=False))
    assert [[u.host for u in g] for g in groups] == [["h1", "h3"], ["h2"]]
