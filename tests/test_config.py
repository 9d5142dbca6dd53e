"""Tests for agent.config: names, address plan, and validation of everything from the bus.

Everything checked here ends up in a netlink request or an AMQP routing key, so the
important property is: a bad value is refused with ConfigError (a one-line reason),
never passed through and never answered with another exception.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import (
    AddressPlan,
    ConfigError,
    check_ifname,
    check_mtu,
    check_name,
    default_plan,
    ipv6_address,
    parse_ipv4_address,
    parse_ipv6_host,
    parse_ipv6_prefix,
    parse_reroute_prefix,
    plan_from_bus,
    prefix_wire_form,
)

# The tun.start example of ../shared/wire-format.md, verbatim.
GOLDEN_TUN_START = b"""
{"_api_version": "1.2.15", "name": "agent_2", "ipv6_prefix": "bbbb", "ipv6_host": "2",
 "ipv6_no_forwarding": false, "ipv4_host": "10.2.0.2", "ipv4_address": "10.2.0.2",
 "ipv4_network": "10.2.0.0", "ipv4_netmask": "255.255.255.0",
 "re_route_packets_if": null, "re_route_packets_prefix": null, "re_route_packets_host": null}
"""

INJECTIONS = [
    "bbbb; touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`id`",
    "2 && reboot",
    "2 | sh",
    "2\nip link del eth0",
    "10.2.0.2 dev eth0",
    "../../etc/passwd",
    "\x00",
    " ",
    "%s%s%s",
    "{name}",
]
HUGE = ["b" * 100_000, "1" * 10_000, ":" * 10_000, "1." * 50_000]


def golden() -> dict[str, Any]:
    return orjson.loads(GOLDEN_TUN_START)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name", ["agent_1", "agent_TT", "coap_client", "coap-server", "A", "0", "x" * 64, "_-_"]
)
def test_good_names_are_kept_verbatim(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a.b",
        "a*",
        "a#",
        "*",
        "#",
        "a b",
        " agent_1",
        "agent_1 ",
        "agent_1\n",
        "a\tb",
        "é",
        "agent_é",
        "x" * 65,
        "x;rm",
        "a/b",
        "a:b",
        "a\x00",
        None,
        1,
        ["agent_1"],
    ],
)
def test_names_that_break_routing_keys_are_refused(name: Any) -> None:
    with pytest.raises(ConfigError) as info:
        check_name(name)
    message = str(info.value)
    assert "\n" not in message
    assert "name" in message


# ---------------------------------------------------------------------- ifname, MTU


@pytest.mark.parametrize("name", ["tun0", "eth1", "veth-a.1", "wlan0:1", "x" * 15, "tap_9"])
def test_good_interface_names(name: str) -> None:
    assert check_ifname(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "x" * 16, "a/b", "a b", "eth1;reboot", "é", "eth1\n", "$(id)", None, 1, []],
)
def test_bad_interface_names(name: Any) -> None:
    with pytest.raises(ConfigError):
        check_ifname(name)


@pytest.mark.parametrize("mtu", [1280, 1500, 9000, 65535])
def test_good_mtu(mtu: int) -> None:
    assert check_mtu(mtu) == mtu


@pytest.mark.parametrize("mtu", [0, -1, 1279, 65536, 10**9, True, "1500", 1500.0, None])
def test_bad_mtu(mtu: Any) -> None:
    with pytest.raises(ConfigError) as info:
        check_mtu(mtu)
    assert "1280" in str(info.value) and "65535" in str(info.value)


# -------------------------------------------------------------------------- IPv6 prefix


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("bbbb", "bbbb::/64"),
        ("BBBB", "bbbb::/64"),
        ("aaaa", "aaaa::/64"),
        ("2001:db8", "2001:db8::/64"),
        ("2001:db8:1:2", "2001:db8:1:2::/64"),
        ("bbbb:", "bbbb::/64"),
        ("bbbb::", "bbbb::/64"),
        (" bbbb ", "bbbb::/64"),
        ("bbbb::/64", "bbbb::/64"),
        ("2001:db8::/48", "2001:db8::/48"),
    ],
)
def test_parse_ipv6_prefix(text: str, network: str) -> None:
    assert parse_ipv6_prefix(text) == IPv6Network(network)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "bbbb; touch /tmp/pwned",
        "zzzz",
        "bbbbb",
        "1:2:3:4:5",
        "bbbb::1/64",  # host bits set
        "bbbb::/80",  # longer than the /64 the session needs
        "bbbb/64",
        "::/0",  # would route the whole IPv6 space into the TUN
        "::/1",
        "10.0.0.0/8",
        "bb bb",
        "bb\nbb",
        "bbbb:/64",
        None,
        0xBBBB,
        ["bbbb"],
        {"bbbb": 1},
    ],
)
def test_parse_ipv6_prefix_refuses(text: Any) -> None:
    with pytest.raises(ConfigError):
        parse_ipv6_prefix(text)


# ----------------------------------------------------------------------------- IPv6 host


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("1", "1"),
        (":1", "1"),
        ("::1", "1"),
        ("1:", "1"),
        ("12", "12"),
        ("0:0:0:1", "0:0:0:1"),
        ("123:456", "123:456"),
        ("ABCD", "abcd"),
        (" 2 ", "2"),
        (1, "1"),
        (5, "5"),
        (12, "12"),  # decimal digits as the original wrote them: bbbb::12
    ],
)
def test_parse_ipv6_host(value: Any, host: str) -> None:
    assert parse_ipv6_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "",
        ":",
        "g",
        "12345",
        "1:2:3:4:5",
        "1::2",
        "1 2",
        "2; reboot",
        -1,
        0x10000,
        10**30,
        True,
        False,
        1.0,
        None,
        [1],
        {"1": 1},
    ],
)
def test_parse_ipv6_host_refuses(value: Any) -> None:
    with pytest.raises(ConfigError):
        parse_ipv6_host(value)


@pytest.mark.parametrize(
    ("prefix", "host", "address"),
    [
        ("bbbb::/64", "2", "bbbb::2"),
        ("bbbb::/64", "12", "bbbb::12"),
        ("bbbb::/64", "0:0:0:1", "bbbb::1"),
        ("bbbb::/64", "123:456", "bbbb::123:456"),
        ("2001:db8:1:2::/64", "1:2:3:4", "2001:db8:1:2:1:2:3:4"),
        ("fe80::/64", "7", "fe80::7"),
    ],
)
def test_ipv6_address(prefix: str, host: str, address: str) -> None:
    assert ipv6_address(IPv6Network(prefix), host) == IPv6Address(address)


@pytest.mark.parametrize(("prefix", "host"), [("bbbb::/64", "0"), ("bbbb::/64", "0:0:0:0")])
def test_ipv6_address_refuses_the_subnet_router_anycast(prefix: str, host: str) -> None:
    with pytest.raises(ConfigError):
        ipv6_address(IPv6Network(prefix), host)


def test_ipv6_address_largest_host_id_fills_the_64_bits() -> None:
    host = parse_ipv6_host("ffff:ffff:ffff:ffff")
    assert ipv6_address(IPv6Network("bbbb::/64"), host) == IPv6Address("bbbb::ffff:ffff:ffff:ffff")


# ----------------------------------------------------------------------------- IPv4


@pytest.mark.parametrize(
    ("text", "iface"),
    [
        ("10.2.0.2", "10.2.0.2/24"),
        ("10.2.0.2/24", "10.2.0.2/24"),
        ("192.168.5.3/16", "192.168.5.3/16"),
        (" 10.2.0.9 ", "10.2.0.9/24"),
        ("10.0.0.1/8", "10.0.0.1/8"),
        ("10.2.0.0/16", "10.2.0.0/16"),  # a host of the /16, not its network address
    ],
)
def test_parse_ipv4_address(text: str, iface: str) -> None:
    assert parse_ipv4_address(text) == IPv4Interface(iface)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10.2.0",
        "10.2.0.256",
        "10.2.0.2; reboot",
        "10.2.0.2/33",
        "10.2.0.2/4",  # network too large
        "10.2.0.255",  # broadcast of the /24
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "::1",
        "bbbb::1",
        None,
        167903234,
        ["10.2.0.2"],
    ],
)
def test_parse_ipv4_address_refuses(text: Any) -> None:
    with pytest.raises(ConfigError):
        parse_ipv4_address(text)


# --------------------------------------------------------------------- re-route prefix


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("cccc", IPv6Network("cccc::/64")),
        ("aaaa", IPv6Network("aaaa::/64")),
        ("cccc::/64", IPv6Network("cccc::/64")),
        ("2001:db8::/32", IPv6Network("2001:db8::/32")),
        ("192.0.2.0/24", IPv4Network("192.0.2.0/24")),
        ("192.0.2.7/24", IPv4Network("192.0.2.0/24")),
        ("10.0.0.0/8", IPv4Network("10.0.0.0/8")),
    ],
)
def test_parse_reroute_prefix(text: str, network: Any) -> None:
    assert parse_reroute_prefix(text) == network


@pytest.mark.parametrize(
    "text",
    [
        "::/0",
        "0.0.0.0/0",
        "::/8",
        "10.0.0.0/7",
        "ff02::/64",
        "ff00::/8",
        "ff02",  # the short form of a multicast /64
        "ff05:1",
        "224.0.0.0/24",
        "239.1.2.0/24",
        "fe80::/64",
        "fe80",  # link-local, short form
        "127.0.0.0/8",
        "::1/128",
        "cccc; touch /tmp/pwned",
        "zzzz",
        "1:2:3:4:5",
        "",
        None,
        ["cccc"],
        42,
    ],
)
def test_parse_reroute_prefix_refuses(text: Any) -> None:
    with pytest.raises(ConfigError):
        parse_reroute_prefix(text)


@pytest.mark.parametrize(
    ("network", "wire"),
    [
        ("cccc::/64", "cccc"),
        ("bbbb::/64", "bbbb"),
        ("2001:db8::/64", "2001:db8"),
        ("2001:db8:0:1::/64", "2001:db8:0:1"),
        ("2001:db8:1:2::/64", "2001:db8:1:2"),
        ("0db8::/64", "db8"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("192.0.2.0/24", "192.0.2.0/24"),
    ],
)
def test_prefix_wire_form(network: str, wire: str) -> None:
    assert prefix_wire_form(ipaddress.ip_network(network)) == wire


@pytest.mark.parametrize(
    "network", ["cccc::/64", "2001:db8::/64", "2001:0:0:1::/64", "2001:db8::/32", "10.1.0.0/16"]
)
def test_prefix_wire_form_reads_back(network: str) -> None:
    net = ipaddress.ip_network(network)
    assert parse_reroute_prefix(prefix_wire_form(net)) == net


# ----------------------------------------------------------------------------- default plan


def test_default_plan_agent_1() -> None:
    plan = default_plan("agent_1")
    assert plan is not None
    assert plan.interfaces() == [
        IPv6Interface("bbbb::1/64"),
        IPv6Interface("fe80::1/64"),
        IPv4Interface("10.2.0.1/24"),
    ]


def test_default_plan_agent_12_is_written_as_12_in_both_families() -> None:
    plan = default_plan("agent_12")
    assert plan is not None
    assert plan.ipv6 == IPv6Address("bbbb::12")
    assert plan.link_local == IPv6Address("fe80::12")
    assert plan.ipv4 == IPv4Interface("10.2.0.12/24")


def test_default_plan_agent_254_is_the_last_ipv4_host() -> None:
    plan = default_plan("agent_254")
    assert plan is not None and plan.ipv4 == IPv4Interface("10.2.0.254/24")


@pytest.mark.parametrize("name", ["agent_255", "agent_300", "agent_9999"])
def test_default_plan_without_room_in_10_2_0_has_no_ipv4(name: str) -> None:
    plan = default_plan(name)
    assert plan is not None
    assert plan.ipv4 is None
    assert plan.ipv6 == IPv6Address("bbbb::" + name.split("_")[1])
    assert [i.version for i in plan.interfaces()] == [6, 6]


@pytest.mark.parametrize("name", ["coap_server", "coap_client", "agent_TT", "agent_0", "agent"])
def test_default_plan_other_names_have_no_addresses(name: str) -> None:
    assert default_plan(name) is None


def test_default_plan_coap_server_with_ipv6_host() -> None:
    plan = default_plan("coap_server", ipv6_host="5")
    assert plan is not None
    assert plan.ipv6 == IPv6Address("bbbb::5")
    assert plan.link_local == IPv6Address("fe80::5")
    assert plan.ipv4 is None
    assert plan.interfaces() == [IPv6Interface("bbbb::5/64"), IPv6Interface("fe80::5/64")]


def test_default_plan_coap_client_with_ipv4_only() -> None:
    plan = default_plan("coap_client", ipv4_address="10.2.0.77")
    assert plan is not None
    assert plan.ipv6 is None and plan.link_local is None
    assert plan.interfaces() == [IPv4Interface("10.2.0.77/24")]


def test_default_plan_explicit_values_override_agent_n() -> None:
    plan = default_plan("agent_3", ipv6_prefix="aaaa", ipv4_address="192.168.1.3/16")
    assert plan is not None
    assert plan.interfaces() == [
        IPv6Interface("aaaa::3/64"),
        IPv6Interface("fe80::3/64"),
        IPv4Interface("192.168.1.3/16"),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ipv6_prefix": "zzzz"},
        {"ipv6_prefix": "bbbb; touch /tmp/pwned"},
        {"ipv6_host": "x"},
        {"ipv6_host": "0"},
        {"ipv4_address": "10.2.0.300"},
        {"ipv4_address": "10.2.0.255"},
    ],
)
def test_default_plan_bad_options_raise_config_error(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        default_plan("agent_1", **kwargs)


def test_owns_lists_host_addresses_and_networks_behind() -> None:
    plan = AddressPlan(
        IPv6Network("bbbb::/64"),
        "2",
        IPv4Interface("10.2.0.2/24"),
        (IPv6Network("cccc::/64"),),
    )
    owned = plan.owns()
    for net in ("bbbb::2/128", "fe80::2/128", "10.2.0.2/32", "cccc::/64"):
        assert ipaddress.ip_network(net) in owned
    # the session networks themselves belong to everyone, not to this agent
    assert IPv6Network("bbbb::/64") not in owned
    assert IPv4Network("10.2.0.0/24") not in owned
    assert ipaddress.ip_network("10.2.0.3/32") not in owned


# ----------------------------------------------------------------------------- tun.start


def test_plan_from_golden_tun_start() -> None:
    plan = plan_from_bus(golden())
    assert plan.ipv6_prefix == IPv6Network("bbbb::/64")
    assert plan.ipv6_host == "2"
    assert plan.ipv6 == IPv6Address("bbbb::2")
    assert plan.link_local == IPv6Address("fe80::2")
    assert plan.ipv4 == IPv4Interface("10.2.0.2/24")
    assert plan.interfaces() == [
        IPv6Interface("bbbb::2/64"),
        IPv6Interface("fe80::2/64"),
        IPv4Interface("10.2.0.2/24"),
    ]
    assert plan.reroute_prefixes == ()
    assert plan.reroute_host is None
    assert plan.reroute_if is None


def test_plan_from_bus_with_ipv4_host_only() -> None:
    """Older senders write only ipv4_host."""
    plan = plan_from_bus({"ipv4_host": "10.2.0.7"})
    assert plan.ipv4 == IPv4Interface("10.2.0.7/24")
    assert plan.ipv6 is None
    assert plan.interfaces() == [IPv4Interface("10.2.0.7/24")]


def test_plan_from_bus_with_ipv4_address_only() -> None:
    plan = plan_from_bus({"ipv4_address": "10.2.0.8", "ipv4_host": None})
    assert plan.interfaces() == [IPv4Interface("10.2.0.8/24")]


@pytest.mark.parametrize(
    ("mask", "iface"),
    [
        ("255.255.0.0", "192.168.5.3/16"),
        ("255.255.255.0", "192.168.5.3/24"),
        ("255.255.255.128", "192.168.5.3/25"),
        ("16", "192.168.5.3/16"),
    ],
)
def test_plan_from_bus_with_ipv4_netmask(mask: str, iface: str) -> None:
    plan = plan_from_bus(
        {"ipv4_address": "192.168.5.3", "ipv4_network": "192.168.0.0", "ipv4_netmask": mask}
    )
    assert plan.ipv4 == IPv4Interface(iface)


@pytest.mark.parametrize("mask", ["255.0.255.0", "255.255.255.256", "0.0.0.0", "33", "24; reboot"])
def test_plan_from_bus_refuses_a_bad_netmask(mask: str) -> None:
    with pytest.raises(ConfigError):
        plan_from_bus({"ipv4_address": "192.168.5.3", "ipv4_netmask": mask})


def test_plan_from_bus_with_old_colon_host() -> None:
    plan = plan_from_bus({"ipv6_prefix": "bbbb", "ipv6_host": ":1"})
    assert plan.ipv6_host == "1"
    assert plan.ipv6 == IPv6Address("bbbb::1")
    assert plan.link_local == IPv6Address("fe80::1")
    assert plan.ipv4 is None


def test_plan_from_bus_ioppytest_template() -> None:
    """MsgAgentTunStart's default body: ipv6_host ':3', no IPv4 at all."""
    body = {
        "name": "agent_TT",
        "ipv6_prefix": "bbbb",
        "ipv6_host": ":3",
        "ipv6_no_forwarding": False,
        "ipv4_host": None,
        "ipv4_network": None,
        "ipv4_netmask": None,
        "re_route_packets_if": None,
        "re_route_packets_prefix": None,
        "re_route_packets_host": None,
    }
    plan = plan_from_bus(body)
    assert plan.interfaces() == [IPv6Interface("bbbb::3/64"), IPv6Interface("fe80::3/64")]


