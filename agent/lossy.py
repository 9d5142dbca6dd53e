"""ioppytest's "lossy context" (COAP_CFG_02): the router drops the next N packets.

The coordinator publishes ``{"number_of_packets_to_drop": N}`` on
``routing.lossy.link.start``; the packet router then forwards nothing for the next N
packets from any source. A new command sets the count anew; it does not add to it.
Pure: the router asks :meth:`LossyLink.take` for each packet and counts the drop.
"""

from __future__ import annotations

from typing import Any

from agent.bus import wire

LOSSY_KEY = wire.LOSSY_KEY
COUNT_FIELD = "number_of_packets_to_drop"
MAX_TO_DROP = 1_000_000


class LossyCommandError(ValueError):
    """A routing.lossy.link.start body without a usable packet count."""


def packets_to_drop(msg: dict[str, Any]) -> int:
    """N from a decoded command; LossyCommandError (one line) when it is not 0..1000000."""
    if COUNT_FIELD not in msg:
        raise LossyCommandError(f"no {COUNT_FIELD!r} in {LOSSY_KEY}")
    value = msg[COUNT_FIELD]
    if isinstance(value, bool) or not isinstance(value, int):
        raise LossyCommandError(f"{COUNT_FIELD} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_TO_DROP:
        raise LossyCommandError(f"{COUNT_FIELD} must be 0..{MAX_TO_DROP}, got {value}")
    return value


def packets_to_drop_in(body: bytes) -> int:
    """N from a command's body; LossyCommandError (one line) when it has no usable count."""
    try:
        msg = wire.decode_control(body)
    except wire.WireError as exc:
        raise LossyCommandError(str(exc)) from None
    return packets_to_drop(msg)


class LossyLink:
    """How many of the next packets to drop; `take()` once per packet."""

    def __init__(self) -> None:
        self.pending = 0
        self.dropped = 0  # by the current command

    def start(self, count: int) -> None:
        """Drop the next `count` packets (replaces what is left of an earlier command)."""
        self.pending = count
        self.dropped = 0

    def take(self) -> bool:
        """True when this packet is to be dropped."""
        if self.pending <= 0:
            return False
        self.pending -= 1
        self.dropped += 1
        return True
