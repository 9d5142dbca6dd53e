"""The run/stop frame shared by the agent, the router, the sniffer and the serial probe.

One asyncio loop, one stop event: SIGINT/SIGTERM stop, SIGUSR1 and `--stats N` log a
counters line, a fatal reason ends the run with exit code 1, and `cleanup` always runs
(also after an exception), followed by the counters table.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from agent.counters import Counters

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Service:
    """Subclasses implement `start` (bring things up) and `cleanup` (take them down)."""

    # exceptions from start() that are a user-facing error (one line, exit 1)
    fatal_errors: tuple[type[Exception], ...] = ()

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter, stats_interval: float = 0.0  # type: ignore[type-arg]
    ) -> None:
        self.log = log
        self.counters = Counters()
        self.stats_interval = stats_interval
        self._stop = asyncio.Event()
        self._fatal: str | None = None

    async def start(self) -> None:
        """Bring the service up; the loop then runs until stop()."""

    async def cleanup(self) -> None:
        """Take down everything start() made; must work after a partial start."""

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGUSR1, self.print_status)
        stats: asyncio.Task[None] | None = None
        try:
            await self.start()
            if self.stats_interval:
                stats = loop.create_task(self._stats_loop())
            await self._stop.wait()
        except self.fatal_errors as exc:
            self._fatal = str(exc)
        finally:
            if stats is not None:
                stats.cancel()
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
            await self.cleanup()
            if not self._fatal and (self.counters.packets or self.counters.drops):
                self.log.info("counters:\n%s", self.counters.table())
        if self._fatal:
            self.log.error("%s", self._fatal)
            return 1
        return 0

    def stop(self) -> None:
        if not self._stop.is_set():
            self.log.info("stopping")
            self._stop.set()

    def on_fatal(self, reason: str) -> None:
        """End the run with this one-line reason and exit code 1."""
        self._fatal = reason
        self._stop.set()

    def print_status(self) -> None:
        self.log.warning("status: %s", self.counters.status_line())

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            self.print_status()
