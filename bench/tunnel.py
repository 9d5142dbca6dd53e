"""Benchmark: the tunnel against the broker's own limit and the kernel's, in one run.

    sudo PYTHONPATH=. .venv/bin/python -m bench.tunnel [--quick] [--wire json|fast|auto]
                                                       [--json FILE] [--logs DIR]

1. tunnel: a router and two agents on the local RabbitMQ (a vhost of our own), agent_1's
   TUN in one namespace, agent_2's in another; ping -6, iperf3 TCP, iperf3 UDP ladder;
   CPU of each agent, the router and the broker per 10k packets (agents' counters).
2. relay: publisher -> bare pika relay -> consumer with the same JSON bodies
   (bench/relay.py): messages/s, equivalent Mbit/s, and a one-at-a-time round trip.
3. veth: the same ping and iperf3 over a veth pair between two namespaces.

Prints one table with the ratios tunnel/relay and tunnel/veth; --json writes the same.
Everything made (namespaces, vhost, processes) is removed at the end, also on errors and
Ctrl-C. Needs root, iperf3, ping, ss, rabbitmqctl and a RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import relay
from bench.common import (
    ROOT,
    Stack,
    fmt,
    iperf3,
    log,
    make_netns,
    make_veth,
    make_vhost,
    markdown_table,
    ping,
    ping_once,
    ratio,
    run_cleanly,
    table,
    udp_socket_buffer,
)
from bench.rig import ADDR_2, Sample, Tunnel, delta, wire_option

PACKET_SIZE = 1400  # IPv6 packet size the relay and the UDP tests use
UDP_LEN = PACKET_SIZE - 48  # iperf3 -l: UDP payload so that IPv6 + UDP headers make 1400 B
LADDER = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]  # Mbit/s offered
MAX_LOSS = 1.0  # %
MIN_KEEP_UP = 0.95  # sent and received rate at least this share of the offered rate
VETH_A, VETH_B = "fd00:b::1", "fd00:b::2"


@dataclass
class Plan:
    ping_count: int
    ping_interval: float
    tcp_seconds: float
    udp_seconds: float
    udp_refine: int  # geometric bisection steps after the first failing rate
    relay_seconds: float
    relay_warmup: float
    rtt_count: int

    @classmethod
    def full(cls) -> Plan:
        return cls(500, 0.01, 10, 3, 3, 8, 1.0, 500)

    @classmethod
    def quick(cls) -> Plan:
        return cls(100, 0.01, 3, 1, 1, 2, 0.5, 100)


# -- the path measurements (tunnel and veth alike) ------------------------------------------


class Link:
    """One path between two namespaces; with a tunnel, CPU/counter samples around phases."""

    def __init__(
        self,
        name: str,
        ns_client: str,
        ns_server: str,
        addr: str,
        logdir: Path,
        tunnel: Tunnel | None = None,
    ) -> None:
        self.name, self.ns_client, self.ns_server, self.addr = name, ns_client, ns_server, addr
        self.logdir, self.tunnel = logdir, tunnel

    def _sample(self) -> Sample | None:
        return self.tunnel.sample() if self.tunnel else None

    def _cpu(self, a: Sample | None, fallback: dict[str, int] | None = None) -> Any:
        if self.tunnel is None or a is None:
            return None
        return delta(a, self.tunnel.sample(), fallback)

    def settle(self) -> None:
        if self.tunnel:
            self.tunnel.settle()

    def ping(self, plan: Plan) -> dict[str, Any]:
        log(f"{self.name}: ping -6 {plan.ping_count} x {plan.ping_interval * 1000:g} ms")
        s = self._sample()
        out = ping(self.ns_client, self.addr, plan.ping_count, plan.ping_interval)
        n = 2 * (out["received"] or 0)
        out["cpu"] = self._cpu(s, {"agent_1": n, "agent_2": n, "router": n})
        return out

    def tcp(self, plan: Plan) -> dict[str, Any]:
        log(f"{self.name}: iperf3 TCP {plan.tcp_seconds:g} s")
        self.settle()
        s = self._sample()
        out = iperf3(self.logdir, self.ns_server, self.ns_client, self.addr, plan.tcp_seconds)
        out["cpu"] = self._cpu(s)
        return out

    def udp_step(self, plan: Plan, mbit: float) -> dict[str, Any]:
        self.settle()
        s = self._sample()
        out = iperf3(
            self.logdir,
            self.ns_server,
            self.ns_client,
            self.addr,
            plan.udp_seconds,
            udp_mbit=mbit,
            udp_len=UDP_LEN,
        )
        if "error" in out:
            out = {"offered_mbit_per_s": mbit, "error": out["error"], "loss_pct": 100.0}
        sent = out.get("packets", 0)
        got = sent - out.get("lost_packets", 0) if sent else 0
        out["cpu"] = self._cpu(s, {"agent_1": sent, "router": sent, "agent_2": got})
        # a rate passes if it is carried, not just buffered: < 1 % lost, and the sender could
        # send it (a TUN pushes back when full) and the receiver got it at that rate (queues
        # deep enough to absorb a whole step would otherwise hide an overload)
        keep_up = MIN_KEEP_UP * mbit
        out["ok"] = (
            "error" not in out
            and out["loss_pct"] < MAX_LOSS
            and out["sent_mbit_per_s"] >= keep_up
            and out["mbit_per_s"] >= keep_up
        )
        log(
            f"{self.name}: UDP {mbit:g} Mbit/s offered: sent {fmt(out.get('sent_mbit_per_s'))}, "
            f"received {fmt(out.get('mbit_per_s'))}, loss {fmt(out['loss_pct'])} % "
            + ("ok" if out["ok"] else "FAIL")
            + (f" ({out['error']})" if "error" in out else "")
        )
        return out

    def udp(self, plan: Plan, start_at: float = 0) -> dict[str, Any]:
        """Offer rising rates until one loses >= 1 %; refine between it and the last good one."""
        log(f"{self.name}: iperf3 UDP ladder, {plan.udp_seconds:g} s per step")
        steps: list[dict[str, Any]] = []
        good: dict[str, Any] | None = None
        bad: dict[str, Any] | None = None
        for rate in [r for r in LADDER if r >= start_at] or LADDER[-1:]:
            step = self.udp_step(plan, rate)
            steps.append(step)
            if not step["ok"]:
                bad = step
                break
            good = step
        for _ in range(plan.udp_refine if bad else 0):
            lo = good["offered_mbit_per_s"] if good else 0.0
            hi = bad["offered_mbit_per_s"]
            mid = math.sqrt(lo * hi) if lo else hi / 2
            mid = float(f"{mid:.2g}")
            if mid <= lo or mid >= hi:
                break
            step = self.udp_step(plan, mid)
            steps.append(step)
            if step["ok"]:
                good = step
            else:
                bad = step
        self.settle()
        return {
            "step_seconds": plan.udp_seconds,
            "payload_bytes": UDP_LEN,
            "ip_packet_bytes": PACKET_SIZE,
            "max_loss_pct": MAX_LOSS,
            "socket_buffer_bytes": udp_socket_buffer(),
            "best": good,
            "best_mbit_per_s": good["mbit_per_s"] if good else 0.0,
            "best_offered_mbit_per_s": good["offered_mbit_per_s"] if good else 0.0,
            "capped": bad is None,  # the ladder's top passed: the limit is higher
            "steps": steps,
        }

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not ping_once(self.ns_client, self.addr):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no ping from {self.ns_client} to {self.addr}")
            time.sleep(0.1)

    def all(self, plan: Plan, udp_start_at: float = 0) -> dict[str, Any]:
        self.wait_ready()
        return {"ping": self.ping(plan), "tcp": self.tcp(plan), "udp": self.udp(plan, udp_start_at)}


# -- the report -------------------------------------------------------------------------


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if d is None:
            return None
        d = d.get(k) if isinstance(d, dict) else None
    return d


def rows(result: dict[str, Any]) -> list[list[Any]]:
    t, r, v = result["tunnel"], result["relay"], result["veth"]
    rt, tp = r.get("round_trip"), r.get("throughput")
    t_best, v_best = _get(t, "udp", "best"), _get(v, "udp", "best")

    def udp_rate(side: Any) -> Any:
        best = _get(side, "udp", "best_mbit_per_s")
        if best is not None and _get(side, "udp", "capped"):
            return f">={fmt(best)}"
        return best

    def row(label: str, tv: Any, rv: Any, vv: Any) -> list[Any]:
        num = [x if not isinstance(x, str) else float(x.lstrip(">=")) for x in (tv, rv, vv)]
        return [label, tv, rv, vv, ratio(num[0], num[1]), ratio(num[0], num[2])]

    out = [
        row(
            "ping p50 ms (relay: round trip)",
            _get(t, "ping", "p50_ms"),
            _get(rt, "p50_ms"),
            _get(v, "ping", "p50_ms"),
        ),
        row(
            "ping p99 ms (relay: round trip)",
            _get(t, "ping", "p99_ms"),
            _get(rt, "p99_ms"),
            _get(v, "ping", "p99_ms"),
        ),
        row(
            "ping loss %",
            _get(t, "ping", "loss_pct"),
            _get(rt, "loss_pct"),
            _get(v, "ping", "loss_pct"),
        ),
        row(
            "TCP Mbit/s (relay: msgs x 1400 B)",
            _get(t, "tcp", "mbit_per_s"),
            _get(tp, "mbit_per_s"),
            _get(v, "tcp", "mbit_per_s"),
        ),
        row("TCP retransmits", _get(t, "tcp", "retransmits"), None, _get(v, "tcp", "retransmits")),
        row("UDP Mbit/s, best with < 1 % loss", udp_rate(t), _get(tp, "mbit_per_s"), udp_rate(v)),
        row(
            "packets/s of 1400 B (UDP best)",
            _get(t_best, "received_pps"),
            _get(tp, "msgs_per_s"),
            _get(v_best, "received_pps"),
        ),
        row(
            "packets/s (relay: on agent.bus, lean frames)",
            _get(t_best, "received_pps"),
            _get(r, "lean_throughput", "msgs_per_s"),
            None,
        ),
    ]
    for who, rname in (
        ("agent_1", "publisher"),
        ("router", "relay"),
        ("agent_2", "consumer"),
        ("broker", "broker"),
    ):
        out.append(
            row(
                f"CPU s/10k pkt, UDP best: {who} (relay: {rname})",
                _get(t_best, "cpu", who, "cpu_s_per_10k"),
                _get(tp, "cpu_s_per_10k", rname),
                None,
            )
        )
    for phase, src in (("UDP best", t_best), ("TCP", _get(t, "tcp"))):
        out.append(
            row(
                f"packets per bus message (router), {phase}",
                _get(src, "cpu", "router_packets_per_message"),
                None,
                None,
            )
        )
    for who in ("agent_1", "router", "agent_2", "broker"):
        out.append(
            row(
                f"CPU s/10k pkt, TCP: {who}",
                _get(t, "tcp", "cpu", who, "cpu_s_per_10k"),
                None,
                None,
            )
        )
    return out


HEADER = ["", "tunnel", "relay", "veth", "tunnel/relay", "tunnel/veth"]


def notes(result: dict[str, Any]) -> list[str]:
    out = [
        f"wire: {result['wire']}; in use (agents' 'uplink wire' log): "
        + ", ".join(f"{k} {v or '?'}" for k, v in result["tunnel"]["wire_in_use"].items())
        + "; the relay always carries JSON bodies (ioppytest's wire)",
        "relay column: bare pika relay of the same JSON bodies (bench/relay.py); its Mbit/s is "
        "messages/s x 1400 B, the better of two runs (before and after the tunnel: "
        + " and ".join(f"{x:.0f}" for x in result["relay"]["throughput"]["runs_msgs_per_s"])
        + " msgs/s); its round trip is a ping-sized body out and back "
        "(4 broker hops, as a ping through the tunnel)",
        "relay on agent.bus: the same relay with the agent's own bus code (pika for the "
        "connection, agent.bus.frames for the messages) in all three roles: what the broker "
        "moves with clients as lean as the tunnel's",
        "CPU s/10k pkt x 100 = us per packet; broker CPU is per router arrival / relayed "
        "message; relay CPU rows: publisher ~ agent_1, relay ~ router, consumer ~ agent_2",
        f"UDP: {UDP_LEN} B payload (1400 B IPv6 packets), ladder "
        f"{','.join(map(str, LADDER))} Mbit/s then refined; a rate passes with < 1 % loss and "
        f"sent and received at >= {MIN_KEEP_UP:.0%} of it; '>=': the ladder's top passed",
    ]
    for side in ("tunnel", "veth"):
        for phase in ("tcp",):
            err = _get(result, side, phase, "error")
            if err:
                out.append(f"{side} {phase} failed: {err}")
    return out


def render(result: dict[str, Any]) -> str:
    load = result["machine"]
    head = (
        f"bench.tunnel {'--quick ' if result['quick'] else ''}on {load['cpus']} CPUs, "
        f"load {load['loadavg_start']} -> {load['loadavg_end']}, "
        f"{result['runtime_s']:.0f} s, project {result['project']}"
    )
    body = table(HEADER, rows(result))
    return "\n".join([head, "", body, ""] + [f"* {n}" for n in notes(result)])


def render_markdown(result: dict[str, Any]) -> str:
    return markdown_table(HEADER, rows(result))


# -- main -------------------------------------------------------------------------------


def preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.tunnel: run as root (namespaces, TUN)")
    for tool in ("ip", "ping", "iperf3", "ss", "rabbitmqctl"):
        if shutil.which(tool) is None:
            sys.exit(f"bench.tunnel: {tool} not found")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        sys.exit("bench.tunnel: no RabbitMQ on 127.0.0.1:5672")


def project_version() -> str:
    try:
        r = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return r.stdout.strip() or "?"
    except OSError:
        return "?"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(label: str, fn: Callable[[], Any], times: dict[str, float]) -> Any:
    t0 = time.monotonic()
    try:
        return fn()
    finally:
        times[label] = round(time.monotonic() - t0, 1)


def bench(args: argparse.Namespace, stack: Stack, logdir: Path) -> dict[str, Any]:
    plan = Plan.quick() if args.quick else Plan.full()
    t_start = time.monotonic()
    tag = f"bench{os.getpid()}"
    wire_args, wire_note = wire_option(args.wire)
    log(f"wire: {wire_note}")
    result: dict[str, Any] = {
        "quick": args.quick,
        "wire": wire_note,
        "wire_requested": args.wire,
        "wire_passed": bool(wire_args),
        "plan": plan.__dict__,
        "project": project_version(),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": loadavg()},
    }
    times: dict[str, float] = {}
    url = timed("vhost", lambda: make_vhost(stack, tag), times)

    # 2. the relay, while nothing else of ours is on the broker: throughput twice (before and
    # after the tunnel; the better one is the broker's limit, less exposed to a passing load
    # from elsewhere on the machine), round trip once
    def relay_throughput(label: str) -> dict[str, Any]:
        log(f"relay: throughput {plan.relay_seconds:g} s, {PACKET_SIZE} B packets as JSON")
        run = timed(
            label,
            lambda: relay.throughput(url, PACKET_SIZE, plan.relay_seconds, plan.relay_warmup),
            times,
        )
        log(f"relay: {run['msgs_per_s']:.0f} msgs/s")
        return run

    tp_runs = [relay_throughput("relay_throughput_1")]
    log(f"relay: round trip x {plan.rtt_count}")
    rt = timed(
        "relay_round_trip", lambda: relay.round_trip(url, plan.rtt_count, plan.ping_interval), times
    )

    # 1. the tunnel
    ns_a = make_netns(stack, f"{tag}-a")
    ns_b = make_netns(stack, f"{tag}-b")
    tun_stack = Stack()
    stack.push("stop the tunnel", tun_stack.close)
    tunnel = Tunnel(tun_stack, url, ns_a, ns_b, logdir, wire_args, relay.broker_pid())
    times["tunnel_start"] = round(tunnel.start(), 1)
    path = Link("tunnel", ns_a, ns_b, ADDR_2, logdir, tunnel)
    result["tunnel"] = timed("tunnel", lambda: path.all(plan), times)
    result["tunnel"]["wire_in_use"] = tunnel.wire_in_use()
    result["tunnel"]["exit_codes"] = tunnel.stop()
    tun_stack.close()
    tp_runs.append(relay_throughput("relay_throughput_2"))
    tp = dict(max(tp_runs, key=lambda r: r["msgs_per_s"]))
    tp["runs_msgs_per_s"] = [r["msgs_per_s"] for r in tp_runs]
    # the same relay on the agent's own bus code: the broker with clients as lean as ours
    log(f"relay on agent.bus: throughput {plan.relay_seconds:g} s")
    lean = timed(
        "relay_lean",
        lambda: relay.throughput(
            url, PACKET_SIZE, plan.relay_seconds, plan.relay_warmup, lean=True
        ),
        times,
    )
    log(f"relay on agent.bus: {lean['msgs_per_s']:.0f} msgs/s")
    result["relay"] = {
        "throughput": tp,
        "throughput_runs": tp_runs,
        "round_trip": rt,
        "lean_throughput": lean,
    }

    # 3. the kernel: a veth pair, same measurements; UDP from the tunnel's best rate up
    ns_va = make_netns(stack, f"{tag}-va")
    ns_vb = make_netns(stack, f"{tag}-vb")
    make_veth(ns_va, ns_vb, f"vb{os.getpid()}", f"{VETH_A}/64", f"{VETH_B}/64")
    vpath = Link("veth", ns_va, ns_vb, VETH_B, logdir)
    start_at = result["tunnel"]["udp"]["best_offered_mbit_per_s"] or 0
    result["veth"] = timed("veth", lambda: vpath.all(plan, udp_start_at=start_at), times)

    result["phase_seconds"] = times
    result["machine"]["loadavg_end"] = loadavg()
    result["runtime_s"] = time.monotonic() - t_start
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tunnel", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases, for a smoke run")
    p.add_argument(
        "--wire",
        choices=["json", "fast", "auto"],
        help="passed to the agents as --wire if their CLI has the option",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--logs", metavar="DIR", help="keep the processes' logs in DIR")
    args = p.parse_args(argv)
    preflight()
    t0 = time.monotonic()
    code, result = run_cleanly(args.logs, "bench-tunnel-", lambda st, d: bench(args, st, d))
    if result is None:
        return code
    result["runtime_s"] = time.monotonic() - t0
    print(render(result))
    print(f"\nruntime {result['runtime_s']:.0f} s (cleanup included)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(result) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
