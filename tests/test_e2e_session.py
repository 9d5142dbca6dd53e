"""End to end: `agent session` accounts on the real broker (management API on 15672).

Our router, agents and sniffer run with the generated accounts; agent_1's and the
observer's accounts try what they must not do, with pika directly, and the broker refuses.
Each test removes its session's vhost and users, also when it fails.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions as pex
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from agent.router.status import STATUS_KEY
from agent.session.mgmt import Management, MgmtError
from tests.conftest import (
    ROOT,
    Proc,
    _unique,
    broker_up,
    needs_root,
    ping,
    read_at_least,
)

pytestmark = [pytest.mark.e2e]


def _mgmt_up() -> bool:
    try:
        Management("http://guest:guest@127.0.0.1:15672", timeout=3).overview()
        return True
    except MgmtError:
        return False


needs_mgmt = pytest.mark.skipif(
    not (broker_up() and _mgmt_up()), reason="no RabbitMQ management API on 127.0.0.1:15672"
)
ADMIN = "http://guest:guest@127.0.0.1:15672"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("RABBITMQ_ADMIN_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "agent", "session", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


def purge(mgmt: Management, name: str) -> None:
    """Remove every user `<name>.*` and the vhost `name`, whatever state they are in."""
    for user in mgmt.request("GET", "users"):
        if user["name"].startswith(name + "."):
            mgmt.delete_user(user["name"])
    if mgmt.vhost(name) is not None:
        mgmt.delete_vhost(name)


@pytest.fixture
def mgmt() -> Management:
    return Management(ADMIN)


@pytest.fixture
def session_name(mgmt: Management) -> Iterator[Callable[[], str]]:
    """Factory of unique session names; their vhosts and users are removed at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(_unique("s"))
        return made[-1]

    yield make
    for name in made:
        purge(mgmt, name)


def create(name: str, out: Path, *extra: str, agents: str = "agent_1,agent_2") -> dict[str, str]:
    res = run_cli("create", name, "--agents", agents, "--out", str(out),
                  "--admin-url", ADMIN, "--amqp-url-base", "amqp://127.0.0.1:5672", *extra)
    assert res.returncode == 0, res.stderr
    urls = {p.stem: p.read_text().strip() for p in out.glob("*.url")}
    for url in urls.values():  # no password on the terminal without --show
        password = unquote(urlsplit(url).password or "")
        assert len(password) >= 32 and password not in res.stdout + res.stderr
    return urls


