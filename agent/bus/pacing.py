"""Confirm pacing, pure: given times, says whether a batch may leave and when to look again.

Once a stream makes batches, our publishes move to a channel where the broker confirms
each message (`Pacer.request`, then `moved` once the first channel's barrier came back).
While so paced, a batch waits when `window` of our messages are unconfirmed and the oldest
has waited longer than the broker's quickest confirm on this connection allows
(`confirms_late`): a busy broker gets fewer, fuller messages, a quick or a distant one
(its quickest confirm is then a WAN round trip) never holds a packet. Every PACE_IDLE_S
(`handle_timer`) the pacer looks whether the stream is over and, if so, turns itself off:
lone packets after a stream go unconfirmed again.

No I/O and no clock: every method that needs the time is given `now` (seconds, any
monotonic origin), so tests drive it with made-up times. The adapter
(agent.bus.connection) sends the barrier, chooses the channel from `state`, and arms its
one timer at `next_timer()`.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

# the confirm window (Pacer.window_open) closes only when our oldest unconfirmed message is
# older than this many times the quickest confirm of the connection, plus the margin
CONFIRM_SLACK = 2.0
CONFIRM_MARGIN_S = 0.0005
CONFIRM_GIVE_UP_S = 1.0  # an unconfirmed message this old: the count is off, start afresh
# paced publishing (publisher confirms) ends once, for this long, no batch asked for it
# (`request`), fewer than PACE_IDLE_MESSAGES were published (a stream sends hundreds a
# second even in small batches; pings a few) and the broker confirmed all: lone packets
# then go unconfirmed again
PACE_IDLE_S = 1.0
PACE_IDLE_MESSAGES = 50


def confirms_late(in_flight: int, window: int, oldest_age: float, quickest: float) -> bool:
    """Should batches wait for the broker? Yes when at least `window` messages are
    unconfirmed and the oldest of them (oldest_age s) has waited longer than the broker's
    quickest confirm on this connection allows (CONFIRM_SLACK x quickest +
    CONFIRM_MARGIN_S). window 0: never."""
    return (
        window > 0
        and in_flight >= window
        and oldest_age >= quickest * CONFIRM_SLACK + CONFIRM_MARGIN_S
    )


class PaceState(Enum):
    OFF = "off"  # publishes on the first channel, unconfirmed
    MOVING = "moving"  # the first channel's barrier (Basic.Qos) is under way: batches wait
    ON = "on"  # publishes on the confirm channel, each confirmed by the broker


OFF, MOVING, ON = PaceState.OFF, PaceState.MOVING, PaceState.ON  # (quicker than PaceState.X)


class Pacer:
    """The confirm window of one connection. `available`: its confirm channel is open
    (without it the pacer stays OFF); `announced`: the INFO line was said on this
    connection (once per connection)."""

    def __init__(self, window: int) -> None:
        self.window = window  # 0: never paced
        self.state = OFF
        self.available = False
        self.announced = False
        self.requests = 0  # request() calls so far (the idle check compares)
        self._requests_seen = 0
        self._published_seen = 0
        self.published = 0  # messages on the confirm channel / confirmed by the broker
        self.confirmed = 0
        self.sent_at: deque[tuple[int, float]] = deque()  # (tag, time) unconfirmed
        self.quickest = float("inf")  # the quickest confirm seen on this connection
        self._check_at: float | None = None
        self.confirms = 0  # messages the broker confirmed, all connections (--metrics)

    # -- the connection's life ------------------------------------------------------------

    def reset(self) -> None:
        """A new connection: off, no confirm channel, nothing learnt."""
        self.off()
        self.available = self.announced = False
        self.published = self.confirmed = 0
        self.quickest = float("inf")

    def ready(self) -> None:
        """The confirm channel is open; the broker numbers its confirms from 1."""
        self.available = True
        self.published = self.confirmed = 0

    def lost(self) -> None:
        """The confirm channel closed: publishes stay on the first channel."""
        self.off()
        self.available = False

    def off(self) -> None:
        self.state = OFF
        self.sent_at.clear()
        self._check_at = None

    # -- moving to the confirm channel and back ---------------------------------------------

    def request(self) -> bool:
        """A batch worth pacing is about to leave: True when the caller should send the
        barrier now (then `moving()`): off, and a confirm channel to move to."""
        self.requests += 1
        return self.state is OFF and self.available and self.window > 0

    def moving(self) -> None:
        self.state = MOVING

    def moved(self, now: float) -> bool | None:
        """The barrier came back: paced from now on. True the first time on this
        connection (say so at INFO), False after, None if it no longer applies."""
        if self.state is not MOVING or not self.available:
            return None
        self.state = ON
        self.sent_at.clear()
        self._requests_seen, self._published_seen = self.requests, self.published
        self._check_at = now + PACE_IDLE_S
        first = not self.announced
        self.announced = True
        return first

    def next_timer(self) -> float | None:
        """When `handle_timer` wants to run (None: no timer)."""
        return self._check_at

    def handle_timer(self, now: float) -> bool:
        """Every PACE_IDLE_S while ON: a confirm that never came is given up (the count
        starts afresh); back OFF once, since the last look, no batch asked for pacing,
        fewer than PACE_IDLE_MESSAGES were published and the broker confirmed all.
        True when it turned off."""
        if self._check_at is None or now < self._check_at:
            return False
        sent_at = self.sent_at
        if sent_at and now - sent_at[0][1] > CONFIRM_GIVE_UP_S:
            self.confirmed = self.published  # a confirm we will never see
            sent_at.clear()
        quiet = self.published - self._published_seen < PACE_IDLE_MESSAGES
        if self.requests == self._requests_seen and quiet and self.published == self.confirmed:
            self.off()
            return True
        self._requests_seen, self._published_seen = self.requests, self.published
        self._check_at = now + PACE_IDLE_S
        return False

    # -- the hot path: publishes, confirms, the window -------------------------------------

    def on_publish(self, now: float) -> None:
        """One message published on the confirm channel (only while ON)."""
        self.published += 1
        self.sent_at.append((self.published, now))

    def on_confirm(self, tag: int, now: float) -> None:
        """The broker confirmed our messages up to tag (it confirms in order)."""
        if tag <= self.confirmed:
            return
        self.confirms += tag - self.confirmed
        self.confirmed = tag
        sent_at, last = self.sent_at, None
        while sent_at and sent_at[0][0] <= tag:
            last = sent_at.popleft()[1]
        if last is not None:
            took = now - last
            if took < self.quickest:
                self.quickest = took

    @property
    def in_flight(self) -> int:
        """Our messages the broker has not confirmed yet (0 unless ON)."""
        return self.published - self.confirmed if self.state is ON else 0

    def window_open(self, now: float) -> bool:
        """May a batch leave now? No while moving to the confirm channel (one round
        trip), nor while ON with `window` messages unconfirmed for longer than the broker
        usually takes (`confirms_late`). A message unconfirmed for CONFIRM_GIVE_UP_S holds
        nothing (its count is reset at the next `handle_timer`). Reads only."""
        state = self.state
        if state is OFF:
            return True
        if state is MOVING:
            return False
        in_flight = self.published - self.confirmed
        if in_flight < self.window:
            return True
        sent_at = self.sent_at
        if not sent_at:
            return True  # published through pika (no lean path): no age
        age = now - sent_at[0][1]
        if age > CONFIRM_GIVE_UP_S:
            return True
        return not confirms_late(in_flight, self.window, age, self.quickest)
