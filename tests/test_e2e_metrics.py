"""--metrics end to end: scraped while agents ping through the router, and once by a real
Prometheus server (Debian's `prometheus`), whose query API must give the ping rate."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Session, needs_root, ns_run, ping, wait_for

pytestmark = [pytest.mark.e2e, needs_root]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_router_and_agents_metrics_count_the_pings(session: Session) -> None:
    rport, aport = free_port(), free_port()
    session.start_router("--metrics", f"127.0.0.1:{rport}")
    session.start_agent("agent_1", "--metrics", f"127.0.0.1:{aport}")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    assert ping(session.ns["agent_1"], "bbbb::2", count=5)

    r = scrape(rport)
    vh = session.url.rsplit("/", 1)[1]
    key = lambda agent, d: ("agent_router_packets_total",  # noqa: E731
                            (("agent", agent), ("direction", d), ("vhost", vh)))
    assert r[key("agent_1", "in")] >= 5 and r[key("agent_2", "out")] >= 5
    assert r[key("agent_2", "in")] >= 5 and r[key("agent_1", "out")] >= 5
    assert r[("agent_router_agents", (("vhost", vh),))] == 2
    assert r[("agent_router_bus_up", (("vhost", vh),))] == 1
    silent = [k for k in r if k[0] == "agent_router_agent_last_packet_age_seconds"]
    assert len(silent) == 2 and all(r[k] < 30 for k in silent)
    assert ("agent_router_batch_packets_count", ()) in r

    a = scrape(aport)
    assert a[("agent_packets_total", (("from_port", "tun"), ("to_port", "bus")))] >= 5
    assert a[("agent_packets_total", (("from_port", "bus"), ("to_port", "tun")))] >= 5
    assert a[("agent_bus_up", ())] == 1 and a[("agent_bus_reconnects_total", ())] == 0
    # packets that go nowhere: a drop counted by reason
    ns_run(session.ns["agent_1"], "ping", "-c", "1", "-W", "0.3", "ff05::1234")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{aport}/other", timeout=5)
    assert err.value.code == 404


class Prometheus:
    """A Prometheus server of its own: config and data in a temp dir, a free port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, target_port: int) -> None:
        config = self.tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: router\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        with open(self.tmp / "prometheus.log", "wb") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={config}",
                 f"--storage.tsdb.path={self.tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )

    def log(self) -> str:
        return (self.tmp / "prometheus.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A Prometheus server of the test's own, stopped by its PID at teardown."""
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus package is not installed (scripts/setup.sh)")
    server = Prometheus(tmp_path)
    yield server
    server.stop()


def query(port: int, expr: str) -> list[dict]:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = json.loads(resp.read())
    except (urllib.error.URLError, OSError):
        return []
    return answer["data"]["result"] if answer.get("status") == "success" else []


def test_a_real_prometheus_sees_the_ping_rate(session: Session, prometheus: Prometheus) -> None:
    rport = free_port()
    prometheus.start(rport)
    pport = prometheus.port
    session.start_router("--metrics", f"127.0.0.1:{rport}")
    session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    assert wait_for(lambda: query(pport, 'up{job="router"} == 1'), 30, interval=0.5), \
        prometheus.log()
    # 5 pings a second for 12 s: agent_1 sends 5 echo requests a second into the router
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", session.ns["agent_1"], "ping", "-6", "-i", "0.2", "-c", "60",
         "bbbb::2"], stdout=subprocess.DEVNULL)
    try:
        expr = 'rate(agent_router_packets_total{agent="agent_1",direction="in"}[6s])'
        rates: list[float] = []

        def steady() -> bool:  # once the 6 s window is full of pings: 5 a second
            got = query(pport, expr)
            if got:
                rates.append(float(got[0]["value"][1]))
            return bool(rates) and 4.5 <= rates[-1] <= 5.5

        assert wait_for(steady, 25, interval=1.0), rates
    finally:
        pinger.kill()
        pinger.wait()
