"""Sessions side by side on one broker host: throughput, batching and CPU per packet.

    sudo .venv/bin/python -m bench.sessions [--sessions 1,2,4,8] [--cc bbr,cubic]
        [--seconds 8] [--tree DIR] [--old-tree DIR] [--pings 200] [--shared-router]
        [--broker-nice N] [--agent-arg ARG] [--json FILE] [--logs DIR]

Each session is what a new user makes: its own vhost, `agent router`, two agents with
their TUNs in namespaces of their own (bench.rig.Tunnel). For each congestion control
(iperf3 -C) and each count k, iperf3 TCP runs from agent_1's namespace to agent_2's in k
sessions at once. Reported per round: aggregate and per-session Mbit/s, slowest/fastest,
packets per bus message (agents' uplink, as the router receives them; the router's
downlink), CPU microseconds per packet (agents, routers, broker: utime+stime from
/proc/PID/stat, per packet arriving at a router), the machine's idle share during the
round (/proc/stat, as vmstat's `id`), since other work on the host moves every figure,
and the broker's threads' time on a CPU and time runnable but waiting for one (ms per
second, /proc/PID/task/*/schedstat: a broker starved of CPU delays every message).
The broker is the host's RabbitMQ: its CPU includes anything else using it meanwhile.

--shared-router: one `agent router` process serves all the sessions (URLs of every vhost)
instead of one router process per session; its CPU is counted once.

Also recorded per round: each iperf3 sender's TCP state half way through (`ss -tin`: rtt,
cwnd, what limits it), which shows whether the flows are window-limited behind a slow path.

--broker-nice N: the broker's autogroup nice value during the run (restored afterwards).
Linux gives each session (autogroup) an equal CPU share when the cores are busy; every
agent and router started on its own (a terminal, a service) is one, the broker another,
so 24 tunnel processes leave the broker, through which every packet passes, a small share.
-10 gives the broker precedence, as a broker host should (docs/scale.md).

--old-tree DIR: one more session run by the agent code in DIR (e.g. `git archive` of an
older commit) to measure ping p50 on an idle session, new and old alternately in this run.

--agent-arg ARG: one more argument for the measured sessions' agents, e.g.
`--agent-arg=--no-gro` to compare with TCP segments written into the TUN one by one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    CLK_TCK,
    IPERF_PORT,
    Proc,
    Stack,
    log,
    make_netns,
    make_vhost,
    netns_exec,
    ping,
    rss_kb,
    run,
    run_cleanly,
    start_iperf3_server,
    table,
)
from bench.rig import ADDR_2, Sample, Tunnel, delta


def agent_command(tree: str | None) -> list[str]:
    """How to run `python -m agent` from tree (None: this checkout)."""
    if tree is None:
        return [sys.executable, "-m", "agent"]
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(Path(tree).resolve())!r}); "
        "runpy.run_module('agent', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", code]


def broker_pid() -> int | None:
    """PID of the process listening on 127.0.0.1:5672 (the test broker), read-only use."""
    r = run(["ss", "-Hltnp", "sport = :5672"], timeout=10)
    m = re.search(r"pid=(\d+)", r.stdout)
    return int(m.group(1)) if m else None


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine, from /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def sched_ns(pid: int | None) -> tuple[int, int]:
    """(on a CPU, runnable but waiting for one) ns, summed over pid's threads (schedstat)."""
    run = wait = 0
    if pid is None:
        return 0, 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return run, wait


def switches(pid: int | None) -> int:
    """Context switches (voluntary + involuntary) of pid's threads so far: about one per
    wake-up, plus the times the scheduler took the CPU away."""
    total = 0
    if pid is None:
        return 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if "ctxt_switches:" in line:  # voluntary_... and nonvoluntary_...
                        total += int(line.split()[-1])
        except (OSError, ValueError):
            continue
    return total


