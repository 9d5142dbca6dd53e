"""The bus vocabulary, both ways. Pure: bytes in, bytes out.

`parse(routing key, body, content type)` turns a message into one typed message
(`Packets`, `Frames`, `TunStart`, `TunStarted`, `Ready`, `SerialStarted`, `Terminate`,
`Other`); agent, router, sniffer and probe dispatch on its type. The routing keys, the
ioppytest JSON bodies and our fast wire (`batches`: the one batching rule) are built here
too; nothing else takes a routing key or a body apart.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from agent.config import AddressPlan, prefix_wire_form

API_VERSION = "1.2.15"
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
MAX_BODY = 65535 * 5 + 4096  # a 65535-byte packet as JSON ints ("255, " each) + the rest

# Our fast wire, between our agents and our router only (negotiated, see docs/wire-format.md):
# a body is one or more packets, each as a 2-byte big-endian length then the bytes.
FAST_CONTENT_TYPE = "application/x-ip-packet-batch"
FAST_WIRE = "batch1"
WIRE_FIELD = "x_agent_wire"  # in tun.started and in the router's ready: wires understood
EPOCH_FIELD = "x_router_epoch"  # in the router's ready: new each time it (re)connects
# in our agents' ready, tun.started and tun.stopped: new on each of the agent's bus
# connections (agent.router.session tells incarnations apart by it)
INCARNATION_FIELD = "x_agent_incarnation"
MAX_BATCH_BYTES = 60000

IP_PACKET_KIND = "ip.tun.packet.raw"
WPAN_PACKET_KIND = "802154.serial.packet.raw"
READY_KEY = "testingtool.component.ready"
TERMINATE_KEY = "testingtool.terminate"
LOSSY_KEY = "routing.lossy.link.start"  # ioppytest coordinator -> packet router
ROUTER_COMPONENT = "packetrouting"


class WireError(ValueError):
    """A bus message that cannot be used; str() is a short reason for the log line.

    `reason` names the drop counter: "malformed" unless said otherwise ("too big").
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


# -- routing keys ----------------------------------------------------------------------


def uplink_key(name: str) -> str:
    return f"fromAgent.{name}.ip.tun.packet.raw"


def downlink_key(name: str) -> str:
    return f"toAgent.{name}.ip.tun.packet.raw"


def start_key(name: str) -> str:
    return f"toAgent.{name}.ip.tun.start"


def started_key(name: str) -> str:
    return f"fromAgent.{name}.ip.tun.started"


def stopped_key(name: str) -> str:
    """Our agent's goodbye as it stops (agent.router.session forgets it at once)."""
    return f"fromAgent.{name}.ip.tun.stopped"


def serial_uplink_key(name: str) -> str:
    """802.15.4 probe mode: frames read from the serial line."""
    return f"fromAgent.{name}.802154.serial.packet.raw"


def serial_downlink_key(name: str) -> str:
    """802.15.4 probe mode: frames to write to the serial line."""
    return f"toAgent.{name}.802154.serial.packet.raw"


def serial_started_key(name: str) -> str:
    return f"fromAgent.{name}.802154.serial.started"


def agent_of(routing_key: str) -> str | None:
    """'fromAgent.agent_1.ip.tun.packet.raw' -> 'agent_1'."""
    parts = routing_key.split(".", 2)
    if len(parts) < 3 or parts[0] not in ("fromAgent", "toAgent") or not parts[1]:
        return None
    return parts[1]


@dataclass(frozen=True, slots=True)
class Topic:
    """What a routing key says: whose message, which way, what kind (its key's tail)."""

    agent: str | None
    """the agent's name (None for testingtool.* keys and keys that are not ours)"""
    uplink: bool
    """True on fromAgent.* (the agent published it), False on toAgent.*"""
    kind: str
    """the rest of the key: "ip.tun.packet.raw", "ip.tun.started"... or the whole key"""


