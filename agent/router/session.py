"""The session as the router sees it: one record per agent incarnation. Pure: no I/O.

The router feeds it typed bus facts with the time (`ready`, `started`, `stopped`, `gone`,
`up`, `tick`) and carries out what it answers: `Announce` (publish the router's ready),
`Forget` (drop an agent's addresses from the routing table), `Probe` (check that a silent
agent's queue still exists). `agent status` and the metrics read the same records, so
what they show is what the router decides with.

Incarnations. Our agents name theirs (`x_agent_incarnation`, new on each of their bus
connections) in their ready, tun.started and tun.stopped; only the tun.started and
tun.stopped count, as only that agent's account may publish on their routing keys (any
account may publish a ready, naming anyone). Agents that name none (the original agent,
ioppytest's) get one counted by the router: their tun.started after a ready of theirs, or
after they were forgotten (stopped, gone, router restarted), starts a new one. A
new incarnation starts from nothing: JSON wire, no addresses, counters from zero; the
router announces itself so that it hears the ready again (its uplink moves to the fast
wire if both read it) and the agents with networks behind them answer it with their
tun.started, which every agent binds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SILENT_S = 10.0  # an agent of ours silent this long has its queue checked...
PROBE_EVERY_S = 10.0  # ...at most this often: a vanished agent is gone within ~25 s
JSON, FAST = "json", "fast"


@dataclass(frozen=True)
class Announce:
    """Publish the router's ready (coalesced: one per loop turn however many ask)."""


@dataclass(frozen=True)
class Forget:
    """The routing table forgets what it learned of this agent (its incarnation ended)."""

    name: str


@dataclass(frozen=True)
class Probe:
    """Check that the agent's queue (`<name>@agent.control`) still exists."""

    name: str


Action = Announce | Forget | Probe


@dataclass
class Record:
    """One agent incarnation: what `agent status` prints, one row."""

    name: str
    incarnation: str
    ours: bool  # it named its incarnation (our agent: its queue can be probed)
    since: float
    last_seen: float
    addresses: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    wire: str = JSON
    started: bool = False  # its tun.started of this incarnation came
    restart: bool = False  # it names no incarnation and sent a ready: the next is new
    last_probe: float = float("-inf")
    base: tuple[int, ...] | None = None  # the router's counters when it began
    seen_at: tuple[int, ...] = (0, 0)  # packet counts at the last tick (for last_seen)


@dataclass
class Session:
    """Records by agent name; `fast` is the set of agents sent the fast wire (the router
    tests membership per packet)."""

    fast_wire: bool = True
    agents: dict[str, Record] = field(default_factory=dict)
    fast: set[str] = field(default_factory=set)
    epoch: str = ""
    up_since: float = 0.0
    _counted: int = 0  # incarnations numbered by the router (agents that name none)

    # -- facts in ------------------------------------------------------------------------

    def up(self, epoch: str, now: float) -> list[Action]:
        """The router (re)connected or took over: its queue is new, what it knew may be
        stale (agents restarted meanwhile). Forget everyone; they answer the new epoch."""
        actions: list[Action] = [Forget(name) for name in self.agents]
        self.agents.clear()
        self.fast.clear()
        self.epoch, self.up_since = epoch, now
        actions.append(Announce())
        return actions

    def ready(self, name: str) -> None:
        """A component's ready, named `name`. Anyone may publish a ready under any name,
        so it only marks an agent that names no incarnation: its next tun.started (its
        own routing key, which only it may publish) starts a new one. Ours say theirs in
        their tun.started."""
        record = self.agents.get(name)
        if record is not None and not record.ours:
            record.restart = True

    def started(
        self, name: str, incarnation: str | None, fast: bool, now: float,
        addresses: Iterable[str] = (), networks: Iterable[str] = (), epoch: str | None = None,
    ) -> list[Action]:
        """An agent's tun.started: its configuration, maybe a new incarnation. epoch: the
        router epoch it answers (ours say it): it has seen that ready already."""
        record = self.agents.get(name)
        actions: list[Action] = []
        if (
            record is None
            or (incarnation is None and (record.ours or record.restart))
            or (incarnation is not None and incarnation != record.incarnation)
        ):
            actions += self._end(name)
            record = self._begin(name, incarnation, now)
            if epoch is None or epoch != self.epoch:
                actions.append(Announce())
        record.started = True
        record.last_seen = now
        record.addresses, record.networks = tuple(addresses), tuple(networks)
        record.wire = FAST if fast and self.fast_wire else JSON
        if record.wire == FAST:
            self.fast.add(name)
        else:
            self.fast.discard(name)
        return actions

    def stopped(self, name: str, incarnation: str | None) -> list[Action]:
        """An agent's goodbye (tun.stopped): forgotten at once, if it is the one we know."""
        record = self.agents.get(name)
        if record is None or (incarnation is not None and incarnation != record.incarnation):
            return []
        return self._end(name)

    def gone(self, name: str) -> list[Action]:
        """Its queue is gone (a probe): the process or its host vanished."""
        return self._end(name) if name in self.agents else []

    def alive(self, name: str, now: float) -> None:
        """A probe found its queue: checked again PROBE_EVERY_S later if still silent."""
        record = self.agents.get(name)
        if record is not None:
            record.last_probe = now

    def heard(self, name: str, now: float) -> None:
        record = self.agents.get(name)
        if record is not None:
            record.last_seen = now

    def tick(self, now: float, packets: dict[str, tuple[int, int]] | None = None) -> list[Action]:
        """Every second or so: last_seen from the packet counts (agent -> (sent, received)
        as the router counts them), then probes of our agents silent for SILENT_S."""
        for name, counts in (packets or {}).items():
            record = self.agents.get(name)
            if record is not None and counts != record.seen_at:
                if counts[0] != record.seen_at[0]:
                    record.last_seen = now
                record.seen_at = counts
        actions: list[Action] = []
        for record in self.agents.values():
            if (
                record.ours
                and now - record.last_seen >= SILENT_S
                and now - record.last_probe >= PROBE_EVERY_S
            ):
                record.last_probe = now
                actions.append(Probe(record.name))
        return actions

    # -- incarnations ----------------------------------------------------------------------

    def _begin(self, name: str, incarnation: str | None, now: float) -> Record:
        if incarnation is None:
            self._counted += 1
            incarnation, ours = f"router-{self._counted}", False
        else:
            ours = True
        record = Record(name, incarnation, ours, since=now, last_seen=now)
        self.agents[name] = record
        return record

    def _end(self, name: str) -> list[Action]:
        if self.agents.pop(name, None) is None:
            return []
        self.fast.discard(name)
        return [Forget(name)]


def answers_ready(epoch: str | None, answered: str | None, has_networks: bool) -> bool:
    """The agent's side: does it answer a router's ready with its tun.started? Once per
    router epoch (a router that names none: every time); an agent with networks behind
    it answers every one, so that each new incarnation elsewhere learns them."""
    return epoch is None or epoch != answered or has_networks
