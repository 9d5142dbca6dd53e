"""End to end: a SLIP serial device behind an agent, over a socat pty pair.

socat links two ptys: the agent opens one end (`b`, its "serial port"), the fake mote
tests/tools/slip_peer.py the other (`a`). Router, agents and broker are real; every agent's
TUN lives in its own namespace. socat, the peer and the agents are ended by PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import serial

from agent.bus import wire
from tests.conftest import (
    ROOT,
    Proc,
    Session,
    needs_root,
    ns_run,
    ping,
    read_at_least,
    run_example,
    tun_links,
    wait_for,
)
from tests.tools.proc import end_process

pytestmark = [pytest.mark.e2e, needs_root]

PEER = ROOT / "tests/tools/slip_peer.py"
UDP_STREAM = ROOT / "tests/tools/udp_stream.py"
END = 0xC0


class Socat:
    """A pty pair `a` <-> `b` (links in a private directory); started and killed by PID."""

    def __init__(self, where: Path) -> None:
        self.a = where / "mote"
        self.b = where / "ttyAGENT"
        self.log = where / "socat.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "socat",
                    "-d",
                    "-d",
                    f"pty,raw,echo=0,link={self.a}",
                    f"pty,raw,echo=0,link={self.b}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        assert wait_for(lambda: self.a.is_symlink() and self.b.is_symlink(), 5), self.log_text()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        end_process(proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Peer:
    """The fake mote process; its stdout events in a file."""

    def __init__(self, device: Path, out: Path, *args: str) -> None:
        self.out = out
        self._file = open(out, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), str(device), *args],
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        assert self.wait_line("ready", 15), self.text()

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_line(self, pattern: str, timeout: float = 10.0) -> bool:
        rx = re.compile(pattern, re.M)
        return bool(wait_for(lambda: rx.search(self.text()), timeout))

    def stop(self) -> None:
        end_process(self.proc)
        self._file.close()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Socat]:
    socat = Socat(tmp_path)
    socat.start()
    yield socat
    socat.stop()


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def start(device: Path, *args: str) -> Peer:
        peer = Peer(device, tmp_path / f"peer{len(made)}.out", *args)
        made.append(peer)
        return peer

    yield start
    for peer in made:
        peer.stop()


def start_serial_agent(session: Session, line: Socat, *extra: str) -> Proc:
    return session.start_agent(
        "coap_server",
        "--ipv6-host",
        "5",
        "--serial-port",
        str(line.b),
        "--re-route-prefix",
        "cccc",
        "--re-route-host",
        "1",
        "-vv",
        *extra,
    )


def route_learned(ns: str, net: str) -> bool:
    return bool(
        wait_for(lambda: net in ns_run(ns, "ip", "route", "show", "table", "all").stdout, 10)
    )


def uplink_packets(lst, seconds: float = 1.0) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Packets published on an uplink key, whichever wire (JSON or fast batches) carried them."""
    out: list[bytes] = []
    while (got := lst.get(timeout=seconds)) is not None:
        _key, body, props = got
        out.extend(wire.decode_packets(body, getattr(props, "content_type", None)))
    return out


# ------------------------------------------------------------------------------ IP mode


def test_ping_mote_over_slip_riot_framing(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers, listener
) -> None:
    """RIOT's old framing (no leading END) both ways, --slip-framing end-only; text, ?P and
    garbage on the line."""
    peer = peers(line.a, "--garbage", "--interval", "0.5")
    uplink = listener(["fromAgent.coap_server.ip.tun.packet.raw"])
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line, "--slip-framing", "end-only")
    assert session.learned("agent_1", "coap_server")
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")

    # Contiki's prefix request is answered with !P + the first 8 bytes of cccc::/64
    assert peer.wait_line(r"^prefix cccc000000000000$"), peer.text() + agent.output
    assert ping(ns1, "cccc::1", count=4)
    assert peer.wait_line(r"^echo6 bbbb::1$")
    assert ping(ns1, "bbbb::5")  # the serial agent's own TUN, for comparison

    # text lines are logged, never forwarded; garbage is dropped and counted
    assert agent.wait_log(r"serial text: Contiki-NG: rpl-border-router waiting for prefix")
    time.sleep(1.0)  # a few more rounds of text and garbage
    packets = uplink_packets(uplink)
    assert packets, "no uplink at all"
    for data in packets:
        assert data[0] >> 4 == 6 and len(data) >= 40, data[:60]
        assert b"Contiki" not in data and b"binary" not in data
    assert any(p[8:24] == bytes.fromhex("cccc" + "00" * 13 + "01") for p in packets)
    assert agent.running()
    code, _ = agent.stop(signal.SIGINT)
    assert code == 0
    out = agent.output
    assert "Traceback" not in out
    for counter in ("serial bad frame", "serial too big", "serial other", "serial>log"):
        assert re.search(rf"{re.escape(counter)}\s+\d+", out), (counter, out[-3000:])
    assert "serial ?P>!P" in out


