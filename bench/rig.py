"""A router and two agents on the local broker, each agent's TUN in a namespace of its own.

agent_1 (bbbb::1) lives in ns_a, agent_2 (bbbb::2) in ns_b, the router anywhere. The
processes are `python -m agent ...` children ended by PID (SIGINT, then SIGKILL) when the
stack unwinds. Also: per-process CPU and packet-counter samples (`kill -USR1`).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Proc,
    Stack,
    cpu_seconds,
    log,
    ping_once,
    request_status,
    run,
)

ADDR_1 = "bbbb::1"
ADDR_2 = "bbbb::2"


def agent_cli_help() -> str:
    r = run([sys.executable, "-m", "agent", "connect", "--help"], timeout=30)
    return r.stdout + r.stderr


def wire_option(requested: str | None) -> tuple[list[str], str]:
    """The `--wire X` arguments for the agents if their CLI has the option, and a note."""
    text = agent_cli_help()
    has = "--wire" in text
    if requested is None:
        m = re.search(r"--wire\b.*?\[default: (\w+)\]", text, re.S)
        return [], "agents' default wire" + (f" (--wire {m.group(1)})" if has and m else "")
    if has:
        return ["--wire", requested], f"--wire {requested}"
    return [], f"--wire {requested} NOT passed: the agent CLI has no --wire option (default wire)"


@dataclass
class Sample:
    t: float
    cpu: dict[str, float | None]
    packets: dict[str, int | None]
    counters: dict[str, dict[str, int] | None] = field(default_factory=dict)


@dataclass
class Tunnel:
    stack: Stack
    url: str
    ns_a: str
    ns_b: str
    logdir: Path
    wire_args: list[str] = field(default_factory=list)
    broker_pid: int | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    python: list[str] = field(default_factory=list)  # how to run the agent; [] is this tree's
    # a router serving several sessions, started by the caller (None: this tunnel starts
    # its own); its lines about this session start with "[label] " (label: the vhost)
    shared_router: Proc | None = None
    label: str = ""
    router_args: list[str] = field(default_factory=list)  # e.g. --metrics for bench.status

    def start(self, timeout: float = 30.0) -> float:
        """Start router and agents, wait until a ping crosses; returns the seconds it took."""
        t0 = time.monotonic()
        py = self.python or [sys.executable, "-m", "agent"]
        if self.shared_router is not None:
            self.procs["router"] = self.shared_router
        else:
            self.procs["router"] = Proc(
                self.stack, "router", py + ["router", "--url", self.url, *self.router_args],
                self.logdir,
            )
        learned = f"[{self.label}] learned" if self.shared_router is not None else "learned"
        for name, ns in (("agent_1", self.ns_a), ("agent_2", self.ns_b)):
            argv = py + ["connect", "--name", name, "--netns", ns, "--url", self.url]
            self.procs[name] = Proc(self.stack, name, argv + self.wire_args, self.logdir)
        deadline = t0 + timeout

        def ready() -> bool:
            router = self.procs["router"].text()
            return (
                f"{learned} agent_1" in router
                and f"{learned} agent_2" in router
                and all("published ready" in self.procs[a].text() for a in ("agent_1", "agent_2"))
            )

        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("tunnel not up in time\n" + self.logs())
            time.sleep(0.1)
        while not (ping_once(self.ns_a, ADDR_2) and ping_once(self.ns_b, ADDR_1)):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("no ping through the tunnel\n" + self.logs())
            time.sleep(0.2)
        took = time.monotonic() - t0
        log(
            f"tunnel up in {took:.1f} s (pids: "
            + ", ".join(f"{n} {p.pid}" for n, p in self.procs.items())
            + ")"
        )
        return took

    def wire_in_use(self) -> dict[str, str | None]:
        """What each agent logged last as its uplink wire ("uplink wire: fast"), if anything."""
        out: dict[str, str | None] = {}
        for name in ("agent_1", "agent_2"):
            found = re.findall(r"uplink wire: (\w+)", self.procs[name].text())
            if found:
                out[name] = found[-1]
            elif self.wire_args == ["--wire", "json"]:
                out[name] = "json"  # forced: no negotiation, no "uplink wire" line
            else:
                out[name] = None
        return out

    def _check_alive(self) -> None:
        dead = [n for n, p in self.procs.items() if not p.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {n}.log\n{p.tail()}" for n, p in self.procs.items())

    def stop(self) -> dict[str, int | None]:
        codes = {}
        for name in ("agent_1", "agent_2", "router"):
            if name == "router" and self.shared_router is not None:
                continue  # its starter stops it
            if name in self.procs:
                codes[name] = self.procs[name].stop()
        return codes

    # -- measurement ------------------------------------------------------------------

    def sample(self) -> Sample:
        packets: dict[str, int | None] = {}
        raw: dict[str, dict[str, int] | None] = {}
        for name, proc in self.procs.items():
            raw[name] = counters = request_status(proc, label=self._label(name))
            packets[name] = None if counters is None else packet_count(name, counters)
        cpu = {name: cpu_seconds(p.pid) for name, p in self.procs.items()}
        cpu["broker"] = cpu_seconds(self.broker_pid)
        return Sample(time.monotonic(), cpu, packets, raw)

    def _label(self, name: str) -> str:
        return self.label if name == "router" and self.shared_router is not None else ""

    def settle(self, max_wait: float = 6.0) -> None:
        """Wait until no process's packet count moves (queues drained; their TTL is 5 s)."""
        deadline = time.monotonic() + max_wait
        last = None
        while time.monotonic() < deadline:
            counts = []
            for name, proc in self.procs.items():
                status = request_status(proc, label=self._label(name))
                counts.append(None if status is None else packet_count(name, status))
            if None not in counts and counts == last:
                return
            last = counts
            time.sleep(0.3)


