"""Names, address plan and validation of everything a user or the bus supplies.

Pure: no I/O. Every value that ends up in a netlink request or a routing key
passes through one of these functions first.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_IPV6_PREFIX = "bbbb"
DEFAULT_IPV4_NETWORK = ipaddress.IPv4Network("10.2.0.0/24")
MIN_MTU, MAX_MTU = 1280, 65535

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AGENT_N_RE = re.compile(r"agent_([0-9]{1,5})")
_HEXTET_RE = re.compile(r"[0-9A-Fa-f]{1,4}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")


class ConfigError(ValueError):
    """A user- or bus-supplied value is not acceptable; str() is a one-line reason."""

    def __init__(self, message: str) -> None:
        # hostile values can be huge: keep the log line short
        super().__init__(message if len(message) <= 200 else message[:197] + "...")


def check_name(name: str) -> str:
    """An agent name must be one routing-key word: letters, digits, '_' and '-'."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid agent name {name!r}: use 1-64 letters, digits, '_' or '-' "
            "(it is one word of AMQP routing keys)"
        )
    return name


def check_ifname(name: str) -> str:
    """A Linux interface name: 1-15 characters, no '/' or white space."""
    if not isinstance(name, str) or not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"invalid interface name {name!r}: 1-15 of [A-Za-z0-9_.:-]")
    return name


def check_mtu(mtu: int) -> int:
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not MIN_MTU <= mtu <= MAX_MTU:
        raise ConfigError(f"invalid MTU {mtu!r}: must be {MIN_MTU} to {MAX_MTU}")
    return mtu


def _hextets(text: str, what: str, most: int) -> list[str]:
    parts = text.split(":")
    if not 1 <= len(parts) <= most or not all(_HEXTET_RE.fullmatch(p) for p in parts):
        raise ConfigError(f"invalid {what} {text!r}: expected up to {most} hex groups like 'bbbb'")
    return [p.lower() for p in parts]


def parse_ipv6_prefix(text: Any) -> ipaddress.IPv6Network:
    """'bbbb' or '2001:db8' (leading hextets of a /64) or a CIDR 'bbbb::/64'."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid IPv6 prefix {text!r}")
    text = text.strip()
    if "/" in text:
        try:
            net = ipaddress.IPv6Network(text, strict=True)
        except ValueError as exc:
            raise ConfigError(f"invalid IPv6 prefix {text!r}: {exc}") from None
        if net.prefixlen > 64:
            raise ConfigError(f"invalid IPv6 prefix {text!r}: the session prefix is at most /64")
        if net.prefixlen < 16:
            raise ConfigError(f"invalid IPv6 prefix {text!r}: too wide (at least /16)")
        return net
    groups = _hextets(text.rstrip(":"), "IPv6 prefix", 4)
    return ipaddress.IPv6Network(":".join(groups) + "::/64")


def parse_ipv6_host(text: Any) -> str:
    """The interface id, colons at the ends stripped ('1', ':1', '0:0:0:1')."""
    if isinstance(text, int) and not isinstance(text, bool) and 0 <= text <= 9999:
        text = str(text)  # as the original did: 12 -> "12" -> bbbb::12
    if not isinstance(text, str):
        raise ConfigError(f"invalid IPv6 host id {text!r}")
    groups = _hextets(text.strip().strip(":"), "IPv6 host id", 4)
    return ":".join(groups)


def ipv6_address(prefix: ipaddress.IPv6Network, host: str) -> ipaddress.IPv6Address:
    """Combine a /64 prefix and a host id: ('bbbb::/64', '2') -> bbbb::2."""
    iid = int(ipaddress.IPv6Address("::" + host))
    addr = ipaddress.IPv6Address(int(prefix.network_address) | iid)
    if addr not in prefix or iid == 0:
        raise ConfigError(f"host id {host!r} does not fit in {prefix}")
    return addr


def parse_ipv4_address(text: Any) -> ipaddress.IPv4Interface:
    """'10.2.0.2' (a /24 is assumed) or '10.2.0.2/24'."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid IPv4 address {text!r}")
    text = text.strip()
    try:
        iface = ipaddress.IPv4Interface(text if "/" in text else text + "/24")
    except ValueError as exc:
        raise ConfigError(f"invalid IPv4 address {text!r}: {exc}") from None
    ip = iface.ip
    bcast = iface.network.broadcast_address
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == bcast:
        raise ConfigError(f"invalid IPv4 address {text!r}: not a unicast host address")
    if iface.network.prefixlen < 8:
        raise ConfigError(f"invalid IPv4 address {text!r}: network too large")
    return iface


