"""The router's session model (agent.router.session), pure: unit tests and a property test
that drives it with random joins, stops, kills, restarts, reconnections and router
takeovers over a simulated bus, agents answering as agent.node does (answers_ready)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.router.session import (
    FAST,
    JSON,
    PROBE_EVERY_S,
    SILENT_S,
    Announce,
    Forget,
    Probe,
    Session,
    answers_ready,
)

# -- unit tests -------------------------------------------------------------------------


def test_a_restarted_agent_is_a_new_incarnation_that_starts_from_nothing() -> None:
    s = Session()
    s.up("e1", 0.0)
    assert s.started("a", "i1", True, 1.0, ["bbbb::1"], ["cccc::/64"]) == [Announce()]
    assert s.fast == {"a"} and s.agents["a"].wire == FAST
    # its answer to our ready (same incarnation): nothing new, no second announcement
    assert s.started("a", "i1", True, 1.1, ["bbbb::1"], ["cccc::/64"], epoch="e1") == []
    # a ready under its name proves nothing (anyone may publish one)
    s.ready("a")
    assert s.agents["a"].incarnation == "i1" and s.fast == {"a"}
    # restarted: its tun.started names another incarnation; the old one is forgotten
    assert s.started("a", "i2", False, 5.0, ["bbbb::1"]) == [Forget("a"), Announce()]
    r = s.agents["a"]
    assert (r.incarnation, r.wire, r.addresses, r.networks, r.since) == (
        "i2", JSON, ("bbbb::1",), (), 5.0)
    assert s.fast == set()  # not sent the fast wire: this incarnation does not read it


def test_agents_that_name_no_incarnation_are_counted_by_their_ready() -> None:
    s = Session()
    s.up("e1", 0.0)
    s.started("old", None, False, 1.0)
    first = s.agents["old"].incarnation
    assert s.started("old", None, False, 2.0) == []  # an answer: the same incarnation
    s.ready("old")  # it (re)connected: its next tun.started begins a new incarnation
    assert s.agents["old"].incarnation == first
    assert s.started("old", None, False, 3.0) == [Forget("old"), Announce()]
    assert s.agents["old"].incarnation != first
    assert s.started("old", None, False, 4.0) == []
    s.ready("tat")  # a component that is not an agent: nothing
    assert "tat" not in s.agents


def test_stop_gone_and_router_takeover() -> None:
    s = Session()
    s.up("e1", 0.0)
    s.started("a", "i1", True, 1.0)
    s.started("b", "j1", True, 1.0)
    assert s.stopped("a", "old-incarnation") == []  # a late goodbye of an earlier one
    assert s.stopped("a", "i1") == [Forget("a")] and "a" not in s.agents
    assert s.gone("b") == [Forget("b")] and s.fast == set()
    s.started("c", "k1", True, 2.0)
    assert s.up("e2", 3.0) == [Forget("c"), Announce()] and not s.agents and not s.fast
    # an answer to the new epoch needs no announcement of its own
    assert s.started("c", "k1", True, 3.1, epoch="e2") == []


def test_only_silent_agents_of_ours_are_probed_and_not_too_often() -> None:
    s = Session()
    s.up("e1", 0.0)
    s.started("ours", "i1", False, 0.0)
    s.started("old", None, False, 0.0)
    assert s.tick(SILENT_S - 1, {"ours": (0, 0)}) == []
    assert s.tick(SILENT_S, {"ours": (0, 0)}) == [Probe("ours")]  # never "old": no queue name
    assert s.tick(SILENT_S + 1, {"ours": (0, 0)}) == []
    s.alive("ours", SILENT_S + 1)
    assert s.tick(SILENT_S + 1 + PROBE_EVERY_S, {"ours": (0, 0)}) == [Probe("ours")]
    # a packet from it: heard, no probe for SILENT_S
    now = 100.0
    assert s.tick(now, {"ours": (5, 0)}) == [] and s.agents["ours"].last_seen == now
    assert s.tick(now + SILENT_S - 0.5, {"ours": (5, 9)}) == []  # packets *to* it: not heard


def test_the_agent_side_answers_once_per_epoch_or_always_with_networks() -> None:
    assert answers_ready("e1", None, False) and not answers_ready("e1", "e1", False)
    assert answers_ready("e1", "e1", True) and answers_ready(None, None, False)


# -- the property test: a simulated session ---------------------------------------------


@dataclass
class SimAgent:
    name: str
    legacy: bool  # names no incarnation, echoes no epoch, never fast (the original agent)
    live: bool = False
    inc: str = ""
    networks: tuple[str, ...] = ()
    fast: bool = False
    answered: str | None = None
    known: dict[str, tuple[str, ...]] = field(default_factory=dict)  # peers' networks routed
    uplink_fast: bool = False  # switched by a router ready that offers the fast wire


@dataclass
class Sim:
    session: Session = field(default_factory=Session)
    agents: dict[str, SimAgent] = field(default_factory=dict)
    to_router: deque[tuple[str, str, dict]] = field(default_factory=deque)  # type: ignore[type-arg]
    to_agents: deque[tuple[str, str, dict]] = field(default_factory=deque)  # type: ignore[type-arg]
    now: float = 0.0
    count: int = 0
    table: set[str] = field(default_factory=set)  # agents the routing table knows
    offered: dict[tuple[str, str], bool] = field(default_factory=dict)  # (name, inc) -> fast

    def new_id(self) -> str:
        self.count += 1
        return f"x{self.count}"

    def publish(self, kind: str, sender: str, body: dict) -> None:  # type: ignore[type-arg]
        self.to_router.append((kind, sender, body))
        if kind in ("started", "router-ready"):
            self.to_agents.append((kind, sender, body))

    def connect(self, a: SimAgent, networks: tuple[str, ...], fast: bool, new: bool) -> None:
        """An agent (re)connects: a new incarnation, ready then tun.started. new: a new
        process, which knows nothing yet (a reconnection keeps its routes and wire)."""
        if new:
            a.known, a.uplink_fast = {}, False
        a.live, a.inc, a.answered = True, self.new_id(), None
        a.networks, a.fast = networks, fast and not a.legacy
        self.offered[(a.name, a.inc)] = a.fast
        self.publish("ready", a.name, {"inc": None if a.legacy else a.inc})
        self.started(a)

    def started(self, a: SimAgent) -> None:
        self.publish("started", a.name, {
            "inc": None if a.legacy else a.inc, "fast": a.fast, "networks": a.networks,
            "epoch": None if a.legacy else a.answered,
        })

    def apply(self, actions: list) -> None:  # type: ignore[type-arg]
        for action in actions:
            if isinstance(action, Forget):
                self.table.discard(action.name)
            elif isinstance(action, Announce):
                self.publish("router-ready", "router", {"epoch": self.session.epoch})
            elif isinstance(action, Probe):
                a = self.agents[action.name]
                if a.live:
                    self.session.alive(action.name, self.now)
                else:
                    self.apply(self.session.gone(action.name))

    def router_gets(self, kind: str, sender: str, body: dict) -> None:  # type: ignore[type-arg]
        s = self.session
        if kind == "ready":
            s.ready(sender)
        elif kind == "started":
            self.apply(s.started(sender, body["inc"], body["fast"], self.now,
                                 networks=body["networks"], epoch=body["epoch"]))
            self.table.add(sender)
        elif kind == "stopped":
            self.apply(s.stopped(sender, body["inc"]))

    def agents_get(self, kind: str, sender: str, body: dict) -> None:  # type: ignore[type-arg]
        for a in self.agents.values():
            if not a.live:
                continue  # no queue: lost
            if kind == "router-ready":
                a.uplink_fast = a.fast  # our router offers it; the agent reads it if it can
                epoch = None if a.legacy else body["epoch"]
                if answers_ready(epoch, a.answered, bool(a.networks)):
                    a.answered = epoch
                    self.started(a)
            elif kind == "started" and sender != a.name:
                a.known[sender] = body["networks"]

    def step(self) -> bool:
        """Deliver one message (router first); False when none is left."""
        if self.to_router:
            self.router_gets(*self.to_router.popleft())
        elif self.to_agents:
            self.agents_get(*self.to_agents.popleft())
        else:
            return False
        self.check_fast()
        return True

    def settle(self) -> None:
        """Deliver everything; then time passes and probes find the vanished agents."""
        while self.step():
            pass
        for _ in range(3):
            self.now += max(SILENT_S, PROBE_EVERY_S) + 1
            self.apply(self.session.tick(self.now, {}))
            while self.step():
                pass

    def check_fast(self) -> None:
        """Nobody is sent the fast wire before its incarnation said it reads it."""
        for name in self.session.fast:
            record = self.session.agents[name]
            assert record.ours and self.offered[(name, record.incarnation)], name

    def check_settled(self) -> None:
        live = {n: a for n, a in self.agents.items() if a.live}
        # nothing is remembered about a gone incarnation (one that names none and leaves
        # no queue to probe stays until it is back: docs/operating.md)
        legacy = {n for n, a in self.agents.items() if a.legacy}
        assert set(self.session.agents) - legacy == set(live) - legacy
        assert set(live) <= set(self.session.agents)
        assert self.table <= set(live) | legacy
        for name, a in live.items():
            record = self.session.agents[name]
            if not a.legacy:
                assert record.incarnation == a.inc
            assert record.networks == a.networks
            assert record.wire == (FAST if a.fast else JSON)
            assert a.uplink_fast == a.fast  # the fast wire renegotiated both ways
        # every live agent knows every other live agent's networks
        for a in live.values():
            for b in live.values():
                if b is not a and b.networks:
                    assert a.known.get(b.name) == b.networks, (a.name, b.name)


NAMES = ["a0", "a1", "a2", "a3", "l4"]  # l4 behaves like the original agent
event = st.one_of(
    st.tuples(st.sampled_from(["join", "stop", "kill", "restart", "reconnect", "forge"]),
              st.sampled_from(NAMES), st.sampled_from([(), ("cccc::/64",), ("dddd::/64",)]),
              st.booleans()),
    st.tuples(st.sampled_from(["takeover", "deliver", "settle"]), st.just(""), st.just(()),
              st.just(False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=40))
def test_the_session_converges_whatever_happens(events: list) -> None:  # type: ignore[type-arg]
    sim = Sim()
    sim.agents = {n: SimAgent(n, legacy=n.startswith("l")) for n in NAMES}
    sim.apply(sim.session.up("epoch-0", 0.0))
    for kind, name, networks, fast in events:
        a = sim.agents.get(name)
        sim.now += 0.1
        if kind == "join" and a and not a.live:
            sim.connect(a, networks, fast, new=True)
        elif kind == "stop" and a and a.live:
            a.live = False
            if not a.legacy:
                sim.publish("stopped", name, {"inc": a.inc})
        elif kind == "kill" and a and a.live:
            a.live = False
        elif kind == "restart" and a:
            a.live = False
            sim.connect(a, networks, fast, new=True)
        elif kind == "reconnect" and a and a.live:
            sim.to_agents = deque(m for m in sim.to_agents if m[1] != name)  # its queue was new
            sim.connect(a, a.networks, a.fast, new=False)
        elif kind == "forge":  # anyone may publish a ready naming anyone
            sim.publish("ready", name, {"inc": "forged"})
        elif kind == "takeover":
            sim.to_router.clear()  # the new router's queue is new
            sim.apply(sim.session.up(sim.new_id(), sim.now))
        elif kind == "deliver":
            for _ in range(3):
                sim.step()
        elif kind == "settle":
            sim.settle()
            sim.check_settled()
    sim.settle()
    sim.check_settled()
