"""Options no other end-to-end test exercises: --url-file, an exchange of the session's own
(not amq.*), sniff --name; and back-pressure on the real broker (queue length, TTL, a
broker that stops reading).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from agent.bus import wire
from tests.conftest import Proc, Session, needs_root, ping, wait_for

pytestmark = [pytest.mark.e2e, needs_root]

PACKET_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} (\S+)\s+(up|down)\s+IPv6 ", re.M)


def _exchanges(vhost_url: str) -> list[list[str]]:
    vhost = vhost_url.rsplit("/", 1)[1]
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_exchanges", "-p", vhost, "name", "type", "durable"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return [line.split() for line in out.stdout.splitlines()]


def test_url_file_own_exchange_and_sniff_name(  # type: ignore[no-untyped-def]
    vhost: str, netns, procs: Callable[..., Proc], listener, tmp_path: Path
) -> None:
    """A session on exchange `session.x`, every process reading its URL from a file; a
    sniffer restricted to agent_1 shows agent_1's packets only; amq.topic stays silent."""
    url_file = tmp_path / "amqp-url"
    url_file.write_text(vhost + "\n")
    url_file.chmod(0o600)
    common = ["--url-file", str(url_file), "--exchange", "session.x"]
    on_amq_topic = listener(["#"])
    router = procs("router", *common, "-v", label="router")
    assert router.wait_log("announced as packetrouting"), router.output
    ns = {}
    agents = {}
    for n in (1, 2, 3):
        name = f"agent_{n}"
        ns[name] = netns()
        agents[name] = procs("connect", *common, "--name", name, "--netns", ns[name], label=name)
    for name, proc in agents.items():
        assert proc.wait_log("published ready"), proc.output
        assert router.wait_log(f"learned {name}\\b"), router.output
    # the password is in neither the command line nor the logs
    for proc in [router, *agents.values()]:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"guest:guest" not in cmdline and b"amqp://" not in cmdline
        assert "guest:guest" not in proc.output and "guest:***@" in proc.output
    assert ["session.x", "topic", "true"] in _exchanges(vhost)

    sniff = procs("sniff", *common, "--name", "agent_1", "--count", "4", label="sniff")
    assert sniff.wait_log("sniffing agent_1"), sniff.output
    assert ping(ns["agent_2"], "bbbb::3", count=2)  # not agent_1's: not shown, not counted
    assert ping(ns["agent_1"], "bbbb::2", count=2)
    assert sniff.wait() == 0, sniff.output
    lines = PACKET_LINE.findall(sniff.output)
    assert sorted(lines) == [("agent_1", "down")] * 2 + [("agent_1", "up")] * 2, sniff.output
    assert on_amq_topic.get(timeout=0.5) is None  # nothing of the session on amq.topic


# --------------------------------------------------------------------------- back-pressure

PREFETCH, MAX_LENGTH, TTL = 256, 1000, 5.0  # agent.bus.connection: agent_queue, queue_arguments


def _bus_to_tun(agent: Proc) -> int:
    """Packets the agent wrote into its TUN so far (its SIGUSR1 counters line)."""
    before = agent.output.count("status:")
    agent.send(signal.SIGUSR1)
    assert wait_for(lambda: agent.output.count("status:") > before, 5), agent.output[-2000:]
    line = [ln for ln in agent.output.splitlines() if "status:" in ln][-1]
    m = re.search(r"bus>tun (\d+)p", line)
    return int(m.group(1)) if m else 0


