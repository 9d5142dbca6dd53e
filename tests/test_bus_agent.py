"""The agent's bus side against the real broker: tun.start/started, ready, malformed input."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.conftest import Session, needs_root, ping, tun_links

pytestmark = [pytest.mark.e2e, needs_root]

STARTED_KEYS = {
    "_api_version", "name", "ipv6_prefix", "ipv6_host", "ipv6_no_forwarding", "ipv4_host",
    "ipv4_address", "ipv4_network", "ipv4_netmask", "re_route_packets_if",
    "re_route_packets_prefix", "re_route_packets_host",
    "x_agent_wire",  # our fast-wire offer; ioppytest peers ignore unknown fields
    "x_agent_incarnation",  # new on each of the agent's connections (docs/wire-format.md)
}


def test_ready_and_started_on_connect(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    lst = listener(["testingtool.component.ready", "fromAgent.agent_4.ip.tun.started"])
    session.start_agent("agent_4")
    got = {}
    for _ in range(2):
        msg = lst.get(timeout=5)
        assert msg is not None
        got[msg[0]] = (orjson.loads(msg[1]), msg[2])
    ready, props = got["testingtool.component.ready"]
    assert ready["component"] == "agent_4" and ready["_api_version"] == "1.2.15"
    assert props.content_type == "application/json"
    started, _ = got["fromAgent.agent_4.ip.tun.started"]
    assert set(started) == STARTED_KEYS
    assert (started["ipv6_prefix"], started["ipv6_host"], started["ipv4_address"]) == (
        "bbbb", "4", "10.2.0.4")
    assert started["ipv4_host"] == "10.2.0.4" and started["ipv4_netmask"] == "255.255.255.0"
    # one incarnation named in both: the router tells a restarted agent by it
    assert ready["x_agent_incarnation"] == started["x_agent_incarnation"]
    assert len(ready["x_agent_incarnation"]) == 12


def test_tun_start_answered_within_a_second(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    session.start_agent("agent_5")
    lst = listener(["fromAgent.agent_5.ip.tun.started"])
    start = {"_api_version": "1.2.15", "name": "agent_5", "ipv6_prefix": "bbbb",
             "ipv6_host": "5", "ipv4_host": "10.2.0.5"}
    t0 = time.monotonic()
    lst.publish("toAgent.agent_5.ip.tun.start", orjson.dumps(start))
    msg = lst.get(timeout=1.0)
    assert msg is not None, "no tun.started within 1 s"
    assert time.monotonic() - t0 < 1.0
    body = orjson.loads(msg[1])
    assert set(body) == STARTED_KEYS and body["name"] == "agent_5"
    assert body["ipv6_host"] == "5"


MALFORMED: list[tuple[bytes, str | None]] = [
    (b"not json at all", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'{"interface_name": "tun0", "timestamp": 1}', "application/json"),
    (b'{"data": "6000000000"}', "application/json"),
    (b'{"data": 5}', "application/json"),
    (b'{"data": [96, 0, 256]}', "application/json"),
    (b'{"data": [96, -1]}', "application/json"),
    (b'{"data": [96.5, 0]}', "application/json"),
    (b'{"data": []}', "application/json"),
    (b'{"data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}', None),
    (b"\xff\xfe\x00garbage", None),
    (orjson.dumps({"data": [96] + [0] * 10}), "application/json"),
]


def test_malformed_downlink_leaves_agent_running(session: Session, listener) -> None:  # type: ignore[no-untyped-def]
    session.start_router()
    a1 = session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    lst = listener([])
    for body, ctype in MALFORMED:
        lst.publish("toAgent.agent_1.ip.tun.packet.raw", body, content_type=ctype)
    # the router must survive its share of garbage too
    for body, ctype in MALFORMED:
        lst.publish("fromAgent.agent_2.ip.tun.packet.raw", body, content_type=ctype)
    assert ping(session.ns["agent_1"], "bbbb::2")
    assert a1.running()
    m = a1.status(r"malformed (\d+)")
    assert m and int(m.group(1)) == len(MALFORMED), a1.output
    r = session.router.status(r"malformed (\d+)")
    assert r and int(r.group(1)) == len(MALFORMED)
    assert "Traceback" not in a1.output + session.router.output  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "field, value",
    [
        ("ipv6_prefix", "bbbb; touch /tmp/pwned"),
        ("ipv6_host", "1 && reboot"),
        ("ipv4_host", "10.2.0.1; id"),
        ("re_route_packets_if", "eth0; rm -rf /"),
        ("re_route_packets_prefix", "$(touch /tmp/pwned)"),
        ("ipv6_prefix", ["bbbb"]),
        ("ipv4_netmask", "255.0.255.0"),
    ],
)
def test_hostile_tun_start_refused(session: Session, listener, field: str, value: object) -> None:  # type: ignore[no-untyped-def]
    proc = session.start_agent("coap_server", "--wait-bootstrap")
    lst = listener(["fromAgent.coap_server.ip.tun.started"])
    start = {"_api_version": "1.2.15", "name": "coap_server", "ipv6_prefix": "bbbb",
             "ipv6_host": "5", "ipv4_host": "10.2.0.5", field: value}
    lst.publish("toAgent.coap_server.ip.tun.start", orjson.dumps(start))
    assert proc.wait_log("refused tun.start", 10)
    assert lst.get(timeout=0.5) is None
    assert tun_links(session.ns["coap_server"]) == []
    assert proc.running()
