"""End to end: `agent connect` as user nobody holding CAP_NET_ADMIN (ambient) and nothing
else, as a systemd unit with AmbientCapabilities=CAP_NET_ADMIN runs it (docs/services.md).

The agent runs from a world-readable copy of itself (the `unprivileged` fixture), so the
checkout may sit where nobody cannot enter. It is started inside its namespace with
`ip netns exec` (entering one with --netns would need CAP_SYS_ADMIN as well).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.tun.caps import CAP_NET_ADMIN, parse_cap_eff
from tests.conftest import (
    NOBODY,
    Proc,
    Session,
    Unprivileged,
    needs_broker,
    needs_root,
    ns_run,
    ping,
    tun_links,
)
from tests.test_cli_errors import assert_one_line_error
from tests.tools.nsforward import NsForward

pytestmark = [
    pytest.mark.e2e,
    needs_root,
    needs_broker,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux)"),
]

TUN_DEVICE = "/dev/net/tun"
# where nothing answers: the checks under test come before any connection
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


def setpriv(*caps: str) -> list[str]:
    """Become nobody (no supplementary groups) keeping only `caps`, ambient: what
    `User=nobody` + `AmbientCapabilities=` does in a unit."""
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if caps:
        plus = ",".join(f"+{c}" for c in caps)
        argv += [f"--inh-caps=-all,{plus}", f"--ambient-caps={plus}"]
    else:
        argv += ["--inh-caps=-all"]
    return argv


@pytest.fixture
def tun_open_to_all() -> Iterator[None]:
    """/dev/net/tun mode 0666 (as Debian, Ubuntu and Fedora ship it; some hosts have
    0600) for the test's duration; its mode is restored afterwards."""
    before = stat.S_IMODE(os.stat(TUN_DEVICE).st_mode)
    os.chmod(TUN_DEVICE, 0o666)  # noqa: S103  (the distributions' own mode)
    try:
        yield
    finally:
        os.chmod(TUN_DEVICE, before)


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


def test_agent_as_nobody_with_net_admin_pings_both_ways(
    session: Session, netns: Callable[[], str], procs: Callable[..., Proc],
    unprivileged: Unprivileged, tun_open_to_all: None, request: pytest.FixtureRequest,
) -> None:
    session.start_router()
    session.start_agent("agent_2")  # as root, as before
    ns = netns()
    forward = NsForward(ns, 5672)  # the broker on the host's loopback, from inside ns
    request.addfinalizer(forward.close)
    args = ["connect", "--name", "agent_1", "--url", session.url]
    agent = procs(
        *args, label="agent_1",
        argv=["ip", "netns", "exec", ns, *setpriv("net_admin"), *unprivileged.argv(*args)],
        env=unprivileged.env(), cwd=unprivileged.lib.parent,
    )
    assert agent.wait_log("published ready"), agent.output
    assert session.learned("agent_1", "agent_2")

    # it is nobody, with CAP_NET_ADMIN and nothing else (`ip netns exec` and setpriv exec)
    status = _status(agent.pid)
    assert status["Uid"].split() == [str(NOBODY)] * 4, status["Uid"]
    assert status["Groups"].strip() == "", status["Groups"]
    assert parse_cap_eff(f"CapEff:\t{status['CapEff']}") == 1 << CAP_NET_ADMIN, status

    tuns = tun_links(ns)
    assert len(tuns) == 1, tuns
    # the per-TUN settings it writes (security.md) are written as nobody too
    for path, value in ((f"ipv4/conf/{tuns[0]}/send_redirects", "0"),
                        (f"ipv6/conf/{tuns[0]}/router_solicitations", "0")):
        assert ns_run(ns, "cat", f"/proc/sys/net/{path}").stdout.strip() == value, path

    peer_ns = session.ns["agent_2"]
    assert ping(ns, "bbbb::2", version=6)
    assert ping(peer_ns, "bbbb::1", version=6)
    assert ping(ns, "10.2.0.2", version=4)
    assert ping(peer_ns, "10.2.0.1", version=4)

    code, took = agent.stop(signal.SIGINT)
    assert code == 0, agent.output
    assert took < 2.0, f"took {took:.2f} s to stop"
    assert tun_links(ns) == []
    assert "Traceback" not in agent.output
    assert "internal error" not in agent.output


@pytest.fixture
def private_file() -> Iterator[Path]:
    """A root-owned 0600 file in a directory nobody can enter."""
    top = Path(tempfile.mkdtemp(prefix="agent-tun-"))
    path = top / "tun"
    path.write_bytes(b"")
    path.chmod(0o600)
    try:
        yield path
    finally:
        shutil.rmtree(top)


