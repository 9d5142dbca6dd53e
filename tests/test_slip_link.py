"""Serial line as the agent's "serial" port (IP mode), the 802.15.4 probe's bodies, the
serial wire codec and the serial command-line options. No broker, no root: the agent is
built but never run, a pty stands in for the line."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from agent.bus import wire
from agent.config import AddressPlan, parse_reroute_prefix
from agent.counters import Counters
from agent.node import Agent
from agent.reroute.options import RerouteOptions
from agent.slip.framing import SlipDecoder
from agent.slip.link import SerialLink, answer_prefix, text_line
from agent.slip.options import (
    BAUDRATE_ENV,
    SERIAL_PORT_ENV,
    SerialOptionError,
    serial_choice,
    serial_link,
    serial_reroute,
)
from agent.slip.port import SerialPortError, SerialSettings
from agent.slip.probe import data_slip
from agent.switch import routes
from tests.conftest import make_agent, until

END = b"\xc0"
CCCC = parse_reroute_prefix("cccc")


# ----------------------------------------------------------------------------- helpers


def rfc1055_encode(payload: bytes) -> bytes:
    """SEND_PACKET of RFC 1055, written out independently of the code under test."""
    out = bytearray()
    for b in payload:
        out += {0xC0: b"\xdb\xdc", 0xDB: b"\xdb\xdd"}.get(b, bytes([b]))
    return bytes(out)


@pytest.fixture
def pty_path(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    link = tmp_path / "ttyMOTE"
    os.symlink(name, link)
    yield link, master
    os.close(master)


def read_master(master: int) -> bytes:
    try:
        return os.read(master, 65536)
    except (BlockingIOError, OSError):
        return b""


def serial_agent(
    link_path: Path, reroute: RerouteOptions | None = None, **settings: object
) -> tuple[Agent, SerialLink]:
    """An agent with a serial port on link_path, assembled as `agent connect` does."""
    choice = serial_choice({"serial_port": str(link_path)})
    counters = Counters()
    link = SerialLink(SerialSettings(str(link_path), **settings), counters)  # type: ignore[arg-type]
    rig = make_agent("mote_gw", plan=None, others=(link,), counters=counters,
                     reroute=serial_reroute(choice, reroute or RerouteOptions()))
    return rig.agent, link


def ping6(dst: str, src: str = "bbbb::1") -> bytes:
    return bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=1, seq=1, data=b"x" * 8))


# ----------------------------------------------------------------------------- pure helpers


def test_answer_prefix_is_first_ipv6_of_at_most_64() -> None:
    v4 = parse_reroute_prefix("192.0.2.0/24")
    long = ipaddress.IPv6Network("dddd::/96")
    assert answer_prefix([v4, long, CCCC, parse_reroute_prefix("aaaa")]) == CCCC
    assert answer_prefix([v4]) is None
    assert answer_prefix([]) is None


def test_text_line_is_one_printable_line() -> None:
    assert text_line(b"Rime started\r\n") == "Rime started"
    assert text_line(b"a\r\nb\xff\r\n") == "a\\r\\nb\ufffd"


@given(st.binary(min_size=1, max_size=300))
def test_data_slip_is_the_frame_as_on_the_line(frame: bytes) -> None:
    slip = data_slip(frame)
    assert slip == END + rfc1055_encode(frame) + END
    assert SlipDecoder().feed(slip) == [frame]


def test_serial_keys() -> None:
    assert wire.serial_uplink_key("m") == "fromAgent.m.802154.serial.packet.raw"
    assert wire.serial_downlink_key("m") == "toAgent.m.802154.serial.packet.raw"
    assert wire.serial_started_key("m") == "fromAgent.m.802154.serial.started"


def test_encode_serial_packet_body() -> None:
    frame = bytes([0x41, 0xD8, 0xC0, 0xDB])
    body = orjson.loads(wire.encode_serial_packet(frame, data_slip(frame), timestamp=12.5))
    assert body == {
        "_api_version": "1.2.15",
        "data": [0x41, 0xD8, 0xC0, 0xDB],
        "data_slip": [0xC0, 0x41, 0xD8, 0xDB, 0xDC, 0xDB, 0xDD, 0xC0],
        "interface_name": "serial",
        "timestamp": 12.5,
    }


def test_encode_serial_started_keeps_the_wire_misspelling() -> None:
    body = orjson.loads(wire.encode_serial_started("m", "/dev/ttyUSB0", 115200))
    assert body == {
        "_api_version": "1.2.15",
        "name": "m",
        "port": "/dev/ttyUSB0",
        "boudrate": "115200",
    }


def test_decode_frame_takes_any_bytes_but_not_junk() -> None:
    assert wire.decode_frame(b'{"data": [1, 2, 255], "x": null}') == b"\x01\x02\xff"
    for bad in (
        b"nope",
        b"[1]",
        b'{"data": "ab"}',
        b'{"data": [256]}',
        b'{"data": [1.5]}',
        b'{"data": []}',
        b"{}",
    ):
        with pytest.raises(wire.WireError):
            wire.decode_frame(bad)


@given(st.binary(min_size=1, max_size=200))
def test_serial_packet_round_trip(frame: bytes) -> None:
    assert wire.decode_frame(wire.encode_serial_packet(frame, data_slip(frame))) == frame


# ----------------------------------------------------------------------------- options


def test_no_serial_options_no_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERIAL_PORT_ENV, "/dev/ttyUSB0")  # ignored in ip mode
    assert serial_choice({"serial_mode": "ip"}) is None


def test_802154_mode_takes_port_and_baudrate_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERIAL_PORT_ENV, "/dev/ttyACM3")
    monkeypatch.setenv(BAUDRATE_ENV, "460800")
    choice = serial_choice({"serial_mode": "802154"})
    assert choice is not None and choice.mode == "802154"
    assert (choice.settings.device, choice.settings.baudrate) == ("/dev/ttyACM3", 460800)
    # options win over the environment
    choice = serial_choice({"serial_mode": "802154", "serial_port": "/dev/x", "baudrate": 9600})
    assert choice is not None and (choice.settings.device, choice.settings.baudrate) == (
        "/dev/x",
        9600,
    )


@pytest.mark.parametrize(
    "given, leading_end",
    [
        ({}, True),  # the default: END payload END
        ({"slip_framing": "both"}, True),
        ({"slip_framing": "end-only"}, False),  # RIOT before its 2024 SLIP rewrite
        ({"slip_leading_end": True}, True),  # the old flag: what is now the default
    ],
)
def test_slip_framing_option(given: dict[str, object], leading_end: bool) -> None:
    choice = serial_choice({"serial_port": "/dev/ttyUSB0", **given})
    assert choice is not None and choice.settings.leading_end is leading_end


def test_slip_framing_contradictions_are_one_line_errors() -> None:
    with pytest.raises(SerialOptionError, match="contradicts") as err:
        serial_choice(
            {"serial_port": "/dev/ttyUSB0", "slip_leading_end": True, "slip_framing": "end-only"}
        )
    assert "\n" not in str(err.value)
    with pytest.raises(SerialOptionError, match="one of: both, end-only") as err:
        serial_choice({"serial_port": "/dev/ttyUSB0", "slip_framing": "none"})
    assert err.value.option == "--slip-framing"
    with pytest.raises(SerialOptionError, match="--slip-framing needs a serial device"):
        serial_choice({"slip_framing": "end-only"})


def test_ip_mode_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BAUDRATE_ENV, raising=False)
    choice = serial_choice(
        {
            "serial_port": "/dev/ttyUSB0",
            "rtscts": True,
            "slip_pace_us": 300,
            "slip_leading_end": True,
            "serial_mode": "ip",
        },
        mtu=1280,
    )
    assert choice is not None
    assert choice.settings == SerialSettings(
        "/dev/ttyUSB0",
        115200,
        rtscts=True,
        xonxoff=False,
        pace_us=300,
        leading_end=True,
        mtu=1280,
    )


def test_bad_env_baudrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BAUDRATE_ENV, "fast")
    with pytest.raises(SerialOptionError, match=BAUDRATE_ENV) as err:
        serial_choice({"serial_port": "/dev/ttyUSB0"})
    assert err.value.option == "--baudrate"


@pytest.mark.parametrize(
    "values",
    [{"serial_mode": "802154"}, {"rtscts": True}, {"baudrate": 9600}, {"slip_pace_us": 5}],
)
def test_serial_options_without_device(
    values: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SERIAL_PORT_ENV, raising=False)
    with pytest.raises(SerialOptionError, match="needs a serial device") as err:
        serial_choice(values)
    assert err.value.option is None


def test_serial_and_reroute_if_conflict(tmp_path: Path) -> None:
    choice = serial_choice({"serial_port": str(tmp_path / "x")})
    with pytest.raises(SerialOptionError, match="--re-route-if"):
        serial_reroute(choice, RerouteOptions((CCCC,), "1", "eth1"))
    assert serial_reroute(choice, RerouteOptions((CCCC,))).port == "serial"
    assert serial_reroute(None, RerouteOptions((CCCC,))).port is None


def test_attach_missing_device_is_serial_port_error(tmp_path: Path) -> None:
    choice = serial_choice({"serial_port": str(tmp_path / "ttyUSB7")})
    assert choice is not None
    with pytest.raises(SerialPortError, match="does not exist"):
        serial_link(choice, Counters())


# ----------------------------------------------------------------------------- the link


class RecordingTun:
    """Stands in for agent.tun.device.Tun: the routes the agent adds into it."""

    def __init__(self) -> None:
        self.routes: list[object] = []

    async def add_route(self, network: object) -> bool:
        self.routes.append(network)
        return True


def test_own_networks_behind_the_line_are_routed_into_the_tun(
    pty_path: tuple[Path, int],
) -> None:
    """The agent's own host reaches the mote through the TUN (there is no interface of its
    own to the line); an interface port's networks get no such route (the interface
    leads there itself)."""
    link_path, _master = pty_path
    v4 = parse_reroute_prefix("192.0.2.0/24")
    agent, _link = serial_agent(link_path, RerouteOptions((CCCC, v4), "1"))
    tun = RecordingTun()
    asyncio.run(agent._route_own_networks(tun, routes(None, agent.opts.reroute)))  # type: ignore[arg-type]
    assert tun.routes == [CCCC, v4]
    by_iface = make_agent(reroute=RerouteOptions((CCCC,), "1", "eth1")).agent
    table = routes(None, by_iface.opts.reroute)
    assert table == {CCCC: "eth1"}

    class Eth1:
        name = "eth1"

    by_iface.iface = Eth1()  # type: ignore[assignment]
    tun = RecordingTun()
    asyncio.run(by_iface._route_own_networks(tun, table))  # type: ignore[arg-type]
    assert tun.routes == []


def test_attach_routes_prefixes_and_amends_plans(pty_path: tuple[Path, int]) -> None:
    link_path, _master = pty_path
    agent, link = serial_agent(link_path, RerouteOptions((CCCC,), "1"))
    assert agent.ports["serial"] is link
    assert agent.switch.decide(ping6("cccc::1"), "bus") == "serial"
    assert agent.switch.decide(ping6("cccc::1"), "tun") == "serial"
    assert agent.switch.decide(ping6("bbbb::9", src="cccc::1"), "serial") == "bus"
    assert agent.switch.decide(ping6("cccc::2", src="cccc::1"), "serial").startswith("!")
    agent.switch.set_local([ipaddress.ip_network("bbbb::5/128")])
    assert agent.switch.decide(ping6("bbbb::5", src="cccc::1"), "serial") == "tun"

    # a plan from a tun.start gets the command line's networks, and its own are routed too
    bus_plan = AddressPlan(
        parse_reroute_prefix("bbbb"), "5", None, (parse_reroute_prefix("dddd"),), "9", None
    )
    amended = agent.opts.reroute.apply(bus_plan)
    assert amended.reroute_prefixes == (CCCC,) and amended.reroute_host == "1"
    assert routes(bus_plan, agent.opts.reroute) == {CCCC: "serial"}
    plan_only, link_only = serial_agent(link_path)
    kept = plan_only.opts.reroute.apply(bus_plan)
    assert kept.reroute_prefixes == bus_plan.reroute_prefixes
    assert plan_only.switch.decide(ping6("dddd::1"), "bus") != "serial"  # not routed yet
    plan_only._add_routes(routes(kept, plan_only.opts.reroute))
    assert plan_only.switch.decide(ping6("dddd::1"), "bus") == "serial"
    assert link_only._answer == b"!P" + parse_reroute_prefix("dddd").network_address.packed[:8]

    # an interface named by a tun.start is ignored: the networks are behind the line
    eth = AddressPlan(
        parse_reroute_prefix("bbbb"), "5", None, (parse_reroute_prefix("eeee"),), None, "eth1"
    )
    assert plan_only.opts.reroute.apply(eth).reroute_if is None
    assert routes(eth, plan_only.opts.reroute) == {parse_reroute_prefix("eeee"): "serial"}
    assert routes(eth, RerouteOptions()) == {parse_reroute_prefix("eeee"): "eth1"}
    assert routes(None, RerouteOptions((CCCC,), ifname="eth1")) == {CCCC: "eth1"}
    assert routes(None, RerouteOptions((CCCC,))) == {}


def test_frames_from_the_line(pty_path: tuple[Path, int]) -> None:
    link_path, master = pty_path
    agent, link = serial_agent(
        link_path, RerouteOptions((parse_reroute_prefix("192.0.2.0/24"), CCCC), "1"), mtu=1280
    )
    forwarded: list[tuple[bytes, str]] = []
    agent.forward = lambda packet, came_from: forwarded.append((packet, came_from))  # type: ignore[method-assign]
    reply6 = ping6("bbbb::1", src="cccc::1")
    reply4 = bytes(IP(src="192.0.2.1", dst="10.2.0.1") / UDP(sport=7, dport=9) / b"hi")
    got = bytearray()

    async def main() -> None:
        await run_agent_briefly(
            agent,
            link,
            master,
            got,
            [
                rfc1055_encode(reply6) + END,
                b"Rime started with address 1.2\r\n" + END,  # Contiki debug text
                END + b"?P" + END,
                b"\x00\x01\x02\x03\x04" + END,  # binary, not IP
                b"\xdb\x05oops" + END,  # invalid escape
                rfc1055_encode(b"\x60" + b"\x00" * 1300) + END,  # over the MTU
                rfc1055_encode(reply4) + END,
            ],
        )

    asyncio.run(main())
    assert forwarded == [(reply6, "serial"), (reply4, "serial")]
    assert bytes(got) == END + b"!P\xcc\xcc" + b"\x00" * 6 + END
    c = agent.counters
    assert c.packets["serial>log"] == 1 and c.packets["serial ?P>!P"] == 1
    assert c.drops["serial other"] == 1
    assert c.drops["serial bad frame"] == 1
    assert c.drops["serial too big"] == 1


async def run_agent_briefly(
    agent: Agent, link: SerialLink, master: int, got: bytearray, chunks: list[bytes]
) -> None:
    """Open the link as the agent does, feed the line, collect what the link writes."""
    await link.open(agent.receive, "serial")
    assert await until(lambda: link.port.is_open)
    for chunk in chunks:
        os.write(master, chunk)
        await asyncio.sleep(0.01)  # each chunk a read of its own, as from a slow line
    await until(lambda: got.extend(read_master(master)) or len(got) >= 11, timeout=2)
    await asyncio.sleep(0.1)  # a window in which anything more written would show
    got.extend(read_master(master))
    await link.close()
    assert not link.port.is_open


def test_prefix_request_without_ipv6_prefix(pty_path: tuple[Path, int]) -> None:
    link_path, master = pty_path
    agent, link = serial_agent(link_path, RerouteOptions((parse_reroute_prefix("192.0.2.0/24"),)))
    got = bytearray()
    asyncio.run(run_agent_briefly(agent, link, master, got, [b"?P" + END]))
    assert bytes(got) == b""
    assert agent.counters.drops["serial ?P unanswered"] == 1


def test_send_reaches_the_line_slip_encoded(pty_path: tuple[Path, int]) -> None:
    link_path, master = pty_path
    agent, link = serial_agent(link_path, RerouteOptions((CCCC,)), leading_end=True)
    packet = ping6("cccc::1") + b"\xc0\xdb"
    got = bytearray()

    async def main() -> None:
        link.port.start()
        try:
            assert agent.ports["serial"].send(packet) is None
            await until(
                lambda: (
                    got.extend(read_master(master))
                    or got.endswith(END * 1)
                    and len(got) > len(packet)
                )
            )
        finally:
            await link.close()

    asyncio.run(main())
    assert bytes(got) == END + rfc1055_encode(packet) + END
