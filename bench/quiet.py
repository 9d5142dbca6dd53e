"""A quiet session beside bulk sessions on one broker host: its ping, and no collapse.

    sudo .venv/bin/python -m bench.quiet [--bulk 7] [--seconds 30] [--cc cubic,bbr]
        [--shape pinned] [--shape spread] [--shape shared-router] [--pings 300]
        [--interval 0.03] [--hops] [--tree DIR] [--old-tree DIR] [--broker-nice N]
        [--json FILE] [--markdown FILE] [--logs DIR]

Issue 25's measurement. 1 + k sessions, each what a new user makes (its own vhost,
`agent router`, two agents with their TUNs in namespaces: bench.rig.Tunnel). Session 0
only pings (agent_1 -> agent_2, `--pings` echoes `--interval` s apart); sessions 1..k
run iperf3 TCP (`-C` each of `--cc`). Per shape and congestion control:

1. the quiet session's ping with nothing else running (idle);
2. one bulk session alone for `--seconds` (same shape);
3. the k bulk sessions at once for `--seconds`, and after a warm-up (a fifth of the run,
   at most 5 s) the quiet session's ping again (loaded).

Shapes (`--shape`, repeatable):
- pinned: the deployment's shape. The broker (every thread of the process listening on
  127.0.0.1:5672, /proc/PID/task/*) and the routers on core 0, the agents, iperf3 and
  ping on core 1 (sched_setaffinity; the benchmark pins itself to core 1 before it starts
  them, so they inherit it). The broker's affinity is restored at the end of the shape,
  also on errors, Ctrl-C and SIGTERM: it is the host's shared broker.
- spread: nothing pinned, everything on both cores.
- shared-router: as pinned, with one `agent router` process for all the sessions.

Goals (issue 25; targeted in the pinned shape, reported for the others): the quiet
session's loaded ping p99 at most 5x its idle p99 and under 50 ms, no loss; the k bulk
sessions together move at least 0.7 of one alone; the slowest gets at least 0.25 of the
fastest. Also per round: each core's busy share, the broker's threads' time on a CPU and
runnable but waiting (ms per second, /proc/PID/task/*/schedstat).

--old-tree DIR: one more session run by the agent code in DIR (e.g. `git archive` of an
older commit), idle; before each bulk run its ping and the quiet session's alternate, three
rounds each, so a change that must keep an idle session's ping where it is is judged in one
run. --tree DIR: the code measured (default this checkout).

--broker-nice N: the broker's autogroup nice value during the run, restored afterwards
(an operator's setting, not the agent's: see docs/scale.md).

--hops: where the quiet session's time goes (bench.hops): tcpdump on its TUNs and on
loopback port 5672 during both pings, per hop p50/p99 idle vs loaded; beside the loaded
ping, queue depths and the Erlang run queue (management API), a publisher-confirm delay
probe, and `rabbitmq-diagnostics runtime_thread_stats` once (its own CPU cost reported).
These add work of their own; the goals are judged on runs without --hops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import hops as hoplib
from bench.common import (
    Stack,
    fmt,
    log,
    markdown_table,
    ping,
    run_cleanly,
    table,
)
from bench.rig import ADDR_2, Tunnel
from bench.sessions import (
    agent_command,
    autogroup_nice,
    broker_pid,
    idle_pings,
    iperf3_together,
    loadavg,
    open_session,
    open_sessions,
    sched_ns,
    set_autogroup_nice,
)

SHAPES = ("pinned", "spread", "shared-router")
BROKER_CPUS = {0}  # the broker host's core: broker and routers
AGENT_CPUS = {1}  # the participants' machines: agents, iperf3, ping


# -- pure: figures and goals --------------------------------------------------------------


@dataclass(frozen=True)
class Goals:
    p99_times_idle: float = 5.0
    p99_ms: float = 50.0
    together_of_alone: float = 0.7
    slowest_of_fastest: float = 0.25


GOALS = Goals()


def together_figures(mbits: list[float], alone: float | None) -> dict[str, float | None]:
    """Aggregate of the bulk sessions, its ratio to one session alone, slowest/fastest."""
    total = sum(mbits)
    fastest = max(mbits) if mbits else 0.0
    return {
        "aggregate_mbit": total,
        "of_alone": total / alone if alone else None,
        "slowest_of_fastest": min(mbits) / fastest if fastest > 0 else None,
    }


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "PASS" if ok else "FAIL"


def evaluate(idle: dict[str, Any], loaded: dict[str, Any], together: dict[str, Any],
             errors: int = 0, goals: Goals = GOALS) -> dict[str, str]:
    """PASS / FAIL (or - without figures) for each of issue 25's goals. A bulk session
    that failed (errors) counts as starved and as collapse."""
    idle_p99, p99, loss = idle.get("p99_ms"), loaded.get("p99_ms"), loaded.get("loss_pct")
    quiet: bool | None = None
    if p99 is not None and idle_p99 is not None and loss is not None:
        quiet = p99 <= goals.p99_times_idle * idle_p99 and p99 < goals.p99_ms and loss == 0
    elif loss is not None and loss >= 100:
        quiet = False  # no echo came back at all
    of_alone, slow_fast = together.get("of_alone"), together.get("slowest_of_fastest")
    return {
        "quiet p99": verdict(quiet),
        "no collapse": verdict(None if of_alone is None
                               else of_alone >= goals.together_of_alone and not errors),
        "no starvation": verdict(None if slow_fast is None
                                 else slow_fast >= goals.slowest_of_fastest and not errors),
    }


def busy_pct(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Each CPU's busy share between two /proc/stat readings ({cpuN: (idle, total)})."""
    out = {}
    for cpu, (idle1, total1) in b.items():
        idle0, total0 = a.get(cpu, (idle1, total1))
        total = total1 - total0
        out[cpu] = round(100.0 * (1 - (idle1 - idle0) / total), 1) if total > 0 else 0.0
    return out


