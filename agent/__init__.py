"""IP-over-AMQP tunnel agent for ioppytest interoperability sessions."""

from __future__ import annotations

DISTRIBUTION = "ip-over-amqp"
"""The name it is installed under (`pip install ip-over-amqp`); the package is `agent`."""


def version() -> str | None:
    """The installed version (from the package metadata); None when the code runs from a
    tree that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return None
