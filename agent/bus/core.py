"""The bus connection's decisions, sans I/O: fed events and times, answers with actions.

The adapter (agent.bus.connection) turns pika's callbacks into calls here (`opened`,
`declared`, `channel_closed`, `connection_lost`, `close`, `handle_timer`...), executes
the actions they return (`Connect` to node i, `Declare`, `Drop` the connection, report a
`Fatal` reason, `CheckQueues`, say `StandingBy`) and arms one timer at `next_timer()`.
Every state change goes through agent.bus.state's table; every timer of the connection
is here: the pause before the next attempt (WAITING), the standby poll (STANDBY), the
queue check (ACTIVE) and the confirm pacer's (agent.bus.pacing).

What decides what, as before this module existed (docs/cluster.md): node order and
backoff (agent.bus.failover); the first round failing on every node is fatal, later
losses are retried; a queue held by another connection means stand by (routers, or
anyone after a failover) or, at first, a name in use; 403 is always fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.bus.failover import NodeOrder
from agent.bus.pacing import Pacer
from agent.bus.state import TRANSITIONS, ConnState, Event, TransitionError

STANDBY_POLL = 0.5  # s between two tries of a standby to take the queue
# while up, our exclusive queues are checked (passive declare) this often: after a node's
# death a broker race can leave a queue without its record, or give its name to another
# connection (docs/cluster.md); we then reconnect, which releases whatever we still hold
QUEUE_CHECK_S = 5.0
# ...and once this soon after each (re)connection or takeover: a broker race after a node's
# death comes with the declare that follows it, and a split found then costs ~1 s of
# silence, not 5 (docs/cluster.md)
QUEUE_CHECK_FIRST_S = 1.0


@dataclass(frozen=True)
class Connect:
    index: int  # of the URL to connect to


@dataclass(frozen=True)
class Declare:
    """Open a channel on the connection and declare (again)."""


@dataclass(frozen=True)
class Drop:
    """Close the connection; its close callback follows (`connection_lost`)."""


@dataclass(frozen=True)
class Fatal:
    reason: str  # one line for the user; no retry


@dataclass(frozen=True)
class CheckQueues:
    """Passive-declare our queues; then `queues_checked` (or a channel close)."""


@dataclass(frozen=True)
class StandingBy:
    """The first wait for our queue since the last activation: say so."""


Action = Connect | Declare | Drop | Fatal | CheckQueues | StandingBy

S, E = ConnState, Event


class BusCore:
    """One bus connection's state, failover and timers. `wheres`: host:port of each URL
    (for log lines; no passwords). `can_stand_by`: a queue held by another connection
    means wait for it even at first (routers). `check_queues`: check our (exclusive)
    queues every QUEUE_CHECK_S while active. `strict`: an event the state table does not
    expect raises TransitionError (tests) instead of being logged and ignored.

    Facts beside the state: `ever_active` (a connection was active once: losses are
    retried, refusals of 404/406 no longer fatal), `stood_by` (told to wait for our queue
    since the last activation), `active_connection` (the current connection was active:
    its loss is a WARNING), `checking` (a queue check is under way)."""

    def __init__(
        self,
        wheres: list[str],
        *,
        can_stand_by: bool = False,
        check_queues: bool = True,
        pacer: Pacer | None = None,
        order: NodeOrder | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        strict: bool = False,
    ) -> None:
        self.wheres = wheres
        self.order = order or NodeOrder(len(wheres))
        self.can_stand_by = can_stand_by
        self.check_queues = check_queues
        self.pacer = pacer or Pacer(0)
        self.log = log or logging.getLogger("agent.bus")
        self.strict = strict
        self.state = S.IDLE
        self.ever_active = False
        self.stood_by = False
        self.active_connection = False
        self.checking = False
        self.reconnects = 0
        self.first_errors: list[str] = []
        self._timer_at: float | None = None

    @property
    def where(self) -> str:
        """host:port of the node connected to (or tried next)."""
        return self.wheres[self.order.index]

    # -- the one place the state changes ------------------------------------------------

    def expects(self, event: Event) -> bool:
        """Does the table have event in the current state? If not: raise (strict) or
        log it at DEBUG; either way nothing changes."""
        if (self.state, event) in TRANSITIONS:
            return True
        if self.strict:
            raise TransitionError(f"{event.value!r} in state {self.state.value!r}")
        self.log.debug("bus: %s ignored in state %s", event.value, self.state.value)
        return False

    def _go(self, event: Event) -> bool:
        if not self.expects(event):
            return False
        new = TRANSITIONS[self.state, event]
        if new is not self.state:
            self._timer_at = None  # each state has its own timer
            self.checking = False
            if new is not S.ACTIVE:
                self.pacer.off()
        self.state = new
        return True

    # -- events ------------------------------------------------------------------------

    def start(self) -> list[Action]:
        return [Connect(self.order.index)] if self._go(E.START) else []

    def opened(self) -> list[Action]:
        if not self._go(E.OPENED):
            return []
        self.active_connection = False
        self.pacer.reset()
        return [Declare()]

    def declared(self, now: float) -> list[Action]:
        """Consuming: active. The caller tells its owner (on_up) after this."""
        if not self._go(E.DECLARED):
            return []
        if self.ever_active:
            self.reconnects += 1
            self.log.warning("broker connection restored: reconnected to %s", self.where)
        elif len(self.wheres) > 1:
            self.log.info(
                "connected to node %s (URL %d of %d)",
                self.where, self.order.index + 1, len(self.wheres),
            )
        self.ever_active = self.active_connection = True
        self.stood_by = False
        self.order.connected()
        if self.check_queues:
            self._timer_at = now + QUEUE_CHECK_FIRST_S  # a declare that raced a node's death
        return []

    def channel_closed(
        self, code: int | None, text: str, now: float, in_use: str = "", desc: str = ""
    ) -> list[Action]:
        """The broker closed our channel (code None: not the broker, the connection is
        going, its close callback reports). in_use: the line for a queue in use at
        first; desc: the close as pika words it."""
        state, checking = self.state, self.checking
        if code is None or state not in (S.DECLARING, S.ACTIVE):
            return []
        self.checking = False
        if state is S.ACTIVE and checking and code in (404, 405):
            self.log.warning(
                "our queue is gone or held by another connection (%s); reconnecting", text
            )
            return [Drop()] if self._go(E.QUEUE_LOST) else []
        if code == 405 and state is S.DECLARING and (self.can_stand_by or self.ever_active):
            # a standby waits for the queue; after a failover it may still be held by
            # our own lost connection on a node not yet declared down: wait on this
            # (healthy) node rather than move on, perhaps to the lost node itself
            return self._stand_by(now)
        if code == 405 and not self.ever_active:
            return self.refused(in_use)
        if code == 403:
            # the account may not (publish on that key, bind, declare): retrying cannot
            # help, so one line naming what was refused, and the end
            return self.refused(f"broker at {self.where} refused: {text}")
        if code in (404, 406) and not self.ever_active:
            return self.refused(f"broker refused a declaration: {text}")
        self.log.warning("channel closed: %s; reconnecting", desc or f"({code}, {text!r})")
        return [Drop()] if self._go(E.CHANNEL_LOST) else []

    def _stand_by(self, now: float) -> list[Action]:
        if not self._go(E.QUEUE_HELD):
            return []
        self._timer_at = now + STANDBY_POLL
        if self.stood_by:
            return []
        self.stood_by = True  # from now on a lost connection is retried
        self.order.connected()
        return [StandingBy()]

    def refused(self, reason: str) -> list[Action]:
        """A setting to fix (a refused permission, a name in use): one line, the end."""
        if not self._go(E.REFUSED):
            return []
        return [Fatal(reason), Drop()]

    def connection_lost(self, reason: str, now: float, fatal: bool = False) -> list[Action]:
        """The attempt failed or the connection closed (reason: describe_error's line).
        Next node at once, or after a pause once a round failed; the first round
        failing on every node (or fatal) is the end."""
        if self.state is S.CLOSING:
            self._go(E.CLOSED)
            return []
        if not self.expects(E.LOST):
            return []
        several = len(self.wheres) > 1
        first = not (self.ever_active or self.stood_by)
        if first and several:
            self.first_errors.append(reason)
        lost_at, was_up = self.where, self.active_connection
        delay = self.order.failed()
        self.active_connection = False
        if fatal or (first and self.order.round_done):
            # the first round failed on every node: a typo should not spin forever
            self._go(E.GIVE_UP)
            return [Fatal("; ".join(self.first_errors) if several else reason)]
        self._go(E.LOST)
        if was_up:
            self.log.warning("lost the broker at %s: %s; reconnecting", lost_at, reason)
        elif delay:
            self.log.info(
                "still no broker (%s); next try %s in %.1f s", reason, self.where, delay
            )
        else:
            self.log.info("%s; trying %s", reason, self.where)
        self._timer_at = now + delay
        return []

    def close(self) -> list[Action]:
        """close() asked: no new attempt; the adapter closes what is open."""
        self._go(E.CLOSE)
        return []

    def closed(self) -> None:
        """The connection is closed after CLOSING."""
        if self.state is S.CLOSING:
            self._go(E.CLOSED)

    # -- timers ------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """When to call handle_timer (None: nothing timed)."""
        a, b = self._timer_at, self.pacer.next_timer()
        if a is None:
            return b
        return a if b is None or a < b else b

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        due = self._timer_at
        if due is not None and now >= due:
            self._timer_at = None
            state = self.state
            if state is S.WAITING and self._go(E.RETRY):
                actions.append(Connect(self.order.index))
            elif state is S.STANDBY and self._go(E.POLL):
                actions.append(Declare())
            elif state is S.ACTIVE and self.check_queues:
                self.checking = True
                actions.append(CheckQueues())
        if self.pacer.handle_timer(now):
            self.log.debug("batching: publisher confirms off (no stream)")
        return actions

    def queues_checked(self, now: float) -> None:
        """The check passed (or could not be sent: try again next time)."""
        self.checking = False
        if self.state is S.ACTIVE and self.check_queues:
            self._timer_at = now + QUEUE_CHECK_S