def test_leading_end_dialect_and_ipv4_network(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers
) -> None:
    """Contiki framing (END payload END) both ways, the agent's default (the old flag
    --slip-leading-end still says so), plus bare text lines; an IPv4 network behind."""
    peer = peers(line.a, "--leading-end", "--address", "cccc::1", "--address", "192.0.2.1")
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(
        session, line, "--slip-leading-end", "--re-route-prefix", "192.0.2.0/24"
    )
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64") and route_learned(ns1, "192.0.2.0/24")
    assert peer.wait_line(r"^prefix cccc000000000000$"), peer.text()
    assert ping(ns1, "cccc::1", count=3)
    assert ping(ns1, "192.0.2.1", count=3, version=4)
    assert peer.wait_line(r"^echo4 10\.2\.0\.1$")
    assert agent.wait_log(r"serial text: \[INFO: BR\] Server IPv6 addresses")
    # nothing the peer received was a broken frame
    assert not re.search(r"^frame ", peer.text(), re.M), peer.text()


def received(ns: str, dst: str, version: int) -> int:
    """Echo replies to 5 pings 0.3 s apart (each waits up to 2 s)."""
    out = ns_run(ns, "ping", f"-{version}", "-c", "5", "-i", "0.3", "-W", "2", dst)
    found = re.search(r"(\d+) received", out.stdout)
    return int(found.group(1)) if found else -1


def test_unframed_text_line_does_not_cost_the_next_frame(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers
) -> None:
    """A mote writes `debug: mote says hello\\r\\n` with no SLIP framing after every third
    reply (RIOT framing, no leading END): the reply after it still arrives, the line is
    logged as the mote's output and counted."""
    peer = peers(
        line.a, "--chatty", "3", "--interval", "0", "--address", "cccc::1", "--address",
        "192.0.2.1",
    )
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line, "--re-route-prefix", "192.0.2.0/24")
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64") and route_learned(ns1, "192.0.2.0/24")
    assert received(ns1, "cccc::1", 6) == 5, agent.output[-3000:]
    assert received(ns1, "192.0.2.1", 4) == 5, agent.output[-3000:]
    assert peer.text().count("echo6 ") == 5 and peer.text().count("echo4 ") == 5
    assert agent.wait_log(r"(?m)INFO: serial text: debug: mote says hello$")
    code, _ = agent.stop(signal.SIGINT)
    assert code == 0
    out = agent.output
    # 10 replies: a text line after the 3rd, 6th and 9th, each glued to the next reply
    assert re.search(r"serial>bus\s+10\b", out), out[-3000:]
    assert re.search(r"serial>log\s+3\s+72\b", out), out[-3000:]
    assert "serial other" not in out and "Traceback" not in out


def test_udp_stream_64k_paced_without_loss(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers
) -> None:
    """64 KiB of UDP at below the 115200 baud line rate crosses both ways, nothing lost."""
    peers(line.a, "--interval", "0")
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line, "--slip-pace-us", "500", "--baudrate", "115200")
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")
    assert ping(ns1, "cccc::1", count=1)
    # 1024-byte payloads (1072-byte frames, 93 ms each at 115200 baud 8N1): pace at 10 kB/s
    out = ns_run(
        ns1,
        sys.executable,
        str(UDP_STREAM),
        "cccc::1",
        "7",
        "--total",
        "65536",
        "--size",
        "1024",
        "--rate",
        "10000",
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr + agent.output[-3000:]
    assert "sent 64 received 64 bytes 65536" in out.stdout


def test_port_vanishes_and_comes_back(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers
) -> None:
    peers(line.a, "--interval", "0")
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line)
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")
    assert ping(ns1, "cccc::1", count=2)

    line.stop()  # unplug: both pty ends hang up, the link names disappear
    assert agent.wait_log(r"serial port \S+ lost"), agent.output
    assert ping(ns1, "bbbb::5", count=3)  # the rest of the tunnel stays up
    assert not ping(ns1, "cccc::1", count=1)
    time.sleep(2.5)  # a few reopen attempts while the device is absent

    line.start()  # replug under the same names
    peers(line.a, "--interval", "0")
    assert agent.wait_log(r"serial port \S+ is back", timeout=5), agent.output
    assert ping(ns1, "cccc::1", count=3)
    assert agent.running()
    assert len(re.findall(r"serial port \S+ lost", agent.output)) == 1
    assert "Traceback" not in agent.output


