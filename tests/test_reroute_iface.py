"""The pure parts of the interface port and the re-route options (no root needed)."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.packet import Packet, Raw, raw

from agent.bus import wire
from agent.config import default_plan
from agent.ipheader import PrefixTable
from agent.reroute.checksum import complete_checksum
from agent.reroute.iface import IfaceError, IfacePort, accept_from_link, port_name
from agent.reroute.options import RerouteOptions

CCCC = ipaddress.ip_network("cccc::/64")
DOC4 = ipaddress.ip_network("192.0.2.0/24")

# -- checksums ----------------------------------------------------------------------------

CSUM_FIELD = {UDP: "chksum", TCP: "chksum", ICMP: "chksum", ICMPv6EchoRequest: "cksum"}


@st.composite
def with_transport(draw: st.DrawFn) -> Packet:
    data = Raw(draw(st.binary(max_size=300)))
    if draw(st.booleans()):
        ip: Packet = IPv6(src="cccc::1", dst=draw(st.sampled_from(["bbbb::1", "aaaa::5"])))
        if draw(st.booleans()):
            ip = ip / IPv6ExtHdrDestOpt()
        upper = draw(st.sampled_from([UDP, TCP, ICMPv6EchoRequest]))
    else:
        ip = IP(src="192.0.2.1", dst=draw(st.sampled_from(["10.2.0.1", "10.2.0.77"])))
        upper = draw(st.sampled_from([UDP, TCP, ICMP]))
    return ip / upper() / data


@settings(max_examples=200, deadline=None)
@given(with_transport(), st.integers(0, 0xFFFF))
def test_complete_checksum_equals_scapy(pkt: Packet, partial: int) -> None:
    """Whatever the checksum field holds (a partial sum), the result is Scapy's checksum."""
    good = raw(pkt)
    layer = next(lay for lay in CSUM_FIELD if pkt.haslayer(lay))
    broken = pkt.copy()
    setattr(broken[layer], CSUM_FIELD[layer], partial)
    assert complete_checksum(raw(broken)) == good


def test_complete_checksum_leaves_what_it_cannot_complete() -> None:
    frag4 = raw(IP(dst="10.2.0.1", flags="MF") / UDP(chksum=0x1234) / b"x")
    frag6 = raw(IPv6(dst="bbbb::1") / IPv6ExtHdrFragment(m=1) / UDP(chksum=0x1234) / b"x")
    for packet in (frag4, frag6, b"", b"\x00" * 30, raw(IPv6())[:30], b"garbage"):
        assert complete_checksum(packet) == packet


# -- what enters from the interface --------------------------------------------------------


def _networks() -> PrefixTable[bool]:
    table: PrefixTable[bool] = PrefixTable()
    table.add(CCCC, True)
    table.add(DOC4, True)
    return table


LOCAL = {ipaddress.ip_address(a).packed for a in ("cccc::2", "bbbb::2", "10.2.0.2", "192.0.2.2")}


@pytest.mark.parametrize(
    "pkt, expected",
    [
        (IPv6(src="cccc::1", dst="bbbb::1") / UDP(), None),
        (IP(src="192.0.2.1", dst="10.2.0.1") / ICMP(), None),
        (IPv6(src="cccc::1", dst="aaaa::9") / UDP(), None),  # to another agent's network
        (IPv6(src="cccc::1", dst="bbbb::2") / UDP(), "for the host"),  # the kernel answers
        (IPv6(src="cccc::1", dst="cccc::2") / UDP(), "for the host"),
        (IP(src="192.0.2.1", dst="192.0.2.2") / ICMP(), "for the host"),
        (IPv6(src="fe80::1", dst="fe80::2") / UDP(), "not from the network"),
        (IPv6(src="cccc::1", dst="ff02::1:ff00:2") / UDP(), "multicast"),  # ND solicitation
        (IP(src="192.0.2.1", dst="255.255.255.255") / UDP(), "multicast"),
        # link-local scope is the switch's rule (DROP_LINK_LOCAL), for every re-route port
        (IPv6(src="cccc::1", dst="fe80::2") / UDP(), None),
        (IPv6(src="dddd::1", dst="bbbb::1") / UDP(), "not from the network"),
        (IP(src="198.51.100.1", dst="10.2.0.1") / UDP(), "not from the network"),
    ],
)
def test_accept_from_link(pkt: Packet, expected: str | None) -> None:
    assert accept_from_link(raw(pkt), _networks(), LOCAL) == expected


