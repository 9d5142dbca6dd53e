"""The cost of a cluster, and the failover silences, on a 3-node test cluster.

    sudo PYTHONPATH=. .venv/bin/python -m bench.cluster [--seconds 10] [--count 300] [--json F]

Starts a throw-away 3-node RabbitMQ cluster beside the main broker (tests/tools/cluster.py,
ports 5681-5683), then:
1. "one node": router, agent_1 and agent_2 all on node 1; "different nodes": agent_1 on
   node 1, agent_2 on node 2, the router on node 3 (every packet crosses the cluster's
   links twice). For each: ping -c COUNT -i 0.01 (p50/p99) and iperf3 TCP for SECONDS.
2. With a standby router and a ping at 10/s from agent_1 to agent_2: agent_1's node
   stop_app, the active router SIGKILL, agent_2's node kill -9, the active router's node
   SIGSTOP/SIGCONT; the longest ping silence after each.
Prints both tables (and writes JSON with --json). Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Proc,
    Stack,
    check,
    fmt,
    iperf3,
    log,
    make_netns,
    ping,
    ping_once,
    run_cleanly,
    table,
)
from bench.tunnel import loadavg, project_version
from tests.tools.cluster import Cluster, Node, PingLog

PY = [sys.executable, "-m", "agent"]
NODE_RX = re.compile(r"(?:active on|reconnected to|connected to node|connected to) "
                     r"127\.0\.0\.1:(\d+)")


def urls(cluster: Cluster, vhost: str, first: int) -> str:
    u = cluster.urls(vhost)
    return ";".join(u[first:] + u[:first])


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def start_session(stack: Stack, logdir: Path, cluster: Cluster, vhost: str, tag: str,
                  router_node: int, agent_nodes: tuple[int, int],
                  standby_node: int | None = None) -> dict[str, Proc]:
    procs = {"router": Proc(stack, f"{tag}-router",
                            PY + ["router", "--url", urls(cluster, vhost, router_node)], logdir)}
    wait(lambda: "announced as" in procs["router"].text(), 60, "the router")
    if standby_node is not None:
        procs["standby"] = Proc(stack, f"{tag}-standby",
                                PY + ["router", "--url", urls(cluster, vhost, standby_node)],
                                logdir)
        wait(lambda: "standing by" in procs["standby"].text(), 60, "the standby router")
    for name, node in zip(("agent_1", "agent_2"), agent_nodes, strict=True):
        ns = make_netns(stack, f"cl{tag[:3]}{name[-1]}{int(time.time()) % 10000}")
        procs[name] = Proc(stack, f"{tag}-{name}", PY + [
            "connect", "--name", name, "--netns", ns, "--url", urls(cluster, vhost, node)],
            logdir)
        procs[name].ns = ns  # type: ignore[attr-defined]
    wait(lambda: all("learned agent_" + i in procs["router"].text() for i in "12"), 60,
         "the router to learn both agents")
    wait(lambda: ping_once(procs["agent_1"].ns, "bbbb::2"), 30, "a first ping")  # type: ignore[attr-defined]
    return procs


def stop_all(procs: dict[str, Proc]) -> None:
    for p in procs.values():
        p.stop()


def node_of(proc: Proc, cluster: Cluster) -> Node:
    port = int(NODE_RX.findall(proc.text())[-1])
    return next(n for n in cluster.nodes if n.port == port)


def placement_rows(stack: Stack, logdir: Path, cluster: Cluster, vhost: str,
                   seconds: float, count: int, rounds: int) -> list[dict[str, Any]]:
    """Both placements up side by side (a vhost each), measured in alternating order."""
    sessions = {}
    for label, tag, router_node, agents in (("one node", "one", 0, (0, 0)),
                                            ("different nodes", "dif", 2, (0, 1))):
        vh = f"{vhost}{tag}"
        cluster.add_vhost(vh)
        stack.push(f"delete vhost {vh}", lambda vh=vh: cluster.delete_vhost(vh))
        sessions[label] = start_session(stack, logdir, cluster, vh, tag, router_node, agents)
    results: dict[str, dict[str, list[Any]]] = {k: {"ping": [], "tcp": []} for k in sessions}
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for label in order:
            procs = sessions[label]
            log(f"round {r + 1}/{rounds}: {label}")
            ns1, ns2 = procs["agent_1"].ns, procs["agent_2"].ns  # type: ignore[attr-defined]
            results[label]["ping"].append(ping(ns1, "bbbb::2", count, 0.01))
            results[label]["tcp"].append(iperf3(logdir, ns2, ns1, "bbbb::2", seconds))
    for procs in sessions.values():
        stop_all(procs)
    rows = []
    for label, res in results.items():
        def med(key: str, field: str, res: dict[str, list[Any]] = res) -> float | None:
            values = [x[field] for x in res[key] if x.get(field) is not None]
            return statistics.median(values) if values else None

        rows.append({"placement": label, "rounds": res, "p50_ms": med("ping", "p50_ms"),
                     "p99_ms": med("ping", "p99_ms"), "loss_pct": med("ping", "loss_pct"),
                     "tcp_mbit_per_s": med("tcp", "mbit_per_s"),
                     "tcp_each": [t.get("mbit_per_s") for t in res["tcp"]]})
    return rows


def failover_rows(stack: Stack, logdir: Path, cluster: Cluster, vhost: str) -> list[Any]:
    n1, n2, n3 = cluster.nodes
    procs = start_session(stack, logdir, cluster, vhost, "fail", 2, (0, 1), standby_node=0)
    pinger = PingLog(procs["agent_1"].ns, "bbbb::2", logdir / "failover-ping.log")  # type: ignore[attr-defined]
    stack.push("stop ping", pinger.stop)
    rows: list[Any] = []

    def fault(label: str, do: Any, restore: Any, budget: float) -> None:
        log(f"fault: {label}")
        start = time.time()
        do()
        wait(lambda: time.time() - start > 2 and pinger.flowing_since(start), budget + 15,
             f"the ping after {label}")
        time.sleep(1)
        restore()
        wait(lambda: pinger.flowing_since(time.time() - 0.5), 60, f"the ping after {label}")
        time.sleep(2)
        rows.append([label, pinger.longest_silence(start, time.time())])

    wait(lambda: pinger.flowing_since(0), 15, "the 10/s ping")
    fault("stop_app (agent_1's node)", lambda: n1.ctl("stop_app"),
          lambda: (n1.ctl("start_app"), n1.await_startup()), 5)
    routers = [procs["router"], procs["standby"]]
    fault("SIGKILL the active router", lambda: routers[0].stop(signal.SIGKILL),
          lambda: routers.append(Proc(stack, "fail-standby2",
                                      PY + ["router", "--url", urls(cluster, vhost, 2)],
                                      logdir)), 5)
    victim = node_of(procs["agent_2"], cluster)
    fault("kill -9 (agent_2's node)", lambda: victim.signal(signal.SIGKILL),
          lambda: cluster.restore(victim), 5)
    active = [r for r in routers if r.alive()
              and re.findall(r"(active on|standing by|lost the broker)", r.text())[-1:]
              == ["active on"]]
    frozen = node_of(active[0], cluster)
    fault("SIGSTOP (the active router's node)", lambda: frozen.signal(signal.SIGSTOP),
          lambda: cluster.restore(frozen), 20)
    pinger.stop()
    if pinger.dups():
        rows.append(["DUPLICATE REPLIES", pinger.dups()])
    stop_all(procs)
    for r in routers:
        r.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="iperf3 TCP duration")
    ap.add_argument("--count", type=int, default=300, help="pings at 10 ms per placement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per placement")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--logs", help="keep the process logs in this directory")
    args = ap.parse_args()

    def body(stack: Stack, logdir: Path) -> dict[str, Any]:
        cc = check(["sysctl", "-n", "net.ipv4.tcp_congestion_control"]).strip()
        cluster = Cluster()
        stack.push("stop the test cluster", cluster.stop)
        t0 = time.monotonic()
        cluster.start()
        log(f"cluster up in {time.monotonic() - t0:.0f} s")
        vhost = f"bench{cluster.run}"
        cluster.add_vhost(vhost)
        stack.push("delete the vhost", lambda: cluster.delete_vhost(vhost))
        placement = placement_rows(stack, logdir, cluster, vhost, args.seconds, args.count,
                                   args.rounds)
        failover = failover_rows(stack, logdir, cluster, vhost)
        return {"congestion_control": cc, "placement": placement, "failover": failover,
                "version": project_version(), "loadavg": loadavg()}

    code, result = run_cleanly(args.logs, "bench-cluster-", body)
    if result is None:
        return code
    print(f"agent {result['version']}; TCP congestion control {result['congestion_control']}; "
          f"load average at the end {result['loadavg']}")
    print(f"medians of {args.rounds} alternating rounds: ping -c {args.count} -i 0.01, "
          f"iperf3 TCP {args.seconds:g} s")
    print(table(["placement", "ping p50 ms", "ping p99 ms", "loss %", "TCP Mbit/s",
                 "TCP each round"], [
        [r["placement"], r["p50_ms"], r["p99_ms"], r["loss_pct"], r["tcp_mbit_per_s"],
         " ".join(fmt(x) for x in r["tcp_each"])] for r in result["placement"]]))
    print()
    print(table(["fault (ping at 10/s)", "longest ping silence s"],
                result["failover"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
