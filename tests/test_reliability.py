"""Broker faults, spoofing, duplicates, TLS, crash paths: against the real broker."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from scapy.layers.inet6 import UDP, IPv6

from agent.bus import wire
from tests.conftest import (
    ROOT,
    Proc,
    Session,
    broker_up,
    listening,
    needs_root,
    ns_run,
    ping,
    rabbitmqctl,
    tun_links,
    wait_for,
)

pytestmark = [pytest.mark.e2e, needs_root]


def _tun_to_bus(agent: Proc) -> int:
    """Packets the agent sent up so far (its SIGUSR1 counters line)."""
    m = agent.status(r"tun>bus (\d+)p")
    return int(m.group(1)) if m else 0


def _vhost_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _ping_loop(ns: str, dst: str, seconds: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, "ping", "-6", "-D", "-O", "-i", "0.2", "-w", str(seconds),
         "-W", "1", dst],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _reply_times(out: str) -> list[float]:
    return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]


def _assert_resumes(session: Session, fault, back_within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    ns1 = session.ns["agent_1"]
    pinger = _ping_loop(ns1, "bbbb::2", 30)
    try:
        time.sleep(2)  # replies before the fault: the silence is measured against them
        fault_done_at = fault()
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    replies = _reply_times(out)
    before = [t for t in replies if t < fault_done_at - 0.5]
    after = [t for t in replies if t > fault_done_at]
    assert before, out
    assert after, f"ping never resumed after the fault\n{out}"
    assert after[0] - fault_done_at < back_within, f"resumed after {after[0] - fault_done_at:.1f} s"
    for proc in [*session.agents.values(), session.router]:
        assert proc is not None and proc.running(), proc.output if proc else ""


def test_reconnects_after_connections_are_closed(session: Session) -> None:
    session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")

    def fault() -> float:
        rabbitmqctl("close_all_connections", "--vhost", _vhost_of(session.url), "test fault")
        return time.time()

    _assert_resumes(session, fault)
    for proc in session.agents.values():
        assert proc.output.count("lost the broker") == 1
        assert "broker connection restored" in proc.output


@pytest.mark.skipif(os.environ.get("AGENT_SKIP_BROKER_RESTART") == "1",
                    reason="broker restart disabled")
def test_survives_broker_restart(session: Session) -> None:
    """rabbitmqctl stop_app; sleep 3; start_app, in the middle of a continuous ping."""
    session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")

    def fault() -> float:
        try:
            rabbitmqctl("stop_app")
            time.sleep(3)  # the fault: the broker stays down this long
        finally:
            rabbitmqctl("start_app")  # whatever happened: the shared broker comes back
        return time.time()

    try:
        _assert_resumes(session, fault)
    finally:
        if not broker_up():  # e.g. stop_app timed out after stopping, or start_app failed
            subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)
            wait_for(broker_up, 60, 0.5)


def test_spoofed_source_dropped_by_router(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    session.start_agent("agent_3")
    assert session.learned("agent_1", "agent_2", "agent_3")
    ns2 = session.ns["agent_2"]
    cap = subprocess.Popen(
        ["ip", "netns", "exec", ns2, sys.executable, str(ROOT / "tests/tools/iface_capture.py"),
         tun_links(ns2)[0], "3"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
        lst = listener([])
        marker = b"spoofed-by-agent-3"
        spoofed = bytes(IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=9, dport=9) / marker)
        honest = bytes(IPv6(src="bbbb::3", dst="bbbb::2") / UDP(sport=9, dport=9) / b"honest")
        for _ in range(5):
            lst.publish("fromAgent.agent_3.ip.tun.packet.raw", wire.encode_packet(spoofed, "tun0"))
        lst.publish("fromAgent.agent_3.ip.tun.packet.raw", wire.encode_packet(honest, "tun0"))
        out, _ = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
    assert marker.hex() not in out
    assert b"honest".hex() in out  # the capture works and agent_3's own packets pass
    router = session.router
    assert router is not None
    before = router.output.count("status:")
    router.send(signal.SIGUSR1)
    assert router.wait_log("status:.*spoofed by agent_3 5", 5) or router.output.count(
        "status:") > before, router.output
    assert re.search(r"spoofed by agent_3 5\b", router.output)
    assert ping(session.ns["agent_1"], "bbbb::2")


def test_second_router_stands_by_and_takes_over(session: Session, procs) -> None:  # type: ignore[no-untyped-def]
    """A second router waits (one line); when the first is killed it is active within 2 s,
    the agents re-announce to it and traffic flows; never two routers (no DUP!)."""
    first = session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    second = procs("router", "--url", session.url, label="router2")
    assert second.wait_log("standing by", 10), second.output
    assert first.running() and second.running()
    out = ns_run(session.ns["agent_1"], "ping", "-6", "-c", "5", "-i", "0.2", "bbbb::2")
    assert out.returncode == 0 and "DUP!" not in out.stdout, out.stdout
    assert second.output.count("standing by") == 1 and "learned" not in second.output
    first.send(signal.SIGKILL)
    start = time.monotonic()
    first.wait(5)
    assert second.wait_log("active on", 5), second.output
    took = time.monotonic() - start
    assert took < 2.0, f"takeover took {took:.1f} s"
    assert second.wait_log("learned agent_1", 5) and second.wait_log("learned agent_2", 5)
    out = ns_run(session.ns["agent_1"], "ping", "-6", "-c", "5", "-i", "0.2", "-W", "2", "bbbb::2")
    assert out.returncode == 0 and "DUP!" not in out.stdout, out.stdout + second.output
    assert "Traceback" not in second.output


def test_kill_9_leaves_nothing(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    import orjson

    proc = session.start_agent("agent_1")
    ns = session.ns["agent_1"]
    lst = listener([])
    lst.publish("fromAgent.agent_9.ip.tun.started", orjson.dumps(
        {"name": "agent_9", "ipv6_host": "9", "re_route_packets_prefix": "cccc"}))
    assert proc.wait_log("route cccc::/64 dev", 5)
    proc.send(signal.SIGKILL)
    proc.wait(5)
    assert tun_links(ns) == []
    routes = ns_run(ns, "ip", "-6", "route").stdout + ns_run(ns, "ip", "route").stdout
    assert "cccc" not in routes and "bbbb" not in routes and "10.2.0" not in routes


def test_sigint_under_full_load(session: Session) -> None:
    """iperf3 through the tunnel, then SIGINT: clean exit within 2 s."""
    session.start_router()
    a1 = session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]
    server = subprocess.Popen(["ip", "netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "bbbb::2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        assert wait_for(lambda: listening(ns2, 5201), 10), "iperf3 server did not start"
        client = subprocess.Popen(
            ["ip", "netns", "exec", ns1, "iperf3", "-c", "bbbb::2", "-t", "20", "-u", "-b", "50M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # the tunnel is loaded: thousands of packets went up
        assert wait_for(lambda: _tun_to_bus(a1) >= 2000, 15), a1.output[-2000:]
        assert client.poll() is None, "iperf3 is not running"  # still loading the tunnel
        code, took = a1.stop(signal.SIGINT)
        assert code == 0, a1.output
        assert took < 2.0, f"stopped in {took:.2f} s"
        assert tun_links(ns1) == []
        # it was under load: over a thousand iperf3 datagrams went up in those 3 s
        sent = re.search(r"^\s*tun>bus\s+(\d+)\s+(\d+)$", a1.output, re.M)
        assert sent and int(sent.group(1)) > 1000, a1.output[-2000:]
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def _free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick from its ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tls_listener():  # type: ignore[no-untyped-def]
    """A TLS listener on the test broker, with a CA and server certificate made here.

    The files live in a world-readable temporary directory: the broker may run as its
    own user."""
    tmp_path = Path(tempfile.mkdtemp(prefix="agent-tls-"))
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=agent-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=localhost")
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    tmp_path.chmod(0o755)
    opts = (f'[{{certfile,"{tmp_path}/srv.pem"}},{{keyfile,"{tmp_path}/srv.key"}},'
            f'{{cacertfile,"{tmp_path}/ca.pem"}},{{verify,verify_none}}]')
    for _attempt in range(3):  # a port free now may be taken before the broker binds it
        port = _free_port()
        listener = f'{{"127.0.0.1", {port}}}'
        out = subprocess.run(
            ["rabbitmqctl", "eval",
             f"rabbit_networking:start_ssl_listener({listener}, {opts}, 1, 1)."],
            capture_output=True, text=True, timeout=30,
        )
        if out.stdout.strip() == "ok":
            break
    else:
        shutil.rmtree(tmp_path, ignore_errors=True)
        pytest.fail(f"could not start a TLS listener: {out.stdout} {out.stderr}")
    try:
        yield port, tmp_path / "ca.pem"
    finally:
        subprocess.run(["rabbitmqctl", "eval", f"rabbit_networking:stop_tcp_listener({listener})."],
                       capture_output=True, timeout=30)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_amqps_with_test_ca(session: Session, tls_listener, procs) -> None:  # type: ignore[no-untyped-def]
    port, ca = tls_listener
    url = session.url.replace("amqp://", "amqps://").replace("127.0.0.1:5672", f"localhost:{port}")
    ns = session._netns()
    ok = procs("connect", "--url", url, "--name", "agent_1", "--netns", ns, "--ca-file", str(ca),
               label="tls-ok")
    assert ok.wait_log("published ready"), ok.output
    ns_b = session._netns()
    refused = procs("connect", "--url", url, "--name", "agent_2", "--netns", ns_b, label="tls-no")
    assert refused.wait() == 1
    assert "not trusted" in refused.output and "Traceback" not in refused.output
    assert tun_links(ns_b) == []


def test_url_list_skips_a_dead_node(session: Session, procs) -> None:  # type: ignore[no-untyped-def]
    """A ';' list whose first node refuses: the next one is used at once, and named."""
    dead = session.url.replace("127.0.0.1:5672", "127.0.0.1:1")
    router = procs("router", "--url", f"{dead};{session.url};{session.url}", label="router")
    start = time.monotonic()
    assert router.wait_log("announced as packetrouting", 10), router.output
    assert time.monotonic() - start < 10
    assert "connected to node 127.0.0.1:5672 (URL 2 of 2)" in router.output  # duplicate dropped
    assert "guest:guest" not in router.output
