"""One router process for several sessions (`agent router` given URLs of several vhosts).

Real broker, two vhosts, agents with their TUNs in namespaces, real ping.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Proc, Session, fresh_vhost, needs_root, ping

pytestmark = [pytest.mark.e2e, needs_root]


@pytest.fixture
def vhost2(vhost: str) -> Iterator[str]:
    """A second fresh vhost (the `vhost` fixture makes the first)."""
    with fresh_vhost() as url:
        yield url


def _vhost(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_one_router_routes_two_sessions(
    session: Session, vhost2: str, netns: Callable[[], str], procs: Callable[..., Proc]
) -> None:
    """Each session's agents reach each other through the one router; its log and its
    counters say which session; SIGTERM ends it cleanly."""
    other = Session(vhost2, netns, procs)
    a, b = _vhost(session.url), _vhost(vhost2)
    router = procs("router", "--url", session.url, "--url", vhost2, "-v", label="router")
    assert router.wait_log(f"routing 2 sessions: {a}, {b}"), router.output
    assert router.wait_log(rf"\[{a}\] active on .* announced as packetrouting"), router.output
    assert router.wait_log(rf"\[{b}\] active on .* announced as packetrouting"), router.output
    for s in (session, other):
        s.router = router
        s.start_agent("agent_1")
        s.start_agent("agent_2")
    for label in (a, b):
        for name in ("agent_1", "agent_2"):
            assert router.wait_log(rf"\[{label}\] learned {name}\b", 10), router.output

    assert ping(session.ns["agent_1"], "bbbb::2", count=3)
    assert ping(other.ns["agent_2"], "bbbb::1", count=3)
    assert ping(other.ns["agent_1"], "10.2.0.2", count=2, version=4)
    # the -v packet lines name the session too
    assert re.search(rf"\[{b}\] agent_2 > agent_1  IPv6 bbbb::2 > bbbb::1 ICMPv6 Echo Request",
                     router.output), router.output

    before = router.output.count("status:")
    router.send(signal.SIGUSR1)
    assert router.wait_log(rf"\[{b}\] status:.*", 5)
    status = [ln for ln in router.output.splitlines() if "status:" in ln][before:]
    assert any(f"[{a}] status:" in ln for ln in status), status

    code, _ = router.stop(signal.SIGTERM)
    assert code == 0, router.output
    out = router.output
    assert f"[{a}] counters:" in out and f"[{b}] counters:" in out, out
    assert "Traceback" not in out


def test_a_refused_session_ends_the_router_with_one_line(
    vhost: str, vhost2: str, procs: Callable[..., Proc]
) -> None:
    """A wrong password for one of the sessions: exit 1, one line naming that session,
    the password nowhere."""
    bad = vhost2.replace("guest:guest@", "guest:s3cret-Pw@")
    router = procs("router", "--url", vhost, "--url", bad, label="router")
    assert router.wait(30) == 1, router.output
    out = router.output
    errors = [ln for ln in out.splitlines() if " ERROR" in ln]
    assert len(errors) == 1 and f"session {_vhost(vhost2)}:" in errors[0], out
    assert "s3cret-Pw" not in out and "Traceback" not in out
