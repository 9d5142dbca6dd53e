"""Confirm pacing without a broker: the pure Pacer fed made-up publishes, confirms and
times (agent.bus.pacing)."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bus.pacing import (
    CONFIRM_GIVE_UP_S,
    CONFIRM_MARGIN_S,
    CONFIRM_SLACK,
    PACE_IDLE_MESSAGES,
    PACE_IDLE_S,
    Pacer,
    PaceState,
)


def paced(window: int = 2, now: float = 0.0) -> Pacer:
    p = Pacer(window)
    p.ready()
    assert p.request()
    p.moving()
    assert p.moved(now) is True
    return p


def test_off_until_asked_and_a_confirm_channel_exists() -> None:
    p = Pacer(2)
    assert not p.request()  # no confirm channel yet
    p.ready()
    assert p.window_open(0.0) and p.in_flight == 0 and p.next_timer() is None
    assert p.request()
    p.moving()
    assert not p.window_open(0.0)  # batches wait for the barrier
    assert not p.request()  # asked once
    assert p.moved(0.0) is True and p.state is PaceState.ON
    assert p.next_timer() == PACE_IDLE_S
    assert Pacer(0).request() is False  # window 0: never paced


def test_the_window_closes_only_when_confirms_are_later_than_the_broker_s_best() -> None:
    p = paced()
    p.on_publish(0.0)
    p.on_confirm(1, 0.0001)  # the quickest confirm: 0.1 ms
    assert p.quickest == 0.0001
    p.on_publish(1.0)
    p.on_publish(1.0)
    late = 1.0 + 0.0001 * CONFIRM_SLACK + CONFIRM_MARGIN_S + 1e-9
    assert p.in_flight == 2
    assert p.window_open(late - 0.0001)  # not late yet
    assert not p.window_open(late)
    assert not p.window_open(late)  # reading it changes nothing
    p.on_confirm(2, late)
    assert p.in_flight == 1 and p.window_open(late)  # under the window


def test_a_confirm_that_never_comes_holds_nothing_and_is_given_up() -> None:
    p = paced()
    p.on_publish(0.0)
    p.on_confirm(1, 0.001)
    p.on_publish(0.1)
    p.on_publish(0.1)
    assert not p.window_open(0.5)
    assert p.window_open(0.1 + CONFIRM_GIVE_UP_S + 0.01)
    assert p.handle_timer(PACE_IDLE_S) is False  # still within the give-up time
    p.request()
    assert p.handle_timer(2 * PACE_IDLE_S) is False  # given up, but a batch asked again
    assert p.in_flight == 0 and not p.sent_at
    assert p.handle_timer(3 * PACE_IDLE_S) is True and p.state is PaceState.OFF


def test_off_after_a_quiet_second_once_all_are_confirmed_not_amid_a_stream() -> None:
    p = paced()
    t = 0.0
    for _ in range(3):  # a stream of small batches: many messages, no request
        for _ in range(PACE_IDLE_MESSAGES):
            t += PACE_IDLE_S / PACE_IDLE_MESSAGES / 2
            p.on_publish(t)
            p.on_confirm(p.published, t)
        t = p.next_timer() or t
        assert p.handle_timer(t) is False
    p.on_publish(t)
    assert p.handle_timer(p.next_timer() or t) is False  # one not confirmed yet
    p.on_confirm(p.published, t + 0.01)
    assert p.handle_timer(p.next_timer() or t) is True
    assert p.state is PaceState.OFF and p.next_timer() is None and p.in_flight == 0


def test_a_new_connection_starts_afresh_and_says_it_once_per_connection() -> None:
    p = paced()
    p.on_publish(0.0)
    p.on_confirm(1, 0.002)
    p.off()
    assert p.request()
    p.moving()
    assert p.moved(5.0) is False  # on again: no second INFO line
    p.reset()
    assert p.quickest == float("inf") and not p.available and p.state is PaceState.OFF
    p.ready()
    p.request()
    p.moving()
    p.lost()  # the confirm channel closed meanwhile
    assert p.moved(6.0) is None and p.state is PaceState.OFF


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["publish", "confirm", "request", "timer"]),
        st.floats(0.0, 0.3),  # time passing before it
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 4))
def test_the_window_is_closed_only_while_confirms_are_late(events: list, window: int) -> None:
    """Whatever happens: reading the window changes nothing; it is closed only while ON,
    with `window` messages unconfirmed and the oldest older than the quickest confirm
    allows (but not given up); the pacer wakes up while ON and never while OFF."""
    p = paced(window)
    now = 0.0
    for what, dt in events:
        now += dt
        if what == "publish" and p.state is PaceState.ON:
            p.on_publish(now)
        elif what == "confirm" and p.published > p.confirmed:
            p.on_confirm(p.confirmed + 1, now)
        elif what == "request" and p.request():
            p.moving()
            p.moved(now)
        elif what == "timer" and p.next_timer() is not None:
            p.handle_timer(max(now, p.next_timer() or now))
        before = copy.deepcopy(p.__dict__)
        is_open = p.window_open(now)
        assert p.__dict__ == before
        if not is_open:
            age = now - p.sent_at[0][1]
            assert p.state is PaceState.ON and p.in_flight >= window
            assert p.quickest * CONFIRM_SLACK + CONFIRM_MARGIN_S <= age <= CONFIRM_GIVE_UP_S
        assert (p.next_timer() is not None) == (p.state is PaceState.ON)


def test_confirms_are_counted_across_connections_for_the_metrics() -> None:
    p = paced()
    for _ in range(3):
        p.on_publish(0.0)
    p.on_confirm(2, 0.001)
    p.on_confirm(2, 0.002)  # an old tag again: nothing new
    p.reset()  # a new connection: the window starts afresh, the total does not
    p.ready()
    p.request()
    p.moving()
    p.moved(1.0)
    p.on_publish(1.0)
    p.on_confirm(1, 1.001)
    assert p.confirms == 3 and p.in_flight == 0