def _settled(agent: Proc) -> int:
    """bus>tun once it stops moving."""
    last = -1
    for _ in range(20):
        now = _bus_to_tun(agent)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def test_stalled_agent_gets_a_bounded_queue_and_no_stale_packets(  # type: ignore[no-untyped-def]
    session: Session, listener
) -> None:
    """An agent that stops reading (SIGSTOP) while 1500 packets arrive: the broker keeps at
    most x-max-length of them (oldest dropped) besides the prefetched ones; those that
    wait longer than the TTL are dropped; the agent then carries on."""
    agent = session.start_agent("agent_1")
    down = "toAgent.agent_1.ip.tun.packet.raw"
    lst = listener([])
    bodies = [
        wire.encode_packet(bytes(IPv6(src="bbbb::9", dst="bbbb::1") / ICMPv6EchoRequest(
            id=7, seq=n)), "tun0")
        for n in range(1500)
    ]
    assert _bus_to_tun(agent) == 0

    # 1. length: resumed well within the TTL, it gets the prefetch and x-max-length, no more
    # (publisher confirms: every publish is in the queue before the agent resumes; without
    # them the last ones could still be on their way and reach it past the bound, as CI saw:
    # 1258, 1268, 1300)
    lst.ch.confirm_delivery()
    agent.pause()
    try:
        t0 = time.monotonic()
        for body in bodies:
            lst.publish(down, body)
        lst.conn.process_data_events(0)
    finally:
        agent.send(signal.SIGCONT)
    assert time.monotonic() - t0 < TTL - 1, "too slow to publish: TTL would interfere"
    first = _settled(agent)
    assert MAX_LENGTH <= first <= MAX_LENGTH + PREFETCH, first

    # 2. age: what waited in the queue longer than the TTL never reaches the TUN
    agent.pause()
    try:
        for body in bodies[:600]:
            lst.publish(down, body)
        lst.conn.process_data_events(0)
        time.sleep(TTL + 1.5)  # what is tested: the messages outlive the queue's TTL
    finally:
        agent.send(signal.SIGCONT)
    second = _settled(agent) - first
    assert second <= PREFETCH, second  # at most what had already been handed over

    # and it carries on
    lst.publish(down, bodies[0])
    assert wait_for(lambda: _bus_to_tun(agent) == first + second + 1, 5)
    assert agent.running() and "Traceback" not in agent.output


class StallProxy:
    """A TCP relay to the broker whose agent-to-broker direction can be paused: the
    broker stops reading what the agent sends, as a congested or blocked one would."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5672)) -> None:
        self.upstream = upstream
        self.flowing = threading.Event()
        self.flowing.set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._socks: list[socket.socket] = [self._server]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, may_stall: bool) -> None:
        try:
            while True:
                if may_stall:
                    self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.flowing.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
payload = b"x" * 1200
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    try:
        s.sendto(payload, ("bbbb::2", 9))
        n += 1
    except OSError:
        time.sleep(0.001)
print(n)
"""


def test_stalled_broker_connection_drops_and_counts(  # type: ignore[no-untyped-def]
    session: Session, procs: Callable[..., Proc], listener
) -> None:
    """The broker stops taking the agent's publishes while the TUN floods: the agent
    buffers at most its limit (4 MB) and drops the rest, counted as `queue full`; once the
    broker reads again, packets flow again on the same connection."""
    proxy = StallProxy()
    try:
        url = session.url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        ns = session._netns()
        agent = procs("connect", "--url", url, "--name", "agent_1", "--netns", ns,
                      label="agent_1")
        assert agent.wait_log("published ready"), agent.output
        uplink = listener(["fromAgent.agent_1.ip.tun.packet.raw"])

        proxy.flowing.clear()
        sent = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FLOOD, "3"],
                              capture_output=True, text=True, timeout=30)
        assert sent.returncode == 0 and int(sent.stdout) > 10_000, sent
        agent.send(signal.SIGUSR1)
        assert agent.wait_log(r"status: .*queue full \d+", 5), agent.output[-2000:]
        dropped = int(re.findall(r"queue full (\d+)", agent.output)[-1])
        went = re.findall(r"tun>bus (\d+)p/(\d+)B", agent.output)[-1]
        # what was not dropped waits in buffers: the agent's 4 MB at most, the kernel's
        # socket buffers (agent's send, relay's receive) and one JSON body's worth of slack
        def sysctl(name: str) -> int:
            return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[-1])

        bound = 4 * 2**20 + sysctl("tcp_wmem") + sysctl("tcp_rmem") + 2**20
        assert dropped > 1000 and int(went[1]) <= bound, (dropped, went, bound)
        assert agent.running()

        proxy.flowing.set()
        while uplink.get(timeout=2) is not None:  # the backlog drains
            pass
        ping_sent = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", FLOOD, "0.05"],
            capture_output=True, text=True, timeout=30)
        assert int(ping_sent.stdout) > 0
        assert uplink.get(timeout=5) is not None, agent.output[-2000:]  # flowing again
        assert agent.output.count("lost the broker") == 0
        code, _ = agent.stop()
        assert code == 0, agent.output[-2000:]
    finally:
        proxy.close()
