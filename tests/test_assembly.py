"""`agent connect`'s decisions (agent.assembly.plan, pure): property tests, and the agent
assembled from handed-in ports (fakes), no root, no broker."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agent.assembly import ConnectArgs, PlanError, Setup, plan
from agent.bus.url import parse_url
from agent.config import ConfigError, parse_reroute_prefix
from agent.slip.options import MODE_802154, MODE_IP, SerialChoice
from agent.slip.port import SerialSettings
from agent.switch import SERIAL
from tests.conftest import FakePort, make_agent

URLS = (parse_url("amqp://guest:guest@127.0.0.1/s1"),)
CCCC = parse_reroute_prefix("cccc")

serials = st.none() | st.builds(
    SerialChoice, st.sampled_from([MODE_IP, MODE_802154]),
    st.builds(SerialSettings, st.just("/dev/x")),
)
prefixes = st.lists(
    st.sampled_from(["cccc", "dddd::/64", "192.0.2.0/24", "10.9.0.0/16"]).map(parse_reroute_prefix),
    max_size=3, unique=True,
).map(tuple)
texts = st.none() | st.text(max_size=12) | st.sampled_from(["bbbb", "aaaa:1", "5", "::1",
                                                            "10.2.0.7", "10.2.0.7/16", "zz"])
names = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True) | st.integers(0, 300).map(
    lambda n: f"agent_{n}")
any_args = st.builds(
    ConnectArgs,
    name=names,
    ipv6_prefix=texts,
    ipv6_host=texts,
    ipv4_address=texts,
    bootstrap=st.none() | st.booleans(),
    reroute_if=st.none() | st.sampled_from(["eth1", "veth0"]),
    reroute_prefixes=prefixes,
    reroute_host=st.none() | st.sampled_from(["1", "cccc::1"]),
    pcap=st.none() | st.just("x.pcapng"),
)


def _plan(args: ConnectArgs, serial: SerialChoice | None = None) -> Setup | ConfigError:
    try:
        return plan(args, URLS, serial)
    except ConfigError as exc:  # anything else fails the test
        assert str(exc) and "\n" not in str(exc)
        return exc


@given(st.integers(1, 254), st.none() | st.just(True))
def test_agent_n_gets_bbbb_n_and_10_2_0_n(n: int, bootstrap: bool | None) -> None:
    setup = plan(ConnectArgs(name=f"agent_{n}", bootstrap=bootstrap), URLS, None)
    assert setup.address is not None
    assert setup.address.ipv6 == ipaddress.IPv6Address(f"bbbb::{n}")
    assert setup.address.ipv4 == ipaddress.IPv4Interface(f"10.2.0.{n}/24")
    assert setup.tun is not None and setup.probe is None


@given(st.integers(1, 254), st.sampled_from(["aaaa", "cafe:1"]), st.integers(1, 250))
def test_told_otherwise_wins(n: int, prefix: str, v4: int) -> None:
    setup = plan(ConnectArgs(name=f"agent_{n}", ipv6_prefix=prefix, ipv4_address=f"10.9.0.{v4}"),
                 URLS, None)
    assert setup.address is not None
    assert setup.address.ipv6 == ipaddress.IPv6Address(f"{prefix}::{n}")
    assert setup.address.ipv4 == ipaddress.IPv4Interface(f"10.9.0.{v4}/24")


@given(any_args, serials)
def test_wait_bootstrap_never_has_a_plan(args: ConnectArgs, serial: SerialChoice | None) -> None:
    out = _plan(dataclasses.replace(args, bootstrap=False), serial)
    assert isinstance(out, ConfigError) or out.address is None


@given(any_args, serials)
def test_any_options_give_a_setup_or_one_config_error(
    args: ConnectArgs, serial: SerialChoice | None
) -> None:
    out = _plan(args, serial)
    if isinstance(out, ConfigError):
        return
    assert out.name == args.name and out.urls == URLS
    if serial is not None and serial.mode == MODE_802154:
        assert out.probe == serial and out.tun is None and out.address is None  # no TUN
        assert not args.pcap
        return
    assert out.probe is None and out.tun is not None
    if args.bootstrap and out.address is None:
        raise AssertionError("--force-bootstrap without an address plan")
    if out.address is not None and args.reroute_prefixes:
        assert out.address.reroute_prefixes == args.reroute_prefixes  # the command line wins
    if serial is not None:  # IP mode: the line owns the re-route networks
        assert out.reroute.port == SERIAL and args.reroute_if is None
        assert bool(out.warnings) == (not args.reroute_prefixes)
    elif args.reroute_if is not None and out.address is not None:
        assert args.reroute_prefixes and out.address.reroute_if == args.reroute_if


@given(any_args)
def test_802154_never_builds_a_tun(args: ConnectArgs) -> None:
    serial = SerialChoice(MODE_802154, SerialSettings("/dev/x"))
    out = _plan(args, serial)
    assert isinstance(out, PlanError) and args.pcap or (
        isinstance(out, Setup) and out.tun is None and out.address is None
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (ConnectArgs(name="coap_server", bootstrap=True), ["no address plan", "--wait-bootstrap"]),
        (ConnectArgs(name="agent_1", reroute_if="eth1"), ["--re-route-if", "--re-route-prefix"]),
        (ConnectArgs(name="agent_1", ipv4_address="10.2.0.300"), ["IPv4"]),
    ],
)
def test_plan_errors_are_one_line(args: ConnectArgs, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        plan(args, URLS, None)
    assert all(w in str(info.value) for w in words), info.value


def test_serial_with_re_route_if_is_refused() -> None:
    serial = SerialChoice(MODE_IP, SerialSettings("/dev/x"))
    args = ConnectArgs(name="agent_1", reroute_if="eth1", reroute_prefixes=(CCCC,))
    with pytest.raises(ConfigError, match="--re-route-if"):
        plan(args, URLS, serial)


def test_cli_connect_hands_the_parsed_options_to_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """What cli.connect builds is what plan() decides for the same options."""
    import agent.assembly
    import agent.cli as cli_module

    seen: list[Setup] = []

    def build(setup: Setup):  # type: ignore[no-untyped-def]
        seen.append(setup)

        async def run() -> int:
            return 0

        return run

    monkeypatch.setattr(agent.assembly, "build", build)
    monkeypatch.setattr(cli_module, "setup_logging", lambda *a: None)
    monkeypatch.setattr(cli_module, "_check_privileges", lambda *a: None)  # any user
    result = CliRunner().invoke(cli_module.cli, [
        "connect", "--url", "amqp://guest:guest@127.0.0.1/s1", "--name", "agent_7",
        "--re-route-prefix", "cccc", "--mtu", "1400", "--wire", "json"])
    assert result.exit_code == 0, result.output
    want = plan(ConnectArgs(name="agent_7", reroute_prefixes=(CCCC,), mtu=1400, wire="json"),
                URLS, None)
    assert seen == [want]


def test_the_agent_opens_and_closes_what_it_is_handed() -> None:
    """Ports handed in are opened at start, named by the switch, routed what they own,
    and closed at the end, the TUN too (made by its maker once the plan is known)."""
    from agent.reroute.options import RerouteOptions

    serial = FakePort(SERIAL)
    rig = make_agent("agent_3", others=(serial,), reroute=RerouteOptions((CCCC,), port=SERIAL))

    async def go() -> None:
        agent = rig.agent
        assert agent.tun is None and serial.networks == [CCCC]
        await agent.start()
        assert agent.tun is rig.tun and rig.tun.plan is not None
        assert rig.tun.plan.ipv6 == ipaddress.IPv6Address("bbbb::3") and rig.tun.mtu == 1500
        assert serial.key == SERIAL and rig.tun.key == "tun" and rig.bus.started
        assert set(agent.ports) == {"bus", "tun", SERIAL}
        await agent.cleanup()
        assert serial.closed and rig.tun.closed and rig.bus.closed and agent.tun is None

    asyncio.run(go())