def test_missing_or_busy_port_is_a_clear_error(  # type: ignore[no-untyped-def]
    vhost: str, netns, procs, line: Socat, tmp_path: Path
) -> None:
    ns = netns()
    missing = procs(
        "connect",
        "--url",
        vhost,
        "--name",
        "agent_1",
        "--netns",
        ns,
        "--serial-port",
        str(tmp_path / "ttyUSB9"),
        "--re-route-prefix",
        "cccc",
        label="missing",
    )
    assert missing.wait(15) not in (0, None)
    lines = [ln for ln in missing.output.splitlines() if ln.strip()]
    assert lines == [
        f"Error: serial port {tmp_path / 'ttyUSB9'} does not exist (is the device plugged in?)"
    ], missing.output
    assert tun_links(ns) == []

    holder = serial.Serial(str(line.b), exclusive=True)
    try:
        busy = procs(
            "connect",
            "--url",
            vhost,
            "--name",
            "agent_1",
            "--netns",
            ns,
            "--serial-port",
            str(line.b),
            "--re-route-prefix",
            "cccc",
            label="busy",
        )
        assert busy.wait(15) not in (0, None)
    finally:
        holder.close()
    assert busy.output.strip() == f"Error: serial port {line.b} is in use by another process"
    assert tun_links(ns) == []


# ------------------------------------------------------------------------------ 802.15.4


# ------------------------------------------------------------------ a mote that boots, resets


def one_ping(ns: str, dst: str, version: int = 6) -> bool:
    """One echo request, waiting up to 2 s for its reply."""
    return ns_run(ns, "ping", f"-{version}", "-c", "1", "-W", "2", dst).returncode == 0


def reset(peer: Peer) -> None:
    """The mote resets (SIGUSR1 to the simulator) and boots again."""
    before = peer.text().count("reset")
    peer.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: peer.text().count("reset") == before + 1, 5), peer.text()


@pytest.mark.parametrize("framing", ["both", "end-only"])
def test_a_mote_that_resets_answers_the_very_next_ping(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers, framing: str
) -> None:
    """A mote's receiver after boot or reset discards up to the first END (the simulator
    does as RIOT and Contiki-NG do). With the default framing (END payload END) the frame
    right after a reset arrives; with end-only it is the one discarded."""
    peer = peers(line.a, "--interval", "0", "--rs-delay", "-1")
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line, "--slip-framing", framing)
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")
    for _ in range(3):
        reset(peer)
        if framing == "both":
            assert one_ping(ns1, "cccc::1"), peer.text() + agent.output[-3000:]
        else:  # the request is what the mote discards, the next one gets through
            assert not one_ping(ns1, "cccc::1"), peer.text()
            assert one_ping(ns1, "cccc::1"), peer.text() + agent.output[-3000:]
    synced = [int(n) for n in re.findall(r"^synced (\d+)$", peer.text(), re.M)]
    assert len(synced) == 3, peer.text()
    if framing == "both":
        assert synced == [0, 0, 0]  # the leading END: nothing of a frame was thrown away
    else:
        assert all(n > 40 for n in synced)  # a whole echo request each time
    assert peer.text().count("echo6 bbbb::1") == 3


def send_udp(ns: str, src: str, dst: str, ifname: str) -> None:
    """One UDP datagram from src (bound to ifname: link-local sources need it) to dst:7."""
    code = (
        "import socket, sys; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
        "s.bind((sys.argv[1], 0, 0, socket.if_nametoindex(sys.argv[3]))); "
        "s.sendto(b'scope test', (sys.argv[2], 7))"
    )
    out = ns_run(ns, sys.executable, "-c", code, src, dst, ifname)
    assert out.returncode == 0, out.stderr