_TOPICS: dict[str, Topic] = {}  # a session uses a handful of keys: read each one once
_MAX_TOPICS = 4096


def topic(routing_key: str) -> Topic:
    t = _TOPICS.get(routing_key)
    if t is None:
        parts = routing_key.split(".", 2)
        if len(parts) < 3 or parts[0] not in ("fromAgent", "toAgent") or not parts[1]:
            t = Topic(None, False, routing_key)
        else:
            t = Topic(parts[1], parts[0] == "fromAgent", parts[2])
        if len(_TOPICS) >= _MAX_TOPICS:  # keys from a misbehaving peer: stay bounded
            _TOPICS.clear()
        _TOPICS[routing_key] = t
    return t


# -- typed messages ----------------------------------------------------------------------
# Plain slotted dataclasses (not frozen: a frozen one's __init__ costs microseconds, and
# one is made per message); treat them as values all the same.


@dataclass(slots=True)
class Packets:
    """IP packets on <dir>Agent.<name>.ip.tun.packet.raw: one (JSON) or several (fast)."""

    agent: str
    uplink: bool
    body: bytes
    """the message body as it came (a router forwards JSON bodies unchanged)"""
    content_type: str | None

    @property
    def fast(self) -> bool:
        return self.content_type == FAST_CONTENT_TYPE

    def packets(self) -> list[bytes]:
        """The packets, checked to be IP; WireError if the body is not usable."""
        return decode_packets(self.body, self.content_type)


@dataclass(slots=True)
class Frames:
    """An 802.15.4 frame on <dir>Agent.<name>.802154.serial.packet.raw (probe mode)."""

    agent: str
    uplink: bool
    body: bytes

    def frame(self) -> bytes:
        return decode_frame(self.body)


@dataclass(slots=True)
class TunStart:
    """toAgent.<name>.ip.tun.start: the testing tool's bootstrap (fields not yet validated)."""

    agent: str
    uplink: bool
    fields: dict[str, Any]


@dataclass(slots=True)
class TunStarted:
    """fromAgent.<name>.ip.tun.started: an agent's configuration (fields not yet validated)."""

    agent: str
    uplink: bool
    fields: dict[str, Any]

    @property
    def fast(self) -> bool:
        """Its sender reads our fast wire."""
        return speaks_fast(self.fields)


@dataclass(slots=True)
class Ready:
    """testingtool.component.ready of a component (our router: `packetrouting`)."""

    component: Any
    """as sent: normally a str, but the body is untrusted"""
    fields: dict[str, Any]

    @property
    def from_router(self) -> bool:
        return self.component == ROUTER_COMPONENT

    @property
    def fast(self) -> bool:
        return speaks_fast(self.fields)


@dataclass(slots=True)
class TunStopped:
    """fromAgent.<name>.ip.tun.stopped: our agent stops (ours only; ioppytest has none)."""

    agent: str
    uplink: bool
    fields: dict[str, Any]


@dataclass(slots=True)
class SerialStarted:
    """fromAgent.<name>.802154.serial.started: the probe's serial port is open."""

    agent: str
    uplink: bool
    fields: dict[str, Any]


