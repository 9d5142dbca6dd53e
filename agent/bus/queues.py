"""The queues a bus client consumes: what is declared, with which arguments (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class QueueSpec:
    """The queue a Bus consumes. `name` "" asks the broker for a fresh server-named queue
    (on every connection); use it with exclusive=True."""

    name: str
    bindings: list[str]
    exclusive: bool = True
    auto_delete: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)
    prefetch: int = 256
    in_use_message: str = "queue {queue} is in use by another process"
    # control keys (announcements) get a queue of their own, consumed on the same channel,
    # so that a data queue full of packets (drop-head) never drops an announcement
    control: list[str] = field(default_factory=list)


# the control queue: no TTL (an announcement stays true), a bound only against a flood;
# it carries a constant number of messages per agent joining (see docs/scale.md)
CONTROL_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-length": 100000, "x-overflow": "drop-head"}


def control_queue_name(queue_name: str) -> str:
    """The control queue beside queue_name ("" stays "": server-named, as its data queue)."""
    return f"{queue_name}.control" if queue_name else ""


def queue_arguments(ttl_ms: int = 5000, max_length: int = 1000) -> dict[str, Any]:
    """Stale packets are worthless: bounded length (drop oldest) and a short TTL."""
    return {"x-message-ttl": ttl_ms, "x-max-length": max_length, "x-overflow": "drop-head"}


def agent_queue(name: str, bindings: list[str], control: list[str] | None = None) -> QueueSpec:
    """The queue of the agent called name: exclusive, so a second one is refused."""
    return QueueSpec(
        name=f"{name}@agent",
        bindings=bindings,
        control=list(control or []),
        arguments=queue_arguments(),
        in_use_message=(
            f"an agent named {name!r} is already connected to this bus "
            "(pick another --name, or stop the other one)"
        ),
    )