def test_accept_from_link_garbage() -> None:
    assert accept_from_link(b"\x60\x00", _networks(), LOCAL) == "not ip"
    assert accept_from_link(b"", _networks(), LOCAL) == "not ip"


def test_port_name_avoids_reserved_names() -> None:
    assert port_name("eth1") == "eth1"
    assert port_name("tun") == "if-tun" and port_name("bus") == "if-bus"


def test_missing_interface_is_one_line_error() -> None:
    port = IfacePort("nosuch0", None, [CCCC])
    with pytest.raises(IfaceError, match=r"^re-route interface nosuch0 does not exist$"):
        port.check()


def test_interface_without_prefix_is_refused() -> None:
    port = IfacePort("lo", None, [])
    with pytest.raises(IfaceError, match="--re-route-prefix"):
        port.check()


# -- options, plan, announcement -----------------------------------------------------------


def test_reroute_options_win_over_the_plan() -> None:
    plan = default_plan("agent_2")
    assert plan is not None
    opts = RerouteOptions((CCCC, DOC4, CCCC), "1", "eth1")
    merged = opts.apply(plan)
    assert merged.reroute_prefixes == (CCCC, DOC4)
    assert merged.reroute_host == "1" and merged.reroute_if == "eth1"
    assert opts.apply(merged) == merged
    assert RerouteOptions().apply(merged) == merged
    assert not RerouteOptions() and opts
    body = orjson.loads(wire.encode_tun_started("agent_2", merged))
    assert body["re_route_packets_prefix"] == ["cccc", "192.0.2.0/24"]
    assert body["re_route_packets_if"] == "eth1" and body["re_route_packets_host"] == "1"
    one = orjson.loads(wire.encode_tun_started("agent_2", RerouteOptions((CCCC,)).apply(plan)))
    assert one["re_route_packets_prefix"] == "cccc"


def _parse(monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """The Setup (agent.assembly) that `agent connect args` would build and run."""
    import agent.assembly
    import agent.cli as cli_module

    seen: dict[str, Any] = {}

    def build(setup: Any) -> Any:
        seen["setup"] = setup

        async def run() -> int:
            return 0

        return run

    monkeypatch.setattr(agent.assembly, "build", build)
    monkeypatch.setattr(cli_module, "setup_logging", lambda *a: None)
    result = CliRunner().invoke(cli_module.cli, ["connect", "--url", "amqp://h/", *args])
    return result, seen.get("setup")


@pytest.mark.parametrize("long", [False, True])
def test_cli_options_and_aliases(monkeypatch: pytest.MonkeyPatch, long: bool) -> None:
    p = "--re-route-packets-" if long else "--re-route-"
    result, opts = _parse(
        monkeypatch, "--name", "agent_2", f"{p}if", "eth1", f"{p}prefix", "cccc",
        f"{p}prefix", "192.0.2.0/24", f"{p}prefix", "cccc::/64", f"{p}host", "1",
    )
    assert result.exit_code == 0, result.output
    assert opts.reroute == RerouteOptions((CCCC, DOC4), "1", "eth1")
    assert opts.address.reroute_prefixes == (CCCC, DOC4)
    assert opts.address.reroute_if == "eth1" and opts.address.reroute_host == "1"


@pytest.mark.parametrize(
    "args, word",
    [
        (["--re-route-prefix", "ff02::/16"], "re-route prefix"),
        (["--re-route-prefix", "10.0.0.0/4"], "re-route prefix"),
        (["--re-route-prefix", "cccc;reboot"], "prefix"),
        (["--re-route-host", "1;x"], "host"),
        (["--re-route-if", "a/b", "--re-route-prefix", "cccc"], "interface name"),
        (["--re-route-if", "eth1"], "--re-route-prefix"),
    ],
)
def test_cli_refuses_bad_values(
    monkeypatch: pytest.MonkeyPatch, args: list[str], word: str
) -> None:
    result, opts = _parse(monkeypatch, "--name", "agent_2", *args)
    assert result.exit_code == 2 and opts is None
    assert word in result.output
