"""The session model end to end: restarts converge within 2 s, stops and vanished agents
are seen, `agent status` shows it (issue 22).

agent_1 in namespace A; agent_2 in namespace B with a device network behind it (cccc::/64,
192.0.2.0/24 on a veth into namespace C, as in test_e2e_reroute). "Converged" is what a
user checks: the restarted agent sends the fast wire again, the networks behind the
others are routed into its TUN, and a ping through the tunnel to the device answers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.conftest import ROOT, Proc, Session, needs_root, ns_run, wait_for
from tests.test_e2e_reroute import DEVICE6, REROUTE_ARGS, make_device_net, start_agent_in

pytestmark = [pytest.mark.e2e, needs_root]

BUDGET_S = 2.0


def status(url: str, *extra: str) -> tuple[int, str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--url", url, *extra],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    return out.returncode, out.stdout, out.stderr


def agents_of(url: str) -> dict[str, dict[str, Any]]:
    code, out, err = status(url, "--json")
    assert code == 0, err
    return {a["name"]: a for a in orjson.loads(out)["agents"]}


def quick_ping(ns: str, dst: str) -> bool:
    out = ns_run(ns, "ping", "-6", "-c", "1", "-W", "0.5", dst, timeout=5)
    return out.returncode == 0


def routed(ns: str, net: str) -> bool:
    return net in ns_run(ns, "ip", "-6", "route").stdout


def converged(agent: Proc, ns: str, dst: str, net: str | None) -> float:
    """Seconds from the agent's connection to all of: fast uplink, the others' network
    routed into its TUN, a ping to dst answered (at most BUDGET_S + 3 waited)."""
    assert agent.wait_log("published ready", 15), agent.output
    t0 = time.monotonic()
    ok = wait_for(
        lambda: "uplink wire: fast" in agent.output
        and (net is None or routed(ns, net))
        and quick_ping(ns, dst),
        BUDGET_S + 3,
        interval=0.02,
    )
    took = time.monotonic() - t0
    assert ok, (took, agent.output[-2000:])
    print(f"{agent.label} converged in {took:.2f} s")  # shown with -s (docs/operating.md)
    return took


@pytest.fixture
def device_session(
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc]
) -> tuple[Session, str, str]:
    """Router, agent_1 in A, agent_2 in B with the device network behind it: (session, A, B)."""
    ns_b, ns_c = netns(), netns()
    net = make_device_net(ns_b, ns_c)
    session.start_router()
    session.start_agent("agent_1")
    start_agent_in(session, procs, "agent_2", ns_b, "--re-route-if", net.veth_b, *REROUTE_ARGS)
    assert session.learned("agent_1", "agent_2")
    ns_a = session.ns["agent_1"]
    assert wait_for(lambda: routed(ns_a, "cccc::/64") and quick_ping(ns_a, DEVICE6), 10)
    return session, ns_a, ns_b


def restart(
    session: Session, procs: Callable[..., Proc], name: str, sig: int, *extra: str
) -> Proc:
    """Stop the agent (SIGINT: cleanly; SIGKILL: it vanishes) and start it again under its
    name in its namespace, while the router keeps running."""
    old = session.agents[name]
    old.stop(sig)
    return start_agent_in(session, procs, name, session.ns[name], *extra, wait=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["stopped", "killed"])
def test_agent_restarted_under_its_name_converges(
    device_session: tuple[Session, str, str], procs: Callable[..., Proc], sig: int
) -> None:
    session, ns_a, _ = device_session
    before = agents_of(session.url)["agent_1"]
    new = restart(session, procs, "agent_1", sig)
    took = converged(new, ns_a, DEVICE6, "cccc::/64")
    assert took <= BUDGET_S, took
    now = agents_of(session.url)["agent_1"]
    assert now["incarnation"] != before["incarnation"] and now["wire"] == "fast"
    assert now["since_s"] < before["since_s"] + 1  # counted from the new connection
    assert "Traceback" not in new.output + session.router.output  # type: ignore[union-attr]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["stopped", "killed"])
def test_agent_with_a_network_behind_it_restarted(
    device_session: tuple[Session, str, str], procs: Callable[..., Proc], sig: int
) -> None:
    """The others reach the network behind agent_2 again once it is back."""
    session, ns_a, _ = device_session
    a2 = session.agents["agent_2"]
    veth = a2.args[a2.args.index("--re-route-if") + 1]
    new = restart(session, procs, "agent_2", sig, "--re-route-if", veth, *REROUTE_ARGS)
    assert new.wait_log("published ready", 15), new.output
    t0 = time.monotonic()
    assert wait_for(lambda: quick_ping(ns_a, DEVICE6), BUDGET_S + 3, interval=0.02)
    took = time.monotonic() - t0
    assert took <= BUDGET_S, took
    row = agents_of(session.url)["agent_2"]
    assert row["networks"] == ["cccc::/64", "192.0.2.0/24"] and "cccc::2" not in row["addresses"]


def test_clean_stop_seen_at_once_and_a_vanished_agent_within_30s(
    device_session: tuple[Session, str, str],
) -> None:
    session, _, _ = device_session
    assert set(agents_of(session.url)) == {"agent_1", "agent_2"}
    session.agents["agent_1"].stop(signal.SIGINT)
    t0 = time.monotonic()
    assert wait_for(lambda: "agent_1" not in agents_of(session.url), 1.0), "stop not seen"
    session.agents["agent_2"].stop(signal.SIGKILL)
    assert wait_for(lambda: "agent_2" not in agents_of(session.url), 30, interval=0.5)
    took = time.monotonic() - t0
    assert took <= 30, took
    router = session.router
    assert router is not None and router.wait_log(r"agent_2 is gone", 1), router.output


def test_router_takeover_then_restarts_in_a_row(
    device_session: tuple[Session, str, str], procs: Callable[..., Proc]
) -> None:
    """A standby takes over from a router that vanished; then agent_1, agent_2 and the
    router restart one after the other: each converges within 2 s."""
    session, ns_a, ns_b = device_session
    first = session.router
    assert first is not None
    standby = procs("router", "--url", session.url, label="standby")
    assert standby.wait_log("standing by", 15), standby.output
    first.stop(signal.SIGKILL)
    assert standby.wait_log("announced as packetrouting", 10), standby.output
    t0 = time.monotonic()
    assert wait_for(lambda: quick_ping(ns_a, DEVICE6) and quick_ping(ns_b, "bbbb::1"),
                    BUDGET_S + 3, interval=0.02)
    assert time.monotonic() - t0 <= BUDGET_S
    assert wait_for(lambda: set(agents_of(session.url)) == {"agent_1", "agent_2"}, BUDGET_S)

    new1 = restart(session, procs, "agent_1", signal.SIGKILL)
    assert converged(new1, ns_a, DEVICE6, "cccc::/64") <= BUDGET_S
    a2 = session.agents["agent_2"]
    veth = a2.args[a2.args.index("--re-route-if") + 1]
    new2 = restart(session, procs, "agent_2", signal.SIGINT, "--re-route-if", veth,
                   *REROUTE_ARGS)
    assert new2.wait_log("published ready", 15), new2.output
    t0 = time.monotonic()
    assert wait_for(lambda: quick_ping(ns_a, DEVICE6), BUDGET_S + 3, interval=0.02)
    assert time.monotonic() - t0 <= BUDGET_S

    standby.stop(signal.SIGINT)
    third = procs("router", "--url", session.url, label="router3")
    assert third.wait_log("announced as packetrouting", 15), third.output
    t0 = time.monotonic()
    assert wait_for(lambda: quick_ping(ns_a, DEVICE6) and quick_ping(ns_b, "bbbb::1"),
                    BUDGET_S + 3, interval=0.02)
    assert time.monotonic() - t0 <= BUDGET_S
    rows = agents_of(session.url)
    assert {r["wire"] for r in rows.values()} == {"fast"}, rows
    assert rows["agent_2"]["networks"] == ["cccc::/64", "192.0.2.0/24"]
