"""A throw-away 3-node RabbitMQ cluster on this machine, beside the main broker.

Each node runs as the `rabbitmq` user with its own node name (unique to the run), AMQP
port (5681-5683), distribution port, data, log and pid paths, config file and an empty
enabled-plugins file (so no node reads the main broker's plugins and clashes on 15672).
The cluster uses net_ticktime = 10 s (a frozen node is declared down by its peers within
~7.5-12.5 s instead of 45-75 s) and autoheal partition handling (a node resumed after it
was declared down restarts and rejoins). Used by the cluster tests and bench/cluster.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.tools.proc import end_process

AMQP_PORTS = (5681, 5682, 5683)
DIST_PORT_OFFSET = 20000  # 25681..25683
NET_TICKTIME = 10

_CONF = """\
listeners.tcp.default = {port}
loopback_users.guest = true
cluster_partition_handling = autoheal
net_ticktime = {ticktime}
log.file.level = info
log.console = false
"""


class ClusterError(RuntimeError):
    pass


def _as_rabbitmq(
    env: dict[str, str], *cmd: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run cmd as the rabbitmq user (its Erlang cookie) with env added."""
    full = ["runuser", "-u", "rabbitmq", "--", "env", *[f"{k}={v}" for k, v in env.items()], *cmd]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Node:
    name: str  # erlang node name, e.g. s11ab12c1@localhost
    port: int
    base: Path

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.port + DIST_PORT_OFFSET),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
        }

    def ctl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        r = _as_rabbitmq(self.env(), "rabbitmqctl", "-q", "-n", self.name, *args, timeout=timeout)
        if check and r.returncode != 0:
            raise ClusterError(f"rabbitmqctl {' '.join(args)} on {self.name}: {r.stderr.strip()}")
        return r.stdout

    def start(self) -> None:
        r = _as_rabbitmq(self.env(), "rabbitmq-server", "-detached")
        if r.returncode != 0:
            raise ClusterError(f"cannot start {self.name}: {r.stderr.strip()}")

    def await_startup(self, timeout: float = 180) -> None:
        """await_startup fails at once until the node registered with epmd: retry it
        (and each call may be slow on a loaded machine: the CLI is an Erlang VM too)."""
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                r = _as_rabbitmq(
                    self.env(), "rabbitmqctl", "-q", "-n", self.name, "await_startup",
                    "--timeout", "60", timeout=90,
                )
            except subprocess.TimeoutExpired:
                why = "rabbitmqctl await_startup timed out"
                continue
            if r.returncode == 0:
                return
            why = r.stderr.strip()[-300:]
            time.sleep(0.5)
        raise ClusterError(f"{self.name} did not start in {timeout:.0f} s: {why}")

    def beam_pid(self) -> int | None:
        """The PID of this node's Erlang VM, if it runs (checked: never another process)."""
        try:
            pid = int((self.base / "pid").read_text().strip())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"RABBITMQ_NODENAME={self.name}".encode() in environ else None

    def signal(self, sig: int) -> None:
        pid = self.beam_pid()
        if pid is None:
            raise ClusterError(f"no pid for {self.name}")
        os.kill(pid, sig)

    def is_running(self) -> bool:
        return self.beam_pid() is not None


class Cluster:
    def __init__(self, ports: tuple[int, ...] = AMQP_PORTS) -> None:
        self.run = uuid.uuid4().hex[:5]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"agent-cluster-{self.run}-"))
        self.nodes = [
            Node(f"s11{self.run}n{i + 1}@localhost", port, self.tmp / f"n{i + 1}")
            for i, port in enumerate(ports)
        ]

    def urls(self, vhost: str, params: str = "") -> list[str]:
        q = f"?{params}" if params else ""
        return [f"amqp://guest:guest@{n.url_host}/{vhost}{q}" for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            for port in (node.port, node.port + DIST_PORT_OFFSET):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        raise ClusterError(f"port {port} is in use (a test cluster left over?)")
        for node in self.nodes:
            (node.base / "mnesia").mkdir(parents=True)
            (node.base / "log").mkdir()
            (node.base / "enabled_plugins").write_text("[].\n")
            (node.base / "rabbitmq.conf").write_text(
                _CONF.format(port=node.port, ticktime=NET_TICKTIME)
            )
            (node.base / "advanced.config").write_text("[].\n")
            (node.base / "rabbitmq-env.conf").write_text("")
        shutil.chown(self.tmp, "rabbitmq", "rabbitmq")
        for path in self.tmp.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        for node in self.nodes:
            node.await_startup()

    def restore(self, node: Node) -> None:
        """Bring node back (after stop_app, kill -9 or SIGSTOP) and wait until it serves."""
        if node.is_running():
            try:
                node.signal(signal.SIGCONT)
            except OSError:
                pass
            node.ctl("start_app", check=False, timeout=120)
        else:
            node.start()
        node.await_startup(timeout=120)

    def add_vhost(self, vhost: str) -> None:
        self.nodes[0].ctl("add_vhost", vhost)
        self.nodes[0].ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        for node in self.nodes:
            if node.ctl("delete_vhost", vhost, check=False, timeout=30) is not None:
                break

    def queues(self, vhost: str) -> dict[str, list[str]]:
        """Queue names of vhost as each running node lists them."""
        out: dict[str, list[str]] = {}
        for node in self.nodes:
            text = node.ctl("list_queues", "-p", vhost, "--no-table-headers", "name", check=False)
            out[node.name] = [line for line in text.splitlines() if line.strip()]
        return out

    def stop(self) -> None:
        """Stop every node (also a frozen or half-started one) and remove the data."""
        for node in self.nodes:
            pid = node.beam_pid()
            if pid is None or not node.is_running():
                continue
            try:
                os.kill(pid, signal.SIGCONT)
                node.ctl("stop", timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if node.is_running():  # a throw-away node: no need to wait for a clean stop
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)


class PingLog:
    """ping -D at 10/s in a namespace; reply times and duplicates from its output."""

    def __init__(self, ns: str, dst: str, path: Path) -> None:
        self.path = path
        self._out = open(path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-6", "-D", "-i", "0.1", "-W", "1", dst],
            stdout=self._out, stderr=subprocess.STDOUT,
        )

    def replies(self) -> list[float]:
        text = self.path.read_text(errors="replace")
        return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", text, re.M)]

    def dups(self) -> int:
        return self.path.read_text(errors="replace").count("DUP!")

    def longest_silence(self, start: float, end: float) -> float:
        """The longest gap between replies (and from start / to end) in [start, end]."""
        times = [start, *[t for t in self.replies() if start <= t <= end], end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def count_since(self, since: float) -> int:
        """Replies that came after `since`."""
        return sum(t > since for t in self.replies())

    def flowing_since(self, since: float) -> bool:
        """At least 5 replies came in the last second, all after `since`."""
        now = time.time()
        return sum(t > max(since, now - 1.0) for t in self.replies()) >= 5

    def stop(self) -> None:
        end_process(self.popen, signal.SIGINT)
        self._out.close()


if __name__ == "__main__":  # manual use: python -m tests.tools.cluster
    c = Cluster()
    t0 = time.monotonic()
    c.start()
    print(f"cluster up in {time.monotonic() - t0:.1f} s:", [n.name for n in c.nodes], c.tmp)
