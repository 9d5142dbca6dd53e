"""`agent status` latency with 2 and 64 agents; ping and TCP with --metrics on and off.

    sudo PYTHONPATH=. .venv/bin/python -m bench.status [--asks 50] [--rounds 6] [--json FILE]

Status: a router on a vhost of its own; N agents join it by their tun.started (published
by this program as our agents publish it: the router's records are the same whether a
process or a message made them), then `--asks` requests through agent.router.ask (one
connection, as `--watch` does) and one `agent status --json` command, timed whole.

A/B: two tunnels side by side (router and two agents each, agents in namespaces), one
with `--metrics` on the router and both agents and a scraper reading the three every
second, one without. `--rounds` rounds, the order alternating: in each, 50 pings at 10 ms
and a 3 s iperf3 TCP run through each tunnel. Everything made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pika

from bench.common import (
    Proc,
    Stack,
    fmt,
    iperf3,
    log,
    make_netns,
    make_vhost,
    netns_exec,
    percentile,
    ping_times,
    run,
    run_cleanly,
    table,
)
from bench.rig import ADDR_2, Tunnel
from bench.tunnel import loadavg, preflight, project_version

ARMS = ("off", "on")


def _join(url: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for i in range(1, n + 1):
        body = {"_api_version": "1.2.15", "name": f"agent_{i}", "ipv6_prefix": "bbbb",
                "ipv6_host": f"{i:x}", "ipv4_address": f"10.2.{i // 250}.{i % 250 + 1}",
                "x_agent_wire": ["batch1"], "x_agent_incarnation": f"bench{i:07d}"}
        ch.basic_publish("amq.topic", f"fromAgent.agent_{i}.ip.tun.started", orjson.dumps(body))
    conn.close()


def status_latency(stack: Stack, logdir: Path, n: int, asks: int) -> dict[str, Any]:
    from agent.bus.url import parse_urls
    from agent.router.ask import Asker

    url = make_vhost(stack, f"benchstatus{n}")
    router = Proc(stack, f"router{n}", [sys.executable, "-m", "agent", "router", "--url", url],
                  logdir)
    deadline = time.monotonic() + 30
    while "announced as packetrouting" not in router.log_path.read_text():
        if time.monotonic() > deadline or not router.alive():
            raise RuntimeError("router not up")
        time.sleep(0.05)
    _join(url, n)
    asker = Asker(parse_urls(url), "amq.topic")
    try:
        while len(asker.ask()["agents"]) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the router did not see {n} agents")
            time.sleep(0.05)
        times = []
        for _ in range(asks):
            t0 = time.perf_counter()
            answer = asker.ask()
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        asker.close()
    t0 = time.perf_counter()
    cli = run([sys.executable, "-m", "agent", "status", "--url", url, "--json"], timeout=30)
    cli_ms = (time.perf_counter() - t0) * 1000
    if cli.returncode != 0:
        raise RuntimeError(f"agent status failed: {cli.stderr}")
    router.stop()
    return {"agents": n, "answer_bytes": len(orjson.dumps(answer)), "asks": asks,
            "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
            "max_ms": max(times), "command_ms": cli_ms}


def _ports(tunnel: Tunnel) -> list[int]:
    ports = []
    for proc in tunnel.procs.values():
        m = re.search(r"metrics at http://[^:]+:(\d+)/metrics", proc.log_path.read_text())
        if m:
            ports.append(int(m.group(1)))
    return ports


def _scrape(ports: list[int], stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(1.0):
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    r.read()
                count[0] += 1
            except OSError:
                pass


def metrics_ab(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    tunnels: dict[str, Tunnel] = {}
    for i, arm in enumerate(ARMS):
        url = make_vhost(stack, f"benchmetrics{arm}")
        ns_a, ns_b = make_netns(stack, f"bm{arm}{i}a"), make_netns(stack, f"bm{arm}{i}b")
        adir = logdir / arm
        adir.mkdir()
        on = arm == "on"
        t = Tunnel(stack, url, ns_a, ns_b, adir,
                   wire_args=["--metrics", "127.0.0.1:0"] if on else [],
                   router_args=["--metrics", "127.0.0.1:0"] if on else [])
        t.start()
        tunnels[arm] = t
    ports = _ports(tunnels["on"])
    if len(ports) != 3:
        raise RuntimeError(f"expected 3 metrics ports, found {ports}")
    stop, scrapes = threading.Event(), [0]
    scraper = threading.Thread(target=_scrape, args=(ports, stop, scrapes), daemon=True)
    scraper.start()
    pings: dict[str, list[float]] = {a: [] for a in ARMS}
    tcp: dict[str, list[float]] = {a: [] for a in ARMS}
    load0 = loadavg()
    try:
        for r in range(args.rounds):
            order = ARMS if r % 2 == 0 else ARMS[::-1]
            for arm in order:
                t = tunnels[arm]
                argv = netns_exec(t.ns_a, "ping", "-6", "-n", "-c", "50", "-i", "0.01", "-W", "1",
                                  ADDR_2)
                pings[arm] += ping_times(run(argv, timeout=20).stdout)
            for arm in order:
                t = tunnels[arm]
                res = iperf3(logdir, t.ns_b, t.ns_a, ADDR_2, 3.0)
                if "mbit_per_s" in res:
                    tcp[arm].append(res["mbit_per_s"])
            log(f"round {r + 1}: " + ", ".join(
                f"{a} ping p50 {fmt(percentile(pings[a], 50))} ms, "
                f"tcp {fmt(tcp[a][-1] if tcp[a] else None)} Mbit/s"
                for a in ARMS))
    finally:
        stop.set()
        scraper.join(3)
    return {
        "loadavg": [load0, loadavg()],
        "scrapes": scrapes[0],
        "arms": {a: {"pings": len(pings[a]), "ping_p50_ms": percentile(pings[a], 50),
                     "ping_p99_ms": percentile(pings[a], 99),
                     "tcp_runs": len(tcp[a]),
                     "tcp_median_mbit_s": statistics.median(tcp[a]) if tcp[a] else None}
                 for a in ARMS},
    }


def bench(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"project": project_version(), "status": []}
    for n in (2, 64):
        result["status"].append(status_latency(stack, logdir, n, args.asks))
        log(f"status with {n} agents: {result['status'][-1]}")
    if args.rounds:
        result["metrics_ab"] = metrics_ab(args, stack, logdir)
    return result


def render(result: dict[str, Any]) -> str:
    out = [f"bench.status, project {result['project']}", "",
           table(["agents", "answer B", "asks", "p50 ms", "p95 ms", "max ms", "command ms"],
                 [[s["agents"], s["answer_bytes"], s["asks"], s["p50_ms"], s["p95_ms"],
                   s["max_ms"], s["command_ms"]] for s in result["status"]])]
    ab = result.get("metrics_ab")
    if ab:
        out += ["", f"--metrics A/B, {ab['scrapes']} scrapes, load {ab['loadavg'][0]} -> "
                f"{ab['loadavg'][1]}",
                table(["metrics", "pings", "ping p50 ms", "ping p99 ms", "tcp runs",
                       "tcp median Mbit/s"],
                      [[a, v["pings"], v["ping_p50_ms"], v["ping_p99_ms"], v["tcp_runs"],
                        v["tcp_median_mbit_s"]] for a, v in ab["arms"].items()])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.status", description=__doc__.split("\n")[0])
    p.add_argument("--asks", type=int, default=50, help="status requests per agent count")
    p.add_argument("--rounds", type=int, default=6, help="A/B rounds (0: status only)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    args = p.parse_args(argv)
    if args.asks < 1 or args.rounds < 0:
        p.error("--asks must be at least 1, --rounds at least 0")
    preflight()
    code, result = run_cleanly(args.logs, "bench-status-", lambda st, d: bench(args, st, d))
    if result is None:
        return code
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
