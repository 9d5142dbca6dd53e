"""Work deferred to the end of the current event-loop turn, once however often asked.

The one way the agent, the router and the sniffer batch their output: a burst of packets
(a TUN read, a socket read) asks for the flush many times, the flush runs once, after the
burst, in the same loop turn. No timer, so no added delay when idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Soon:
    """`soon()` runs fn at the end of this loop turn; further calls before then are one.

    Without a running loop (direct calls from tests or teardown) fn runs at once.
    """

    __slots__ = ("fn", "_handle")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self._handle: asyncio.Handle | None = None

    def __call__(self) -> None:
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.fn()
                return
            self._handle = loop.call_soon(self._run)

    @property
    def pending(self) -> bool:
        return self._handle is not None

    def cancel(self) -> None:
        """fn is about to be run by hand: do not run it again at the end of the turn."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        self.fn()