def packet_count(name: str, counters: dict[str, int]) -> int:
    """Packets a process handled: an agent's every path; the router's arrivals (`agent_1>`)."""
    if name == "router":
        return sum(v for k, v in counters.items() if k.endswith(">") and not k.startswith(">"))
    return sum(v for k, v in counters.items() if ">" in k)  # paths, not message counts


def delta(a: Sample, b: Sample, fallback_packets: dict[str, int] | None = None) -> dict[str, Any]:
    """CPU seconds, packets and CPU s/10k packets per process between two samples.

    The broker's CPU is per router arrival (one tunnel packet = two broker messages, as one
    relayed message is). fallback_packets (from ping/iperf3 numbers) is used where a
    process logged no counters.
    """
    out: dict[str, Any] = {"seconds": b.t - a.t}
    fallback_packets = fallback_packets or {}
    for name in b.cpu:
        ca, cb = a.cpu.get(name), b.cpu.get(name)
        cpu = None if ca is None or cb is None else cb - ca
        src = "router" if name == "broker" else name
        pa, pb = a.packets.get(src), b.packets.get(src)
        packets, how = (pb - pa, "counters") if pa is not None and pb is not None else (None, "")
        if packets is None and src in fallback_packets:
            packets, how = fallback_packets[src], "estimated from ping/iperf3"
        out[name] = {
            "cpu_s": cpu,
            "packets": packets,
            "packets_from": how or None,
            "cpu_s_per_10k": cpu * 10000 / packets if cpu is not None and packets else None,
        }
        ra, rb = a.counters.get(name), b.counters.get(name)
        if ra is not None and rb is not None:
            out[name]["counters"] = {k: v - ra.get(k, 0) for k, v in rb.items()}
    router = out.get("router", {})
    rx = router.get("counters", {})
    messages = rx.get("rx fast", 0) + rx.get("rx json", 0)
    if messages and router.get("packets"):
        out["router_packets_per_message"] = router["packets"] / messages
    return out
