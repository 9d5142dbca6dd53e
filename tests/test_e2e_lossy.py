"""End to end: ioppytest's lossy context (routing.lossy.link.start) on a real router.

A tiny CoAP server runs in agent_2's namespace, a client in agent_1's
(tests/tools/coap_peer.py); the coordinator's command is published on the test vhost.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agent.lossy import LOSSY_KEY
from tests.conftest import ROOT, Session, needs_root, ns_run, ping, publish, wait_for
from tests.tools.proc import end_process

pytestmark = [pytest.mark.e2e, needs_root]

COAP = ROOT / "tests/tools/coap_peer.py"


class CoapServer:
    def __init__(self, ns: str, out: Path) -> None:
        self.out = out
        self._file = open(out, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(COAP), "server"],
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )
        assert wait_for(lambda: "ready" in self.text(), 10), self.text()

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> None:
        end_process(self.proc)
        self._file.close()


@pytest.fixture
def coap_server(session: Session, tmp_path: Path) -> Iterator[CoapServer]:
    session.start_router()
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    server = CoapServer(session.ns["agent_2"], tmp_path / "coap_server.out")
    yield server
    server.stop()


def coap_get(ns: str) -> str:
    out = ns_run(ns, sys.executable, str(COAP), "client", "bbbb::2", "--ack-timeout", "1.0")
    return out.stdout + out.stderr


def lossy(session: Session, body: bytes) -> None:
    publish(session.url, LOSSY_KEY, body, "application/json")


def test_coap_con_request_dropped_once_is_retransmitted_and_answered(
    session: Session, coap_server: CoapServer
) -> None:
    ns1 = session.ns["agent_1"]
    router = session.router
    assert router is not None
    # control: without a lossy command the first transmission is answered
    out = coap_get(ns1)
    assert "answered after 1 transmissions: hello" in out, out + router.output[-2000:]

    # the coordinator's command, as ioppytest sends it (with its own envelope fields)
    lossy(
        session, orjson.dumps({"_type": "routing.lossy.link.start", "number_of_packets_to_drop": 1})
    )
    assert router.wait_log(r"lossy link: dropping the next 1 packet"), router.output
    out = coap_get(ns1)
    assert "sent 2" in out and "answered after 2 transmissions: hello" in out, (
        out + router.output[-2000:]
    )
    requests = re.findall(r"^request (\d+) ", coap_server.text(), re.M)
    assert len(requests) == 2, coap_server.text()  # the control's and the retransmission
    assert router.wait_log(r"lossy link: dropped 1 packet\(s\); forwarding again")
    # -v: the dropped packet has its line, like every drop
    assert re.search(r"agent_1 > - \(lossy link, dropped\)  IPv6 bbbb::1 > bbbb::2", router.output)

    # a new command sets the count anew (5, then 2: two drops, not seven)
    lossy(session, b'{"number_of_packets_to_drop": 5}')
    lossy(session, b'{"number_of_packets_to_drop": 2}')
    assert router.wait_log(r"lossy link: dropping the next 2 packet"), router.output
    pinged = ns_run(ns1, "ping", "-6", "-c", "4", "-i", "0.3", "-W", "2", "bbbb::2")
    # request 1 and request 2 dropped; requests 3 and 4 and their replies pass
    assert re.search(r"4 packets transmitted, 2 received", pinged.stdout), pinged.stdout

    # malformed commands: one line each, nothing dropped after them, router unharmed
    for bad in (
        b"not json",
        b'{"number_of_packets_to_drop": "3"}',
        b"{}",
        b'{"number_of_packets_to_drop": -1}',
    ):
        lossy(session, bad)
    assert wait_for(lambda: router.output.count(f"ignored {LOSSY_KEY}:") == 4, 10), router.output
    assert ping(ns1, "bbbb::2", count=3)

    code, _ = router.stop(signal.SIGINT)
    assert code == 0
    out = router.output
    assert "Traceback" not in out
    assert re.search(r"drop lossy link\s+3\b", out), out[-3000:]
    assert re.search(r"drop bad lossy command\s+4\b", out), out[-3000:]
