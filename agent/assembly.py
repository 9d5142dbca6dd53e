"""`agent connect`, from its parsed options to a running agent: decide, then build.

`plan(args, urls, serial)` is pure: from the command line's values (click has parsed and
checked each one) it decides everything that depends on several of them (the address
plan or waiting for a tun.start, the re-route options and the port that owns those
networks, the serial line's role, the 802.15.4 probe mode with no TUN at all) and returns
a frozen `Setup`, or raises `PlanError` (a ConfigError: one line, naming the option when
there is one). Property tests check it (tests/test_assembly.py).

`ports(setup, counters)` and `build(setup)` are the one place the agent's ports are
built (the TUN, the bus port with its connection, the interface of a re-route plan, the
serial line); the agent builds none (agent/node.py). The probe mode builds the probe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.bus.url import AmqpUrl
from agent.config import AddressPlan, ConfigError, IPNetwork, default_plan
from agent.reroute.options import RerouteOptions
from agent.slip.options import MODE_802154, SerialChoice, serial_reroute

if TYPE_CHECKING:
    from agent.counters import Counters
    from agent.node import Agent, Ports

SERIAL_VALUES = ("serial_port", "baudrate", "rtscts", "xonxoff", "slip_pace_us",
                 "slip_leading_end", "slip_framing", "serial_mode")


class PlanError(ConfigError):
    """Options that do not go together; `option` names the one to change, if one."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class ConnectArgs:
    """What `agent connect` was given, each value parsed and checked on its own (click)."""

    name: str
    ipv6_prefix: str | None = None
    ipv6_host: str | None = None
    ipv4_address: str | None = None
    bootstrap: bool | None = None  # --force-bootstrap / --wait-bootstrap / neither
    tun_name: str | None = None
    mtu: int = 1500
    netns: str | None = None
    gro: bool = True
    accept_any: bool = False
    wire: str = "auto"
    pcap: str | None = None
    reroute_if: str | None = None
    reroute_prefixes: tuple[IPNetwork, ...] = ()
    reroute_host: str | None = None
    url: tuple[str, ...] = ()
    url_file: str | None = None
    exchange: str = "amq.topic"
    ca_file: str | None = None
    stats: float = 0.0
    verbose: int = 0
    quiet: int = 0
    serial_port: str | None = None
    baudrate: int | None = None
    rtscts: bool = False
    xonxoff: bool = False
    slip_pace_us: int = 0
    slip_leading_end: bool = False
    slip_framing: str | None = None
    serial_mode: str = "ip"
    metrics: tuple[str, int] | None = None  # --metrics HOST:PORT (agent.inspect.metrics)

    def serial_values(self) -> dict[str, Any]:
        """The --serial-* values, for agent.slip.options.serial_choice."""
        return {key: getattr(self, key) for key in SERIAL_VALUES}


@dataclass(frozen=True)
class TunSettings:
    name: str | None  # None: the kernel's tunN
    mtu: int
    netns: str | None
    gro: bool


@dataclass(frozen=True)
class Setup:
    """What `agent connect` runs, decided by `plan`."""

    name: str
    urls: tuple[AmqpUrl, ...]
    exchange: str
    ca_file: str | None
    stats: float
    probe: SerialChoice | None = None
    """802.15.4 mode: the serial probe alone (line <-> bus); no TUN, no agent"""
    address: AddressPlan | None = None
    """the TUN's addresses, re-route options applied; None: wait for a tun.start"""
    tun: TunSettings | None = None
    reroute: RerouteOptions = RerouteOptions()
    serial: SerialChoice | None = None
    """IP mode: the line is the port "serial", owner of the re-route networks"""
    accept_any: bool = False
    wire: str = "auto"
    pcap: str | None = None
    verbose: int = 0
    metrics: tuple[str, int] | None = None
    """--metrics HOST:PORT: Prometheus' /metrics served beside the agent"""
    warnings: tuple[str, ...] = ()


