"""A session on a 3-node RabbitMQ cluster survives the loss of a node or of its router.

A ping at 10/s runs between two agents on different nodes while, in turn: agent_1's node
is stopped (stop_app), the active router is killed (a standby present), agent_2's node's
Erlang VM is killed with kill -9, and a node is frozen (SIGSTOP, then SIGCONT). The
longest silence of the ping after each fault is measured; no reply may come twice.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, RUN_ID, Proc, needs_root
from tests.tools.cluster import Cluster, ClusterError, Node, PingLog

pytestmark = [pytest.mark.e2e, needs_root]

_NODE_RX = re.compile(r"(?:active on|reconnected to|connected to node|connected to|standing by on)"
                      r" 127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Three RabbitMQ nodes on 5681-5683 for this run; stopped and removed afterwards."""
    if shutil.which("rabbitmq-server") is None or shutil.which("runuser") is None:
        pytest.skip("rabbitmq-server or runuser missing")
    base = int(os.environ.get("AGENT_CLUSTER_PORT", "5681"))  # another cluster runs? move
    c = Cluster(ports=(base, base + 1, base + 2))
    try:
        try:
            c.start()
        except (ClusterError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"test cluster did not start: {exc}")
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_vhost(cluster: Cluster) -> Iterator[str]:
    name = f"cl{RUN_ID}{int(time.time()) % 100000}"
    cluster.add_vhost(name)
    try:
        yield name
    finally:
        cluster.delete_vhost(name)


def url_list(cluster: Cluster, vhost: str, first: int) -> str:
    """The cluster's URLs as one ';' list, starting with node `first`."""
    urls = cluster.urls(vhost)
    return ";".join(urls[first:] + urls[:first])


def node_of(proc: Proc, cluster: Cluster) -> Node:
    """The node a process last said it reached."""
    ports = _NODE_RX.findall(proc.output)
    assert ports, proc.output
    return next(n for n in cluster.nodes if n.port == int(ports[-1]))


