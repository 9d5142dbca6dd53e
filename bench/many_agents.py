"""Many agents in one session: start-up time, reachability right after start, announcements.

    sudo .venv/bin/python -m bench.many_agents [--agents 64] [--old-tree DIR] [--echoes 3000]
        [--logs DIR]

A vhost, `agent router`, then N agents (`agent_1`..`agent_N`, each TUN in a namespace of
its own) started at once. Reported: seconds until every agent logged "published ready",
then agent_1 pings every agent and every agent pings agent_1 (2 echoes each, 16 at a
time; the first pings after start-up), the control messages seen on the bus while they
joined (ready, tun.started, counted by a listener of our own), the router's "learned"
lines, RSS, the machine's idle share (/proc/stat) while they started, and the router's
CPU per packet while agent_1 pings agent_2 every millisecond (compare with --agents 2).
--old-tree DIR runs the agent code in DIR instead (to compare with an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pika

from bench.common import (
    Proc,
    Stack,
    cpu_seconds,
    log,
    make_netns,
    make_vhost,
    netns_exec,
    request_status,
    rss_kb,
    run,
    run_cleanly,
)
from bench.rig import packet_count
from bench.sessions import agent_command, cpu_times, idle_pct, loadavg


def pings(jobs: list[tuple[str, str]], parallel: int = 16) -> list[tuple[str, str]]:
    failed = []
    for i in range(0, len(jobs), parallel):
        chunk = jobs[i : i + parallel]
        procs = [
            subprocess.Popen(
                ["ip", "netns", "exec", ns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "3", dst],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for ns, dst in chunk
        ]
        for job, p in zip(chunk, procs, strict=True):
            if p.wait(timeout=30) != 0:
                failed.append(job)
    return failed


def router_cost(router: Proc, ns: str, dst: str, echoes: int) -> dict[str, Any]:
    """The router's CPU per packet while agent_1 pings agent_2 (-i 1 ms, `echoes` times)."""
    s0, c0 = request_status(router), cpu_seconds(router.pid)
    run(netns_exec(ns, "ping", "-6", "-q", "-c", str(echoes), "-i", "0.001", "-W", "1", dst),
        timeout=echoes * 0.01 + 30)
    time.sleep(0.5)
    s1, c1 = request_status(router), cpu_seconds(router.pid)
    if None in (s0, s1, c0, c1):
        return {"error": "no status or CPU time from the router"}
    packets = packet_count("router", s1) - packet_count("router", s0)  # type: ignore[arg-type]
    return {
        "packets": packets,
        "router_cpu_us_per_packet":
            round((c1 - c0) * 1e6 / packets, 1) if packets else None,  # type: ignore[operator]
    }


def bench(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    n = args.agents
    tag = f"s12m{os.getpid() % 100000}"
    url = make_vhost(stack, tag)
    py = agent_command(args.old_tree)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    stack.push("close listener", conn.close)
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    for key in ("testingtool.component.ready", "fromAgent.*.ip.tun.started"):
        ch.queue_bind(queue, "amq.topic", routing_key=key)
    spaces = [make_netns(stack, f"{tag}x{i}") for i in range(1, n + 1)]
    router = Proc(stack, "router", py + ["router", "--url", url], logdir)
    while "announced as packetrouting" not in router.text():
        time.sleep(0.1)
    cpu0, t0 = cpu_times(), time.monotonic()
    agents = [
        Proc(stack, f"agent_{i}",
             py + ["connect", "--url", url, "--name", f"agent_{i}", "--netns", spaces[i - 1]],
             logdir)
        for i in range(1, n + 1)
    ]
    waiting = set(range(n))
    while waiting and time.monotonic() - t0 < 120:
        waiting = {i for i in waiting if "published ready" not in agents[i].text()}
        time.sleep(0.1)
    up_s = time.monotonic() - t0
    idle = idle_pct(cpu0, cpu_times())
    log(f"{n - len(waiting)}/{n} agents up in {up_s:.1f} s (machine idle {idle:.0f} %)")
    jobs = [(spaces[0], f"bbbb::{i}") for i in range(2, n + 1)]
    jobs += [(spaces[i - 1], "bbbb::1") for i in range(2, n + 1)]
    t1 = time.monotonic()
    failed = pings(jobs)
    ping_s = time.monotonic() - t1
    time.sleep(2)
    cost = router_cost(router, spaces[0], "bbbb::2", args.echoes) if args.echoes else None
    kinds: Counter[str] = Counter()
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        if method.routing_key.endswith("tun.started"):
            kinds["tun.started"] += 1
        else:
            kinds["router ready" if b'"packetrouting"' in body else "agent ready"] += 1
    rss = sorted(kb // 1024 for a in agents if (kb := rss_kb(a.pid)))
    rkb = rss_kb(router.pid)
    return {
        "agents": n,
        "code": args.old_tree or "this checkout",
        "up": n - len(waiting),
        "up_seconds": round(up_s, 1),
        "machine_idle_pct_while_starting": round(idle, 1) if idle is not None else None,
        "loadavg": loadavg(),
        "pings": len(jobs),
        "failed_pings": len(failed),
        "agent_1_unreached": sorted(d for ns, d in failed if ns == spaces[0]),
        "not_reaching_agent_1": sorted(ns for ns, d in failed if ns != spaces[0]),
        "ping_seconds": round(ping_s, 1),
        "control_messages": dict(kinds),
        "control_messages_total": sum(kinds.values()),
        "router_learned_lines": router.text().count("learned "),
        "rss_mib_agents_min_median_max": [rss[0], rss[len(rss) // 2], rss[-1]] if rss else None,
        "rss_mib_router": rkb // 1024 if rkb else None,
        "router_cost_agent_1_to_agent_2": cost,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=64)
    ap.add_argument("--old-tree", help="run the agent code in this directory instead")
    ap.add_argument("--echoes", type=int, default=3000,
                    help="after start-up, agent_1 pings agent_2 this often (1 ms apart) to "
                    "measure the router's CPU per packet (0: skip)")
    ap.add_argument("--logs", help="keep the processes' logs in this directory")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.many_agents: needs root (TUN, namespaces)", file=sys.stderr)
        return 2
    if not 2 <= args.agents <= 250:
        print("bench.many_agents: --agents must be 2..250", file=sys.stderr)
        return 2
    code, result = run_cleanly(args.logs, "bench-many-", lambda s, d: bench(args, s, d))
    if result is not None:
        print(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
