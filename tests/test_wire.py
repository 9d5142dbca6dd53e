"""Tests for agent.bus.wire: the ioppytest bodies and routing keys, both ways.

Golden bodies are the examples of ../shared/wire-format.md; peers (the ioppytest
router, the original agent) produce and expect exactly those shapes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from ipaddress import IPv4Interface, IPv6Network
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from agent.bus import wire
from agent.bus.port import BusPort
from agent.bus.wire import WireError
from agent.config import AddressPlan, default_plan, plan_from_bus
from agent.counters import Counters

GOLDEN_TUN_START = b"""
{"_api_version": "1.2.15", "name": "agent_2", "ipv6_prefix": "bbbb", "ipv6_host": "2",
 "ipv6_no_forwarding": false, "ipv4_host": "10.2.0.2", "ipv4_address": "10.2.0.2",
 "ipv4_network": "10.2.0.0", "ipv4_netmask": "255.255.255.0",
 "re_route_packets_if": null, "re_route_packets_prefix": null, "re_route_packets_host": null}
"""
GOLDEN_READY = {
    "_api_version": "1.2.15",
    "component": "agent_1",
    "description": "Component READY to start test suite.",
}
# The data of the golden packet starts like this: IPv6, payload 16 B, ICMPv6, hop limit 64, bbbb...
GOLDEN_DATA_START = [96, 0, 0, 0, 0, 16, 58, 64, 187, 187]


def echo6() -> bytes:
    """bbbb::1 > bbbb::2 ICMPv6 echo request with 8 bytes of data: 56 bytes in all."""
    return bytes(IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest(id=1, seq=1, data=b"x" * 8))


def golden_packet_body(data: list[int]) -> bytes:
    """A packet body as a Python sender (json.dumps, ", " separators) writes it."""
    return json.dumps(
        {
            "_api_version": "1.2.15",
            "data": data,
            "interface_name": "tun0",
            "timestamp": 1596283800.123,
        }
    ).encode()


# ----------------------------------------------------------------------------- keys


def test_routing_keys() -> None:
    assert wire.uplink_key("agent_1") == "fromAgent.agent_1.ip.tun.packet.raw"
    assert wire.downlink_key("agent_1") == "toAgent.agent_1.ip.tun.packet.raw"
    assert wire.start_key("agent_1") == "toAgent.agent_1.ip.tun.start"
    assert wire.started_key("agent_1") == "fromAgent.agent_1.ip.tun.started"
    assert wire.READY_KEY == "testingtool.component.ready"
    assert wire.TERMINATE_KEY == "testingtool.terminate"
    assert wire.ROUTER_COMPONENT == "packetrouting"
    assert (wire.CONTENT_TYPE, wire.CONTENT_ENCODING) == ("application/json", "utf-8")


@pytest.mark.parametrize(
    ("key", "agent"),
    [
        ("fromAgent.agent_1.ip.tun.packet.raw", "agent_1"),
        ("toAgent.agent_2.ip.tun.packet.raw", "agent_2"),
        ("toAgent.coap_server.ip.tun.start", "coap_server"),
        ("fromAgent.agent_TT.ip.tun.started", "agent_TT"),
        ("fromAgent.probe-1.802154.serial.packet.raw", "probe-1"),
        ("testingtool.component.ready", None),
        ("testingtool.terminate", None),
        ("fromAgent", None),
        ("fromAgent.agent_1", None),
        ("fromAgent..ip.tun.packet.raw", None),
        ("FromAgent.agent_1.ip.tun.packet.raw", None),
        ("", None),
    ],
)
def test_agent_of(key: str, agent: str | None) -> None:
    assert wire.agent_of(key) == agent


@pytest.mark.parametrize("name", ["agent_1", "coap_client", "agent_TT", "x-y"])
def test_agent_of_reads_back_every_key(name: str) -> None:
    for make in (wire.uplink_key, wire.downlink_key, wire.start_key, wire.started_key):
        assert wire.agent_of(make(name)) == name


# ----------------------------------------------------------------------------- packets


def test_encoded_packet_body_has_the_ioppytest_shape() -> None:
    packet = echo6()
    before = time.time()
    body = json.loads(wire.encode_packet(packet, "tun0"))
    after = time.time()
    assert set(body) == {"_api_version", "data", "interface_name", "timestamp"}
    assert body["_api_version"] == "1.2.15"
    assert body["interface_name"] == "tun0"
    assert isinstance(body["timestamp"], float)
    assert before <= body["timestamp"] <= after
    assert isinstance(body["data"], list)
    assert all(type(b) is int and 0 <= b <= 255 for b in body["data"])
    assert body["data"] == list(packet)
    assert body["data"][:10] == GOLDEN_DATA_START


def test_encode_packet_keeps_the_given_timestamp() -> None:
    body = json.loads(wire.encode_packet(echo6(), "tun3", timestamp=1596283800.123))
    assert body["timestamp"] == 1596283800.123
    assert body["interface_name"] == "tun3"


def test_encoded_packet_is_plain_json_an_ioppytest_router_can_rebuild() -> None:
    """The router takes data/timestamp/interface_name and republishes them unchanged."""
    body = json.loads(wire.encode_packet(echo6(), "tun0", 1.5))
    rebuilt = json.dumps({k: body[k] for k in ("data", "timestamp", "interface_name")}).encode()
    assert wire.decode_packet(rebuilt) == echo6()


def test_decode_golden_packet_written_by_a_python_sender() -> None:
    packet = echo6()
    assert wire.decode_packet(golden_packet_body(list(packet))) == packet


def test_decode_ignores_unknown_fields_and_missing_optional_ones() -> None:
    packet = echo6()
    assert wire.decode_packet(orjson.dumps({"data": list(packet)})) == packet
    body = {"data": list(packet), "extra": {"x": [1, 2]}, "interface_name": None}
    assert wire.decode_packet(orjson.dumps(body)) == packet


def test_decode_ipv4_with_options() -> None:
    packet = bytes(IP(src="10.2.0.1", dst="10.2.0.2", options=b"\x01\x01\x01\x00") / UDP())
    assert packet[0] == 0x46
    assert wire.decode_packet(wire.encode_packet(packet, "tun0")) == packet


def test_largest_packet_round_trips() -> None:
    """A 65535-byte packet of high bytes (MTU 65535 is allowed) is not 'too big'."""
    packet = bytes([0x60]) + bytes([0xFF]) * 65534
    assert wire.decode_packet(wire.encode_packet(packet, "tun0")) == packet
    assert wire.decode_packet(golden_packet_body(list(packet))) == packet


ipv6_like = st.binary(min_size=39, max_size=1500).map(lambda b: bytes([0x60 | (b[0] & 0x0F)]) + b)
ipv4_like = st.tuples(st.integers(5, 15), st.binary(min_size=19, max_size=1500)).map(
    lambda t: bytes([0x40 | t[0]]) + t[1]
)


@settings(max_examples=150, deadline=None)
@given(ipv6_like | ipv4_like, st.sampled_from(["tun0", "tun12", "agent_tun"]), st.floats(0, 2e9))
def test_packet_round_trip(packet: bytes, ifname: str, ts: float) -> None:
    body = wire.encode_packet(packet, ifname, ts)
    assert wire.decode_packet(body) == packet
    assert orjson.loads(body)["interface_name"] == ifname


# -- malformed packet bodies -----------------------------------------------------------------

V6 = list(echo6())

MALFORMED: dict[str, bytes] = {
    "not JSON": b"this is not json",
    "truncated JSON": orjson.dumps({"data": V6})[:-5],
    "empty body": b"",
    "not UTF-8": b'{"data": [96, \xff\xfe]}',
    "JSON list": orjson.dumps(V6),
    "JSON string": b'"600000000010"',
    "JSON number": b"96",
    "JSON null": b"null",
    "no data": orjson.dumps({"interface_name": "tun0", "timestamp": 1.0}),
    "data null": orjson.dumps({"data": None}),
    "data string": orjson.dumps({"data": bytes(V6).hex()}),
    "data int": orjson.dumps({"data": 5}),  # bytes(5) would be five zero bytes
    "data true": orjson.dumps({"data": True}),
    "data huge int": orjson.dumps({"data": 2**62}),  # bytes(2**62): a MemoryError, not a packet
    "data object": orjson.dumps({"data": {"0": 96}}),
    "data with 256": orjson.dumps({"data": V6[:-1] + [256]}),
    "data with -1": orjson.dumps({"data": V6[:-1] + [-1]}),
    "data with huge int": b'{"data": [96, 0, 0, 18446744073709551616]}',
    "data with floats": orjson.dumps({"data": [float(b) for b in V6]}),
    "data with one float": orjson.dumps({"data": V6[:-1] + [0.5]}),
    "data with strings": orjson.dumps({"data": [str(b) for b in V6]}),
    "data with null": orjson.dumps({"data": V6[:-1] + [None]}),
    "nested lists": orjson.dumps({"data": [V6]}),
    "nested list item": orjson.dumps({"data": V6[:-1] + [[1]]}),
    "empty data": orjson.dumps({"data": []}),
    "version nibble 0": orjson.dumps({"data": [0] * 40}),
    "version nibble 5": orjson.dumps({"data": [0x50] + [0] * 39}),
    "version nibble 15": orjson.dumps({"data": [0xF0] + [0] * 39}),
    "truncated IPv6": orjson.dumps({"data": V6[:39]}),
    "IPv6 header only first byte": orjson.dumps({"data": [0x60]}),
    "truncated IPv4": orjson.dumps({"data": [0x45] + [0] * 18}),
    "IPv4 header length < 5": orjson.dumps({"data": [0x44] + [0] * 39}),
    "huge body": orjson.dumps({"data": V6, "pad": "x" * (wire.MAX_BODY + 1)}),
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "infinite number": b'{"data": [1e400]}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packet_bodies_raise_wire_error(body: bytes) -> None:
    with pytest.raises(WireError) as info:
        wire.decode_packet(body)
    message = str(info.value)
    assert message and "\n" not in message and len(message) < 200


def test_malformed_bodies_are_refused_where_they_enter_the_agent() -> None:
    """Each malformed body on the agent's downlink key is dropped and counted by the bus
    port (one drop each, under its reason, never "error"), reaches no port, and the log
    says why in one line; the reasons tell at least ten kinds of fault apart."""
    delivered: list[bytes] = []
    port = BusPort(wire.uplink_key("agent_1"), Counters(), "agent_1")
    asyncio.run(port.open(lambda packets, _key: delivered.extend(packets), "bus"))
    logger = logging.getLogger("agent.bus.port")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)  # whatever earlier tests set
    try:
        for body in MALFORMED.values():
            port.on_message(wire.downlink_key("agent_1"), body, None)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert delivered == []
    assert sum(port.counters.drops.values()) == len(MALFORMED)
    assert port.counters.drops["error"] == 0
    assert len(lines) == len(MALFORMED) and all("\n" not in line for line in lines)
    reasons = {line.split(": ", 1)[1] for line in lines}
    assert len(reasons) >= 10, reasons


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(body: bytes) -> None:
    try:
        packet = wire.decode_packet(body)
    except WireError:
        return
    wire.check_ip(packet)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(["data", "timestamp", "x"]) | st.text(max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)
data_values = (
    json_values
    | st.lists(st.integers(-2, 300), max_size=60)
    | st.lists(st.integers(0, 255), min_size=1, max_size=60).map(lambda d: [0x60] + d)
    | st.lists(st.integers(0, 255), min_size=39, max_size=60).map(lambda d: [0x60] + d)
)


@settings(max_examples=200, deadline=None)
@given(json_values | st.fixed_dictionaries({"data": data_values}, optional={"x": json_values}))
def test_arbitrary_json_never_raises_anything_but_wire_error(value: Any) -> None:
    body = orjson.dumps(value)
    try:
        packet = wire.decode_packet(body)
    except WireError:
        return
    # accepted: the data was a list of byte values forming an IP packet
    assert isinstance(value, dict)
    assert list(packet) == value["data"]
    wire.check_ip(packet)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x60" + bytes(39),
        b"\x45" + bytes(19),
        b"\x4f" + bytes(59),
    ],
)
def test_check_ip_accepts_minimal_headers(packet: bytes) -> None:
    wire.check_ip(packet)


# ----------------------------------------------------------------------------- tun.started


def golden_start() -> dict[str, Any]:
    return orjson.loads(GOLDEN_TUN_START)


def test_tun_started_for_the_golden_start_is_the_golden_body() -> None:
    """A conforming agent answers the golden tun.start with the same configuration."""
    body = orjson.loads(wire.encode_tun_started("agent_2", plan_from_bus(golden_start())))
    assert body == golden_start()


def test_tun_started_writes_ipv4_both_ways() -> None:
    plan = default_plan("agent_1")
    assert plan is not None
    body = orjson.loads(wire.encode_tun_started("agent_1", plan))
    assert set(body) == set(golden_start())
    assert body["_api_version"] == "1.2.15"
    assert body["name"] == "agent_1"
    assert body["ipv6_prefix"] == "bbbb"
    assert body["ipv6_host"] == "1"
    assert body["ipv6_no_forwarding"] is False
    assert body["ipv4_host"] == "10.2.0.1"
    assert body["ipv4_address"] == "10.2.0.1"
    assert body["ipv4_network"] == "10.2.0.0"
    assert body["ipv4_netmask"] == "255.255.255.0"
    assert body["re_route_packets_if"] is None
    assert body["re_route_packets_prefix"] is None
    assert body["re_route_packets_host"] is None


def test_tun_started_ipv4_network_and_netmask_follow_the_prefix_length() -> None:
    plan = AddressPlan(IPv6Network("bbbb::/64"), "5", IPv4Interface("192.168.77.5/16"))
    body = orjson.loads(wire.encode_tun_started("coap_server", plan))
    assert (body["ipv4_host"], body["ipv4_address"]) == ("192.168.77.5", "192.168.77.5")
    assert body["ipv4_network"] == "192.168.0.0"
    assert body["ipv4_netmask"] == "255.255.0.0"


def test_tun_started_without_ipv4_has_null_ipv4_fields() -> None:
    plan = default_plan("coap_server", ipv6_host="5")
    assert plan is not None
    body = orjson.loads(wire.encode_tun_started("coap_server", plan))
    for key in ("ipv4_host", "ipv4_address", "ipv4_network", "ipv4_netmask"):
        assert key in body and body[key] is None
    assert body["ipv6_host"] == "5"


def test_tun_started_announces_networks_behind_the_agent() -> None:
    start = golden_start() | {
        "re_route_packets_prefix": "cccc",
        "re_route_packets_host": "1",
        "re_route_packets_if": "eth1",
    }
    body = orjson.loads(wire.encode_tun_started("agent_2", plan_from_bus(start)))
    assert body["re_route_packets_prefix"] == "cccc"
    assert body["re_route_packets_host"] == "1"
    assert body["re_route_packets_if"] == "eth1"


def test_tun_started_with_several_networks_writes_a_list() -> None:
    start = golden_start() | {"re_route_packets_prefix": ["cccc", "192.0.2.0/24"]}
    body = orjson.loads(wire.encode_tun_started("agent_2", plan_from_bus(start)))
    assert body["re_route_packets_prefix"] == ["cccc", "192.0.2.0/24"]


def test_tun_started_with_a_cidr_session_prefix() -> None:
    plan = plan_from_bus({"ipv6_prefix": "2001:db8::/48", "ipv6_host": "7"})
    body = orjson.loads(wire.encode_tun_started("x", plan))
    assert body["ipv6_prefix"] == "2001:db8::/48"
    assert plan_from_bus(body) == plan


def test_tun_started_extra_fields() -> None:
    plan = default_plan("agent_1")
    assert plan is not None
    body = orjson.loads(wire.encode_tun_started("agent_1", plan, interface_name="tun0"))
    assert body["interface_name"] == "tun0"


@pytest.mark.parametrize(
    "start",
    [
        {"ipv6_host": ":1"},
        {"ipv4_host": "10.2.0.7"},
        {"ipv6_prefix": "aaaa", "ipv6_host": "123:456", "ipv4_address": "10.9.0.1/16"},
        {"ipv6_prefix": "2001:db8:1", "ipv6_host": "5", "re_route_packets_prefix": "cccc"},
        {
            "ipv6_host": "2",
            "re_route_packets_prefix": ["cccc", "2001:db8::/32", "198.51.100.0/24"],
            "re_route_packets_host": "cccc::1",
            "re_route_packets_if": "eth1",
        },
    ],
)
def test_tun_started_reads_back_to_the_same_plan(start: dict[str, Any]) -> None:
    plan = plan_from_bus(start)
    assert plan_from_bus(orjson.loads(wire.encode_tun_started("a", plan))) == plan


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 9999))
def test_agent_n_plans_read_back(n: int) -> None:
    plan = default_plan(f"agent_{n}")
    assert plan is not None
    body = orjson.loads(wire.encode_tun_started(f"agent_{n}", plan))
    assert body["ipv6_host"] == str(n)
    assert plan_from_bus(body) == plan


def test_addresses_of() -> None:
    plan = default_plan("agent_1")
    assert plan is not None
    assert [str(a) for a in wire.addresses_of(plan)] == ["bbbb::1", "fe80::1", "10.2.0.1"]


# ----------------------------------------------------------------------------- ready, control


def test_ready_body() -> None:
    assert orjson.loads(wire.encode_ready("agent_1")) == GOLDEN_READY
    assert orjson.loads(wire.encode_ready("packetrouting"))["component"] == "packetrouting"


def test_decode_control() -> None:
    assert wire.decode_control(GOLDEN_TUN_START) == golden_start()
    assert wire.decode_control(b'{"description": "bye"}') == {"description": "bye"}


@pytest.mark.parametrize(
    "body",
    [b"", b"nope", b"[]", b"null", b'"x"', b"1", b"{" * 3000, b"{}" + b" " * wire.MAX_BODY],
)
def test_decode_control_refuses(body: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode_control(body)


# -- typed messages ----------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


@given(names, st.booleans())
def test_parse_types_every_key(name: str, up: bool) -> None:
    way = "fromAgent" if up else "toAgent"
    fields = {"_api_version": wire.API_VERSION, "name": name}
    body = orjson.dumps(fields)
    for kind, cls in [
        ("ip.tun.start", wire.TunStart),
        ("ip.tun.started", wire.TunStarted),
        ("802154.serial.started", wire.SerialStarted),
    ]:
        msg = wire.parse(f"{way}.{name}.{kind}", body, wire.CONTENT_TYPE)
        assert isinstance(msg, cls)
        assert (msg.agent, msg.uplink, msg.fields) == (name, up, fields)
        assert wire.parse(*wire.encode(msg)) == msg
    pkt = wire.parse(f"{way}.{name}.ip.tun.packet.raw", b"x", wire.FAST_CONTENT_TYPE)
    assert isinstance(pkt, wire.Packets) and pkt.fast and (pkt.agent, pkt.uplink) == (name, up)
    assert wire.parse(*wire.encode(pkt)) == pkt
    frames = wire.parse(f"{way}.{name}.802154.serial.packet.raw", b"{}")
    assert isinstance(frames, wire.Frames) and (frames.agent, frames.uplink) == (name, up)
    other = wire.parse(f"{way}.{name}.something.else", b"abc")
    assert other == wire.Other(wire.Topic(name, up, "something.else"), 3)


def test_parse_ready_and_terminate() -> None:
    ready = wire.parse(wire.READY_KEY, wire.encode_ready("packetrouting", x_agent_wire=["batch1"]))
    assert isinstance(ready, wire.Ready) and ready.from_router and ready.fast
    assert wire.parse(*wire.encode(ready)) == ready
    plain = wire.parse(wire.READY_KEY, wire.encode_ready("agent_1"))
    assert isinstance(plain, wire.Ready) and not plain.from_router and not plain.fast
    end = wire.parse(wire.TERMINATE_KEY, b'{"description": "bye"}')
    assert end == wire.Terminate({"description": "bye"})
    assert wire.parse(*wire.encode(end)).fields["description"] == "bye"  # type: ignore[union-attr]
    other = wire.parse("somebody.else", b"")
    assert other == wire.Other(wire.Topic(None, False, "somebody.else"), 0)


@given(st.sampled_from(["ip.tun.start", "ip.tun.started", "802154.serial.started"]),
       st.binary(max_size=40))
def test_parse_refuses_bad_control_bodies_cleanly(kind: str, body: bytes) -> None:
    try:
        msg = wire.parse(f"toAgent.a.{kind}", body)
    except wire.WireError:
        return
    assert isinstance(msg.fields, dict)  # type: ignore[union-attr]