def _run(argv: list[str], unprivileged: Unprivileged) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env=unprivileged.env(), cwd=unprivileged.lib.parent)


def test_nobody_without_net_admin_is_told_what_is_missing(
    netns: Callable[[], str], unprivileged: Unprivileged, tun_open_to_all: None,
) -> None:
    ns = netns()
    out = _run(["ip", "netns", "exec", ns, *setpriv(),
                *unprivileged.argv("connect", "--name", "agent_1", "--url", NO_BROKER)],
               unprivileged)
    assert out.returncode == 1
    assert_one_line_error(out, "root or CAP_NET_ADMIN", f"uid {NOBODY}")
    assert tun_links(ns) == []


def test_netns_option_needs_sys_admin(
    netns: Callable[[], str], unprivileged: Unprivileged, tun_open_to_all: None,
) -> None:
    ns = netns()
    out = _run([*setpriv("net_admin"), *unprivileged.argv(
        "connect", "--name", "agent_1", "--url", NO_BROKER, "--netns", ns)], unprivileged)
    assert out.returncode == 1
    assert_one_line_error(out, "--netns", "CAP_SYS_ADMIN", f"ip netns exec {ns}")
    assert tun_links(ns) == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
def test_tun_device_not_accessible(
    netns: Callable[[], str], unprivileged: Unprivileged, private_file: Path,
) -> None:
    """/dev/net/tun mode 0600 (shown by a private mount of a 0600 file over it, whatever
    the host's mode): the error names the device, its mode and what to do."""
    ns = netns()
    over = ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /dev/net/tun && exec "$@"', str(private_file)]
    out = _run(["ip", "netns", "exec", ns, *over, *setpriv("net_admin"),
                *unprivileged.argv("connect", "--name", "agent_1", "--url", NO_BROKER)],
               unprivileged)
    assert out.returncode == 1
    assert_one_line_error(out, TUN_DEVICE, "mode 0600", f"uid {NOBODY}", "0666")
    assert tun_links(ns) == []


def test_reroute_if_needs_net_raw_too(
    netns: Callable[[], str], unprivileged: Unprivileged, tun_open_to_all: None,
) -> None:
    """--re-route-if opens packet sockets: CAP_NET_RAW is named when missing; with it the
    interface and the TUN come up as nobody (what fails then is the absent broker)."""
    ns = netns()
    args = unprivileged.argv("connect", "--name", "agent_1", "--url", NO_BROKER,
                             "--re-route-if", "lo", "--re-route-prefix", "cccc")
    out = _run(["ip", "netns", "exec", ns, *setpriv("net_admin"), *args], unprivileged)
    assert out.returncode == 1
    assert_one_line_error(out, "--re-route-if", "CAP_NET_RAW")
    out = _run(["ip", "netns", "exec", ns, *setpriv("net_admin", "net_raw"), *args],
               unprivileged)
    assert_one_line_error(out, "cannot reach broker")
    assert "re-route interface lo: cccc::/64 leave by it" in out.stderr, out.stderr
    assert "TUN tun" in out.stderr, out.stderr  # up (and removed) before the broker failed
    assert tun_links(ns) == []


def test_summaries_as_nobody_despite_a_cache_folder_of_roots(unprivileged: Unprivileged) -> None:
    """A root run before (e.g. `sudo agent sniff` with the same HOME) leaves a root-owned
    ~/.cache/scapy; Scapy raises PermissionError at import when it cannot read it there.
    The agent's packet summaries (sniff, -v) as nobody still work, with a private cache."""
    home = Path(tempfile.mkdtemp(prefix="agent-home-"))
    try:
        cache = home / ".cache" / "scapy"
        cache.mkdir(parents=True)
        (cache / "services.pickle").write_bytes(b"")
        for folder in (home / ".cache", cache):
            folder.chmod(0o700)  # root's, as a root run makes them
        home.chmod(0o755)
        code = ("from agent.inspect.summary import summarize; "
                "print(summarize(bytes.fromhex('4500001c0000000040010000c0000201c0000202'"
                "'0800f7ff00000000')))")
        done = subprocess.run(
            [unprivileged.python, "-s", "-c", code], capture_output=True, text=True,
            timeout=60, env={**unprivileged.env(), "HOME": str(home)},
            cwd=unprivileged.lib.parent, user=NOBODY, group=NOBODY, extra_groups=[])
        assert done.returncode == 0, done.stderr
        assert "192.0.2.1 > 192.0.2.2" in done.stdout and "ICMP" in done.stdout, done.stdout
    finally:
        shutil.rmtree(home)