def user_system(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds of pid so far; (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (OSError, TypeError):
        return 0.0, 0.0
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def agents_user_system(tunnels: list[Tunnel]) -> tuple[float, float]:
    """The agents' (user, system) CPU seconds so far: system includes the kernel's TCP/IP
    work for the packets they write into their TUNs."""
    user = system = 0.0
    for t in tunnels:
        for name, proc in t.procs.items():
            if name != "router":
                u, s = user_system(proc.pid)
                user, system = user + u, system + s
    return user, system


def wakeups(tunnels: list[Tunnel]) -> dict[str, int]:
    """Context switches so far of the agents, the routers (a shared one once) and the broker."""
    out = {"agents": 0, "routers": 0, "broker": 0}
    routers: set[int] = set()
    for t in tunnels:
        for name, proc in t.procs.items():
            if name == "router":
                routers.add(proc.pid)
            else:
                out["agents"] += switches(proc.pid)
    out["routers"] = sum(switches(pid) for pid in routers)
    out["broker"] = switches(tunnels[0].broker_pid) if tunnels else 0
    return out


def idle_pct(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    total = b[1] - a[1]
    return 100.0 * (b[0] - a[0]) / total if total else None


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def open_session(
    stack: Stack, tag: str, logdir: Path, python: list[str], bpid: int | None,
    url: str | None = None, router: Proc | None = None, agent_args: tuple[str, ...] = (),
) -> Tunnel:
    """A session on vhost tag (made here unless url is given), with its own router
    unless router (one serving several sessions) is given."""
    url = url or make_vhost(stack, tag)
    ns_a = make_netns(stack, f"{tag}a")
    ns_b = make_netns(stack, f"{tag}b")
    sdir = logdir / tag
    sdir.mkdir(parents=True, exist_ok=True)
    tunnel = Tunnel(stack, url, ns_a, ns_b, sdir, list(agent_args), bpid, python=python,
                    shared_router=router, label=tag if router is not None else "")
    tunnel.start(timeout=60)
    return tunnel


def open_sessions(
    stack: Stack, tags: list[str], logdir: Path, python: list[str], bpid: int | None,
    shared_router: bool, router_nice: int | None = None, agent_args: tuple[str, ...] = (),
) -> list[Tunnel]:
    if not shared_router:
        return [open_session(stack, tag, logdir, python, bpid, agent_args=agent_args)
                for tag in tags]
    urls = [make_vhost(stack, tag) for tag in tags]
    argv = python + ["router"] + [a for url in urls for a in ("--url", url)]
    router = Proc(stack, "router", argv, logdir)
    if router_nice is not None:  # a broker host's service, like the broker
        set_autogroup_nice(router.pid, router_nice)
    return [
        open_session(stack, tag, logdir, python, bpid, url, router, agent_args)
        for tag, url in zip(tags, urls, strict=True)
    ]


def _counter(d: dict[str, Any], name: str, pred: Any) -> int:
    counters = d.get(name, {}).get("counters") or {}
    return sum(v for k, v in counters.items() if pred(k))


_SS_FIELDS = re.compile(
    r"\b(rtt|cwnd|ssthresh|delivery_rate|pacing_rate|busy|rwnd_limited|sndbuf_limited|unacked)"
    r"[: ]([^ ]+)"
)


def tcp_state(ns: str) -> dict[str, str]:
    """The iperf3 data flow's TCP state in ns (`ss -tin`): rtt, cwnd, what limits it."""
    r = run(netns_exec(ns, "ss", "-Htin", "dport", f"= :{IPERF_PORT}"), timeout=10)
    best: dict[str, str] = {}
    for flow in re.split(r"\n(?=\S)", r.stdout.strip()):
        fields = dict(_SS_FIELDS.findall(flow))
        if "cwnd" in fields and int(fields.get("unacked", "0")) >= int(best.get("unacked", "-1")):
            best = fields  # the data flow, not iperf3's control connection
    return best


def iperf3_together(
    tunnels: list[Tunnel], cc: str, seconds: float, tcp: list[dict[str, str]] | None = None,
    during: Callable[[], object] | None = None,
) -> list[dict[str, Any]]:
    """iperf3 TCP agent_1 -> agent_2 in each session, all at once; Mbit/s or an error each.
    tcp: filled with each sender's TCP state (tcp_state) half way through. during: called
    once the clients are started (e.g. a ping through another session meanwhile)."""
    with Stack() as local:
        for t in tunnels:
            start_iperf3_server(local, t.ns_b, t.logdir)
        clients = [
            subprocess.Popen(
                netns_exec(t.ns_a, "iperf3", "-c", ADDR_2, "-p", str(IPERF_PORT), "-J",
                           "-t", f"{seconds:g}", "--connect-timeout", "3000", "-C", cc),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True,
            )
            for t in tunnels
        ]
        local.push("stop iperf3 clients", lambda: [c.kill() for c in clients if c.poll() is None])
        if during is not None:
            during()
        if tcp is not None:
            time.sleep(seconds / 2)
            tcp.extend(tcp_state(t.ns_a) for t in tunnels)
        out = []
        for c in clients:
            stdout, stderr = c.communicate(timeout=seconds + 30)
            try:
                data = json.loads(stdout)
            except json.JSONDecodeError:
                out.append({"error": (stderr or stdout).strip()[-200:]})
                continue
            if data.get("error"):
                out.append({"error": data["error"]})
                continue
            end = data.get("end", {})
            out.append({
                "mbit_per_s": end.get("sum_received", {}).get("bits_per_second", 0) / 1e6,
                "retransmits": end.get("sum_sent", {}).get("retransmits"),
            })
    return out


def measure_round(
    tunnels: list[Tunnel], cc: str, seconds: float, logdir: Path
) -> dict[str, Any]:
    """iperf3 TCP in every given session at once; throughput, batching, CPU per packet."""
    before: list[Sample] = [t.sample() for t in tunnels]
    bpid = tunnels[0].broker_pid if tunnels else None
    cpu0, t0, b0, w0 = cpu_times(), time.monotonic(), sched_ns(bpid), wakeups(tunnels)
    us0 = agents_user_system(tunnels)
    tcp: list[dict[str, str]] = []
    results = iperf3_together(tunnels, cc, seconds, tcp)
    idle = idle_pct(cpu0, cpu_times())
    took = time.monotonic() - t0
    b1, w1, us1 = sched_ns(bpid), wakeups(tunnels), agents_user_system(tunnels)
    # the broker's threads: time on a CPU and time runnable but waiting for one (ms per s)
    broker_sched = {"run_ms_per_s": round((b1[0] - b0[0]) / 1e6 / took),
                    "wait_ms_per_s": round((b1[1] - b0[1]) / 1e6 / took)}
    for t in tunnels:
        t.settle(3.0)
    after = [t.sample() for t in tunnels]
    deltas = [delta(a, b) for a, b in zip(before, after, strict=True)]
    mbits = [r.get("mbit_per_s") or 0.0 for r in results]
    cpu = {"agents": 0.0, "routers": 0.0}
    packets = up_msgs = down_pkts = down_msgs = 0
    for d in deltas:
        for name in ("agent_1", "agent_2"):
            cpu["agents"] += d.get(name, {}).get("cpu_s") or 0.0
        if tunnels[0].shared_router is None:  # else one process: counted once, below
            cpu["routers"] += d.get("router", {}).get("cpu_s") or 0.0
        packets += d.get("router", {}).get("packets") or 0
        up_msgs += _counter(d, "router", lambda k: k in ("rx fast", "rx json"))
        down_msgs += _counter(d, "router", lambda k: k in ("tx fast", "tx json"))
        down_pkts += _counter(d, "router", lambda k: k.startswith(">"))
    if deltas and tunnels[0].shared_router is not None:
        cpu["routers"] = deltas[0].get("router", {}).get("cpu_s") or 0.0
    broker_cpu = deltas[0].get("broker", {}).get("cpu_s") if deltas else None
    cpu["broker"] = broker_cpu or 0.0
    us = {k: (v * 1e6 / packets if packets else None) for k, v in cpu.items()}
    us["total"] = sum(cpu.values()) * 1e6 / packets if packets else None
    return {
        "sessions": len(tunnels),
        "cc": cc,
        "seconds": round(took, 1),
        "mbit": [round(m, 1) for m in mbits],
        "aggregate_mbit": round(sum(mbits), 1),
        "slowest_fastest": round(min(mbits) / max(mbits), 2) if max(mbits) else None,
        "errors": [r["error"] for r in results if "error" in r],
        "retransmits": [r.get("retransmits") for r in results],
        "packets": packets,
        "uplink_packets_per_message": round(packets / up_msgs, 2) if up_msgs else None,
        "downlink_packets_per_message": round(down_pkts / down_msgs, 2) if down_msgs else None,
        "cpu_us_per_packet": {k: (round(v, 2) if v is not None else None) for k, v in us.items()},
        # the agents' CPU per packet split: user (Python) and system (syscalls, TCP/IP)
        "agents_us_per_packet_user_system": [
            round((b - a) * 1e6 / packets, 1) if packets else None
            for a, b in zip(us0, us1, strict=True)
        ],
        # context switches per 100 packets during the streams (wake-ups, and preemptions)
        "switches_per_100_packets": {
            k: round(100 * (w1[k] - w0[k]) / packets, 1) if packets else None for k in w0
        },
        "machine_idle_pct": round(idle, 1) if idle is not None else None,
        "tcp_mid_round": tcp,
        "broker_sched": broker_sched,
        "loadavg_after": loadavg(),
    }


def idle_pings(new: Tunnel, old: Tunnel | None, count: int, rounds: int = 3) -> dict[str, Any]:
    """Ping p50 through an otherwise idle session, new and old code alternately."""
    out: dict[str, Any] = {"new": [], "old": []}
    for _ in range(rounds):
        for label, t in (("new", new), ("old", old)):
            if t is None:
                continue
            cpu0 = cpu_times()
            p = ping(t.ns_a, ADDR_2, count, 0.05)
            out[label].append(
                {"p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "loss_pct": p["loss_pct"],
                 "machine_idle_pct": round(idle_pct(cpu0, cpu_times()) or 0.0, 1)}
            )
    return out


def rss(tunnels: list[Tunnel]) -> dict[str, list[int | None]]:
    out: dict[str, list[int | None]] = {"agent": [], "router": []}
    seen: set[int] = set()
    for t in tunnels:
        for name, p in t.procs.items():
            if p.pid in seen:  # a router serving several sessions
                continue
            seen.add(p.pid)
            kb = rss_kb(p.pid)
            out["router" if name == "router" else "agent"].append(kb // 1024 if kb else None)
    return out


def autogroup_nice(pid: int) -> int | None:
    """The nice value of pid's autogroup (the scheduler's share between sessions)."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def set_autogroup_nice(pid: int, nice: int) -> None:
    with open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


def bench(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    counts = sorted({int(x) for x in args.sessions.split(",")})
    tag = f"s12b{os.getpid() % 100000}"
    bpid = broker_pid()
    if args.broker_nice is not None:
        was = autogroup_nice(bpid) if bpid else None
        if bpid is None or was is None:
            raise RuntimeError("--broker-nice: no broker PID or no /proc/PID/autogroup here")
        set_autogroup_nice(bpid, args.broker_nice)
        stack.push(f"broker autogroup nice back to {was}", lambda: set_autogroup_nice(bpid, was))
        log(f"broker autogroup nice {was} -> {args.broker_nice} for this run")
    log(f"broker pid {bpid}; starting {max(counts)} sessions; load {loadavg()}")
    tags = [f"{tag}n{i}" for i in range(max(counts))]
    tunnels = open_sessions(
        stack, tags, logdir, agent_command(args.tree), bpid, args.shared_router,
        args.broker_nice, tuple(args.agent_arg),
    )
    old = None
    if args.old_tree:
        old = open_session(stack, f"{tag}o", logdir, agent_command(args.old_tree), bpid)
    result: dict[str, Any] = {
        "rounds": [], "loadavg_start": loadavg(), "shared_router": args.shared_router,
        "broker_autogroup_nice": autogroup_nice(bpid) if bpid else None,
    }
    log("idle ping, new vs old")
    result["idle_ping"] = idle_pings(tunnels[0], old, args.pings)
    for cc in args.cc.split(","):
        for k in counts:
            log(f"{k} session(s), iperf3 TCP -C {cc}, {args.seconds:g} s")
            r = measure_round(tunnels[:k], cc, args.seconds, logdir)
            log(json.dumps(r))
            result["rounds"].append(r)
    # again after the streams: session 1 has carried batches since (its confirms are on)
    log("idle ping again, after the streams")
    result["idle_ping_after"] = idle_pings(tunnels[0], old, args.pings)
    result["rss_mib"] = rss(tunnels + ([old] if old else []))
    result["rss_mib_old"] = rss([old]) if old else None
    return result


def _median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def render(result: dict[str, Any]) -> str:
    rows = []
    base: dict[str, dict[str, Any]] = {}
    for r in result["rounds"]:
        one = base.setdefault(r["cc"], r)
        us = r["cpu_us_per_packet"]
        ratio = (
            us["total"] / one["cpu_us_per_packet"]["total"]
            if us["total"] and one["cpu_us_per_packet"]["total"]
            else None
        )
        rows.append([
            r["cc"], r["sessions"], r["aggregate_mbit"],
            r["aggregate_mbit"] / one["aggregate_mbit"] if one["aggregate_mbit"] else None,
            r["slowest_fastest"], r["uplink_packets_per_message"],
            r["downlink_packets_per_message"], us["agents"], us["routers"], us["broker"],
            us["total"], ratio, r["machine_idle_pct"],
            _median([float(t["rtt"].split("/")[0]) for t in r["tcp_mid_round"] if "rtt" in t]),
            r["broker_sched"]["run_ms_per_s"], r["broker_sched"]["wait_ms_per_s"],
            *(r.get("switches_per_100_packets") or {}).values(),
            "/".join(str(x) for x in r.get("agents_us_per_packet_user_system") or []),
        ])
    header = ["cc", "sessions", "Mbit/s", "/one", "slow/fast", "pkt/msg up", "pkt/msg down",
              "us/pkt agents", "routers", "broker", "total", "/one", "idle %", "rtt ms",
              "broker run", "broker wait", "switches/100 pkt agents", "routers", "broker",
              "agents us/pkt user/sys"]
    lines = [table(header, rows)]
    ping_rows = []
    for when, key in (("before", "idle_ping"), ("after", "idle_ping_after")):
        for label, runs in result.get(key, {}).items():
            for i, p in enumerate(runs):
                ping_rows.append([when, label, i + 1, p["p50_ms"], p["p99_ms"], p["loss_pct"],
                                  p["machine_idle_pct"]])
    lines.append(table(["streams", "code", "round", "p50 ms", "p99 ms", "loss %", "idle %"],
                       ping_rows))
    lines.append(f"RSS MiB (new sessions, then old): {result['rss_mib']}")
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", default="1,2,4,8")
    ap.add_argument("--cc", default="bbr,cubic", help="iperf3 -C values, comma separated")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--pings", type=int, default=200, help="echoes per idle ping round")
    ap.add_argument("--tree", help="agent code to measure (a directory; default this checkout)")
    ap.add_argument("--old-tree", help="agent code to compare idle ping with (a directory)")
    ap.add_argument("--shared-router", action="store_true",
                    help="one `agent router` process for all the sessions (else one each)")
    ap.add_argument("--broker-nice", type=int, metavar="N",
                    help="during the run, the broker's autogroup nice value (e.g. -10: the "
                    "broker before the sessions' processes); restored afterwards. With "
                    "--shared-router, the router's too")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for the measured agents (not --old-tree's), "
                    "e.g. --agent-arg=--no-gro; repeatable")
    ap.add_argument("--json", help="write the raw result here")
    ap.add_argument("--logs", help="keep the processes' logs in this directory")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.sessions: needs root (TUN, namespaces)", file=sys.stderr)
        return 2
    code, result = run_cleanly(args.logs, "bench-sessions-", lambda s, d: bench(args, s, d))
    if result is not None:
        print(render(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