def plan(args: ConnectArgs, urls: tuple[AmqpUrl, ...], serial: SerialChoice | None) -> Setup:
    """Decide what `agent connect args` runs (pure). PlanError / ConfigError if nothing fits."""
    base = Setup(args.name, urls, args.exchange, args.ca_file, args.stats)
    if serial is not None and serial.mode == MODE_802154:
        if args.pcap:
            raise PlanError(
                "--pcap is not available in 802.15.4 serial mode; capture from the bus "
                "with: agent sniff --name NAME --pcap FILE"
            )
        return dataclasses.replace(base, probe=serial)
    address = default_plan(args.name, args.ipv6_prefix, args.ipv6_host, args.ipv4_address)
    bootstrap = address is not None if args.bootstrap is None else args.bootstrap
    if bootstrap and address is None:
        raise PlanError(
            f"no address plan for {args.name!r}: give --ipv6-host and/or --ipv4-address, "
            "or use --wait-bootstrap to take them from a tun.start"
        )
    reroute = serial_reroute(
        serial, RerouteOptions(args.reroute_prefixes, args.reroute_host, args.reroute_if)
    )
    if args.reroute_if is not None and not args.reroute_prefixes and bootstrap:
        raise PlanError(
            "--re-route-if needs at least one --re-route-prefix (the network behind it)"
        )
    warnings: tuple[str, ...] = ()
    if serial is not None and not reroute.prefixes:
        warnings = ("no --re-route-prefix: nothing is routed to the serial port until a "
                    "tun.start names one (packets from the line still reach the session)",)
    return dataclasses.replace(
        base,
        address=reroute.apply(address) if address is not None and bootstrap else None,
        tun=TunSettings(args.tun_name, args.mtu, args.netns, args.gro),
        reroute=reroute,
        serial=serial,
        accept_any=args.accept_any,
        wire=args.wire,
        pcap=args.pcap,
        verbose=args.verbose,
        metrics=args.metrics,
        warnings=warnings,
    )


# -- building (I/O from here on) ------------------------------------------------------------


def ports(setup: Setup, counters: Counters) -> Ports:
    """The agent's ports: the serial line opened now (SerialPortError if it cannot be),
    the bus port wired, the TUN and the interface made when the address plan is known."""
    from agent.bus.port import agent_bus_port
    from agent.node import Ports
    from agent.reroute.iface import open_for_plan
    from agent.slip.options import serial_link
    from agent.tun.device import Tun

    tun = setup.tun
    assert tun is not None, "the probe mode has no agent"

    def make_tun() -> Tun:
        made = Tun.create(tun.name, tun.netns)
        made.counters, made.gro = counters, tun.gro
        return made

    return Ports(
        bus=lambda owner: agent_bus_port(
            setup.name, list(setup.urls), setup.exchange, setup.ca_file, setup.wire, owner
        ),
        tun=make_tun,
        iface=lambda address: open_for_plan(address, tun.netns),
        others=(serial_link(setup.serial, counters),) if setup.serial is not None else (),
    )


def build(setup: Setup) -> Callable[[], Coroutine[Any, Any, int]]:
    """The run of what setup says: the agent with its ports, or the 802.15.4 probe.
    Raises SerialPortError (the device), OSError (the --pcap file): before anything runs."""
    if setup.probe is not None:
        from agent.slip.options import probe_runner

        trace = None
        if setup.verbose:  # frame lines read down to 6LoWPAN / IPv6; without -v: no cost
            from agent.inspect.taps import WpanTrace

            trace = WpanTrace(full_dump=setup.verbose >= 2)
        probe = probe_runner(
            setup.name, list(setup.urls), setup.probe, setup.exchange, setup.ca_file,
            setup.stats, trace,
        )
        return lambda: probe
    agent = build_agent(setup)
    address = setup.metrics
    if address is None:
        return agent.run
    from agent.inspect.metrics import AgentCollector, run_with_metrics

    collector = AgentCollector(agent)
    return lambda: run_with_metrics(agent, address, collector)


def build_agent(setup: Setup) -> Agent:
    from agent.counters import Counters
    from agent.node import Agent, AgentOptions

    assert setup.tun is not None
    counters = Counters()
    opts = AgentOptions(
        name=setup.name,
        plan=setup.address,
        mtu=setup.tun.mtu,
        netns=setup.tun.netns,
        stats_interval=setup.stats,
        accept_any=setup.accept_any,
        wire=setup.wire,
        reroute=setup.reroute,
    )
    agent = Agent(opts, ports(setup, counters), counters)
    if setup.verbose or setup.pcap:  # packet trace, capture taps (agent.inspect.taps)
        from agent.inspect.taps import install_cli

        install_cli(agent, setup.verbose, setup.pcap)
    return agent
