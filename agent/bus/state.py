"""The states of a bus connection and every transition between them, in one table (pure).

```
            start                 opened                declared
    IDLE ---------> CONNECTING ----------> DECLARING -----------> ACTIVE
                      ^   |                 |  ^   \\               |  |
                retry |   | open failed     |  |    \\ queue held   |  | queue lost,
                      |   v                 |  |poll v             |  | channel lost
                    WAITING <---------------+--+- STANDBY           |  v
                      ^      connection lost          DROPPING <---+
                      +-------------------------------------+  (we close it to start afresh)

    any state --close--> CLOSING --closed--> CLOSED;   refused (fatal) --> CLOSING;
    first round failed on every node (give up) --> CLOSED
```

`transition(state, event)` is the only place a state changes (agent.bus.core). A pair
missing from TRANSITIONS is a bug or a late callback of a connection already left: the
core raises in tests (`strict`) and logs it at DEBUG and ignores it in production.
"""

from __future__ import annotations

from enum import Enum


class ConnState(Enum):
    IDLE = "idle"  # made, not started
    CONNECTING = "connecting"  # an attempt on one node: TCP, TLS, AMQP handshake
    DECLARING = "declaring"  # connected: channel, exchange, queues, bindings, consume
    ACTIVE = "active"  # consuming and publishing (`Bus.up`)
    STANDBY = "standby"  # connected; our queue is another connection's: asking again
    DROPPING = "dropping"  # closing this connection ourselves, to start afresh
    WAITING = "waiting"  # no connection; the next attempt is timed (backoff)
    CLOSING = "closing"  # close() asked, or a fatal refusal: closing, no new attempt
    CLOSED = "closed"  # the end


class Event(Enum):
    START = "start"
    OPENED = "opened"  # the connection is open
    DECLARED = "declared"  # queues declared and bound, consuming
    QUEUE_HELD = "queue held"  # 405 while declaring: another connection has our queue
    POLL = "poll"  # standby: time to declare again
    QUEUE_LOST = "queue lost"  # the periodic check found our queue gone or taken
    CHANNEL_LOST = "channel lost"  # the broker closed our channel (another reason)
    REFUSED = "refused"  # a setting to fix (403, a name in use...): the end
    LOST = "connection lost"  # the attempt failed, or the connection closed
    GIVE_UP = "give up"  # lost, and the first round failed on every node: the end
    RETRY = "retry"  # the pause before the next attempt is over
    CLOSE = "close"  # close() asked
    CLOSED = "closed"  # the connection is closed after CLOSING


S, E = ConnState, Event
_CONNECTED = (S.DECLARING, S.ACTIVE, S.STANDBY)

TRANSITIONS: dict[tuple[ConnState, Event], ConnState] = {
    (S.IDLE, E.START): S.CONNECTING,
    (S.CONNECTING, E.OPENED): S.DECLARING,
    (S.DECLARING, E.DECLARED): S.ACTIVE,
    (S.DECLARING, E.QUEUE_HELD): S.STANDBY,
    (S.STANDBY, E.POLL): S.DECLARING,
    (S.ACTIVE, E.QUEUE_LOST): S.DROPPING,
    (S.DECLARING, E.CHANNEL_LOST): S.DROPPING,
    (S.ACTIVE, E.CHANNEL_LOST): S.DROPPING,
    (S.WAITING, E.RETRY): S.CONNECTING,
    (S.CLOSING, E.CLOSED): S.CLOSED,
    (S.IDLE, E.CLOSE): S.CLOSED,
    (S.WAITING, E.CLOSE): S.CLOSED,
    (S.CONNECTING, E.CLOSE): S.CLOSING,
    (S.DROPPING, E.CLOSE): S.CLOSING,
    (S.CLOSING, E.CLOSE): S.CLOSING,
    (S.CLOSED, E.CLOSE): S.CLOSED,
    **{(s, E.CLOSE): S.CLOSING for s in _CONNECTED},
    **{(s, E.REFUSED): S.CLOSING for s in (*_CONNECTED, S.DROPPING)},
    **{(s, E.LOST): S.WAITING for s in (S.CONNECTING, *_CONNECTED, S.DROPPING)},
    **{(s, E.GIVE_UP): S.CLOSED for s in (S.CONNECTING, *_CONNECTED, S.DROPPING)},
}


class TransitionError(RuntimeError):
    """An event the state does not expect (a bug, or a callback of a connection left)."""


def transition(state: ConnState, event: Event) -> ConnState:
    """The state after event in state; TransitionError if the table has no such pair."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise TransitionError(f"{event.value!r} in state {state.value!r}") from None