@dataclass(slots=True)
class Terminate:
    """testingtool.terminate: the session is over."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class LossyLinkStart:
    """routing.lossy.link.start: the coordinator asks the router to drop the next packets
    (ioppytest's lossy context); the body is read by `agent.lossy.packets_to_drop`."""

    body: bytes


@dataclass(slots=True)
class Other:
    """Any other routing key (shown by the sniffer, ignored by everyone else)."""

    topic: Topic
    size: int


Message = (
    Packets | Frames | TunStart | TunStarted | TunStopped | Ready | SerialStarted | Terminate
    | LossyLinkStart | Other
)

_AGENT_KINDS: dict[str, type] = {
    "ip.tun.start": TunStart,
    "ip.tun.started": TunStarted,
    "ip.tun.stopped": TunStopped,
    "802154.serial.started": SerialStarted,
}


def parse(routing_key: str, body: bytes, content_type: str | None = None) -> Message:
    """The typed message of a delivery; WireError (with a short reason) if its body is
    not usable. Packet bodies are checked when their packets are read (`packets()`)."""
    t = topic(routing_key)
    if t.agent is not None:
        if t.kind == IP_PACKET_KIND:
            return Packets(t.agent, t.uplink, body, content_type)
        if t.kind == WPAN_PACKET_KIND:
            return Frames(t.agent, t.uplink, body)
        cls = _AGENT_KINDS.get(t.kind)
        if cls is not None:
            return cls(t.agent, t.uplink, _json_object(body))  # type: ignore[no-any-return]
    elif routing_key == READY_KEY:
        fields = _json_object(body)
        return Ready(fields.get("component"), fields)
    elif routing_key == TERMINATE_KEY:
        return Terminate(_json_object(body))
    elif routing_key == LOSSY_KEY:
        return LossyLinkStart(body)
    return Other(t, len(body))


def encode(msg: Message) -> tuple[str, bytes, str]:
    """(routing key, body, content type) of a message to publish; packets are published
    with `encode_packet`/`batches` on the hot path, not through here."""
    if isinstance(msg, Ready):
        extra = {k: v for k, v in msg.fields.items() if k not in ("_api_version", "component")}
        extra.pop("description", None)
        return READY_KEY, encode_ready(msg.component, **extra), CONTENT_TYPE
    if isinstance(msg, TunStarted | TunStart | TunStopped | SerialStarted):
        kind = {
            TunStarted: "ip.tun.started", TunStart: "ip.tun.start", TunStopped: "ip.tun.stopped"
        }.get(type(msg), "802154.serial.started")
        way = "fromAgent" if msg.uplink else "toAgent"
        body = orjson.dumps({"_api_version": API_VERSION, **msg.fields})
        return f"{way}.{msg.agent}.{kind}", body, CONTENT_TYPE
    if isinstance(msg, Terminate):
        body = orjson.dumps({"_api_version": API_VERSION, **msg.fields})
        return TERMINATE_KEY, body, CONTENT_TYPE
    if isinstance(msg, Packets):
        way = "fromAgent" if msg.uplink else "toAgent"
        ctype = msg.content_type or CONTENT_TYPE
        return f"{way}.{msg.agent}.{IP_PACKET_KIND}", msg.body, ctype
    if isinstance(msg, Frames):
        way = "fromAgent" if msg.uplink else "toAgent"
        return f"{way}.{msg.agent}.{WPAN_PACKET_KIND}", msg.body, CONTENT_TYPE
    raise TypeError(f"cannot encode {type(msg).__name__}")


# -- packets ---------------------------------------------------------------------------


def encode_packet(packet: bytes, interface_name: str, timestamp: float | None = None) -> bytes:
    """The ioppytest packet body: data as a JSON array of ints."""
    return orjson.dumps(
        {
            "_api_version": API_VERSION,
            "data": list(packet),
            "interface_name": interface_name,
            "timestamp": time.time() if timestamp is None else timestamp,
        }
    )


def decode_packet(body: bytes) -> bytes:
    """The packet bytes of a packet body; WireError if it is not a usable packet."""
    obj = _json_object(body)
    data = obj.get("data")
    if not isinstance(data, list):
        raise WireError("packet message without a 'data' list")
    try:
        packet = bytes(data)
    except (TypeError, ValueError):
        raise WireError("packet 'data' is not a list of ints 0-255") from None
    check_ip(packet)
    return packet


def encode_serial_packet(
    frame: bytes, data_slip: bytes, interface_name: str = "serial", timestamp: float | None = None
) -> bytes:
    """802.15.4 probe mode uplink: a packet body plus `data_slip`, the frame as on the line."""
    return orjson.dumps(
        {
            "_api_version": API_VERSION,
            "data": list(frame),
            "data_slip": list(data_slip),
            "interface_name": interface_name,
            "timestamp": time.time() if timestamp is None else timestamp,
        }
    )


def decode_frame(body: bytes) -> bytes:
    """The bytes of a packet body's `data`, whatever they carry (no IP check)."""
    data = _json_object(body).get("data")
    if not isinstance(data, list):
        raise WireError("packet message without a 'data' list")
    try:
        frame = bytes(data)
    except (TypeError, ValueError):
        raise WireError("packet 'data' is not a list of ints 0-255") from None
    if not frame:
        raise WireError("empty frame")
    return frame


def encode_serial_started(name: str, port: str, baudrate: int) -> bytes:
    """serial.started; `boudrate` (sic) is the wire name, a string as the original sent."""
    return orjson.dumps(
        {"_api_version": API_VERSION, "name": name, "port": port, "boudrate": str(baudrate)}
    )


HEADER_BYTES = 40  # enough for the addresses of IPv6 (40) and IPv4 (20) headers


def peek_packet(body: bytes) -> tuple[bytes, int]:
    """(first HEADER_BYTES bytes of the packet, its length per its IP header) of a JSON
    packet body, reading only the start of the "data" array: what a router needs.

    WireError when that start is not a usable IP header. A body it cannot read this way
    (unusual layout, short packet) is decoded in full instead. The rest of the body is
    left to the receiving agent, which validates everything it writes.
    """
    start = body.find(b'"data"')
    if start >= 0:
        open_at = body.find(b"[", start + 6, start + 64)
        if open_at > 0 and body[start + 6 : open_at].strip() == b":":
            window = body[open_at + 1 : open_at + 1 + HEADER_BYTES * 6]
            cut = window.rfind(b",")
            if cut > 0 and b"]" not in window:  # 40+ complete numbers, more follow
                try:
                    head = bytes(orjson.loads(b"[" + window[:cut] + b"]")[:HEADER_BYTES])
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    raise WireError("packet 'data' is not a list of ints 0-255") from None
                if len(head) == HEADER_BYTES:
                    check_ip(head)
                    if head[0] >> 4 == 6:
                        return head, 40 + ((head[4] << 8) | head[5])
                    return head, (head[2] << 8) | head[3]
    packet = decode_packet(body)
    return packet[:HEADER_BYTES], len(packet)


def encode_batch(packets: list[bytes]) -> bytes:
    """Fast-wire body: each packet as length (2 bytes, big-endian) + bytes."""
    out = bytearray()
    for packet in packets:
        out += len(packet).to_bytes(2, "big")
        out += packet
    return bytes(out)


def batches(packets: list[bytes]) -> Iterator[tuple[bytes, int]]:
    """(fast-wire body, number of packets in it) for packets, in order: the one batching
    rule of agent and router. A body takes packets until it holds MAX_BATCH_BYTES or more
    (so at least one packet, and at most one packet beyond the limit)."""
    start, n = 0, len(packets)
    while start < n:
        end, size = start, 0
        while end < n and (end == start or size < MAX_BATCH_BYTES):
            size += len(packets[end]) + 2
            end += 1
        yield encode_batch(packets[start:end]), end - start
        start = end


def batch_full(pending_bytes: int) -> bool:
    """Has a batch being filled (its packets' sizes + 2 each) reached the limit?"""
    return pending_bytes >= MAX_BATCH_BYTES


def decode_batch(body: bytes) -> list[bytes]:
    """Packets of a fast-wire body; WireError if the framing or any packet is bad."""
    if len(body) > MAX_BODY:
        raise WireError(f"message too big ({len(body)} B)", reason="too big")
    packets = []
    view = memoryview(body)
    i, end = 0, len(body)
    while i < end:
        if i + 2 > end:
            raise WireError("truncated packet batch")
        size = (body[i] << 8) | body[i + 1]
        i += 2
        if size == 0 or i + size > end:
            raise WireError("bad length in packet batch")
        packet = bytes(view[i : i + size])
        check_ip(packet)
        packets.append(packet)
        i += size
    if not packets:
        raise WireError("empty packet batch")
    return packets


def decode_packets(body: bytes, content_type: str | None) -> list[bytes]:
    """The packets of a packet message, whichever wire it came by."""
    if content_type == FAST_CONTENT_TYPE:
        return decode_batch(body)
    return [decode_packet(body)]


def check_ip(packet: bytes) -> None:
    """Raise WireError unless packet starts like an IPv4 or IPv6 packet."""
    if not packet:
        raise WireError("empty packet")
    version = packet[0] >> 4
    if version == 6:
        if len(packet) < 40:
            raise WireError(f"truncated IPv6 packet ({len(packet)} B)")
    elif version == 4:
        if len(packet) < 20 or packet[0] & 0x0F < 5:
            raise WireError(f"truncated IPv4 packet ({len(packet)} B)")
    else:
        raise WireError(f"not an IP packet (version nibble {version})")


# -- control messages --------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise WireError(f"message too big ({len(body)} B)", reason="too big")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WireError("body is not JSON") from None
    if not isinstance(obj, dict):
        raise WireError("body is not a JSON object")
    return obj


def decode_control(body: bytes) -> dict[str, Any]:
    return _json_object(body)


def encode_ready(component: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "_api_version": API_VERSION,
            "component": component,
            "description": "Component READY to start test suite.",
            **extra,
        }
    )


