"""Entering a named network namespace for a few synchronous calls (setns on this thread),
and netlink sockets made there for later use from the event loop."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

from pyroute2 import AsyncIPRoute

from agent.config import ConfigError

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"invalid network namespace name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    if not os.path.exists(path):
        raise ConfigError(f"network namespace {name!r} does not exist (ip netns add {name})")
    return path


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body inside namespace `name` (None: stay). Never await inside it."""
    if name is None:
        yield
        return
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


class Netlink:
    """A netlink route socket of the namespace it is made in (make it inside `entered`).

    Used later from the event loop, from any namespace: pyroute2's AsyncIPRoute wraps it
    on first use and owns it from then on. close() releases whichever holds it.
    """

    def __init__(self) -> None:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        self._fd = nl.detach()
        self._ipr: AsyncIPRoute | None = None

    @property
    def is_open(self) -> bool:
        return self._ipr is not None or self._fd >= 0

    async def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            if self._fd < 0:
                raise OSError("netlink socket closed")
            ipr = AsyncIPRoute(fileno=self._fd)  # owns the socket from here on
            self._fd = -1
            try:
                await ipr.setup_endpoint()
            except BaseException:
                ipr.close()
                raise
            self._ipr = ipr
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
