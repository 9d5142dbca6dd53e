"""End to end: 6LoWPAN frames through the 802.15.4 probe mode, read by `-v` and `agent sniff`.

A socat pty pair stands for the mote's serial line; the frames (tests/tools/wpan.py) are
written SLIP-encoded on the mote's end. The probe's `-v` lines and a `sniff --filter`
on an inner IPv6 word show what is inside the frames.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, needs_root, read_at_least, wait_for
from tests.test_e2e_inspect import _wait_stderr
from tests.test_e2e_serial import Socat, slip
from tests.tools import wpan
from tests.tools.proc import end_process

pytestmark = [pytest.mark.e2e, needs_root]


def _sniff(home: Path, url: str, *args: str) -> subprocess.Popen[str]:
    """`agent sniff` as root, with a HOME of its own: Scapy's cache directory it makes
    there must not be a root-owned /tmp/.cache that an unprivileged sniff then trips on."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", HOME=str(home))
    env.pop("AMQP_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "sniff", "--url", url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def pty_line(tmp_path: Path) -> Iterator[Socat]:
    socat = Socat(tmp_path)
    socat.start()
    yield socat
    socat.stop()


def test_probe_v_and_sniff_show_and_filter_inner_packets(  # type: ignore[no-untyped-def]
    vhost: str, procs, pty_line: Socat, listener, tmp_path: Path
) -> None:
    mixed = wpan.mixed()
    frames = [f for f, _ in mixed]
    fd = os.open(pty_line.a, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    sniff = None
    try:
        probe = procs(
            "connect",
            "--url",
            vhost,
            "--name",
            "probe_1",
            "--serial-mode",
            "802154",
            "--serial-port",
            str(pty_line.b),
            "-v",
            label="probe_1",
        )
        assert probe.wait_log("published ready"), probe.output
        args = ("--name", "probe_1", "--filter", "udp port 5683", "--count", "5")
        sniff = _sniff(tmp_path, vhost, *args)
        seen = _wait_stderr(sniff, r"sniffing probe_1")  # its queue exists: frames may come
        os.write(fd, b"".join(slip(f, leading_end=True) for f in frames))
        out, rest = sniff.communicate(timeout=20)
        assert sniff.returncode == 0, seen + rest

        # -v: one line per frame, read down to the IPv6 / UDP / CoAP inside
        assert probe.wait_log(r"serial>bus 802\.15\.4 Ack seq 9 3 B"), probe.output
        rd, wk = mixed[0][1], mixed[1][1]
        assert rd is not None and wk is not None
        expected = [
            f"up   serial>bus 802.15.4 0x1234 > 0xffff 6LoWPAN IPHC {rd.src} > ff02::1a "
            f"UDP 5683 > 5683 CoAP NON GET /rd {len(frames[0])} B",
            f"6LoWPAN IPHC bbbb::1 > bbbb::2 UDP 40001 > 5683 CoAP CON GET /.well-known/core "
            f"{len(frames[1])} B",
            f"6LoWPAN FRAG1 tag 7 offset 0 size 188 {len(frames[2])} B",
            f"6LoWPAN FRAGN tag 7 offset 96 size 188 {len(frames[3])} B",
            "6LoWPAN FRAGN tag 7 offset 152 size 188 reassembled IPHC ",
            "6LoWPAN MESH 0x0001 > 0x0002 hops 5 IPHC fe80::1 > fe80::2 UDP 5683 > 49152 "
            "CoAP ACK 2.05 Content",
            "6LoWPAN IPHC (context 0/0, prefix unknown) ::ff:fe00:3 > ::ff:fe00:a UDP 5683 > 5683 "
            "CoAP CON PUT /ctx",
            "6LoWPAN IPHC fd00::212:4b00:1:1 > fd00::212:4b00:2:2 UDP 5683 > 5683 "
            "CoAP CON DELETE /x",
            "6LoWPAN IPv6 bbbb::3 > bbbb::4 ICMPv6 Echo Request",
            "6LoWPAN [IPHC header cut short",
            "[not 6LoWPAN: dispatch 0x01]",
            "up   serial>bus 802.15.4 Ack seq 9 3 B",
        ]
        trace = [x for x in probe.output.splitlines() if "serial>bus" in x]
        assert len(trace) == len(frames), probe.output
        for got, want in zip(trace, expected, strict=True):
            assert want in got, (got, want)

        # sniff --filter 'udp port 5683': the five frames whose IPv6 packet has it (not
        # the RPL one: as in tcpdump, `udp` does not look past a hop-by-hop header)
        packets = [x for x in out.splitlines() if " 802.15.4 " in x]
        assert len(packets) == 5, out
        assert all(" probe_1       up    802.15.4 " in x for x in packets), out
        wanted = ["GET /rd", "GET /.well-known/core", "reassembled", "ACK 2.05", "PUT /ctx"]
        for got, want in zip(packets, wanted, strict=True):
            assert want in got, (got, want)
        assert "UDP 61616 > 5683 CoAP CON POST /big" in packets[2]

        # downlink: a frame from the bus shows as `down bus>serial` and reaches the line
        lst = listener(["toAgent.probe_1.#"])
        lst.publish("toAgent.probe_1.802154.serial.packet.raw", _frame_message(frames[0]))
        on_line = read_at_least(fd, len(slip(frames[0])))  # either SLIP framing
        assert on_line.strip(b"\xc0") == slip(frames[0]).strip(b"\xc0")
        assert wait_for(lambda: "down bus>serial 802.15.4 0x1234 > 0xffff" in probe.output, 5)
        assert "Traceback" not in probe.output
    finally:
        if sniff is not None:
            end_process(sniff)
        os.close(fd)


def _frame_message(frame: bytes) -> bytes:
    body = {"_api_version": "1.2.15", "data": list(frame), "interface_name": "serial"}
    return orjson.dumps({**body, "timestamp": 1.0})
