"""Soak: N minutes of iperf3 TCP through the tunnel, agents' and router's RSS sampled.

    sudo PYTHONPATH=. .venv/bin/python -m bench.soak [--minutes 10] [--interval 10]
                                                     [--wire json|fast|auto] [--json FILE]

Same setup as bench.tunnel (a vhost, two namespaces, a router and two agents), then one
long `iperf3` TCP run agent_1 -> agent_2 at full load. VmRSS of each process is read from
/proc/PID/status when the load starts and every --interval seconds; the report gives
start, after the first interval (warmed up), last and max, and the growth of the last
sample over both. Run by hand, not in CI. Everything made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    IPERF_PORT,
    Proc,
    Stack,
    fmt,
    log,
    make_netns,
    make_vhost,
    netns_exec,
    rss_kb,
    run_cleanly,
    start_iperf3_server,
    table,
)
from bench.rig import ADDR_2, Tunnel, wire_option
from bench.tunnel import loadavg, preflight, project_version

PROCS = ("agent_1", "router", "agent_2")


def soak(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    tag = f"soak{os.getpid()}"
    wire_args, wire_note = wire_option(args.wire)
    log(f"wire: {wire_note}")
    url = make_vhost(stack, tag)
    ns_a = make_netns(stack, f"{tag}-a")
    ns_b = make_netns(stack, f"{tag}-b")
    tunnel = Tunnel(stack, url, ns_a, ns_b, logdir, wire_args)
    tunnel.start()
    pids = {name: tunnel.procs[name].pid for name in PROCS}

    seconds = max(1, round(args.minutes * 60))
    server = start_iperf3_server(stack, ns_b, logdir)
    client_argv = [
        "iperf3",
        "-c",
        ADDR_2,
        "-p",
        str(IPERF_PORT),
        "-J",
        "-t",
        str(seconds),
        "--connect-timeout",
        "3000",
    ]
    log(f"iperf3 TCP for {seconds} s through the tunnel; RSS every {args.interval:g} s")
    client = Proc(stack, "iperf3-client", netns_exec(ns_a, *client_argv), logdir)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    next_at = t0
    end_by = t0 + seconds + 30
    while True:
        now = time.monotonic()
        if now >= next_at or not client.alive():
            sample = {"t": round(now - t0, 1), **{n: rss_kb(pid) for n, pid in pids.items()}}
            samples.append(sample)
            log(
                "RSS "
                + "  ".join(f"{n} {fmt(_mib(sample[n]))} MiB" for n in PROCS)
                + f"  (t={sample['t']:g} s)"
            )
            next_at += args.interval
        if not client.alive():
            break
        if now > end_by:
            raise RuntimeError("iperf3 client did not finish in time")
        dead = [n for n in PROCS if not tunnel.procs[n].alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during the soak\n" + tunnel.logs())
        time.sleep(min(0.5, max(0.0, next_at - time.monotonic())))
    server.stop(signal.SIGTERM, 3)
    iperf = _iperf_summary(client.text())
    return {
        "minutes": args.minutes,
        "interval_s": args.interval,
        "wire": wire_note,
        "wire_in_use": tunnel.wire_in_use(),
        "project": project_version(),
        "pids": pids,
        "iperf3": iperf,
        "samples": samples,
        "rss": {n: _growth([s[n] for s in samples]) for n in PROCS},
    }


def _mib(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def _growth(values: list[int | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {}
    start, warm, last = vals[0], vals[1] if len(vals) > 2 else vals[0], vals[-1]
    return {
        "start_kb": start,
        "warm_kb": warm,
        "last_kb": last,
        "max_kb": max(vals),
        "growth_pct_vs_warm": 100.0 * (last - warm) / warm,
        "growth_pct_vs_start": 100.0 * (last - start) / start,
        "max_pct_vs_warm": 100.0 * (max(vals) - warm) / warm,
    }


def _iperf_summary(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {"error": text.strip()[-300:]}
    if data.get("error"):
        return {"error": data["error"]}
    end = data.get("end", {})
    recv, sent = end.get("sum_received", {}), end.get("sum_sent", {})
    return {
        "seconds": recv.get("seconds"),
        "mbit_per_s": recv.get("bits_per_second", 0) / 1e6,
        "retransmits": sent.get("retransmits"),
        "intervals_mbit_per_s": [
            round(i["sum"]["bits_per_second"] / 1e6, 2) for i in data.get("intervals", [])
        ],
    }


def render(result: dict[str, Any]) -> str:
    header = [
        "RSS MiB",
        "start",
        "warm",
        "last",
        "max",
        "last/warm %",
        "max/warm %",
        "last/start %",
    ]
    rows = []
    for n in PROCS:
        g = result["rss"].get(n, {})
        rows.append(
            [
                n,
                _mib(g.get("start_kb")),
                _mib(g.get("warm_kb")),
                _mib(g.get("last_kb")),
                _mib(g.get("max_kb")),
                g.get("growth_pct_vs_warm"),
                g.get("max_pct_vs_warm"),
                g.get("growth_pct_vs_start"),
            ]
        )
    ip = result["iperf3"]
    head = (
        f"bench.soak: {result['minutes']:g} min of iperf3 TCP through the tunnel, "
        f"{result['wire']} (in use: "
        + ", ".join(f"{k} {v or '?'}" for k, v in result["wire_in_use"].items())
        + f"), project {result['project']}, load {result['loadavg_end']}"
    )
    traffic = (
        f"iperf3: {fmt(ip.get('mbit_per_s'))} Mbit/s, {fmt(ip.get('retransmits'))} retransmits"
        if "error" not in ip
        else f"iperf3 failed: {ip['error']}"
    )
    return "\n".join(
        [
            head,
            traffic,
            "",
            table(header, rows),
            "",
            f"* start: when the load began; warm: after {result['interval_s']:g} s; "
            f"RSS from /proc/PID/status VmRSS every {result['interval_s']:g} s "
            f"({len(result['samples'])} samples)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    p.add_argument("--interval", type=float, default=10.0, help="RSS sample period, s")
    p.add_argument(
        "--wire",
        choices=["json", "fast", "auto"],
        help="passed to the agents as --wire if their CLI has the option",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0:
        p.error("--minutes and --interval must be positive")
    preflight()
    t0 = time.monotonic()
    code, result = run_cleanly(args.logs, "bench-soak-", lambda st, d: soak(args, st, d))
    if result is None:
        return code
    result["loadavg_end"] = loadavg()
    result["runtime_s"] = time.monotonic() - t0
    print(render(result))
    print(f"\nruntime {result['runtime_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