def test_plan_from_bus_missing_prefix_means_bbbb() -> None:
    assert plan_from_bus({"ipv6_host": "4"}).ipv6 == IPv6Address("bbbb::4")


def test_plan_from_bus_with_reroute() -> None:
    body = golden() | {
        "re_route_packets_prefix": "cccc",
        "re_route_packets_host": "1",
        "re_route_packets_if": "eth1",
    }
    plan = plan_from_bus(body)
    assert plan.reroute_prefixes == (IPv6Network("cccc::/64"),)
    assert plan.reroute_host == "1"
    assert plan.reroute_if == "eth1"
    assert IPv6Network("cccc::/64") in plan.owns()


def test_plan_from_bus_with_a_list_of_reroute_prefixes() -> None:
    plan = plan_from_bus(golden() | {"re_route_packets_prefix": ["cccc", "192.0.2.0/24"]})
    assert plan.reroute_prefixes == (IPv6Network("cccc::/64"), IPv4Network("192.0.2.0/24"))


@pytest.mark.parametrize(
    ("value", "host"),
    [("1", "1"), (":1", "1"), ("123:456", "123:456"), ("cccc::1", "cccc::1"), (7, "7")],
)
def test_plan_from_bus_reroute_host_forms(value: Any, host: str) -> None:
    plan = plan_from_bus(
        golden() | {"re_route_packets_prefix": "cccc", "re_route_packets_host": value}
    )
    assert plan.reroute_host == host