def test_link_local_traffic_stays_on_its_link(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers, listener
) -> None:
    """The mote's Router Solicitations (fe80::cafe > ff02::2, after boot and each reset)
    reach neither the bus nor agent_1's TUN; a datagram from agent_1's fe80::1 never
    reaches the mote; global traffic does, both ways."""
    peer = peers(line.a, "--interval", "0", "--rs-delay", "0.2", "--link-local", "fe80::cafe")
    uplink = listener(["fromAgent.coap_server.ip.tun.packet.raw"])
    session.start_router()
    session.start_agent("agent_1")
    agent = start_serial_agent(session, line)
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")
    [tun1] = tun_links(ns1)
    capture = subprocess.Popen(
        ["ip", "netns", "exec", ns1, sys.executable, str(ROOT / "tests/tools/iface_capture.py"),
         tun1, "4"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert capture.stdout is not None and capture.stdout.readline().strip() == "ready"
        for _ in range(2):
            sent = peer.text().count("rs fe80::cafe")
            reset(peer)
            assert wait_for(lambda n=sent: peer.text().count("rs fe80::cafe") == n + 1, 5)
        assert one_ping(ns1, "cccc::1")
        send_udp(ns1, "fe80::1", "cccc::1", tun1)  # link-local source: stays on agent_1's link
        send_udp(ns1, "bbbb::1", "cccc::1", tun1)  # global: crosses
        assert peer.wait_line(r"^udp bbbb::1 10$"), peer.text()
        seen, _ = capture.communicate(timeout=20)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    mote_ll = bytes.fromhex("fe80" + "00" * 12 + "cafe")
    into_tun = [bytes.fromhex(h) for d, h in (ln.split() for ln in seen.splitlines()) if d == "in"]
    assert into_tun, "nothing reached agent_1's TUN at all"
    assert not [p for p in into_tun if p[0] >> 4 == 6 and p[8:24] == mote_ll], seen
    assert any(p[8:24] == bytes.fromhex("cccc" + "00" * 13 + "01") for p in into_tun)
    packets = uplink_packets(uplink)
    assert packets and not [p for p in packets if p[8:10] == b"\xfe\x80" or p[24] == 0xFF]
    assert "udp fe80::1" not in peer.text()
    code, _ = agent.stop(signal.SIGINT)
    assert code == 0, agent.output
    # the solicitations from the line (two at least: the one at boot may come before the
    # agent opened the line), one datagram from the bus: counted, not forwarded
    dropped = re.search(r"drop link-local\s+(\d+)", agent.output)
    assert dropped and int(dropped.group(1)) >= 3, agent.output[-3000:]


def test_the_serial_agents_own_host_reaches_its_mote(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers
) -> None:
    """No hand-made route: the agent routes its re-routed networks into its TUN on its own
    host, IPv6 and IPv4, and they go with the TUN when it stops."""
    peers(line.a, "--interval", "0", "--address", "cccc::1", "--address", "192.0.2.1")
    session.start_router()
    agent = start_serial_agent(
        session, line, "--re-route-prefix", "192.0.2.0/24", "--ipv4-address", "10.2.0.5"
    )
    own = session.ns["coap_server"]
    [tun] = tun_links(own)
    routes6 = ns_run(own, "ip", "-6", "route", "show", "cccc::/64").stdout
    routes4 = ns_run(own, "ip", "-4", "route", "show", "192.0.2.0/24").stdout
    assert f"dev {tun}" in routes6 and f"dev {tun}" in routes4, routes6 + routes4
    assert ping(own, "cccc::1", count=3), agent.output[-3000:]
    assert ping(own, "192.0.2.1", count=3, version=4), agent.output[-3000:]
    code, _ = agent.stop(signal.SIGTERM)
    assert code == 0, agent.output
    assert re.search(r"tun>serial\s+6\b", agent.output), agent.output[-3000:]
    assert ns_run(own, "ip", "-6", "route", "show", "cccc::/64").stdout.strip() == ""
    assert ns_run(own, "ip", "-4", "route", "show", "192.0.2.0/24").stdout.strip() == ""


def slip(frame: bytes, leading_end: bool = False) -> bytes:
    body = frame.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"
    return b"\xc0" + body if leading_end else body


def test_802154_probe_mode(  # type: ignore[no-untyped-def]
    vhost: str, procs, line: Socat, listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst = listener(["fromAgent.probe_1.802154.serial.#", "testingtool.component.ready"])
    # the original agent's environment variables, as fallbacks
    monkeypatch.setenv("FINTEROP_CONNECTOR_SERIAL_PORT", str(line.b))
    monkeypatch.setenv("FINTEROP_CONNECTOR_BAUDRATE", "57600")
    fd = os.open(line.a, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        agent = procs(
            "connect",
            "--url",
            vhost,
            "--name",
            "probe_1",
            "--serial-mode",
            "802154",
            "-vv",
            label="probe_1",
        )
        assert agent.wait_log("published ready"), agent.output
        got = {}
        for _ in range(2):
            msg = lst.get(timeout=5)
            assert msg is not None, agent.output
            got[msg[0]] = orjson.loads(msg[1])
        assert got["fromAgent.probe_1.802154.serial.started"] == {
            "_api_version": "1.2.15",
            "name": "probe_1",
            "port": str(line.b),
            "boudrate": "57600",
        }
        assert got["testingtool.component.ready"]["component"] == "probe_1"

        # 802.15.4 MAC frames (no FCS) with END and ESC bytes inside, both framings
        frames = [
            bytes.fromhex("41d8c0cdabffffc0dbdd0102"),
            bytes.fromhex("6188dbcdab0100020048656c6c6f"),
        ]
        os.write(fd, slip(frames[0]) + b"\x00garbage\xdb\x99" + slip(frames[1], leading_end=True))
        up = []
        while len(up) < 2 and (msg := lst.get(timeout=5)) is not None:
            assert msg[0] == "fromAgent.probe_1.802154.serial.packet.raw"
            up.append(orjson.loads(msg[1]))
        assert [bytes(m["data"]) for m in up] == frames, agent.output
        for m, frame in zip(up, frames, strict=True):
            assert bytes(m["data_slip"]) == slip(frame, leading_end=True)
            assert m["interface_name"] == "serial" and isinstance(m["timestamp"], float)

        # downlink: data is SLIP-encoded onto the line, byte exact
        down = bytes.fromhex("4188c0cdabdbdb0000c0")
        lst.publish(
            "toAgent.probe_1.802154.serial.packet.raw",
            orjson.dumps(
                {
                    "_api_version": "1.2.15",
                    "data": list(down),
                    "interface_name": "serial",
                    "timestamp": 1.0,
                }
            ),
        )
        lst.publish("toAgent.probe_1.802154.serial.packet.raw", b"not json")
        # the default framing, END payload END, in this mode too
        received = read_at_least(fd, len(slip(down, leading_end=True)))
        assert received == slip(down, leading_end=True), (received, agent.output)
        assert agent.running()
        code, _ = agent.stop(signal.SIGINT)
        assert code == 0 and "Traceback" not in agent.output
    finally:
        os.close(fd)


def test_slip_demo_script_runs(tmp_path: Path) -> None:
    """examples/mote_over_slip.sh, as a user runs it."""
    out = run_example("mote_over_slip.sh", "slip", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo: all 4 steps passed" in out.stdout
    assert len(re.findall(r"^PASS ", out.stdout, re.M)) == 4
    assert "Contiki-NG" in out.stdout  # the mote's debug text, shown from the agent's log


def test_wait_bootstrap_takes_networks_from_tun_start(  # type: ignore[no-untyped-def]
    session: Session, line: Socat, peers, listener
) -> None:
    """No address plan on the command line: the tun.start's networks go to the line."""
    peer = peers(line.a, "--interval", "0.5")
    started = listener(["fromAgent.coap_server.ip.tun.started"])
    session.start_router()
    session.start_agent("agent_1")
    agent = session.start_agent("coap_server", "--serial-port", str(line.b), "-vv")
    assert tun_links(session.ns["coap_server"]) == []
    start = {
        "_api_version": "1.2.15",
        "name": "coap_server",
        "ipv6_prefix": "bbbb",
        "ipv6_host": "5",
        "re_route_packets_prefix": "cccc",
        "re_route_packets_host": "1",
        "re_route_packets_if": "eth1",  # meaningless for a serial agent: ignored
    }
    started.publish("toAgent.coap_server.ip.tun.start", orjson.dumps(start))
    got = started.get(timeout=5)
    assert got is not None, agent.output
    body = orjson.loads(got[1])
    assert body["re_route_packets_prefix"] == "cccc" and body["re_route_packets_host"] == "1"
    assert body["re_route_packets_if"] is None
    ns1 = session.ns["agent_1"]
    assert route_learned(ns1, "cccc::/64")
    assert peer.wait_line(r"^prefix cccc000000000000$"), peer.text() + agent.output
    assert ping(ns1, "cccc::1", count=3)
    assert "ignored re_route_packets_if eth1" in agent.output