def wait(cond: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def test_failover_on_node_and_router_faults(  # type: ignore[no-untyped-def]
    cluster: Cluster, cluster_vhost: str, netns, procs, tmp_path: Path
) -> None:
    vh = cluster_vhost
    n1, n2, n3 = cluster.nodes
    routers = [procs("router", "--url", url_list(cluster, vh, 2), label="routerA")]
    assert routers[0].wait_log("announced as packetrouting", 30), routers[0].output
    routers.append(procs("router", "--url", url_list(cluster, vh, 0), label="routerB"))
    assert routers[1].wait_log("standing by", 30), routers[1].output
    ns = {}
    agents = {}
    for i, name in enumerate(("agent_1", "agent_2")):
        ns[name] = netns()
        agents[name] = procs("connect", "--url", url_list(cluster, vh, i), "--name", name,
                             "--netns", ns[name], label=name)
    for name, proc in agents.items():
        assert proc.wait_log("published ready", 30), proc.output
        assert routers[0].wait_log(f"learned {name}\\b", 15), routers[0].output
    assert node_of(agents["agent_1"], cluster) is n1
    assert node_of(agents["agent_2"], cluster) is n2
    pinger = PingLog(ns["agent_1"], "bbbb::2", tmp_path / "ping.log")
    silences: dict[str, float] = {}
    try:
        assert wait(lambda: pinger.flowing_since(0), 15), pinger.path.read_text()

        def fault(label: str, do: Callable[[], None], restore: Callable[[], None],
                  budget: float) -> None:
            start = time.time()
            do()
            recovered = wait(
                lambda: time.time() - start > 2 and pinger.flowing_since(start), budget + 10
            )
            # ten replies in the state the fault left (a second at 10/s), then restore
            # (not asserted here: `recovered` is, after the restore)
            settled = time.time()
            wait(lambda: pinger.count_since(settled) >= 10, 10)
            restored = time.time()
            restore()
            assert wait(lambda: pinger.flowing_since(time.time() - 0.5), 30), label
            # twenty replies after the restore: the measured window includes its effects
            assert wait(lambda: pinger.count_since(restored) >= 20, 30), label
            silences[label] = pinger.longest_silence(start, time.time())
            assert recovered, f"{label}: ping did not come back"

        # 1. agent_1's node stopped (its connections closed): agent_1 and router B move on
        fault("stop_app agent_1's node", lambda: n1.ctl("stop_app"),
              lambda: (n1.ctl("start_app"), n1.await_startup()), 5)
        assert node_of(agents["agent_1"], cluster) is not n1

        # 2. the active router killed: the standby takes over; a new standby joins
        def kill_router() -> None:
            routers[0].send(signal.SIGKILL)

        def new_standby() -> None:
            assert routers[1].wait_log("active on", 5), routers[1].output
            routers.append(procs("router", "--url", url_list(cluster, vh, 2), label="routerC"))
            assert routers[2].wait_log("standing by", 30), routers[2].output

        fault("SIGKILL active router", kill_router, new_standby, 5)

        # 3. agent_2's node's Erlang VM killed (kill -9 by its PID)
        victim = node_of(agents["agent_2"], cluster)
        pid = victim.beam_pid()
        assert pid and Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam")
        fault("kill -9 agent_2's node", lambda: victim.signal(signal.SIGKILL),
              lambda: cluster.restore(victim), 5)

        # 4. the active router's node frozen, then resumed
        active = next(r for r in routers if r.running() and _is_active(r))
        frozen = node_of(active, cluster)
        fault("SIGSTOP active router's node", lambda: frozen.signal(signal.SIGSTOP),
              lambda: cluster.restore(frozen), 20)
        assert wait(lambda: _running_nodes(cluster) == 3, 60), "cluster did not heal"
        healed = time.time()
        assert wait(lambda: pinger.flowing_since(time.time() - 0.5), 30)
        assert wait(lambda: pinger.count_since(healed) >= 20, 30)
    finally:
        pinger.stop()
        print("longest ping silence after each fault:")
        for label, gap in silences.items():
            print(f"  {label:32s} {gap:5.1f} s")
    assert pinger.dups() == 0, "duplicate replies (two routers active?)"
    for label, gap in silences.items():
        assert gap < (20 if "SIGSTOP" in label else 5), (label, gap, silences)
    live = [r for r in routers if r.running()]
    assert sum(_is_active(r) for r in live) == 1, [r.output for r in live]
    # everything stops; nothing stays in the vhost on any node
    for proc in [*agents.values(), *live]:
        code, _ = proc.stop(signal.SIGINT, timeout=10)
        assert code == 0, proc.output
    assert wait(lambda: not any(cluster.queues(vh).values()), 10), cluster.queues(vh)


def _is_active(router: Proc) -> bool:
    """The router's last role line says active (takeover or first connection)."""
    roles = re.findall(r"(active on|standing by|lost the broker)", router.output)
    return bool(roles) and roles[-1] == "active on"


def _running_nodes(cluster: Cluster) -> int:
    import json

    try:
        text = cluster.nodes[0].ctl("cluster_status", "--formatter", "json", timeout=30)
        status = json.loads(text)
    except (ClusterError, ValueError, subprocess.TimeoutExpired):
        return 0
    return 0 if status.get("partitions") else len(status.get("running_nodes", []))


def test_agent_node_failover_is_a_new_incarnation_that_converges(  # type: ignore[no-untyped-def]
    cluster: Cluster, cluster_vhost: str, netns, procs
) -> None:
    """agent_1's node stops: agent_1 reconnects to another node, the router (on a third)
    sees a new incarnation and agent_1 reaches the network behind agent_2 within 2 s."""
    import orjson

    from tests.conftest import ns_run
    from tests.test_e2e_reroute import DEVICE6, REROUTE_ARGS, make_device_net

    vh = cluster_vhost
    n1 = cluster.nodes[0]
    router = procs("router", "--url", url_list(cluster, vh, 2), label="router")
    assert router.wait_log("announced as packetrouting", 30), router.output
    ns_a, ns_b, ns_c = netns(), netns(), netns()
    net = make_device_net(ns_b, ns_c)
    a1 = procs("connect", "--url", url_list(cluster, vh, 0), "--name", "agent_1",
               "--netns", ns_a, label="agent_1")
    a2 = procs("connect", "--url", url_list(cluster, vh, 1), "--name", "agent_2",
               "--netns", ns_b, "--re-route-if", net.veth_b, *REROUTE_ARGS, label="agent_2")
    for proc in (a1, a2):
        assert proc.wait_log("published ready", 30), proc.output

    def reaches() -> bool:
        return ns_run(ns_a, "ping", "-6", "-c", "1", "-W", "0.5", DEVICE6).returncode == 0

    def incarnation() -> str | None:
        out = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--url", url_list(cluster, vh, 2),
             "--json"], capture_output=True, text=True, timeout=30, cwd=ROOT)
        rows = {a["name"]: a for a in orjson.loads(out.stdout)["agents"]} if out.stdout else {}
        return rows.get("agent_1", {}).get("incarnation")

    assert wait(reaches, 15)
    before = incarnation()
    assert node_of(a1, cluster) is n1
    n1.ctl("stop_app")
    try:
        assert a1.wait_log("broker connection restored", 30), a1.output
        t0 = time.monotonic()
        assert wait(reaches, 5, interval=0.02)
        took = time.monotonic() - t0
        assert took <= 2.0, took
        after = incarnation()
        assert after and after != before, (before, after)
    finally:
        n1.ctl("start_app")
        n1.await_startup()