def refused(url: str, action: Callable[[BlockingChannel], object]) -> str:
    """Run action on a fresh channel of url's account; the broker's refusal text, or ''."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # a publish waits for the broker's answer
        try:
            action(ch)
        except pex.ChannelClosedByBroker as exc:
            return f"{exc.reply_code} {exc.reply_text}"
        return ""
    finally:
        if conn.is_open:
            conn.close()


def _publish(key: str, exchange: str = "amq.topic", body: bytes = b"{}") -> Callable[..., object]:
    props = pika.BasicProperties(content_type="application/json")
    return lambda ch: ch.basic_publish(exchange, key, body, props)


def _bind(queue: str, key: str) -> Callable[..., object]:
    return lambda ch: ch.queue_bind(queue, "amq.topic", routing_key=key)


@needs_mgmt
@needs_root
def test_session_tunnel_sniff_and_refusals(
    session_name: Callable[[], str], netns: Callable[[], str], procs: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    name = session_name()
    out = tmp_path / name
    urls = create(name, out)
    assert sorted(urls) == ["agent_1", "agent_2", "observer", "router"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.glob("*.url"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    f = {k: str(out / f"{k}.url") for k in urls}

    router = procs("router", "--url-file", f["router"], "-v", label="router")
    assert router.wait_log("announced as packetrouting"), router.output
    sniff = procs("sniff", "--url-file", f["observer"], label="sniff")
    assert sniff.wait_log("sniffing all agents"), sniff.output
    ns, procs_by_label = {}, {}
    for agent in ("agent_1", "agent_2"):
        ns[agent] = netns()
        subprocess.run(["ip", "netns", "exec", ns[agent], "sysctl", "-qw",
                        "net.ipv6.conf.default.router_solicitations=0"], check=True)
        proc = procs("connect", "--url-file", f[agent], "--name", agent, "--netns", ns[agent],
                     label=agent)
        assert proc.wait_log("published ready"), proc.output
        procs_by_label[agent] = proc
    assert router.wait_log(r"learned agent_1\b") and router.wait_log(r"learned agent_2\b")

    def tunnel_works() -> None:
        assert ping(ns["agent_1"], "bbbb::2", version=6)
        assert ping(ns["agent_2"], "bbbb::1", version=6)
        assert ping(ns["agent_1"], "10.2.0.2", version=4)
        assert ping(ns["agent_2"], "10.2.0.1", version=4)

    tunnel_works()
    for agent in ("agent_1", "agent_2"):  # the fast-wire negotiation passed too
        assert procs_by_label[agent].wait_log("uplink wire: fast", timeout=5)
    # the observer saw the packets both ways, as sent (up) and as delivered (down)
    for line in (r"agent_1 +up +IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request",
                 r"agent_2 +down +IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request",
                 r"agent_1 +down +IPv4 10\.2\.0\.2 > 10\.2\.0\.1 ICMP echo-request"):
        assert sniff.wait_log(line, timeout=5), sniff.output

    # agent_1's account, with pika directly: the broker refuses every abuse (403)
    a1 = urls["agent_1"]
    abuses = {
        "speak as agent_2": _publish("fromAgent.agent_2.ip.tun.packet.raw"),
        "bypass the router": _publish("toAgent.agent_2.ip.tun.packet.raw"),
        "announce for agent_2": _publish("fromAgent.agent_2.ip.tun.started"),
        "default exchange into agent_2's queue": _publish("agent_2@agent", exchange=""),
        "bind agent_2's packets": _bind("agent_1@agent", "toAgent.agent_2.ip.tun.packet.raw"),
        "bind everything": _bind("agent_1@agent", "#"),
        "bind all packets": _bind("agent_1@agent", "toAgent.*.ip.tun.packet.raw"),
        "a queue of its own choice": lambda ch: ch.queue_declare("spy", exclusive=True),
        "consume agent_2's queue": lambda ch: ch.basic_consume("agent_2@agent", lambda *a: None),
    }
    for what, action in abuses.items():
        text = refused(a1, action)
        assert text.startswith("403 ACCESS_REFUSED"), f"{what}: {text or 'allowed'}"
    # ...while what agent_1 does itself passes: its ready publish, its own binding (the
    # queue is held by the running agent: 405 after the permission checks, not 403)
    assert refused(a1, _publish("testingtool.component.ready",
                                body=b'{"component": "agent_1"}')) == ""
    assert refused(a1, _bind("agent_1@agent", "toAgent.agent_1.ip.tun.packet.raw")).startswith(
        "405 RESOURCE_LOCKED")
    # the observer publishes nothing
    for key in ("fromAgent.agent_1.ip.tun.packet.raw", "toAgent.agent_2.ip.tun.packet.raw",
                "testingtool.component.ready"):
        text = refused(urls["observer"], _publish(key))
        assert text.startswith("403 ACCESS_REFUSED"), f"observer publishing {key}: {text}"

    # agent status with the observer's account: the router answers, nothing else passes
    _status_by_the_observer_only(urls, f)

    # the tunnel kept working, nobody was disconnected
    tunnel_works()
    for proc in (router, sniff):
        assert proc.running(), proc.output
    assert "refused" not in router.output

    # with another's name, or sniffing with an agent's account: one line, exit 1
    wrong = procs("connect", "--url-file", f["agent_1"], "--name", "agent_2", "--netns", netns(),
                  label="wrong-name")
    assert wrong.wait() == 1, wrong.output
    spy = procs("sniff", "--url-file", f["agent_1"], label="spy")
    assert spy.wait() == 1, spy.output
    for proc, queue in ((wrong, "agent_2@agent"), (spy, "@sniff")):
        lines = proc.output.strip().splitlines()
        errors = [ln for ln in lines if "ERROR" in ln]
        assert len(errors) == 1 and "ACCESS_REFUSED" in errors[0] and queue in errors[0], lines
        assert "Traceback" not in proc.output and "reconnect" not in proc.output


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "status", *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def _status_by_the_observer_only(urls: dict[str, str], f: dict[str, str]) -> None:
    """The observer asks, the router answers; a participant can neither ask nor answer."""
    res = _status("--url-file", f["observer"], "--json")
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert [a["name"] for a in answer["agents"]] == ["agent_1", "agent_2"]
    assert {a["wire"] for a in answer["agents"]} == {"fast"}, answer
    assert answer["routers"][0]["vhost"] == urlsplit(urls["router"]).path[1:]
    res = _status("--url-file", f["agent_1"])
    assert res.returncode == 1 and "ACCESS_REFUSED" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    # a forged answer: even knowing an asker's reply-to name (seen here by a listener
    # of the admin account), neither a participant nor the observer may send to it
    vhost = unquote(urlsplit(urls["router"]).path[1:])
    admin = pika.BlockingConnection(pika.URLParameters(
        f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"))
    try:
        spy = admin.channel()
        queue = spy.queue_declare("", exclusive=True).method.queue
        spy.queue_bind(queue, "amq.topic", STATUS_KEY)
        asker = pika.BlockingConnection(pika.URLParameters(urls["observer"]))
        ch = asker.channel()
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
        ch.basic_publish("amq.topic", STATUS_KEY, b"{}",
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        method = None
        for _ in range(100):
            method, props, _body = spy.basic_get(queue, auto_ack=True)
            if method is not None:
                break
            admin.sleep(0.02)
        assert method is not None
        reply_to = props.reply_to
        assert reply_to.startswith("amq.rabbitmq.reply-to.")
        for who in ("agent_1", "observer"):
            text = refused(urls[who], _publish(reply_to, exchange="", body=b'{"agents": []}'))
            assert text.startswith("403 ACCESS_REFUSED"), f"{who} answering: {text}"
        # nor take the router's part: bind the request key, or declare its status queue
        assert refused(urls["agent_1"], _bind("agent_1@agent", STATUS_KEY)).startswith("403")
        assert refused(urls["agent_1"], lambda ch: ch.queue_declare(
            "packetrouting@router.status", exclusive=True)).startswith("403")
        asker.close()
    finally:
        admin.close()


@needs_mgmt
def test_refused_publish_after_connecting_ends_the_process_with_one_line(
    session_name: Callable[[], str], mgmt: Management, procs: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    """An account that may bind but not publish its ready: the router says so once, exits."""
    name = session_name()
    create(name, tmp_path / name, agents="agent_1")
    mgmt.put_topic_permissions(name, f"{name}.router", "amq.topic",
                               r"^toAgent\..*$",
                               r"^(fromAgent\.\*\.ip\.tun\.(packet\.raw|started|stopped)"
                               r"|routing\.lossy\.link\.start|routing\.status\.request"
                               r"|testingtool\.component\.ready)$")
    router = procs("router", "--url-file", str(tmp_path / name / "router.url"), label="router")
    assert router.wait(timeout=20) == 1, router.output
    errors = [ln for ln in router.output.splitlines() if "ERROR" in ln]
    assert len(errors) == 1, router.output
    assert "testingtool.component.ready" in errors[0] and "ACCESS_REFUSED" in errors[0]
    assert "reconnect" not in router.output and "Traceback" not in router.output


def _users(mgmt: Management, name: str) -> dict[str, str]:
    return {u["name"]: u["password_hash"] for u in mgmt.request("GET", "users")
            if u["name"].startswith(name + ".")}


def _can_login(url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    except pex.AMQPConnectionError:
        return False


@needs_mgmt
def test_add_reset_delete_and_list(
    session_name: Callable[[], str], mgmt: Management, tmp_path: Path,
) -> None:
    name, other = session_name(), session_name()
    urls = create(name, tmp_path / name)
    create(other, tmp_path / other, agents="agent_1")
    before = _users(mgmt, name)
    perms_before = mgmt.vhost_permissions(name)

    # add: one new account, the others untouched
    res = run_cli("add", name, "--agents", "agent_3", "--out", str(tmp_path / name),
                  "--admin-url", ADMIN, "--amqp-url-base", "amqp://127.0.0.1:5672")
    assert res.returncode == 0, res.stderr
    after = _users(mgmt, name)
    assert set(after) == set(before) | {f"{name}.agent_3"}
    assert all(after[u] == h for u, h in before.items())
    kept = [p for p in mgmt.vhost_permissions(name) if p["user"] != f"{name}.agent_3"]
    assert kept == perms_before
    url3 = (tmp_path / name / "agent_3.url").read_text().strip()
    assert refused(url3, lambda ch: ch.queue_declare("agent_3@agent", exclusive=True)) == ""
    assert refused(url3, _publish("fromAgent.agent_3.ip.tun.packet.raw")) == ""
    assert refused(url3, _publish("fromAgent.agent_1.ip.tun.packet.raw")).startswith("403")

    # create again: refused without --reset; with it, new passwords (old ones refused)
    res = run_cli("create", name, "--agents", "agent_1,agent_2", "--out", str(tmp_path / name),
                  "--admin-url", ADMIN)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "--reset" in res.stderr
    new = create(name, tmp_path / name, "--reset")
    assert new["agent_1"] != urls["agent_1"]
    assert not _can_login(urls["agent_1"]) and _can_login(new["agent_1"])

    res = run_cli("list", "--admin-url", ADMIN)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(name + " "))
    assert "agent_1, agent_2, agent_3, observer, router" in line

    # delete: this session's vhost and users, and nothing else
    res = run_cli("delete", name, "--admin-url", ADMIN)
    assert res.returncode == 0, res.stderr
    assert mgmt.vhost(name) is None and _users(mgmt, name) == {}
    assert mgmt.vhost(other) is not None and len(_users(mgmt, other)) == 3
    assert mgmt.user("guest") is not None


@needs_mgmt
def test_show_prints_the_urls(session_name: Callable[[], str], tmp_path: Path) -> None:
    name = session_name()
    res = run_cli("create", name, "--agents", "agent_1", "--out", str(tmp_path / name),
                  "--admin-url", ADMIN, "--amqp-url-base", "amqps://broker.example.org:5671",
                  "--show")
    assert res.returncode == 0, res.stderr
    url = (tmp_path / name / "agent_1.url").read_text().strip()
    assert url.startswith(f"amqps://{name}.agent_1:")
    assert url.endswith(f"@broker.example.org:5671/{name}")
    assert url in res.stdout


@needs_mgmt
def test_bad_input_is_one_line(session_name: Callable[[], str], tmp_path: Path) -> None:
    name, unmade, nosuch = session_name(), session_name(), session_name()
    create(name, tmp_path / name, agents="agent_1")
    out = str(tmp_path / "x")
    cases = {
        ("delete", nosuch, "--admin-url", ADMIN): "unknown session",
        ("add", nosuch, "--agents", "a", "--out", out, "--admin-url", ADMIN):
            "unknown session",
        ("create", unmade, "--agents", "agent.1", "--out", out, "--admin-url", ADMIN):
            "not one routing-key word",
        ("create", "s*" + name, "--agents", "agent_1", "--out", out, "--admin-url", ADMIN):
            "not one routing-key word",
        ("add", name, "--agents", "agent_#", "--out", out, "--admin-url", ADMIN):
            "not one routing-key word",
        ("create", unmade, "--agents", "router", "--out", out, "--admin-url", ADMIN):
            "reserved",
        ("list", "--admin-url", "http://guest:guest@127.0.0.1:1"): "cannot reach",
        ("list", "--admin-url", "http://guest:Wr0ngSecret@127.0.0.1:15672"): "refused admin",
        ("create", unmade, "--agents", "a", "--out", out, "--admin-url", ADMIN,
         "--amqp-url-base", "http://h"): "--amqp-url-base",
        ("delete", "/", "--admin-url", ADMIN): "not one routing-key word",
    }
    for args, expected in cases.items():
        res = run_cli(*args)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1, (args, res.stderr)
        assert expected in res.stderr, (args, res.stderr)
        assert "Wr0ngSecret" not in res.stderr and "Traceback" not in res.stderr
    # nothing was made by the refused commands
    assert not Path(out).exists()
    assert json.dumps(Management(ADMIN).vhost(unmade)) == "null"


@needs_mgmt
def test_delete_refuses_a_vhost_it_did_not_make(
    session_name: Callable[[], str], mgmt: Management, tmp_path: Path,
) -> None:
    foreign = session_name()
    mgmt.request("PUT", f"vhosts/{foreign}", {"description": "someone else's"})
    for args in (("delete", foreign), ("add", foreign, "--agents", "a", "--out", str(tmp_path)),
                 ("create", foreign, "--agents", "a", "--out", str(tmp_path))):
        res = run_cli(*args, "--admin-url", ADMIN)
        assert res.returncode == 1 and "not an agent session" in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1
    assert mgmt.vhost(foreign) is not None


@needs_mgmt
def test_802154_probe_with_an_agent_account(
    session_name: Callable[[], str], procs: Callable[..., Proc], tmp_path: Path,
) -> None:
    """The serial probe mode's keys (serial.started, frames up and down) pass with the
    account of its agent name; the observer sees them."""
    from tests.test_e2e_serial import Socat, slip

    name = session_name()
    out = tmp_path / name
    create(name, out, agents="probe_1")
    line = Socat(tmp_path)
    line.start()
    fd = os.open(line.a, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        sniff = procs("sniff", "--url-file", str(out / "observer.url"), label="sniff")
        assert sniff.wait_log("sniffing all agents"), sniff.output
        probe = procs("connect", "--url-file", str(out / "probe_1.url"), "--name", "probe_1",
                      "--serial-mode", "802154", "--serial-port", str(line.b), label="probe_1")
        assert probe.wait_log("published ready"), probe.output
        frame = bytes.fromhex("41d8c0cdabffffc0dbdd0102")
        os.write(fd, slip(frame))
        assert sniff.wait_log(r"probe_1 +up +serial\.started"), sniff.output
        assert sniff.wait_log(r"probe_1 +up +802\.15\.4"), sniff.output
        # downlink from the testing tool (here the admin account) reaches the line
        down = bytes.fromhex("4188c0cdabdbdb0000c0")
        body = json.dumps({"data": list(down), "interface_name": "serial", "timestamp": 1.0})
        conn = pika.BlockingConnection(
            pika.URLParameters(f"amqp://guest:guest@127.0.0.1:5672/{name}"))
        try:
            conn.channel().basic_publish(
                "amq.topic", "toAgent.probe_1.802154.serial.packet.raw", body.encode(),
                pika.BasicProperties(content_type="application/json"))
        finally:
            conn.close()
        received = read_at_least(fd, len(slip(down, leading_end=True)))  # the default framing
        assert received == slip(down, leading_end=True), (received, probe.output)
        assert probe.running() and "refused" not in probe.output, probe.output
    finally:
        os.close(fd)
        line.stop()


@needs_mgmt
def test_own_exchange(
    session_name: Callable[[], str], procs: Callable[..., Proc], tmp_path: Path,
) -> None:
    """--exchange: made by create; the router and sniff declare, bind and publish on it."""
    name = session_name()
    out = tmp_path / name
    create(name, out, "--exchange", "sess.x", agents="agent_1")
    sniff = procs("sniff", "--url-file", str(out / "observer.url"), "--exchange", "sess.x",
                  label="sniff")
    assert sniff.wait_log("sniffing all agents"), sniff.output
    router = procs("router", "--url-file", str(out / "router.url"), "--exchange", "sess.x",
                   label="router")
    assert router.wait_log("announced as packetrouting"), router.output
    assert sniff.wait_log(r"packetrouting +up +ready"), sniff.output
    url = (out / "agent_1.url").read_text().strip()
    assert refused(url, _publish("fromAgent.agent_2.ip.tun.packet.raw", "sess.x")).startswith(
        "403")
    assert refused(url, _publish("fromAgent.agent_1.ip.tun.packet.raw", "sess.x")) == ""
    assert refused(url, _publish("fromAgent.agent_1.ip.tun.packet.raw")).startswith("403")
    res = run_cli("add", name, "--agents", "agent_2", "--out", str(out), "--admin-url", ADMIN)
    assert res.returncode == 0, res.stderr
    assert "exchange sess.x" in run_cli("list", "--admin-url", ADMIN).stdout


@needs_mgmt
def test_compat_accounts_take_the_original_agents_and_ioppytest_routers_shapes(
    session_name: Callable[[], str], tmp_path: Path,
) -> None:
    """--compat, with pika doing what the original agent (kombu) and ioppytest's router
    do: re-declare amq.topic, their queue names; still nothing of another agent."""
    name = session_name()
    out = tmp_path / name
    urls = create(name, out, "--compat")
    kombu_queue = "consumer: agent_1.tun?rkey=toAgent.agent_1.ip.tun.packet.raw"

    def original_agent(ch: BlockingChannel) -> None:
        ch.exchange_declare("amq.topic", "topic", durable=True)
        ch.queue_declare(kombu_queue, auto_delete=True)
        ch.queue_bind(kombu_queue, "amq.topic", "toAgent.agent_1.ip.tun.packet.raw")
        ch.basic_consume(kombu_queue, lambda *a: None)
        _publish("fromAgent.agent_1.ip.tun.packet.raw")(ch)

    def ioppytest_router(ch: BlockingChannel) -> None:
        q = "fromAgent.agent_2.ip.tun.packet.raw@packet_router"
        ch.queue_declare(q, arguments={"x-max-length": 100})
        ch.queue_bind(q, "amq.topic", "fromAgent.agent_2.ip.tun.packet.raw")
        _publish("toAgent.agent_1.ip.tun.packet.raw")(ch)

    assert refused(urls["agent_1"], original_agent) == ""
    assert refused(urls["router"], ioppytest_router) == ""
    spy = "consumer: agent_2.tun?rkey=toAgent.agent_2.ip.tun.packet.raw"
    for action in (lambda ch: ch.queue_declare(spy, auto_delete=True),
                   _bind(kombu_queue, "toAgent.agent_2.ip.tun.packet.raw"),
                   _publish("fromAgent.agent_2.ip.tun.packet.raw"),
                   lambda ch: ch.exchange_delete("amq.topic")):
        assert refused(urls["agent_1"], action).startswith("403")