def speaks_fast(msg: dict[str, Any]) -> bool:
    """Does a tun.started or ready body say its sender understands our fast wire?"""
    wires = msg.get(WIRE_FIELD)
    return isinstance(wires, list) and FAST_WIRE in wires


def router_epoch(msg: dict[str, Any]) -> str | None:
    """The epoch in a router's ready (None: a router that does not send one)."""
    epoch = msg.get(EPOCH_FIELD)
    return epoch if isinstance(epoch, str) and epoch else None


def incarnation(msg: dict[str, Any]) -> str | None:
    """The agent incarnation a ready/tun.started/tun.stopped names (None: not one of ours)."""
    value = msg.get(INCARNATION_FIELD)
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def encode_tun_stopped(name: str, incarnation_id: str) -> bytes:
    return orjson.dumps(
        {"_api_version": API_VERSION, "name": name, INCARNATION_FIELD: incarnation_id}
    )


def encode_tun_started(name: str, plan: AddressPlan, **extra: Any) -> bytes:
    """tun.started: the agent's current configuration, ipv4 written both ways."""
    ipv4 = plan.ipv4
    prefixes = [prefix_wire_form(p) for p in plan.reroute_prefixes]
    body: dict[str, Any] = {
        "_api_version": API_VERSION,
        "name": name,
        "ipv6_prefix": prefix_wire_form(plan.ipv6_prefix)
        if plan.ipv6_prefix.prefixlen == 64
        else str(plan.ipv6_prefix),
        "ipv6_host": plan.ipv6_host,
        "ipv6_no_forwarding": False,
        "ipv4_host": str(ipv4.ip) if ipv4 else None,
        "ipv4_address": str(ipv4.ip) if ipv4 else None,
        "ipv4_network": str(ipv4.network.network_address) if ipv4 else None,
        "ipv4_netmask": str(ipv4.network.netmask) if ipv4 else None,
        "re_route_packets_if": plan.reroute_if,
        "re_route_packets_prefix": (prefixes[0] if len(prefixes) == 1 else prefixes)
        if prefixes
        else None,
        "re_route_packets_host": plan.reroute_host,
    }
    body.update(extra)
    return orjson.dumps(body)


def addresses_of(plan: AddressPlan) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Host addresses an agent owns, for a router's table."""
    return [iface.ip for iface in plan.interfaces()]
