"""Entering a named network namespace for a few synchronous calls (setns on this thread)."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

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
