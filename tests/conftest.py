"""Fixtures for tests against the real RabbitMQ, real TUNs and real namespaces.

Everything made here has a name unique to the run and is removed at teardown, also when
the test fails. Processes are ended by the PID we started.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from agent import DISTRIBUTION
from agent.bus.port import BusOwner, BusPort
from agent.bus.url import parse_url
from agent.config import AddressPlan, IPNetwork, default_plan
from agent.port import LINKTYPE_RAW, Deliver, Port
from tests.tools.proc import end_process

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:6]
_counter = 0


def _unique(prefix: str) -> str:
    global _counter
    _counter += 1
    return f"{prefix}{RUN_ID}{_counter}"


def broker_up(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T...); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2]


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


def read_at_least(fd: int, size: int, timeout: float = 5.0) -> bytes:
    """What a non-blocking fd (a pty end) yields until size bytes came or timeout s passed."""
    received = bytearray()

    def read() -> bool:
        try:
            received.extend(os.read(fd, 4096))
        except BlockingIOError:
            pass
        return len(received) >= size

    wait_for(read, timeout)
    return bytes(received)


async def until(cond: Callable[[], object], timeout: float = 3.0) -> bool:
    """wait_for inside an event loop: True once cond() holds, False after timeout s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------------- fakes
# One set, for every test that runs an agent in process: the ports are handed in
# (agent.node.Ports), so a test hands in these instead of a TUN, a bus or an interface.