def test_plan_from_bus_without_any_address_is_refused() -> None:
    with pytest.raises(ConfigError):
        plan_from_bus({"ipv6_prefix": "bbbb"})
    with pytest.raises(ConfigError):
        plan_from_bus({})


@pytest.mark.parametrize("body", [None, [], "tun.start", 42, [golden()]])
def test_plan_from_bus_refuses_a_body_that_is_not_an_object(body: Any) -> None:
    with pytest.raises(ConfigError):
        plan_from_bus(body)  # type: ignore[arg-type]


# -- hostile bodies: every field, one at a time ----------------------------------------

# For each field, the body it is injected into: ipv4_host is only read when
# ipv4_address is absent (older senders), so it is tested in that form.
FIELDS = {
    "ipv6_prefix": golden(),
    "ipv6_host": golden(),
    "ipv4_address": {k: v for k, v in golden().items() if k != "ipv4_host"},
    "ipv4_host": {k: v for k, v in golden().items() if k != "ipv4_address"},
    "ipv4_netmask": golden(),
    "re_route_packets_prefix": golden(),
    "re_route_packets_host": golden() | {"re_route_packets_prefix": "cccc"},
    "re_route_packets_if": golden() | {"re_route_packets_prefix": "cccc"},
}

WRONG_TYPES: list[Any] = [
    [1, 2],
    ["bbbb", "::/0"],
    [[]],
    {"a": 1},
    {"ipv6_prefix": "bbbb"},
    3.5,
    -1,
    10**30,
    True,
    [None],
]


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("value", INJECTIONS + HUGE, ids=lambda v: repr(v)[:24])
def test_hostile_strings_in_any_field_are_refused(field: str, value: str) -> None:
    body = dict(FIELDS[field]) | {field: value}
    with pytest.raises(ConfigError) as info:
        plan_from_bus(body)
    assert "\n" not in str(info.value)  # one log line