def parse_reroute_prefix(text: Any) -> IPNetwork:
    """The original's short form ('cccc' = cccc::/64) or any IPv6/IPv4 CIDR."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid re-route prefix {text!r}")
    text = text.strip()
    net: IPNetwork
    if "/" not in text:
        net = parse_ipv6_prefix(text)
    else:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ConfigError(f"invalid re-route prefix {text!r}: {exc}") from None
    minimum = 8 if net.version == 4 else 16
    if net.prefixlen < minimum or net.is_multicast or net.is_loopback or net.is_link_local:
        raise ConfigError(f"refused re-route prefix {text!r}: too wide or not routable")
    return net


def prefix_wire_form(net: IPNetwork) -> str:
    """How a re-route prefix is announced: the short form for IPv6 /64s, else CIDR."""
    if net.version == 6 and net.prefixlen == 64:
        groups = net.network_address.exploded.split(":")[:4]
        while len(groups) > 1 and groups[-1] == "0000":
            groups.pop()
        return ":".join(g.lstrip("0") or "0" for g in groups)
    return str(net)


@dataclass(frozen=True)
class AddressPlan:
    """The addresses an agent puts on its TUN."""

    ipv6_prefix: ipaddress.IPv6Network
    ipv6_host: str | None
    ipv4: ipaddress.IPv4Interface | None
    reroute_prefixes: tuple[IPNetwork, ...] = ()
    reroute_host: str | None = None
    reroute_if: str | None = None

    @property
    def ipv6(self) -> ipaddress.IPv6Address | None:
        if self.ipv6_host is None:
            return None
        return ipv6_address(self.ipv6_prefix, self.ipv6_host)

    @property
    def link_local(self) -> ipaddress.IPv6Address | None:
        if self.ipv6_host is None:
            return None
        return ipv6_address(ipaddress.IPv6Network("fe80::/64"), self.ipv6_host)

    def interfaces(self) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """Addresses with prefix lengths, as configured on the TUN."""
        out: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        if self.ipv6 is not None and self.link_local is not None:
            plen = self.ipv6_prefix.prefixlen
            out.append(ipaddress.IPv6Interface(f"{self.ipv6}/{plen}"))
            out.append(ipaddress.IPv6Interface(f"{self.link_local}/64"))
        if self.ipv4 is not None:
            out.append(self.ipv4)
        return out

    def owns(self) -> list[IPNetwork]:
        """The addresses and networks downlink packets may be addressed to."""
        nets: list[IPNetwork] = [ipaddress.ip_network(i.ip) for i in self.interfaces()]
        if self.ipv4 is not None:
            nets.append(ipaddress.ip_network(self.ipv4.network.broadcast_address))
        nets.extend(self.reroute_prefixes)
        return nets


def default_plan(
    name: str,
    ipv6_prefix: str | None = None,
    ipv6_host: str | None = None,
    ipv4_address: str | None = None,
) -> AddressPlan | None:
    """agent_N gets bbbb::N/64, fe80::N/64 and 10.2.0.N/24; others need explicit values.

    Returns None when nothing is known (the agent must wait for a tun.start).
    """
    prefix = parse_ipv6_prefix(ipv6_prefix or DEFAULT_IPV6_PREFIX)
    host = parse_ipv6_host(ipv6_host) if ipv6_host is not None else None
    ipv4 = parse_ipv4_address(ipv4_address) if ipv4_address is not None else None
    match = _AGENT_N_RE.fullmatch(name)
    if match and int(match.group(1)) > 0:
        n = int(match.group(1))
        if host is None:
            host = parse_ipv6_host(str(n))
        if ipv4 is None and ipv6_host is None and 1 <= n <= 254:
            ipv4 = ipaddress.IPv4Interface(f"{DEFAULT_IPV4_NETWORK.network_address + n}/24")
    if host is None and ipv4 is None:
        return None
    plan = AddressPlan(ipv6_prefix=prefix, ipv6_host=host, ipv4=ipv4)
    if host is not None:
        plan.ipv6  # validates that the host fits  # noqa: B018
    return plan


def plan_from_bus(body: dict[str, Any]) -> AddressPlan:
    """Validate every field of a tun.start / tun.started body before anything is configured.

    Raises ConfigError with the first offending field.
    """
    if not isinstance(body, dict):
        raise ConfigError("tun.start body is not a JSON object")
    prefix = parse_ipv6_prefix(body.get("ipv6_prefix") or DEFAULT_IPV6_PREFIX)
    raw_host = body.get("ipv6_host")
    host = parse_ipv6_host(raw_host) if raw_host not in (None, "") else None
    raw_v4 = body.get("ipv4_address") or body.get("ipv4_host")
    ipv4 = None
    if raw_v4 not in (None, ""):
        mask = body.get("ipv4_netmask")
        if isinstance(raw_v4, str) and "/" not in raw_v4 and isinstance(mask, str) and mask:
            try:
                plen = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            except ValueError:
                raise ConfigError(f"invalid ipv4_netmask {mask!r}") from None
            raw_v4 = f"{raw_v4}/{plen}"
        ipv4 = parse_ipv4_address(raw_v4)
    if host is None and ipv4 is None:
        raise ConfigError("tun.start gives neither ipv6_host nor ipv4_address")
    reroute: tuple[IPNetwork, ...] = ()
    raw_prefix = body.get("re_route_packets_prefix")
    if raw_prefix not in (None, ""):
        items = raw_prefix if isinstance(raw_prefix, list) else [raw_prefix]
        if len(items) > 16:
            raise ConfigError("too many re_route_packets_prefix entries")
        reroute = tuple(parse_reroute_prefix(p) for p in items)
    rhost = body.get("re_route_packets_host")
    if rhost not in (None, ""):
        rhost = _check_reroute_host(rhost)
    else:
        rhost = None
    rif = body.get("re_route_packets_if")
    rif = check_ifname(rif) if rif not in (None, "") else None
    plan = AddressPlan(prefix, host, ipv4, reroute, rhost, rif)
    if host is not None:
        plan.ipv6  # noqa: B018
    return plan


def _check_reroute_host(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"invalid re_route_packets_host {value!r}")
    value = value.strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return parse_ipv6_host(value)


def parse_reroute_host(text: Any) -> str:
    """--re-route-host: the device's address ('cccc::1', '192.0.2.1') or its id ('1')."""
    return _check_reroute_host(text)