class FakePort:
    """Any port (agent/port.py): records what it is sent and what it is told."""

    linktype = LINKTYPE_RAW

    def __init__(self, name: str = "fake", linktype: int = LINKTYPE_RAW) -> None:
        self.name = name
        self.linktype = linktype
        self.sent: list[bytes] = []
        self.networks: list[IPNetwork] = []  # what the switch routes to it (routed)
        self.deliver: Deliver | None = None  # set by open: hand it packets to inject
        self.key = ""
        self.closed = False

    async def open(self, deliver: Deliver, key: str) -> None:
        self.deliver, self.key = deliver, key

    def send(self, packet: bytes) -> str | None:
        self.sent.append(packet)
        return None

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        self.networks = list(networks)

    def flush(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeTun(FakePort):
    """The TUN (agent.port.TunPort): the plan it was given and the routes into it."""

    def __init__(self, name: str = "tun9") -> None:
        super().__init__(name)
        self.plan: AddressPlan | None = None
        self.mtu = 0
        self.routes: list[IPNetwork] = []

    async def configure(self, plan: AddressPlan, mtu: int) -> None:
        self.plan, self.mtu = plan, mtu

    async def add_route(self, network: IPNetwork) -> bool:
        self.routes.append(network)
        return True

    async def remove_route(self, network: IPNetwork) -> None:
        self.routes.remove(network)


class FakeBus:
    """The AMQP connection (agent.bus.connection.Bus) as its users see it: publishes are
    recorded; `flush` calls `before_flush`, as the real bus does after each broker read."""

    window_open = True  # the broker has confirmed enough of our messages
    before_flush: Callable[[], None] | None = None

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.url = parse_url("amqp://guest:guest@127.0.0.1:1/fake")
        self.sent: list[tuple[str, bytes, object]] = []
        self.paced = 0
        self.started = self.closed = False

    def publish(self, key: str, body: bytes, props: object = None) -> str | None:
        """None, or the drop reason (as agent.bus.connection.Bus.publish)."""
        if not self.up:
            return "bus down"
        self.sent.append((key, body, props))
        return None

    def pace(self) -> None:
        self.paced += 1

    def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()

    def start(self) -> None:
        self.started = True

    async def close(self, timeout: float = 1.0) -> None:
        self.closed = True


def fake_bus_port(owner: BusOwner, name: str, bus: FakeBus, fast: bool = False) -> BusPort:
    """An agent's bus port on a FakeBus, wired as agent.bus.port.agent_bus_port wires it."""
    from agent.bus import wire

    port = BusPort(wire.uplink_key(name), owner.counters, name, owner.on_control)
    port.bus = bus  # type: ignore[assignment]
    bus.before_flush = port.release
    port.fast = fast
    return port


_DEFAULT = object()


@dataclass
class Rig:
    """An agent on fakes: its bus, and the TUN its TUN maker hands out."""

    agent: Any  # agent.node.Agent
    bus: FakeBus
    tun: FakeTun


def make_agent(
    name: str = "agent_1",
    plan: Any = _DEFAULT,
    *,
    tun: FakeTun | None = None,
    bus: FakeBus | None = None,
    others: tuple[Port, ...] = (),
    iface: Callable[[AddressPlan], Port | None] | None = None,
    counters: Any = None,
    **options: Any,
) -> Rig:
    """Agent(AgentOptions(name, plan (default: agent_N's), **options)) on fakes, not
    started: `await rig.agent.start()` brings the TUN up (a plan) as `agent connect` does."""
    from agent.node import Agent, AgentOptions, Ports, no_iface

    tun = tun or FakeTun()
    bus = bus or FakeBus()
    fast = options.get("wire") == "fast"
    ports = Ports(
        bus=lambda owner: fake_bus_port(owner, name, bus, fast),
        tun=lambda: tun,
        iface=iface or no_iface,
        others=others,
    )
    plan = default_plan(name) if plan is _DEFAULT else plan
    agent = Agent(AgentOptions(name=name, plan=plan, **options), ports, counters)
    return Rig(agent, bus, tun)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (TUN, namespaces)")
needs_broker = pytest.mark.skipif(not broker_up(), reason="no RabbitMQ on 127.0.0.1:5672")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def fresh_vhost() -> Iterator[str]:
    """A new vhost on the local broker (guest may use it), deleted afterwards; its URL."""
    name = _unique("t")
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def vhost() -> Iterator[str]:
    """A fresh vhost on the local broker; yields its amqp URL."""
    if not broker_up():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    with fresh_vhost() as url:
        yield url


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    """Factory of network namespaces, all deleted at teardown."""
    made: list[str] = []

    def make() -> str:
        name = _unique("ag")
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


def ns_run(ns: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout
    )


def ping(ns: str, dst: str, count: int = 3, version: int = 6, interval: float = 0.2) -> bool:
    out = ns_run(ns, "ping", f"-{version}", "-c", str(count), "-i", str(interval), "-W", "2", dst)
    return out.returncode == 0


def listening(ns: str, port: int, udp: bool = False) -> bool:
    """A socket in namespace ns is bound to port (TCP: listening), e.g. a server started."""
    out = ns_run(ns, "ss", "-Hlun" if udp else "-Hltn", f"sport = :{port}")
    return bool(out.stdout.strip())


def tun_links(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", "type", "tun"], capture_output=True, text=True
    )
    return [line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines() if ": " in line]


class Proc:
    """A `python -m agent ...` process with its output in a file (or the command `argv`
    that runs one, e.g. as another user, with its own env and cwd)."""

    def __init__(self, args: list[str], log_dir: Path, label: str,
                 argv: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = args
        self.label = label
        self.log_path = log_dir / f"{label}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        if env is None:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            env.pop("AMQP_URL", None)
        self.popen = subprocess.Popen(
            argv or [sys.executable, "-m", "agent", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd or ROOT,
            env=env,
        )
        self.pid = self.popen.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 15.0) -> bool:
        rx = re.compile(pattern)
        return bool(
            wait_for(lambda: rx.search(self.output) or self.popen.poll() is not None, timeout)
        ) and bool(rx.search(self.output))

    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def status(self, pattern: str, timeout: float = 5.0) -> re.Match[str] | None:
        """Ask for the counters line (SIGUSR1) and search pattern in the newest one."""
        before = self.output.count("status:")
        self.send(signal.SIGUSR1)
        wait_for(lambda: self.output.count("status:") > before, timeout)
        lines = [ln for ln in self.output.splitlines() if "status:" in ln]
        return re.search(pattern, lines[-1]) if lines else None

    def pause(self) -> None:
        """SIGSTOP, returning once it is stopped (kill() only queues the signal: a process
        running on another core may still handle a message or two meanwhile)."""
        self.send(signal.SIGSTOP)
        assert wait_for(lambda: process_state(self.pid) in ("T", None), 5), self.pid

    def stop(self, sig: int = signal.SIGINT, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send sig; returns (exit code or None if it had to be killed, seconds taken)."""
        start = time.monotonic()
        code = end_process(self.popen, sig, timeout)
        return code, time.monotonic() - start

    def wait(self, timeout: float = 15.0) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.running():
            self.stop(signal.SIGINT, timeout=5)
        self._log.close()


@pytest.fixture
def procs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Start agent processes; all are stopped (by PID) at teardown. Logs shown on failure."""
    started: list[Proc] = []

    def start(*args: str, label: str | None = None, **how: Any) -> Proc:
        proc = Proc(list(args), tmp_path, label or f"p{len(started)}", **how)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for proc in started:
            sys.stderr.write(f"\n----- {proc.label}: {' '.join(proc.args)}\n{proc.output}\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class Session:
    """A router and agents on one vhost, each agent's TUN in its own namespace."""

    def __init__(self, url: str, netns: Callable[[], str], procs: Callable[..., Proc]) -> None:
        self.url = url
        self._netns = netns
        self._procs = procs
        self.router: Proc | None = None
        self.agents: dict[str, Proc] = {}
        self.ns: dict[str, str] = {}

    def start_router(self, *extra: str) -> Proc:
        self.router = self._procs("router", "--url", self.url, "-v", *extra, label="router")
        assert self.router.wait_log("announced as packetrouting"), self.router.output
        return self.router

    def start_agent(self, name: str, *extra: str, wait: bool = True) -> Proc:
        ns = self._netns()
        self.ns[name] = ns
        proc = self._procs(
            "connect", "--url", self.url, "--name", name, "--netns", ns, *extra, label=name
        )
        self.agents[name] = proc
        if wait:
            assert proc.wait_log("published ready"), proc.output
        return proc

    def learned(self, *names: str, timeout: float = 10.0) -> bool:
        assert self.router is not None
        return all(self.router.wait_log(f"learned {n}\\b", timeout) for n in names)


@pytest.fixture
def session(vhost: str, netns: Callable[[], str], procs: Callable[..., Proc]) -> Session:
    if os.geteuid() != 0:
        pytest.skip("needs root (TUN, namespaces)")
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed")
    return Session(vhost, netns, procs)


def publish(url: str, routing_key: str, body: bytes, content_type: str | None = None) -> None:
    """Publish one message on amq.topic with a blocking connection."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        props = pika.BasicProperties(content_type=content_type) if content_type else None
        ch.basic_publish("amq.topic", routing_key, body, props)
    finally:
        conn.close()


class Listener:
    """An exclusive queue bound to some keys, read with a blocking connection."""

    def __init__(self, url: str, keys: list[str]) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        for key in keys:
            self.ch.queue_bind(self.queue, "amq.topic", routing_key=key)

    def get(self, timeout: float = 2.0) -> tuple[str, bytes, object] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is not None:
                return method.routing_key, body, props
            self.conn.sleep(0.02)
        return None

    def count(self) -> int:
        """How many messages wait in the queue now."""
        return int(self.ch.queue_declare(self.queue, passive=True).method.message_count)

    def publish(self, key: str, body: bytes, content_type: str | None = "application/json") -> None:
        props = pika.BasicProperties(content_type=content_type) if content_type else None
        self.ch.basic_publish("amq.topic", key, body, props)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: S110
            pass


class PublishTrace:
    """The broker's firehose for one vhost (`rabbitmqctl trace_on`): which channel of
    which connection each message was published on, as the broker saw it. The trace queue
    is bounded (oldest dropped): a stream's copies do not pile up in the broker."""

    def __init__(self, url: str) -> None:
        self.vhost = pika.URLParameters(url).virtual_host
        rabbitmqctl("trace_on", "-p", self.vhost)
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        args = {"x-max-length-bytes": 16 * 1024 * 1024, "x-max-length": 20000}
        self.queue = self.ch.queue_declare("", exclusive=True, arguments=args).method.queue
        self.ch.queue_bind(self.queue, "amq.rabbitmq.trace", routing_key="publish.#")

    def drain(self, key: str | None = None) -> list[tuple[str, int, bytes]]:
        """(routing key, channel number, body) of each publish traced since the last
        drain, in order; only those on `key` if given."""
        out = []
        while True:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return out
            headers = props.headers or {}
            routing_key = (headers.get("routing_keys") or [""])[0]
            if key is None or routing_key == key:
                out.append((routing_key, int(headers.get("channel", -1)), body))

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: S110
            pass
        try:
            rabbitmqctl("trace_off", "-p", self.vhost)
        except subprocess.SubprocessError:
            pass  # the vhost is deleted anyway


@pytest.fixture
def listener(vhost: str) -> Iterator[Callable[[list[str]], Listener]]:
    made: list[Listener] = []

    def make(keys: list[str]) -> Listener:
        lst = Listener(vhost, keys)
        made.append(lst)
        return lst

    yield make
    for lst in made:
        lst.close()


NOBODY = 65534


def _runtime_modules() -> list[str]:
    """What `pip install ip-over-amqp` puts on a user's path: the package and the top-level
    modules of its install_requires (read from the installed metadata, so a dependency
    added to or dropped from setup.py is followed here)."""
    from importlib.metadata import packages_distributions, requires

    wanted = {
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in requires(DISTRIBUTION) or []
        if "extra ==" not in r
    }
    return ["agent"] + sorted(
        top for top, dists in packages_distributions().items()
        if not top.startswith("_") and any(d.lower().replace("_", "-") in wanted for d in dists)
    )


class Unprivileged:
    """Runs `python -m agent ...` as nobody, like a user with the agent installed.

    The checkout (and its .venv) may sit where nobody cannot enter (a clone in root's
    home, a `mktemp -d` directory), so the agent and its dependencies are copied into a
    world-readable directory, as an installation would be.
    """

    def __init__(self, python: str, lib: Path) -> None:
        self.python, self.lib = python, lib

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(self.lib), "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}

    def argv(self, *args: str) -> list[str]:
        """`python -m agent ARGS`, for a process that becomes nobody by other means (setpriv);
        start it with env() and cwd=self.lib.parent."""
        return [self.python, "-s", "-m", "agent", *args]

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            self.argv(*args), env=self.env(), cwd=self.lib.parent,
            user=NOBODY, group=NOBODY, extra_groups=[], text=True, **kw,
        )


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (fast) when the file is world-readable and on the same file system."""
    if os.stat(src).st_mode & 0o004:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)
    os.chmod(dst, 0o644)


def _copy_runtime(lib: Path) -> None:
    for module in _runtime_modules():
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        src = Path(spec.origin)
        if src.name == "__init__.py":  # __pycache__ too: no recompiling
            shutil.copytree(src.parent, lib / module, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(src), str(lib / src.name))
    for path in [lib.parent, lib, *(p for p in lib.rglob("*") if p.is_dir())]:
        path.chmod(0o755)


@pytest.fixture(scope="session")
def unprivileged() -> Iterator[Unprivileged]:
    """A copy of the agent that user nobody can run (see Unprivileged)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to run a process as nobody)")
    top = Path(tempfile.mkdtemp(prefix="agent-nobody-"))
    try:
        lib = top / "lib"
        lib.mkdir()
        _copy_runtime(lib)
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        tried = []
        for python in dict.fromkeys([os.path.realpath(sys.executable), f"/usr/bin/{version}",
                                     f"/usr/local/bin/{version}"]):
            runner = Unprivileged(python, lib)
            try:
                probe = runner.popen("--help", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            except OSError as exc:
                tried.append(f"{python}: {exc}")
                continue
            out, _ = probe.communicate(timeout=60)
            if probe.returncode == 0:
                break
            tried.append(f"{python}: {out.strip().splitlines()[-1:]}")
        else:
            pytest.fail(f"no {version} that user nobody can run with the agent: {tried}")
        yield runner
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group pgid (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        # a zombie has ended (its parent gone, it waits for an init that may never reap it)
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _end_group(pgid: int, grace: float = 15.0) -> list[int]:
    """SIGTERM the group (its own traps clean up), SIGKILL what is left after grace s.
    Returns the PIDs that were still there for the SIGTERM."""
    left = _group_members(pgid)
    if not left:
        return []
    with_term = left
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    wait_for(lambda: not _group_members(pgid), grace, 0.2)
    if _group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return with_term


def vhosts() -> list[str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True,
                         timeout=60, check=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip() and
            line.strip() != "name"]


def run_example(script: str, tag_prefix: str, tmp_path: Path,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run examples/SCRIPT as a user would, on the test broker, and prove it left nothing.

    The script picks its own vhost and namespaces on the local broker (AMQP_URL is never
    passed on: a user's real broker must not get demo agents). It runs in a session of
    its own: on a timeout, the whole process group is ended (agents, socat, pings, not only
    bash), then the namespaces and vhost named after it (TAG = tag_prefix + bash's PID)
    are removed. Its temporary files go to tmp_path.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMQP_")}
    env.pop("CAPTURE_DIR", None)
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "examples" / script)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True,
    )
    tag = f"{tag_prefix}{proc.pid}"
    problems = []
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_group(proc.pid)
        out, err = proc.communicate()
        problems.append(f"timed out after {timeout} s")
    finally:
        stray = _end_group(proc.pid, grace=5)
        if stray:
            problems.append(f"processes left running: {stray}")
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in (line.split()[0] for line in names.splitlines() if line.strip()):
            if ns == tag or ns.startswith(f"{tag}-"):
                subprocess.run(["ip", "netns", "del", ns], check=False)
                problems.append(f"namespace {ns} left behind")
        if tag in vhosts():
            rabbitmqctl("delete_vhost", tag)
            problems.append(f"vhost {tag} left behind")
    assert not problems, f"{script}: {'; '.join(problems)}\n{out}\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# Fixtures that need root or the broker: a test using one (directly or through another
# fixture) is end-to-end, as is a test skipped without root or without the broker.
_E2E_FIXTURES = {"vhost", "netns", "procs", "session", "listener", "one_ns", "unprivileged"}


def _cap_examples(items: list[pytest.Item], cap: int) -> None:
    """At most `cap` examples per property test (AGENT_MAX_EXAMPLES): the extra
    interpreters of scripts/pythons.sh check the code runs there; the properties run in
    full on the main one. Hypothesis reads a test's settings from this attribute when it
    runs (a profile cannot lower an explicit @settings(max_examples=...)); should it go,
    the tests run in full, only slower."""
    from hypothesis import settings

    for item in items:
        fn = getattr(item, "obj", None)
        current = getattr(fn, "_hypothesis_internal_use_settings", None)
        if isinstance(current, settings) and current.max_examples > cap:
            fn._hypothesis_internal_use_settings = settings(current, max_examples=cap)  # type: ignore[union-attr]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `e2e` every test that needs root or the broker, so that `-m "not e2e"` runs
    only tests that need neither (as any user, with no broker reachable)."""
    cap = os.environ.get("AGENT_MAX_EXAMPLES", "")
    if cap.isdigit() and int(cap) > 0:
        _cap_examples(items, int(cap))
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        callspec = getattr(item, "callspec", None)
        params = set(callspec.params) if callspec else set()
        needs = _E2E_FIXTURES & (set(getattr(item, "fixturenames", ())) - params)
        for mark in item.iter_markers("skipif"):
            reason = str(mark.kwargs.get("reason", ""))
            if "root" in reason or "RabbitMQ" in reason:
                needs.add(reason)
        if needs:
            item.add_marker(pytest.mark.e2e)