@pytest.mark.parametrize("field", sorted(set(FIELDS) - {"ipv4_netmask"}))
@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda v: repr(v)[:24])
def test_wrong_types_in_any_field_are_refused(field: str, value: Any) -> None:
    body = dict(FIELDS[field]) | {field: value}
    with pytest.raises(ConfigError):
        plan_from_bus(body)


@pytest.mark.parametrize("value", WRONG_TYPES + [None, 0, "", [], {}], ids=lambda v: repr(v)[:24])
def test_a_netmask_that_is_not_a_string_never_changes_the_plan(value: Any) -> None:
    """Missing or unusable ipv4_netmask: the /24 default, not whatever the value says
    (and not a refusal: the rest of the tun.start is good)."""
    plan = plan_from_bus(golden() | {"ipv4_netmask": value})
    assert plan.ipv4 == IPv4Interface("10.2.0.2/24")
    assert plan.ipv6 == IPv6Address("bbbb::2")


# what is left of the golden plan when the field is null: (IPv6 address, IPv4 interface)
NULL_LEAVES = {
    "ipv6_prefix": ("bbbb::2", "10.2.0.2/24"),  # the default prefix
    "ipv6_host": (None, "10.2.0.2/24"),
    "ipv4_address": ("bbbb::2", None),
    "ipv4_host": ("bbbb::2", None),
    "ipv4_netmask": ("bbbb::2", "10.2.0.2/24"),
    "re_route_packets_prefix": ("bbbb::2", "10.2.0.2/24"),
    "re_route_packets_host": ("bbbb::2", "10.2.0.2/24"),
    "re_route_packets_if": ("bbbb::2", "10.2.0.2/24"),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_null_fields_mean_missing(field: str) -> None:
    """A null field is read as an absent one: same plan, and the rest still configured."""
    body = dict(FIELDS[field]) | {field: None}
    without = {k: v for k, v in FIELDS[field].items() if k != field}
    plan = plan_from_bus(body)
    assert plan == plan_from_bus(without)
    ipv6, ipv4 = NULL_LEAVES[field]
    assert plan.ipv6 == (IPv6Address(ipv6) if ipv6 else None)
    assert plan.ipv4 == (IPv4Interface(ipv4) if ipv4 else None)


def test_too_many_reroute_prefixes_are_refused() -> None:
    many = [f"{i:x}:1" for i in range(0x2000, 0x2000 + 17)]
    with pytest.raises(ConfigError):
        plan_from_bus(golden() | {"re_route_packets_prefix": many})
    plan = plan_from_bus(golden() | {"re_route_packets_prefix": many[:16]})
    assert len(plan.reroute_prefixes) == 16


def test_one_bad_entry_in_a_list_of_prefixes_refuses_the_whole_start() -> None:
    with pytest.raises(ConfigError):
        plan_from_bus(golden() | {"re_route_packets_prefix": ["cccc", "::/0"]})


# -- property: any JSON-like body over the known keys --------------------------------------

KEYS = [
    "name",
    "ipv6_prefix",
    "ipv6_host",
    "ipv6_no_forwarding",
    "ipv4_host",
    "ipv4_address",
    "ipv4_network",
    "ipv4_netmask",
    "re_route_packets_if",
    "re_route_packets_prefix",
    "re_route_packets_host",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "bbbb",
            "cccc",
            "2",
            ":1",
            "0",
            "10.2.0.2",
            "10.2.0.2/24",
            "255.255.255.0",
            "24",
            "eth1",
            "::/0",
            "0.0.0.0/0",
            "ff02",
            "cccc::/64",
            "bbbb; touch /tmp/pwned",
            "1:2:3:4:5",
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)


any_body = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=len(KEYS))
# the golden body with one to three fields replaced: mostly valid, so plans come out too
near_golden = st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=3).map(
    lambda changes: golden() | changes
)


@settings(max_examples=150, deadline=None)
@given(any_body | near_golden)
def test_any_body_gives_a_plan_or_config_error(body: dict[str, Any]) -> None:
    try:
        plan = plan_from_bus(body)
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(plan, AddressPlan)
    # whatever was accepted is configurable: the addresses compute and are sane
    interfaces = plan.interfaces()
    assert interfaces
    for iface in interfaces:
        assert not iface.ip.is_multicast and not iface.ip.is_unspecified
    for net in plan.reroute_prefixes:
        assert net.prefixlen >= 8 and not net.is_multicast
    assert plan.ipv6_prefix.prefixlen <= 64
    assert plan.ipv6_prefix.prefixlen >= 16
    if plan.reroute_if is not None:
        assert check_ifname(plan.reroute_if) == plan.reroute_if
