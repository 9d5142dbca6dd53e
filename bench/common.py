"""What the benchmarks share: cleanup stack, processes by PID, namespaces, vhost, /proc reads,
ping and iperf3 runs and their parsing, the table.

Everything made is registered on a `Stack` right after it is made and undone in reverse
order, also on errors, Ctrl-C and SIGTERM. Processes are ended by the PID we started
(Popen / multiprocessing handles, never by name).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
IPERF_PORT = 5201


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """SIGTERM / SIGHUP while running: unwind and clean up like Ctrl-C."""


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception so that every `finally` runs.

    SIGINT raises KeyboardInterrupt also when we were started in the background by a
    non-interactive shell (which would have left it ignored).
    """

    def raise_it(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, raise_it) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Stack:
    """Undo actions, run last-in first-out; each one runs even if an earlier one failed."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, fn: Callable[[], object]) -> None:
        self._undo.append((what, fn))

    def close(self) -> None:
        # a second Ctrl-C or a SIGTERM must not cut the cleanup short
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self._undo:
                what, fn = self._undo.pop()
                try:
                    fn()
                except Exception as exc:  # keep going: the rest must still be undone
                    log(f"cleanup: {what} failed: {exc}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- processes --------------------------------------------------------------------------


def run_cleanly(
    logs: str | None, prefix: str, body: Callable[[Stack, Path], dict[str, Any]]
) -> tuple[int, dict[str, Any] | None]:
    """Run body(stack, logdir) so that everything it made is undone however it ends.

    logdir is `logs` (kept) or a temporary directory (removed). Returns (exit code,
    result): (0, result), (130, None) when interrupted, (1, None) on RuntimeError.
    """
    logdir = Path(logs) if logs else Path(tempfile.mkdtemp(prefix=prefix))
    logdir.mkdir(parents=True, exist_ok=True)
    try:
        with interruptible(), Stack() as stack:
            if not logs:
                stack.push("remove logs", lambda: shutil.rmtree(logdir, ignore_errors=True))
            result = body(stack, logdir)
            log("cleaning up")
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; everything made was removed")
        return 130, None
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1, None
    return 0, result


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A child process with its output in a log file, ended by its PID."""

    def __init__(self, stack: Stack, name: str, argv: list[str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log: TextIO = open(self.log_path, "w")  # noqa: SIM115 (closed by stop)
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=child_env(),
            start_new_session=True,  # a terminal Ctrl-C is ours; we end children in order
        )
        self.pid = self.popen.pid
        stack.push(f"stop {name} (pid {self.pid})", self.stop)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> int | None:
        if self.alive():
            self.popen.send_signal(sig)  # by PID, only while not reaped
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run to completion; on timeout or interruption the child is killed by its PID."""
    p = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=child_env(),
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.communicate()
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def check(argv: list[str], timeout: float = 30.0) -> str:
    r = run(argv, timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {(r.stderr or r.stdout).strip()}")
    return r.stdout


# -- namespaces, veth, vhost -------------------------------------------------------------


def make_netns(stack: Stack, name: str) -> str:
    check(["ip", "netns", "add", name])
    stack.push(f"delete namespace {name}", lambda: check(["ip", "netns", "del", name]))
    check(["ip", "-n", name, "link", "set", "lo", "up"])
    return name


def netns_exec(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def make_veth(ns_a: str, ns_b: str, tag: str, addr_a: str, addr_b: str) -> None:
    """A veth pair made directly inside the two namespaces (nothing in the host's)."""
    a, b = f"{tag}a", f"{tag}b"
    check(["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b])
    for ns, dev, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
        check(["ip", "-n", ns, "addr", "add", addr, "dev", dev, "nodad"])
        check(["ip", "-n", ns, "link", "set", dev, "up"])
    # deleting a namespace deletes its end, and so the pair


def make_vhost(stack: Stack, name: str) -> str:
    check(["rabbitmqctl", "-q", "add_vhost", name], 60)
    stack.push(
        f"delete vhost {name}", lambda: check(["rabbitmqctl", "-q", "delete_vhost", name], 60)
    )
    check(["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"], 60)
    return f"amqp://guest:guest@127.0.0.1:5672/{name}"


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None if it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# -- statistics and parsing -------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


_PING_TIME = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping_times(output: str) -> list[float]:
    """The time= of each echo answered (ms), duplicates left out."""
    times: dict[int, float] = {}
    for line in output.splitlines():
        if "DUP!" in line:
            continue
        m = _PING_TIME.search(line)
        if m:
            times.setdefault(int(m.group(1)), float(m.group(2)))
    return list(times.values())


def parse_ping(output: str) -> dict[str, Any]:
    values = ping_times(output)
    m = _PING_SUMMARY.search(output)
    sent = int(m.group(1)) if m else None
    received = int(m.group(2)) if m else len(values)
    return {
        "sent": sent,
        "received": received,
        "loss_pct": 100.0 * (sent - received) / sent if sent else None,
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "mean_ms": sum(values) / len(values) if values else None,
        "min_ms": min(values) if values else None,
        "max_ms": max(values) if values else None,
    }


def ping(ns: str, addr: str, count: int, interval: float) -> dict[str, Any]:
    argv = netns_exec(
        ns, "ping", "-6", "-n", "-c", str(count), "-i", str(interval), "-W", "1", addr
    )
    r = run(argv, timeout=count * interval + 15)
    out = parse_ping(r.stdout)
    out["count"], out["interval_s"] = count, interval
    return out


def ping_once(ns: str, addr: str) -> bool:
    r = run(netns_exec(ns, "ping", "-6", "-n", "-c", "1", "-W", "1", addr), timeout=5)
    return r.returncode == 0


_STATUS_ITEM = re.compile(r"^(.+) (\d+)p/(\d+)B$")


def parse_status(line: str) -> dict[str, int]:
    """'status: tun>bus 12p/3400B | rx fast 3p/9000B | drops: x 1' -> {path: packets}."""
    out = {}
    for part in line.split(" | "):
        m = _STATUS_ITEM.match(part.strip())
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def request_status(proc: Proc, timeout: float = 3.0, label: str = "") -> dict[str, int] | None:
    """kill -USR1 the process and read the `status:` line it logs (None if none comes).
    label: a router serving several sessions logs one line per session, "[label] status:"."""
    mark = f"[{label}] status:" if label else "status:"
    before = proc.text().count(mark)
    if not proc.alive():
        return None
    os.kill(proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [ln for ln in proc.text().splitlines() if mark in ln]
        if len(lines) > before:
            return parse_status(lines[-1].split("status:", 1)[1])
        time.sleep(0.02)
    return None


# -- iperf3 ------------------------------------------------------------------------------


def listening(ns: str, port: int) -> bool:
    r = run(netns_exec(ns, "ss", "-Hltn", f"sport = :{port}"), timeout=5)
    return bool(r.stdout.strip())


def start_iperf3_server(stack: Stack, ns: str, logdir: Path, timeout: float = 5.0) -> Proc:
    """`iperf3 -s -1` in ns, returned once it listens."""
    argv = netns_exec(ns, "iperf3", "-s", "-1", "-p", str(IPERF_PORT))
    server = Proc(stack, "iperf3-server", argv, logdir)
    deadline = time.monotonic() + timeout
    while not listening(ns, IPERF_PORT):
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"iperf3 server did not start: {server.tail(3)}")
        time.sleep(0.05)
    return server


def udp_socket_buffer(want: int = 2 * 1024 * 1024) -> int | None:
    """A UDP socket buffer for iperf3 (-w) within the host's limits, or None for the default.

    A bigger receive buffer keeps iperf3's own scheduling delays (a loaded machine) from
    showing up as datagram loss; the kernel refuses more than net.core.[rw]mem_max.
    """
    try:
        limits = [
            int(Path(f"/proc/sys/net/core/{k}").read_text()) for k in ("rmem_max", "wmem_max")
        ]
        default = int(Path("/proc/sys/net/core/rmem_default").read_text())
    except (OSError, ValueError):
        return None
    size = min([want, *limits])
    return size if size > default else None


def iperf3(
    logdir: Path,
    server_ns: str,
    client_ns: str,
    addr: str,
    seconds: float,
    udp_mbit: float | None = None,
    udp_len: int = 1352,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One iperf3 test (TCP, or UDP at udp_mbit) from client_ns to `iperf3 -s -1` in server_ns.

    Returns the client's JSON summary reduced to what we report, or {"error": ...}.
    """
    with Stack() as local:
        try:
            server = start_iperf3_server(local, server_ns, logdir)
        except RuntimeError as exc:
            return {"error": str(exc)}
        argv = [
            "iperf3",
            "-c",
            addr,
            "-p",
            str(IPERF_PORT),
            "-J",
            "-t",
            f"{seconds:g}",
            "--connect-timeout",
            "3000",
            *extra,
        ]
        if udp_mbit is not None:
            argv += ["-u", "-b", f"{udp_mbit:g}M", "-l", str(udp_len)]
            window = udp_socket_buffer()
            if window:
                argv += ["-w", str(window)]
        r = run(netns_exec(client_ns, *argv), timeout=seconds + 30)
        server.stop(signal.SIGTERM, 3)
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"error": (r.stderr or r.stdout).strip()[-300:] or f"iperf3 exit {r.returncode}"}
    if data.get("error"):
        return {"error": data["error"]}
    end = data.get("end", {})
    if udp_mbit is None:
        sent, recv = end.get("sum_sent", {}), end.get("sum_received", {})
        return {
            "seconds": recv.get("seconds"),
            "mbit_per_s": recv.get("bits_per_second", 0) / 1e6,
            "sent_mbit_per_s": sent.get("bits_per_second", 0) / 1e6,
            "retransmits": sent.get("retransmits"),
            "bytes": recv.get("bytes"),
        }
    sent, recv = end.get("sum_sent", {}), end.get("sum_received", {})
    packets, lost = sent.get("packets", 0), recv.get("lost_packets", 0)
    secs = recv.get("seconds") or seconds
    return {
        "offered_mbit_per_s": udp_mbit,
        "sent_mbit_per_s": sent.get("bits_per_second", 0) / 1e6,
        "mbit_per_s": recv.get("bits_per_second", 0) / 1e6,  # received bytes / receiving time
        "packets": packets,
        "lost_packets": lost,
        "loss_pct": recv.get("lost_percent", 100.0 * lost / packets if packets else 100.0),
        "received_pps": (recv.get("packets", packets) - lost) / secs,
        "jitter_ms": recv.get("jitter_ms"),
        "send_seconds": sent.get("seconds"),
        "receive_seconds": secs,
    }


# -- output ------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:.{decimals}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
