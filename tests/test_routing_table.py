"""Tests for the pure part of agent.router.router: who gets a copy of a packet."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6

from agent.bus import wire
from agent.config import ConfigError, default_plan
from agent.router import router as router_module
from agent.router.router import RoutingTable


def started(name: str, **changes: Any) -> dict[str, Any]:
    """The tun.started body agent `name` publishes (its default plan), with changes."""
    plan = default_plan(name)
    assert plan is not None
    return orjson.loads(wire.encode_tun_started(name, plan)) | changes


@functools.cache
def v6(src: str, dst: str) -> bytes:
    return bytes(IPv6(src=src, dst=dst) / ICMPv6EchoRequest())


@functools.cache
def v4(src: str, dst: str) -> bytes:
    return bytes(IP(src=src, dst=dst) / ICMP())


def table_of(*names: str, mirrors: tuple[str, ...] = ()) -> RoutingTable:
    table = RoutingTable(mirrors=mirrors)
    for name in names:
        table.learn_started(name, started(name))
    return table


# ----------------------------------------------------------------------------- unicast


@pytest.mark.parametrize(
    ("packet", "target"),
    [
        (v6("bbbb::1", "bbbb::2"), "agent_2"),
        (v6("bbbb::1", "bbbb::3"), "agent_3"),
        (v6("fe80::1", "fe80::3"), "agent_3"),
        (v4("10.2.0.1", "10.2.0.2"), "agent_2"),
        (v4("10.2.0.1", "10.2.0.3"), "agent_3"),
        (bytes(IPv6(src="bbbb::1", dst="bbbb::2") / UDP(dport=5683)), "agent_2"),
    ],
)
def test_unicast_to_a_known_address_goes_to_that_agent_only(packet: bytes, target: str) -> None:
    table = table_of("agent_1", "agent_2", "agent_3")
    assert table.targets("agent_1", packet) == [target]


def test_owner_of() -> None:
    table = table_of("agent_1", "agent_2")
    assert table.owner_of(6, ipaddress.IPv6Address("bbbb::2").packed) == "agent_2"
    assert table.owner_of(6, ipaddress.IPv6Address("fe80::1").packed) == "agent_1"
    assert table.owner_of(4, ipaddress.IPv4Address("10.2.0.1").packed) == "agent_1"
    assert table.owner_of(6, ipaddress.IPv6Address("bbbb::3").packed) is None


def test_unicast_to_oneself_goes_nowhere() -> None:
    table = table_of("agent_1", "agent_2")
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::1")) == []


# ----------------------------------------------------------------------------- flooding


@pytest.mark.parametrize(
    "packet",
    [
        v6("bbbb::1", "ff02::1"),
        v6("fe80::1", "ff02::2"),
        bytes(IPv6(src="fe80::1", dst="ff02::1:ff00:2") / ICMPv6ND_NS(tgt="bbbb::2")),
        v6("bbbb::1", "ff05::fb"),
        v4("10.2.0.1", "224.0.0.1"),
        v4("10.2.0.1", "239.255.255.250"),
        v4("10.2.0.1", "255.255.255.255"),
        v6("bbbb::1", "bbbb::99"),  # unknown
        v6("bbbb::1", "2001:db8::1"),  # unknown
        v4("10.2.0.1", "10.2.0.99"),  # unknown
        b"\x60" + bytes(20),  # not a whole IP header: no destination, flooded
    ],
)
def test_group_and_unknown_destinations_are_flooded_to_every_other_agent(packet: bytes) -> None:
    table = table_of("agent_1", "agent_2", "agent_3", "agent_4")
    assert sorted(table.targets("agent_1", packet)) == ["agent_2", "agent_3", "agent_4"]


def test_multicast_is_flooded_even_if_someone_claims_the_group() -> None:
    table = table_of("agent_1", "agent_2", "agent_3")
    assert table.check_source("agent_3", v6("ff02::1", "bbbb::1")) is False  # not learned
    # a network announced behind agent_3 that happens to contain the broadcast address
    table.learn_started("agent_3", started("agent_3", re_route_packets_prefix="255.0.0.0/8"))
    assert table.targets("agent_1", v4("10.2.0.1", "255.0.0.1")) == ["agent_3"]
    assert sorted(table.targets("agent_1", v6("bbbb::1", "ff02::1"))) == ["agent_2", "agent_3"]
    assert sorted(table.targets("agent_1", v4("10.2.0.1", "255.255.255.255"))) == [
        "agent_2",
        "agent_3",
    ]


def test_flooding_from_an_unknown_agent_reaches_all_known_agents() -> None:
    table = table_of("agent_1", "agent_2")
    assert sorted(table.targets("agent_9", v6("bbbb::9", "ff02::1"))) == ["agent_1", "agent_2"]


def test_alone_on_the_bus_nothing_to_flood() -> None:
    table = table_of("agent_1")
    assert table.targets("agent_1", v6("bbbb::1", "ff02::1")) == []


SOME_ADDRESSES = [
    "bbbb::1",
    "bbbb::2",
    "bbbb::3",
    "bbbb::77",
    "fe80::2",
    "ff02::1",
    "cccc::1",
    "10.2.0.1",
    "10.2.0.3",
    "224.0.0.1",
    "255.255.255.255",
]


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(["agent_1", "agent_2", "agent_3", "agent_7", "agent_TT"]),
    st.sampled_from(SOME_ADDRESSES),
    st.sampled_from(SOME_ADDRESSES),
    st.binary(max_size=60),
    st.booleans(),
)
def test_never_back_to_the_source(
    sender: str, src: str, dst: str, garbage: bytes, use_garbage: bool
) -> None:
    table = table_of("agent_1", "agent_2", "agent_3", mirrors=("agent_TT",))
    table.learn_started("agent_2", started("agent_2", re_route_packets_prefix="cccc"))
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if use_garbage:
        packet = garbage
    elif s.version == d.version == 6:
        packet = v6(src, dst)
    elif s.version == d.version == 4:
        packet = v4(src, dst)
    else:
        packet = garbage
    table.check_source(sender, packet)
    targets = table.targets(sender, packet)
    assert sender not in targets
    assert len(targets) == len(set(targets))
    if sender != "agent_TT":
        assert "agent_TT" in targets


# ----------------------------------------------------------------------------- learning


def test_learned_from_source_addresses() -> None:
    table = table_of("agent_1", "agent_2")
    # agent_5 never sent a tun.started; its first packets teach the router its addresses
    assert table.check_source("agent_5", v6("bbbb::5", "ff02::1")) is True
    assert table.check_source("agent_5", v4("10.2.0.5", "255.255.255.255")) is True
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::5")) == ["agent_5"]
    assert table.targets("agent_1", v4("10.2.0.1", "10.2.0.5")) == ["agent_5"]
    # and it is now a known agent for flooding
    assert sorted(table.targets("agent_1", v6("bbbb::1", "ff02::1"))) == ["agent_2", "agent_5"]
    # its own addresses stay acceptable
    assert table.check_source("agent_5", v6("bbbb::5", "bbbb::1")) is True


def test_own_addresses_and_networks_are_acceptable_sources() -> None:
    table = table_of("agent_1", "agent_2")
    table.learn_started("agent_2", started("agent_2", re_route_packets_prefix="cccc"))
    assert table.check_source("agent_1", v6("bbbb::1", "bbbb::2")) is True
    assert table.check_source("agent_1", v4("10.2.0.1", "10.2.0.2")) is True
    assert table.check_source("agent_2", v6("cccc::1", "bbbb::1")) is True  # device behind it


@pytest.mark.parametrize(
    ("packet", "accepted"),
    [
        (v6("::", "ff02::1:ff00:5"), True),  # DAD: unspecified source, allowed, not learned
        (v4("0.0.0.0", "255.255.255.255"), True),  # DHCP discover
        (v6("ff02::1", "bbbb::1"), False),  # a multicast source is never valid
        (v4("224.0.0.5", "10.2.0.1"), False),
        (v4("255.255.255.255", "10.2.0.1"), False),
        (b"\x60" + bytes(10), False),  # no source to read
        (b"", False),
    ],
)
def test_sources_that_are_not_learned(packet: bytes, accepted: bool) -> None:
    table = table_of("agent_1")
    assert table.check_source("agent_5", packet) is accepted
    assert "agent_5" not in table.agents
    assert sum(len(owned) for owned in table.agents.values()) == 3  # agent_1's three addresses


def test_a_spoofed_source_is_refused_and_does_not_steal_the_address() -> None:
    table = table_of("agent_1", "agent_2", "agent_3")
    assert table.check_source("agent_3", v6("bbbb::2", "bbbb::1")) is False
    assert table.check_source("agent_3", v4("10.2.0.2", "10.2.0.1")) is False
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::2")) == ["agent_2"]
    assert table.targets("agent_1", v4("10.2.0.1", "10.2.0.2")) == ["agent_2"]


def test_a_link_local_source_of_another_agent_is_tolerated_but_not_moved() -> None:
    """Link-local addresses are per link: two agents may well use the same one."""
    table = table_of("agent_1", "agent_2")
    assert table.check_source("agent_1", v6("fe80::2", "ff02::1")) is True
    assert table.targets("agent_1", v6("fe80::1", "fe80::2")) == ["agent_2"]


def test_tun_started_is_authoritative_when_an_address_moves() -> None:
    table = table_of("agent_1", "agent_2")
    table.learn_started("coap_server", {"ipv6_prefix": "bbbb", "ipv6_host": "2"})
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::2")) == ["coap_server"]
    assert ipaddress.ip_network("bbbb::2/128") not in table.agents["agent_2"]
    # agent_2 keeps its other addresses
    assert table.targets("agent_1", v4("10.2.0.1", "10.2.0.2")) == ["agent_2"]


def test_learn_started_with_a_bad_body_raises_config_error_and_learns_nothing() -> None:
    table = table_of("agent_1")
    with pytest.raises(ConfigError):
        table.learn_started("agent_2", {"ipv6_prefix": "bbbb; touch /tmp/pwned", "ipv6_host": "2"})
    with pytest.raises(ConfigError):
        table.learn_started("agent_2", {"ipv6_host": "2", "re_route_packets_prefix": "::/0"})
    assert "agent_2" not in table.agents
    assert table.owner_of(6, ipaddress.IPv6Address("bbbb::2").packed) is None


def test_learned_addresses_per_agent_are_bounded() -> None:
    table = table_of("agent_1")
    limit = router_module.MAX_LEARNED_PER_AGENT
    for i in range(limit + 50):
        assert table.check_source("agent_2", v6(f"2001:db8::{i + 1:x}", "ff02::1")) is True
    assert len(table.agents["agent_2"]) == limit
    # beyond the limit: not learned, so flooded (still reaching agent_2)
    assert table.targets("agent_1", v6("bbbb::1", f"2001:db8::{limit + 40:x}")) == ["agent_2"]
    assert table.owner_of(6, ipaddress.IPv6Address(f"2001:db8::{limit + 40:x}").packed) is None


def test_number_of_agents_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "MAX_AGENTS", 3)
    table = table_of("agent_1", "agent_2", "agent_3")
    table.check_source("agent_4", v6("bbbb::4", "ff02::1"))
    table.learn_started("agent_5", started("agent_5"))
    assert sorted(table.agents) == ["agent_1", "agent_2", "agent_3"]
    assert table.owner_of(6, ipaddress.IPv6Address("bbbb::5").packed) is None


# ----------------------------------------------------------------------------- networks behind


def test_announced_reroute_prefix_routes_to_the_announcer() -> None:
    table = table_of("agent_1", "agent_3")
    table.learn_started(
        "agent_2",
        started(
            "agent_2",
            re_route_packets_prefix="cccc",
            re_route_packets_host="1",
            re_route_packets_if="eth1",
        ),
    )
    assert table.targets("agent_1", v6("bbbb::1", "cccc::1")) == ["agent_2"]
    assert table.targets("agent_3", v6("bbbb::3", "cccc::ffff:1")) == ["agent_2"]
    # outside the /64: unknown, flooded
    assert sorted(table.targets("agent_1", v6("bbbb::1", "cccc:1::1"))) == ["agent_2", "agent_3"]


def test_announced_ipv4_and_list_prefixes() -> None:
    table = table_of("agent_1")
    table.learn_started(
        "agent_2", started("agent_2", re_route_packets_prefix=["aaaa", "192.0.2.0/24"])
    )
    assert table.targets("agent_1", v6("bbbb::1", "aaaa::9")) == ["agent_2"]
    assert table.targets("agent_1", v4("10.2.0.1", "192.0.2.200")) == ["agent_2"]


def test_a_device_behind_an_agent_sending_is_not_relearned_elsewhere() -> None:
    table = table_of("agent_1", "agent_3")
    table.learn_started("agent_2", started("agent_2", re_route_packets_prefix="cccc"))
    assert table.check_source("agent_2", v6("cccc::1", "bbbb::1")) is True  # via agent_2
    assert table.check_source("agent_3", v6("cccc::1", "bbbb::1")) is False  # a stray copy
    assert table.targets("agent_1", v6("bbbb::1", "cccc::1")) == ["agent_2"]


# ----------------------------------------------------------------------------- mirrors


def test_mirrors_get_a_copy_of_unicast_and_flooded_packets() -> None:
    table = table_of("agent_1", "agent_2", "agent_3", mirrors=("agent_TT",))
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::2")) == ["agent_2", "agent_TT"]
    assert sorted(table.targets("agent_1", v6("bbbb::1", "ff02::1"))) == [
        "agent_2",
        "agent_3",
        "agent_TT",
    ]
    # a packet that goes nowhere else still reaches the mirror
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::1")) == ["agent_TT"]


def test_mirrors_do_not_get_their_own_packets() -> None:
    table = table_of("agent_1", "agent_2", mirrors=("agent_TT", "sniffer"))
    table.learn_started("agent_TT", {"ipv6_prefix": "bbbb", "ipv6_host": ":3"})
    assert table.targets("agent_TT", v6("bbbb::3", "bbbb::1")) == ["agent_1", "sniffer"]
    flood = table.targets("agent_TT", v6("bbbb::3", "ff02::1"))
    assert sorted(flood) == ["agent_1", "agent_2", "sniffer"]


def test_a_known_mirror_gets_one_copy_only() -> None:
    table = table_of("agent_1", "agent_2", mirrors=("agent_2",))
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::2")) == ["agent_2"]
    assert table.targets("agent_1", v6("bbbb::1", "ff02::1")) == ["agent_2"]


# ----------------------------------------------------------------------------- static links


def test_with_links_pairs() -> None:
    table = RoutingTable.with_links([["agent_1", "agent_2"], ["agent_3", "agent_4"]])
    # the destination does not matter: links decide
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::3")) == ["agent_2"]
    assert table.targets("agent_1", v6("bbbb::1", "ff02::1")) == ["agent_2"]
    assert table.targets("agent_4", v4("10.2.0.4", "10.2.0.1")) == ["agent_3"]
    assert table.targets("agent_5", v6("bbbb::5", "ff02::1")) == []


def test_with_links_full_mesh_and_overlapping_groups() -> None:
    table = RoutingTable.with_links([["a", "b", "c"], ["c", "d"]])
    assert sorted(table.targets("a", v6("bbbb::1", "bbbb::2"))) == ["b", "c"]
    assert sorted(table.targets("c", v6("bbbb::1", "bbbb::2"))) == ["a", "b", "d"]
    assert table.targets("d", v6("bbbb::1", "bbbb::2")) == ["c"]


def test_with_links_and_mirrors() -> None:
    table = RoutingTable.with_links([["agent_1", "agent_2"]], mirrors=["agent_TT"])
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::2")) == ["agent_2", "agent_TT"]
    assert table.targets("agent_TT", v6("bbbb::3", "bbbb::2")) == []
    assert table.targets("agent_9", v6("bbbb::9", "bbbb::2")) == ["agent_TT"]


def test_with_links_ignores_what_it_would_learn() -> None:
    table = RoutingTable.with_links([["agent_1", "agent_2"]])
    table.learn_started("agent_3", started("agent_3"))
    assert table.targets("agent_1", v6("bbbb::1", "bbbb::3")) == ["agent_2"]