# -- the machine ---------------------------------------------------------------------------


def per_cpu_times() -> dict[str, tuple[int, int]]:
    """{cpuN: (idle + iowait, total) jiffies} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *rest = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in rest[:8]]
                out[name] = (v[3] + v[4], sum(v))
    return out


def pin(stack: Stack, what: str, pid: int, cpus: set[int]) -> int:
    """Every thread of pid onto cpus; the old masks are put back when the stack unwinds
    (threads born meanwhile get the process's old mask). Returns the threads pinned."""
    old: dict[int, set[int]] = {}
    whole = os.sched_getaffinity(pid)

    def restore() -> None:
        for tid in _threads(pid):
            try:
                os.sched_setaffinity(tid, old.get(tid, whole))
            except ProcessLookupError:
                continue

    stack.push(f"{what} (pid {pid}) back to CPUs {sorted(whole)}", restore)
    for tid in _threads(pid):
        try:
            old[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue
    return len(old)


def broker_first(stack: Stack, bpid: int, nice: int) -> None:
    """The broker's autogroup nice value for the shape's run, put back when the stack
    unwinds (Linux shares a busy CPU between autogroups first: each router started on its
    own is one, as entitled as the broker)."""
    was = autogroup_nice(bpid)
    if was is None:
        raise RuntimeError("--broker-nice: no /proc/PID/autogroup here")
    stack.push(f"broker autogroup nice back to {was}", lambda: set_autogroup_nice(bpid, was))
    set_autogroup_nice(bpid, nice)


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


# -- one shape ----------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    logdir: Path
    bpid: int | None
    shape: str
    tunnels: list[Tunnel]
    old: Tunnel | None = None  # an idle session run by --old-tree's code (A/B of idle ping)

    @property
    def quiet(self) -> Tunnel:
        return self.tunnels[0]

    @property
    def bulk(self) -> list[Tunnel]:
        return self.tunnels[1:]

    def ping(self) -> dict[str, Any]:
        return ping(self.quiet.ns_a, ADDR_2, self.args.pings, self.args.interval)

    def hop_roles(self) -> dict[int, str]:
        procs = self.quiet.procs
        vhost = self.quiet.url.rsplit("/", 1)[1]
        return hoplib.connection_ports(vhost, {n: procs[n].pid for n in
                                               ("agent_1", "agent_2", "router")})

    def idle_ping(self, cc: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        if not self.args.hops:
            return self.ping(), None
        vhost = self.quiet.url.rsplit("/", 1)[1]
        with Stack() as local:
            roles = self.hop_roles()
            cap = hoplib.HopCapture.start(local, self.quiet.ns_a, self.quiet.ns_b, roles,
                                          self.logdir, f"{self.shape}-{cc}-idle")
            with hoplib.BrokerWatch(self.quiet.url, vhost, set()) as watch:
                result = self.ping()
            dropped = cap.stop()
        return result, {"capture": cap.files, "roles": roles, "dropped": dropped,
                        "broker": watch.result()}

    def loaded_ping(self, cc: str, out: dict[str, Any]) -> None:
        """Called while the bulk sessions run: warm-up, then the quiet session's ping."""
        seconds = self.args.seconds
        t_end = time.monotonic() + seconds
        time.sleep(min(5.0, seconds / 5))
        if not self.args.hops:
            out["ping"] = self.ping()
            out["ping_outlasted_bulk"] = time.monotonic() > t_end
        else:
            out["ping"], out["diag"] = self._diagnosed_ping(cc, out, t_end)

    def _diagnosed_ping(self, cc: str, out: dict[str, Any],
                        t_end: float) -> tuple[dict[str, Any], dict[str, Any]]:
        bulk_vhosts = {t.url.rsplit("/", 1)[1] for t in self.bulk}
        vhost = self.quiet.url.rsplit("/", 1)[1]
        stats: dict[str, Any] = {}
        with Stack() as local:
            roles = self.hop_roles()
            cap = hoplib.HopCapture.start(local, self.quiet.ns_a, self.quiet.ns_b, roles,
                                          self.logdir, f"{self.shape}-{cc}-loaded")
            rts = threading.Thread(target=lambda: stats.update(hoplib.runtime_thread_stats()),
                                   daemon=True)
            with hoplib.BrokerWatch(self.quiet.url, vhost, bulk_vhosts) as watch:
                rts.start()
                result = self.ping()
                out["ping_outlasted_bulk"] = time.monotonic() > t_end
                rts.join(30)
            dropped = cap.stop()
        return result, {"capture": cap.files, "roles": roles, "dropped": dropped,
                        "broker": watch.result(), "runtime_thread_stats": stats}

    def bulk_round(self, tunnels: list[Tunnel], cc: str,
                   during: Any = None) -> dict[str, Any]:
        cpu0, sched0, t0 = per_cpu_times(), sched_ns(self.bpid), time.monotonic()
        results = iperf3_together(tunnels, cc, self.args.seconds, during=during)
        took = time.monotonic() - t0
        sched1 = sched_ns(self.bpid)
        for t in tunnels:
            t.settle(3.0)  # queues drained before the next round
        # bulk processes whose publishes were paced by confirms at least once (their log)
        procs = {p.pid: p for t in tunnels for p in t.procs.values()}  # a shared router once
        paced = sum("publisher confirms on" in p.text() for p in procs.values())
        mbits = [r.get("mbit_per_s") or 0.0 for r in results]
        return {
            "mbit": [round(m, 1) for m in mbits],
            "errors": [r["error"] for r in results if "error" in r],
            "retransmits": [r.get("retransmits") for r in results],
            "busy_pct": busy_pct(cpu0, per_cpu_times()),
            "broker_run_ms_per_s": round((sched1[0] - sched0[0]) / 1e6 / took),
            "broker_wait_ms_per_s": round((sched1[1] - sched0[1]) / 1e6 / took),
            "processes_paced": paced,
        }

    def measure(self, cc: str) -> dict[str, Any]:
        k = len(self.bulk)
        log(f"[{self.shape} {cc}] idle ping: {self.args.pings} x {self.args.interval:g} s")
        idle, idle_diag = self.idle_ping(cc)
        idle_ab = None
        if self.old is not None:
            log(f"[{self.shape} {cc}] idle ping A/B: this code and --old-tree, alternating")
            idle_ab = idle_pings(self.quiet, self.old, min(100, self.args.pings))
        log(f"[{self.shape} {cc}] one bulk session alone, {self.args.seconds:g} s")
        alone = self.bulk_round(self.bulk[:1], cc)
        log(f"[{self.shape} {cc}] {k} bulk sessions at once, quiet session pinging")
        during: dict[str, Any] = {}
        together = self.bulk_round(self.bulk, cc, lambda: self.loaded_ping(cc, during))
        alone_mbit = alone["mbit"][0] if alone["mbit"] and not alone["errors"] else None
        figures = together_figures(together["mbit"], alone_mbit)
        loaded = during.get("ping", {})
        row = {
            "shape": self.shape, "cc": cc, "bulk": k, "seconds": self.args.seconds,
            "idle_ping": idle, "loaded_ping": loaded, "idle_ab": idle_ab,
            "ping_outlasted_bulk": during.get("ping_outlasted_bulk"),
            "alone": alone, "together": together | figures,
            "goals": evaluate(idle, loaded, figures, len(together["errors"])),
            "targeted": self.shape == "pinned", "loadavg": loadavg(),
        }
        if self.args.hops:
            row["hops"] = self._hops(cc, idle_diag, during.get("diag"))
        log(f"[{self.shape} {cc}] " + json.dumps({"ping": [idle.get("p99_ms"),
                                                            loaded.get("p99_ms")],
                                                   "goals": row["goals"]}))
        return row

    def _hops(self, cc: str, idle: dict[str, Any] | None,
              loaded: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        meta: dict[str, Any] = {"files": {}, "roles": {}}
        for phase, diag in (("idle", idle), ("loaded", loaded)):
            if not diag:
                continue
            out[phase] = hoplib.analyse(diag["capture"], diag["roles"])
            out[phase]["tcpdump_dropped"] = diag["dropped"]
            for k in ("broker", "runtime_thread_stats"):
                if k in diag:
                    out[phase][k] = diag[k]
            meta["files"][phase] = {n: str(p) for n, p in diag["capture"].items()}
            meta["roles"] = {str(p): r for p, r in diag["roles"].items()}
        (self.logdir / f"hops-{self.shape}-{cc}.json").write_text(json.dumps(meta))
        return out


def run_shape(args: argparse.Namespace, logdir: Path, shape: str,
              bpid: int | None) -> list[dict[str, Any]]:
    tag = f"q{os.getpid() % 100000}{shape[:2]}"
    sdir = logdir / shape
    sdir.mkdir(parents=True, exist_ok=True)
    with Stack() as local:
        pinned = shape != "spread"
        if pinned:
            own = os.sched_getaffinity(0)
            local.push("benchmark back on all its CPUs", lambda: os.sched_setaffinity(0, own))
            os.sched_setaffinity(0, AGENT_CPUS)  # agents, iperf3, ping inherit it
        tags = [f"{tag}{i}" for i in range(args.bulk + 1)]
        log(f"[{shape}] starting {len(tags)} sessions; load {loadavg()}")
        tunnels = open_sessions(local, tags, sdir, agent_command(args.tree), bpid,
                                shape == "shared-router")
        old = None
        if args.old_tree:
            old = open_session(local, f"{tag}o", sdir, agent_command(args.old_tree), bpid)
        if bpid is None:
            raise RuntimeError("no broker PID found (ss -ltnp sport = :5672)")
        if args.broker_nice is not None:
            broker_first(local, bpid, args.broker_nice)
        if pinned:
            for pid in {t.procs["router"].pid for t in [*tunnels, *([old] if old else [])]}:
                pin(local, "router", pid, BROKER_CPUS)
            n = pin(local, "broker", bpid, BROKER_CPUS)
            log(f"[{shape}] broker's {n} threads and the routers on CPU 0, the rest on CPU 1")
        run = Run(args, sdir, bpid, shape, tunnels, old)
        return [run.measure(cc) for cc in args.cc.split(",")]


def bench(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    bpid = broker_pid()
    out: dict[str, Any] = {"loadavg_start": loadavg(), "broker_pid": bpid, "rows": [],
                           "args": {k: v for k, v in vars(args).items() if k != "json"},
                           "broker_autogroup_nice": autogroup_nice(bpid) if bpid else None}
    for shape in args.shape or ["pinned"]:
        out["rows"] += run_shape(args, logdir, shape, bpid)
    out["loadavg_end"] = loadavg()
    return out


# -- output -----------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    """The figures and verdicts as one Markdown table (for docs/results.md)."""
    rows = []
    for r in result["rows"]:
        idle, loaded, tog = r["idle_ping"], r["loaded_ping"], r["together"]
        g = r["goals"]
        rows.append([
            r["shape"], r["cc"], f"{fmt(idle.get('p50_ms'))} / {fmt(idle.get('p99_ms'))}",
            f"{fmt(loaded.get('p50_ms'))} / {fmt(loaded.get('p99_ms'))} "
            f"({fmt(loaded.get('loss_pct'))} %)",
            (r["alone"]["mbit"] or [None])[0],
            f"{fmt(tog['aggregate_mbit'])} ({fmt(tog['of_alone'])})",
            tog["slowest_of_fastest"], f"{g['quiet p99']} / {g['no collapse']} / "
            f"{g['no starvation']}" + ("" if r["targeted"] else " (not targeted)"),
        ])
    k = result["rows"][0]["bulk"] if result["rows"] else 0
    return markdown_table(["shape", "cc", "idle ping p50 / p99 ms",
                           "under bulk p50 / p99 ms (loss)", "one bulk alone Mbit/s",
                           f"{k} together Mbit/s (/alone)", "slowest/fastest",
                           "goals: quiet / collapse / starvation"], rows)


def render(result: dict[str, Any]) -> str:
    rows, goal_rows = [], []
    for r in result["rows"]:
        idle, loaded, tog = r["idle_ping"], r["loaded_ping"], r["together"]
        ratio = (loaded["p99_ms"] / idle["p99_ms"]
                 if loaded.get("p99_ms") and idle.get("p99_ms") else None)
        busy = tog.get("busy_pct", {})
        rows.append([
            r["shape"], r["cc"], idle.get("p50_ms"), idle.get("p99_ms"), idle.get("loss_pct"),
            loaded.get("p50_ms"), loaded.get("p99_ms"), loaded.get("loss_pct"), ratio,
            (r["alone"]["mbit"] or [None])[0], tog["aggregate_mbit"], tog["of_alone"],
            tog["slowest_of_fastest"], busy.get("cpu0"), busy.get("cpu1"),
            tog["broker_run_ms_per_s"], tog["broker_wait_ms_per_s"], tog["processes_paced"],
        ])
        note = "" if r["targeted"] else " (reported, not targeted)"
        goal_rows.append([r["shape"] + note, r["cc"], *r["goals"].values()])
        if r.get("ping_outlasted_bulk"):
            goal_rows[-1][0] += " [ping outlasted the bulk run: longer --seconds]"
    k = result["rows"][0]["bulk"] if result["rows"] else 0
    header = ["shape", "cc", "idle p50 ms", "p99", "loss %", "bulk p50 ms", "p99", "loss %",
              "p99 x idle", "alone Mbit/s", f"{k} together", "/alone", "slow/fast",
              "cpu0 busy %", "cpu1 busy %", "broker run ms/s", "wait ms/s", "paced procs"]
    out = [table(header, rows),
           table(["shape", "cc", "quiet p99 <= 5x idle, < 50 ms, no loss",
                  "no collapse (>= 0.7)", "no starvation (>= 0.25)"], goal_rows)]
    for r in result["rows"]:
        if "hops" in r:
            out.append(f"hops, {r['shape']} {r['cc']}:\n"
                       + hoplib.render(r["hops"].get("idle"), r["hops"].get("loaded"))
                       + "".join(f"\n{phase}: " + diag_line(r["hops"][phase])
                                 for phase in ("idle", "loaded") if phase in r["hops"]))
    for r in result["rows"]:
        ab = r.get("idle_ab")
        if ab:
            out.append(f"idle ping p50 ms per round, {r['shape']} {r['cc']}: this code "
                       + ", ".join(fmt(x["p50_ms"]) for x in ab["new"]) + "; --old-tree "
                       + ", ".join(fmt(x["p50_ms"]) for x in ab["old"]))
    out.append(f"load average: start {result['loadavg_start']}, end {result['loadavg_end']}")
    return "\n\n".join(out)


def diag_line(loaded: dict[str, Any]) -> str:
    b, rts = loaded.get("broker", {}), loaded.get("runtime_thread_stats", {})

    def mm(d: dict[str, Any]) -> str:
        return f"{fmt(d.get('mean'))} mean / {fmt(d.get('max'))} max"

    return (
        f"broker queues, bulk sessions {mm(b.get('bulk', {}))} messages "
        f"(largest queue {mm(b.get('bulk_max_queue', {}))}), quiet session "
        f"{mm(b.get('quiet', {}))}; Erlang run queue {mm(b.get('run_queue', {}))}; "
        f"unread in the broker's sockets {mm(b.get('broker_unread_kb', {}))} KB, in the "
        f"clients' {mm(b.get('clients_unread_kb', {}))} KB; "
        f"confirm delay p50 {fmt(b.get('confirm_ms', {}).get('p50'))} / p99 "
        f"{fmt(b.get('confirm_ms', {}).get('p99'))} ms; schedulers busy "
        f"{fmt(rts.get('scheduler_busy_pct'))} % (runtime_thread_stats, which cost "
        f"{fmt(rts.get('cli_cpu_s'))} s CPU itself); quiet publishes by channel "
        f"{loaded.get('publish_channels')}; tcpdump dropped {loaded.get('tcpdump_dropped')}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bulk", type=int, default=7, help="bulk sessions (iperf3 TCP)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each bulk run")
    ap.add_argument("--cc", default="cubic,bbr", help="iperf3 -C values, comma separated")
    ap.add_argument("--shape", action="append", choices=SHAPES,
                    help="pinned (default), spread, shared-router; repeatable")
    ap.add_argument("--pings", type=int, default=300, help="echoes per ping")
    ap.add_argument("--interval", type=float, default=0.03, help="seconds between echoes")
    ap.add_argument("--hops", action="store_true",
                    help="capture the quiet session and break its delay down by hop")
    ap.add_argument("--tree", help="agent code to measure (a directory; default this checkout)")
    ap.add_argument("--old-tree", help="agent code of one more idle session, its ping "
                    "alternating with the quiet session's before each bulk run (A/B)")
    ap.add_argument("--broker-nice", type=int, metavar="N",
                    help="the broker's autogroup nice value during the run (e.g. -10: the "
                    "broker before the routers on its core); restored afterwards")
    ap.add_argument("--json", help="write the raw result here")
    ap.add_argument("--markdown", help="write the figures as a Markdown table here")
    ap.add_argument("--logs", help="keep the processes' logs (and --hops captures) here")
    args = ap.parse_args(argv)
    if args.bulk < 1 or args.seconds <= 0 or args.pings < 1 or args.interval <= 0:
        ap.error("--bulk, --seconds, --pings and --interval must be positive")
    if os.geteuid() != 0:
        print("bench.quiet: needs root (TUN, namespaces, CPU affinity)", file=sys.stderr)
        return 2
    if any(s != "spread" for s in args.shape or ["pinned"]) and len(os.sched_getaffinity(0)) < 2:
        print("bench.quiet: pinned shapes need 2 CPUs", file=sys.stderr)
        return 2
    code, result = run_cleanly(args.logs, "bench-quiet-", lambda s, d: bench(args, s, d))
    if result is not None:
        print(render(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        if args.markdown:
            Path(args.markdown).write_text(markdown(result) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
