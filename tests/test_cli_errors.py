"""Errors a user meets: one clear line, non-zero exit, no traceback, never the password."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import ROOT, broker_up, needs_root, ns_run, tun_links

SECRET = "s3cr3t-Pa55"


def run_agent(*args: str, timeout: float = 30, prefix: list[str] | None = None):  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.pop("AMQP_URL", None)
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "agent", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], *expected: str) -> str:
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Traceback" not in text, text
    assert SECRET not in text
    errors = [line for line in text.splitlines() if "ERROR" in line or line.startswith("Error")]
    assert len(errors) == 1, text
    for word in expected:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--name", "a.b"], ["--name", "a.b"]),
        (["--name", "agent 1"], ["--name"]),
        (["--name", "agent_#"], ["--name"]),
        (["--name", "agent_1", "--mtu", "100"], ["--mtu"]),
        (["--name", "agent_1", "--mtu", "70000"], ["--mtu"]),
        (["--name", "agent_1", "--ipv6-prefix", "bbbb;reboot"], ["prefix"]),
        (["--name", "agent_1", "--ipv4-address", "10.2.0.300"], ["IPv4"]),
        (["--name", "agent_1", "--tun-name", "a/b"], ["--tun-name"]),
        (["--name", "agent_1", "--netns", f"missing{os.getpid()}"], ["does not exist"]),
        (["--name", "coap_server", "--force-bootstrap"], ["--ipv6-host"]),
        (["--name", "agent_1", "--url", "http://h/"], ["amqp://"]),
        (["--name", "agent_1", "--url", f"amqp://u:{SECRET}@h:99999/"], ["--url"]),
        (["--name", "agent_1", "--url", "amqp://h/?heartbeat=abc"], ["heartbeat"]),
        (["--name", "agent_1", "--exchange", "bad exchange"], ["exchange"]),
        (["--name", "agent_1", "--url", f"amqp://u:{SECRET}@h1/v;amqp://u:{SECRET}@h2:0x/v"],
         ["URL 2 of 2", "u:***@h2"]),
        (["--name", "agent_1", "--url", "amqp://h1/v", "--url", f"amqp://u:{SECRET}@h2/w"],
         ["URL 2 of 2", "same vhost"]),
        (["--name", "agent_1", "--rtscts"], ["--rtscts", "--serial-port"]),
        (["--name", "agent_1", "--serial-port", ""], ["--serial-port", "invalid"]),
        (["--name", "agent_1", "--serial-port", f"/nonexistent{os.getpid()}/tty",
          "--re-route-if", "eth1", "--re-route-prefix", "cccc"], ["--re-route-if"]),
    ],
)
def test_bad_options(args: list[str], expected: list[str]) -> None:
    out = run_agent("connect", *args)
    assert out.returncode == 2
    assert_one_line_error(out, *expected)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--serial-port", f"/nonexistent{os.getpid()}/tty"], ["does not exist"]),
        (["--serial-mode", "802154", "--serial-port", f"/nonexistent{os.getpid()}/tty"],
         ["does not exist"]),
        (["--pcap", f"/nonexistent{os.getpid()}/x.pcapng"], ["x.pcapng", "No such file"]),
    ],
)
def test_unusable_device_or_file(args: list[str], expected: list[str]) -> None:
    """Checked before anything starts (no TUN, no broker): one line, exit 1."""
    out = run_agent("connect", "--name", "agent_1", "--ipv6-host", "1", *args)
    assert out.returncode == 1
    assert_one_line_error(out, *expected)


def test_router_bad_links() -> None:
    out = run_agent("router", "--links", "agent_1")
    assert out.returncode == 2
    assert_one_line_error(out, "--links")


@pytest.fixture
def one_ns(netns: Callable[[], str]) -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    return netns()


def _connect(ns: str, url: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_agent("connect", "--name", "agent_1", "--netns", ns, "--url", url, *extra)


@needs_root
def test_broker_unreachable_names_host_port(one_ns: str) -> None:
    out = _connect(one_ns, f"amqp://guest:{SECRET}@127.0.0.1:1/")
    assert_one_line_error(out, "127.0.0.1:1", "refused")
    assert tun_links(one_ns) == []


@needs_root
def test_unresolvable_host(one_ns: str) -> None:
    out = _connect(one_ns, f"amqp://guest:{SECRET}@no-such-host.invalid/")
    assert_one_line_error(out, "no-such-host.invalid")


@needs_root
@pytest.mark.skipif(not broker_up(), reason="no RabbitMQ")
def test_wrong_password(one_ns: str) -> None:
    out = _connect(one_ns, f"amqp://guest:{SECRET}@127.0.0.1/")
    assert_one_line_error(out, "guest", "password", "127.0.0.1:5672")
    assert tun_links(one_ns) == []


@needs_root
@pytest.mark.skipif(not broker_up(), reason="no RabbitMQ")
def test_unknown_vhost(one_ns: str) -> None:
    out = _connect(one_ns, f"amqp://guest:guest@127.0.0.1/nosuchvhost{os.getpid()}")
    assert_one_line_error(out, "vhost", f"nosuchvhost{os.getpid()}")


@needs_root
@pytest.mark.skipif(not broker_up(), reason="no RabbitMQ")
def test_tls_to_plain_port(one_ns: str) -> None:
    out = _connect(one_ns, "amqps://guest:guest@127.0.0.1:5672/")
    assert_one_line_error(out, "TLS", "127.0.0.1:5672")


@needs_root
def test_interface_name_taken(one_ns: str, vhost: str) -> None:
    subprocess.run(
        ["ip", "-n", one_ns, "link", "add", "taken0", "type", "veth", "peer", "name", "taken1"],
        check=True,
    )
    out = _connect(one_ns, vhost, "--tun-name", "taken0")
    assert_one_line_error(out, "taken0", "taken")
    assert "taken0" in ns_run(one_ns, "ip", "link").stdout  # not deleted by us


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv")
def test_without_net_admin(one_ns: str, vhost: str) -> None:
    """Root without CAP_NET_ADMIN (a container, say): clear error, no traceback."""
    out = run_agent(
        "connect", "--name", "agent_1", "--url", vhost,
        prefix=["setpriv", "--bounding-set", "-net_admin,-sys_admin", "--inh-caps", "-all"],
    )
    assert_one_line_error(out, "CAP_NET_ADMIN")


@needs_root
@pytest.mark.skipif(not broker_up(), reason="no RabbitMQ")
def test_duplicate_name_refused(vhost: str, netns: Callable[[], str], procs) -> None:  # type: ignore[no-untyped-def]
    first = procs("connect", "--name", "agent_1", "--netns", netns(), "--url", vhost,
                  label="first")
    assert first.wait_log("published ready")
    out = _connect(netns(), vhost)
    assert_one_line_error(out, "agent_1", "already connected")
    assert first.running()
