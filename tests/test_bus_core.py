"""The bus connection's core without a broker: its state table, failover, standby, queue
checks and close, fed made-up events and times (agent.bus.core, agent.bus.state)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bus.core import (
    QUEUE_CHECK_FIRST_S,
    QUEUE_CHECK_S,
    STANDBY_POLL,
    BusCore,
    CheckQueues,
    Connect,
    Declare,
    Drop,
    Fatal,
    StandingBy,
)
from agent.bus.failover import Backoff, NodeOrder
from agent.bus.state import TRANSITIONS, ConnState, Event, TransitionError, transition

S = ConnState
NODES = ["n1:5672", "n2:5672", "n3:5672"]
IN_USE = "an agent named 'a' is already connected to this bus"


def core(nodes: list[str] = NODES, **kw: object) -> BusCore:
    order = NodeOrder(len(nodes), Backoff(rng=random.Random(1)))
    return BusCore(nodes, order=order, strict=True, **kw)  # type: ignore[arg-type]


def active(c: BusCore, now: float = 0.0) -> BusCore:
    assert c.start() == [Connect(0)]
    assert c.opened() == [Declare()]
    assert c.declared(now) == []
    assert c.state is S.ACTIVE
    return c


# -- the table ------------------------------------------------------------------------------


def test_every_state_is_reachable_and_every_one_can_close() -> None:
    reach, todo = {S.IDLE}, [S.IDLE]
    while todo:
        s = todo.pop()
        for (frm, _ev), to in TRANSITIONS.items():
            if frm is s and to not in reach:
                reach.add(to)
                todo.append(to)
    assert reach == set(ConnState)
    for s in ConnState:
        after = transition(s, Event.CLOSE)
        assert after in (S.CLOSING, S.CLOSED)
        if after is S.CLOSING:
            assert transition(after, Event.CLOSED) is S.CLOSED


def test_an_event_the_table_lacks_raises_in_strict_mode_and_is_ignored_otherwise() -> None:
    with pytest.raises(TransitionError, match="'declared' in state 'idle'"):
        transition(S.IDLE, Event.DECLARED)
    with pytest.raises(TransitionError):
        core().declared(0.0)
    lenient = BusCore(NODES)
    assert lenient.declared(0.0) == [] and lenient.state is S.IDLE


# -- failover -------------------------------------------------------------------------------


def test_first_round_failing_on_every_node_is_fatal_with_each_reason() -> None:
    c = core()
    assert c.start() == [Connect(0)]
    for i in (1, 2):
        assert c.connection_lost(f"no n{i}", 0.0) == []
        assert c.state is S.WAITING and c.next_timer() == 0.0  # the next node at once
        assert c.handle_timer(0.0) == [Connect(i)]
    assert c.connection_lost("no n3", 0.0) == [Fatal("no n1; no n2; no n3")]
    assert c.state is S.CLOSED and c.next_timer() is None


def test_one_url_failing_at_first_is_fatal_with_its_reason() -> None:
    c = core(["h:5672"])
    c.start()
    assert c.connection_lost("cannot reach broker at h:5672: connection refused", 0.0) == [
        Fatal("cannot reach broker at h:5672: connection refused")
    ]


def test_after_a_connection_a_loss_moves_on_then_backs_off_and_never_gives_up() -> None:
    c = active(core())
    assert c.connection_lost("gone", 10.0) == []
    assert c.state is S.WAITING and c.next_timer() == 10.0  # node 2 at once
    assert c.handle_timer(10.0) == [Connect(1)]
    assert c.connection_lost("refused", 10.0) == []
    assert c.handle_timer(10.0) == [Connect(2)]
    assert c.connection_lost("refused", 10.0) == []  # the round is done: a pause first
    pause = c.next_timer()
    assert pause is not None and 10.25 <= pause <= 10.5
    assert c.handle_timer(pause - 0.01) == [] and c.state is S.WAITING
    assert c.handle_timer(pause) == [Connect(0)]
    for _ in range(50):  # a broker down for long: retried forever, pauses capped at 4 s
        t = c.next_timer() or 0.0
        c.handle_timer(t)
        assert c.state is S.CONNECTING
        assert c.connection_lost("refused", t) == []
        assert c.next_timer() - t <= 4.0  # type: ignore[operator]
    c.handle_timer(c.next_timer() or 0.0)
    c.opened()
    c.declared(500.0)
    assert c.reconnects == 1 and c.state is S.ACTIVE


def test_a_lost_active_connection_is_a_warning_naming_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = active(core())
    c.connection_lost("connection reset", 1.0)
    assert "lost the broker at n1:5672: connection reset; reconnecting" in caplog.text


# -- queues: checks, standby, refusals ---------------------------------------------------------


def test_queues_are_checked_a_second_after_connecting_then_every_5_s() -> None:
    """After a node's death a broker race can take a freshly declared queue's record or
    give its name to another connection (docs/cluster.md): the first check comes
    QUEUE_CHECK_FIRST_S after each (re)connection, the next ones QUEUE_CHECK_S apart."""
    c = active(core(), now=99.0)
    assert c.next_timer() == 99.0 + QUEUE_CHECK_FIRST_S
    assert c.handle_timer(99.5) == []
    assert c.handle_timer(100.0) == [CheckQueues()] and c.checking
    c.queues_checked(100.0)
    assert c.next_timer() == 100.0 + QUEUE_CHECK_S
    assert c.handle_timer(104.0) == []
    assert c.handle_timer(105.0) == [CheckQueues()] and c.checking
    assert c.next_timer() is None  # no new check while one is under way
    c.queues_checked(105.2)
    assert c.next_timer() == 105.2 + QUEUE_CHECK_S and not c.checking


@pytest.mark.parametrize("code", [404, 405])
def test_a_refused_check_drops_the_connection_and_reconnects(code: int) -> None:
    c = active(core())
    c.handle_timer(QUEUE_CHECK_S)
    assert c.channel_closed(code, "NOT_FOUND", QUEUE_CHECK_S) == [Drop()]
    assert c.state is S.DROPPING
    assert c.connection_lost("closed by us", QUEUE_CHECK_S) == []
    assert c.state is S.WAITING
    assert c.handle_timer(QUEUE_CHECK_S) == [Connect(1)]


def test_a_router_stands_by_while_another_holds_the_queue() -> None:
    c = core(can_stand_by=True)
    c.start()
    c.opened()
    assert c.channel_closed(405, "RESOURCE_LOCKED", 1.0) == [StandingBy()]
    assert c.state is S.STANDBY and c.next_timer() == 1.0 + STANDBY_POLL
    for t in (1.5, 2.0, 2.5):
        assert c.handle_timer(t) == [Declare()]
        assert c.channel_closed(405, "RESOURCE_LOCKED", t) == []  # said once
    assert c.handle_timer(3.0) == [Declare()]
    assert c.declared(3.0) == [] and c.state is S.ACTIVE
    assert c.reconnects == 0  # its first activation


def test_an_agent_whose_name_is_taken_ends_with_the_in_use_line() -> None:
    c = core()
    c.start()
    c.opened()
    assert c.channel_closed(405, "RESOURCE_LOCKED", 0.0, in_use=IN_USE) == [
        Fatal(IN_USE), Drop(),
    ]
    assert c.state is S.CLOSING
    assert c.connection_lost("closed", 0.0) == [] and c.state is S.CLOSED


def test_after_a_failover_an_agent_waits_for_its_queue_on_the_new_node() -> None:
    c = active(core())
    c.connection_lost("node died", 0.0)
    c.handle_timer(0.0)
    c.opened()
    assert c.channel_closed(405, "RESOURCE_LOCKED", 1.0, in_use=IN_USE) == [StandingBy()]
    assert c.state is S.STANDBY


def test_403_is_always_fatal_404_only_at_first() -> None:
    c = core()
    c.start()
    c.opened()
    assert c.channel_closed(404, "NOT_FOUND - no exchange", 0.0) == [
        Fatal("broker refused a declaration: NOT_FOUND - no exchange"), Drop(),
    ]
    c = active(core())
    assert c.channel_closed(403, "ACCESS_REFUSED", 0.0) == [
        Fatal("broker at n1:5672 refused: ACCESS_REFUSED"), Drop(),
    ]
    c = active(core())
    assert c.channel_closed(404, "NOT_FOUND", 0.0) == [Drop()]
    assert c.state is S.DROPPING


def test_a_channel_closed_with_the_connection_is_left_to_the_connection() -> None:
    c = active(core())
    assert c.channel_closed(None, "", 0.0) == [] and c.state is S.ACTIVE


# -- close ---------------------------------------------------------------------------------------


def test_close_while_waiting_ends_at_once_and_disarms_the_timer() -> None:
    c = active(core())
    c.connection_lost("gone", 0.0)
    c.close()
    assert c.state is S.CLOSED and c.next_timer() is None
    assert c.handle_timer(100.0) == []


def test_close_while_active_waits_for_the_connection_and_never_reconnects() -> None:
    c = active(core())
    c.close()
    assert c.state is S.CLOSING and c.next_timer() is None
    assert c.connection_lost("closed by client", 0.0) == []
    assert c.state is S.CLOSED


# -- any sequence pika can produce -----------------------------------------------------------


CODES = st.sampled_from([None, 403, 404, 405, 406, 320, 541])


def _inputs(c: BusCore) -> list[str]:
    """What pika (or the owner, or the clock) can deliver to the core in its state."""
    s = c.state
    return {
        S.IDLE: ["start", "close"],
        S.CONNECTING: ["opened", "lost", "close"],
        S.DECLARING: ["declared", "channel", "lost", "close"],
        S.ACTIVE: ["timer", "channel", "lost", "close"] + (["checked"] if c.checking else []),
        S.STANDBY: ["timer", "lost", "close"],
        S.DROPPING: ["lost", "close"],
        S.WAITING: ["timer", "close"],
        S.CLOSING: ["lost"],
        S.CLOSED: [],
    }[s]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(1, 3), st.booleans(), st.booleans())
def test_random_event_sequences_stay_in_the_table(
    data: st.DataObject, nodes: int, stand_by: bool, exclusive: bool
) -> None:
    """Whatever pika does, in any order it can: no undefined transition, one Fatal at
    most and nothing after it or after close(), a connection attempt only on entering
    CONNECTING, a timer whenever the state waits for one."""
    c = core(NODES[:nodes], can_stand_by=stand_by, check_queues=exclusive)
    now, ended = 0.0, False
    for _ in range(60):
        choices = _inputs(c)
        if not choices:
            break
        what = data.draw(st.sampled_from(choices))
        before = c.state
        if what == "start":
            actions = c.start()
        elif what == "opened":
            actions = c.opened()
        elif what == "declared":
            actions = c.declared(now)
        elif what == "channel":
            actions = c.channel_closed(data.draw(CODES), "text", now, in_use=IN_USE)
        elif what == "lost":
            actions = c.connection_lost("reason", now)
        elif what == "close":
            actions = c.close()
            ended = True
        elif what == "checked":
            c.queues_checked(now)
            actions = []
        else:
            due = c.next_timer()
            now = max(now, due if due is not None else now)
            actions = c.handle_timer(now)
        assert isinstance(c.state, ConnState)
        fatal = [a for a in actions if isinstance(a, Fatal)]
        if fatal:
            assert not ended and len(fatal) == 1
            ended = True
        if ended:
            assert not any(isinstance(a, Connect | Declare) for a in actions), (before, what)
        for a in actions:
            if isinstance(a, Connect):
                assert c.state is S.CONNECTING and 0 <= a.index < nodes
            if isinstance(a, Declare):
                assert c.state is S.DECLARING
        if c.state in (S.WAITING, S.STANDBY):
            assert c.next_timer() is not None
        if c.state is S.CLOSED:
            assert c.next_timer() is None
        assert (c.state is S.ACTIVE) <= c.ever_active
