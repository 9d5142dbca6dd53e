"""Ping through a JSON-wire tunnel and a fast-wire tunnel, interleaved, in one run.

    sudo PYTHONPATH=. .venv/bin/python -m bench.pingab [--rounds 10] [--count 50] [--json FILE]

Two tunnels side by side on the local broker, each with a vhost, two namespaces, a router
and two agents of its own: one with `--wire json`, one with `--wire fast`. Then `--rounds`
rounds; in each, `ping -6 -c COUNT -i 0.01` through one tunnel and then the other (the
order alternates from round to round), so a change in the machine's load falls on both
wires alike. Prints p50/p99/mean per wire over all rounds, and the per-round p50s.
Everything made is removed at the end (also on errors and Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Stack,
    fmt,
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
from bench.rig import ADDR_2, Tunnel, wire_option
from bench.tunnel import loadavg, preflight, project_version

WIRES = ("json", "fast")


def pingab(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    tag = f"pingab{os.getpid()}"
    ns: dict[str, str] = {}
    for i, w in enumerate(WIRES):
        wire_args, note = wire_option(w)
        if not wire_args:
            raise RuntimeError(note)
        url = make_vhost(stack, f"{tag}{w}")
        ns[w] = make_netns(stack, f"{tag}-{i}a")
        ns_b = make_netns(stack, f"{tag}-{i}b")
        wdir = logdir / w
        wdir.mkdir()
        Tunnel(stack, url, ns[w], ns_b, wdir, wire_args).start()
    times: dict[str, list[float]] = {w: [] for w in WIRES}
    sent: dict[str, int] = {w: 0 for w in WIRES}
    rounds: list[dict[str, float | None]] = []
    load0 = loadavg()
    for r in range(args.rounds):
        order = WIRES if r % 2 == 0 else WIRES[::-1]
        this: dict[str, float | None] = {}
        for w in order:
            argv = netns_exec(
                ns[w], "ping", "-6", "-n", "-c", str(args.count), "-i", "0.01", "-W", "1", ADDR_2
            )
            values = ping_times(run(argv, timeout=args.count * 0.01 + 15).stdout)
            times[w] += values
            sent[w] += args.count
            this[w] = percentile(values, 50)
        rounds.append(this)
        log(f"round {r + 1}: " + ", ".join(f"{w} p50 {fmt(this[w])} ms" for w in WIRES))
        time.sleep(0.2)
    return {
        "project": project_version(),
        "rounds": args.rounds,
        "count": args.count,
        "loadavg": [load0, loadavg()],
        "per_round_p50_ms": rounds,
        "wires": {
            w: {
                "sent": sent[w],
                "received": len(times[w]),
                "p50_ms": percentile(times[w], 50),
                "p99_ms": percentile(times[w], 99),
                "mean_ms": statistics.fmean(times[w]) if times[w] else None,
            }
            for w in WIRES
        },
        "rounds_fast_not_worse": sum(
            1 for x in rounds if x["fast"] is not None and x["json"] is not None
            and x["fast"] <= x["json"]
        ),
    }


def render(result: dict[str, Any]) -> str:
    rows = [
        [w, v["sent"], v["received"], v["p50_ms"], v["p99_ms"], v["mean_ms"]]
        for w, v in result["wires"].items()
    ]
    j, f = result["wires"]["json"]["p50_ms"], result["wires"]["fast"]["p50_ms"]
    return "\n".join([
        f"bench.pingab: {result['rounds']} rounds x {result['count']} pings per wire, "
        f"interleaved, project {result['project']}, load {result['loadavg'][0]} -> "
        f"{result['loadavg'][1]}",
        "",
        table(["wire", "sent", "received", "p50 ms", "p99 ms", "mean ms"], rows),
        "",
        f"fast/json p50: {fmt(f / j if j and f else None)}; rounds where fast's p50 <= json's: "
        f"{result['rounds_fast_not_worse']} of {result['rounds']}",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pingab", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--count", type=int, default=50, help="pings per wire per round")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.count < 1:
        p.error("--rounds and --count must be at least 1")
    preflight()
    code, result = run_cleanly(args.logs, "bench-pingab-", lambda st, d: pingab(args, st, d))
    if result is None:
        return code
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
