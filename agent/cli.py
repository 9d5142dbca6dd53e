"""Command line: `agent connect`, `agent router`, `agent sniff`. Parse, then run what
agent/assembly.py plans and builds (connect) or the router / sniffer."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from agent.bus.url import AmqpUrl, UrlError, by_vhost, parse_urls, resolve_url
from agent.config import (
    ConfigError,
    IPNetwork,
    check_ifname,
    check_name,
    parse_reroute_host,
    parse_reroute_prefix,
)
from agent.slip.options import (
    BAUDRATE_ENV,
    FRAMINGS,
    MAX_BAUD,
    MIN_BAUD,
    MODE_802154,
    MODE_IP,
    SERIAL_PORT_ENV,
)
from agent.slip.port import DEFAULT_BAUDRATE

log = logging.getLogger("agent")
_EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,127}")


def setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO
    if quiet:
        level = logging.WARNING if quiet == 1 else logging.ERROR
    if verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # per-packet lines (agent.inspect.taps, router, sniff): INFO with -v, dumps (DEBUG) with -vv
    packets = logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING
    logging.getLogger("agent.packets").setLevel(packets)
    for noisy in ("pika", "pyroute2", "asyncio", "scapy"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL if verbose < 3 else logging.DEBUG)


def _url(
    url: tuple[str, ...] | str | None, url_file: str | None, one_vhost: bool = True
) -> list[AmqpUrl]:
    if url_file:
        try:
            with open(url_file) as f:
                url = ";".join(f.read().split())  # ';' or one URL per line
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {url_file}: {exc.strerror}", param_hint="--url-file"
            ) from None
    try:
        return parse_urls(resolve_url(url or None), one_vhost)
    except UrlError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None


def _optional(check: Callable[[str], Any], errors: type[Exception] = ConfigError) -> Any:
    """A click callback: None stays None, else check(value); its error as a usage error."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except errors as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


_name = _optional(check_name)
_ifname = _optional(check_ifname)
_reroute_host = _optional(parse_reroute_host)


def _usage(exc: ConfigError) -> click.UsageError:
    """An option error of a module (no click there) as click's one-line usage error."""
    option = getattr(exc, "option", None)  # SerialOptionError, PlanError: which one
    if option:
        return click.BadParameter(str(exc), param_hint=option)
    return click.UsageError(str(exc))


def _exchange(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not _EXCHANGE_RE.fullmatch(value):
        raise click.BadParameter(f"invalid exchange name {value!r}")
    return value


def _reroute_prefixes(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[IPNetwork, ...]:
    try:
        return tuple(dict.fromkeys(parse_reroute_prefix(v) for v in values))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _metrics(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from agent.inspect.metrics import MetricsError, parse_address

    try:
        return parse_address(value)
    except MetricsError as exc:
        raise click.BadParameter(str(exc)) from None


metrics_option = click.option(
    "--metrics",
    default=None,
    callback=_metrics,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (docs/operating.md).",
)


def _run_metered(
    service: Any, address: tuple[str, int] | None, collector: Callable[[Any], Any]
) -> None:
    """Run a service, with --metrics served beside it when asked (collector: a class of
    agent.inspect.metrics, given the service; prometheus_client is imported only then)."""
    if address is None:
        _run(service.run)
        return
    from agent.inspect.metrics import run_with_metrics

    _run(lambda: run_with_metrics(service, address, collector(service)))


def _collector(kind: str) -> Callable[[Any], Any]:
    def make(service: Any) -> Any:
        from agent.inspect import metrics

        return getattr(metrics, kind)(service)

    return make


def _run(coro_factory) -> None:  # type: ignore[no-untyped-def]
    """Run one service to its end; its cleanup has run by the time this returns."""
    try:
        code = asyncio.run(coro_factory())
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug: cleanup already ran; one line, details with -vv
        log.error("internal error: %s: %s (run with -vv for the traceback)",
                  type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        code = 1
    sys.exit(code)


url_options = [
    click.option(
        "--url",
        envvar=None,
        multiple=True,
        help="AMQP URL amqp[s]://user:password@host[:port]/vhost; repeat it or separate "
        "URLs with ';' for the nodes of a cluster, tried in turn "
        "(default: env AMQP_URL, else amqp://guest:guest@localhost/).",
    ),
    click.option(
        "--url-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Read the AMQP URL(s, ';'-separated) from this file (keeps the password out of ps).",
    ),
    click.option("--exchange", default="amq.topic", show_default=True, callback=_exchange),
    click.option(
        "--ca-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="CA certificates for amqps:// (default: the system's).",
    ),
    click.option(
        "--stats",
        "stats",
        type=click.FloatRange(min=0),
        default=0.0,
        help="Log a counters line every N seconds (0: off).",
    ),
    click.option("-v", "--verbose", count=True, help="-v: one line per packet; -vv: debug."),
    click.option("-q", "--quiet", count=True, help="Only warnings (-qq: only errors)."),
]


# A SLIP serial device (agent/slip/options.py validates, agent/slip/link.py is the port)
serial_options = [
    click.option(
        "--serial-port",
        default=None,
        metavar="DEVICE",
        help="Bridge a SLIP serial device, e.g. /dev/ttyUSB0 (802154 mode: default env "
        f"{SERIAL_PORT_ENV}).",
    ),
    click.option(
        "--baudrate",
        type=click.IntRange(MIN_BAUD, MAX_BAUD),
        default=None,
        help=f"Serial line speed (default: env {BAUDRATE_ENV}, else {DEFAULT_BAUDRATE}).",
    ),
    click.option("--rtscts", is_flag=True, help="RTS/CTS (hardware) flow control on the line."),
    click.option("--xonxoff", is_flag=True, help="XON/XOFF (software) flow control on the line."),
    click.option(
        "--slip-pace-us",
        type=click.IntRange(0, 1_000_000),
        default=0,
        metavar="N",
        help="Pause N microseconds between frames sent to the line, after each frame's "
        "transmission time (for motes that drop back-to-back frames).",
    ),
    click.option(
        "--slip-framing",
        type=click.Choice(list(FRAMINGS)),
        default=None,
        help="Frames sent to the line: both = END payload END (the default: a mote that "
        "boots or resets loses nothing; RIOT since 2024, Contiki-NG), end-only = payload END "
        "(older RIOT releases).",
    ),
    click.option("--slip-leading-end", is_flag=True, hidden=True),  # old flag: the default now
    click.option(
        "--serial-mode",
        type=click.Choice([MODE_IP, MODE_802154]),
        default=MODE_IP,
        show_default=True,
        help="ip: IP packets in SLIP, the line is a re-route port; 802154: raw 802.15.4 "
        "frames on the 802154.serial bus keys, no TUN.",
    ),
]


# The network behind this agent; shared by every re-route port (interface, serial line).
reroute_options = [
    click.option(
        "--re-route-if",
        "--re-route-packets-if",
        "reroute_if",
        default=None,
        callback=_ifname,
        help="Network interface the --re-route-prefix networks are reached through "
        "(e.g. eth1); packets between them and the session are forwarded by the agent.",
    ),
    click.option(
        "--re-route-prefix",
        "--re-route-packets-prefix",
        "reroute_prefixes",
        multiple=True,
        callback=_reroute_prefixes,
        help="A network behind this agent: 'cccc' (= cccc::/64) or an IPv6/IPv4 CIDR "
        "such as 192.0.2.0/24 (repeatable). Announced in tun.started.",
    ),
    click.option(
        "--re-route-host",
        "--re-route-packets-host",
        "reroute_host",
        default=None,
        callback=_reroute_host,
        help="The device behind this agent: its address or its id in the prefix (e.g. 1). "
        "Announced in tun.started.",
    ),
]


def with_options(options):  # type: ignore[no-untyped-def]
    def deco(f):  # type: ignore[no-untyped-def]
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import agent

    python = f"Python {platform.python_version()}"
    found = agent.version()
    if found is None:
        where = os.path.dirname(os.path.abspath(agent.__file__))
        click.echo(f"agent: version unknown ({agent.DISTRIBUTION} is not installed; "
                   f"code from {where}), {python}")
    else:
        click.echo(f"agent {found} ({agent.DISTRIBUTION}, {python})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version (of the installed package) and exit.",
)
def cli() -> None:
    """IP-over-AMQP tunnel for ioppytest interoperability sessions."""


def _check_privileges(netns: str | None, reroute_if: str | None) -> None:
    """Capabilities rather than uid 0 (CAP_NET_ADMIN; CAP_SYS_ADMIN for --netns; CAP_NET_RAW
    for --re-route-if) and /dev/net/tun, before anything starts: one line if missing."""
    from agent.tun.caps import check_connect
    from agent.tun.device import TunError, check_device

    problem = check_connect(netns, reroute_if)
    if problem:
        raise click.ClickException(problem)
    try:
        check_device()
    except TunError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option(
    "--name",
    required=True,
    callback=_name,
    help="Agent name on the bus (letters, digits, _ and -), e.g. agent_1.",
)
@click.option("--ipv6-prefix", default=None, help="Session /64 prefix, e.g. bbbb (default).")
@click.option("--ipv6-host", default=None, help="Interface id within the prefix, e.g. 2.")
@click.option(
    "--ipv4-address", default=None, help="IPv4 address (/24 unless given), e.g. 10.2.0.2."
)
@click.option(
    "--force-bootstrap/--wait-bootstrap",
    "bootstrap",
    default=None,
    help="Create the TUN now (default when the address plan is known) "
    "or wait for a tun.start from the bus.",
)
@click.option(
    "--tun-name",
    default=None,
    callback=_ifname,
    help="TUN interface name (default: the kernel picks tunN).",
)
@click.option("--mtu", type=click.IntRange(1280, 65535), default=1500, show_default=True)
@click.option("--netns", default=None, help="Put the TUN into this existing network namespace.")
@click.option(
    "--gro/--no-gro",
    default=True,
    show_default=True,
    help="Merge consecutive TCP segments addressed to this host into one before writing "
    "them into the TUN, as a network card's GRO does (fewer writes and ACKs; tcpdump on "
    "the TUN then shows segments larger than the MTU).",
)
@click.option(
    "--accept-any",
    is_flag=True,
    help="Write every packet from the bus into the TUN, not only those for this agent.",
)
@click.option(
    "--wire",
    type=click.Choice(["auto", "json", "fast"]),
    default="auto",
    show_default=True,
    help="Packet wire on the bus: ioppytest's JSON, our fast binary batches, or auto "
    "(fast once our router says it reads it; JSON otherwise).",
)
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every packet crossing the agent to this pcapng file "
    "(one interface per port; readable while the agent runs).",
)
@metrics_option
@with_options(reroute_options)
@with_options(serial_options)
@with_options(url_options)
def connect(**values: Any) -> None:
    """Create a TUN and carry its packets over the AMQP bus."""
    from agent.assembly import ConnectArgs, build, plan
    from agent.slip.options import serial_choice
    from agent.slip.port import SerialPortError

    args = ConnectArgs(**values)
    setup_logging(args.verbose, args.quiet)
    urls = tuple(_url(args.url, args.url_file))
    try:
        setup = plan(args, urls, serial_choice(args.serial_values(), args.mtu))
    except ConfigError as exc:  # PlanError, SerialOptionError (naming an option), the plan's
        raise _usage(exc) from None
    if setup.tun is not None and setup.tun.netns is not None:
        from agent.tun.netns import netns_path

        try:
            netns_path(setup.tun.netns)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--netns") from None
    for warning in setup.warnings:
        log.warning("%s", warning)
    try:
        runner = build(setup)  # the ports, the agent (or the 802.15.4 probe); nothing runs yet
    except SerialPortError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # the --pcap file
        from agent.inspect.taps import file_error_hint

        raise click.FileError(setup.pcap or "", hint=file_error_hint(exc)) from None
    if setup.probe is None:  # the 802.15.4 probe needs no TUN, so no privileges
        _check_privileges(args.netns, args.reroute_if)  # once the user's files are known good
    _run(runner)


def _links(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[list[str]]:
    groups = []
    for value in values:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if len(names) < 2:
            raise click.BadParameter(f"{value!r}: a link names at least two agents, a,b")
        for n in names:
            _name(_ctx, _param, n)
        groups.append(names)
    return groups


@cli.command()
@click.option(
    "--mirror",
    multiple=True,
    callback=lambda c, p, v: [_name(c, p, n) for n in v],
    help="Also copy every packet to this agent (repeatable), e.g. agent_TT.",
)
@click.option(
    "--links",
    multiple=True,
    callback=_links,
    help="Static links a,b (repeatable): forward only between linked agents.",
)
@click.option(
    "--wire",
    type=click.Choice(["auto", "json"]),
    default="auto",
    show_default=True,
    help="auto: offer our fast wire to agents that announce it; json: JSON to everyone.",
)
@metrics_option
@with_options(url_options)
def router(
    metrics: tuple[str, int] | None,
    mirror: list[str],
    links: list[list[str]],
    wire: str,
    url: tuple[str, ...],
    url_file: str | None,
    exchange: str,
    ca_file: str | None,
    stats: float,
    verbose: int,
    quiet: int,
) -> None:
    """Forward packets between the agents of a session.

    URLs that name different vhosts make one process route each of those sessions
    (URLs of the same vhost are that session's failover list).
    """
    setup_logging(verbose, quiet)
    sessions = by_vhost(_url(url, url_file, one_vhost=False))
    from agent.router.router import Router, RouterSet, RoutingTable

    def make(urls: list[AmqpUrl], **kwargs: Any) -> Router:
        table = (
            RoutingTable.with_links(links, mirror) if links else RoutingTable(mirrors=tuple(mirror))
        )
        return Router(urls, exchange, table, ca_file=ca_file, fast_wire=wire == "auto", **kwargs)

    if len(sessions) == 1:
        one = make(sessions[0], stats_interval=stats)
        _run_metered(one, metrics, _collector("RouterCollector"))
    else:
        many = RouterSet(sessions, make, stats_interval=stats)
        _run_metered(many, metrics, _collector("RouterCollector"))


def _filter(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    from agent.inspect.filter import Filter, FilterError  # only when sniffing

    return _optional(Filter, FilterError)(ctx, param, value)


@cli.command()
@click.option(
    "--name",
    "names",
    multiple=True,
    callback=lambda c, p, v: tuple(_name(c, p, n) for n in v),
    help="Only this agent's messages (repeatable; default: every agent).",
)
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the packets to this pcapng file (one interface per agent and direction).",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N packets.")
@click.option(
    "--filter",
    "packet_filter",
    default=None,
    callback=_filter,
    help="tcpdump-like filter on the packets, e.g. 'udp port 5683', 'icmp6 and host "
    "bbbb::1', 'coap or (ip and not icmp)' (see docs/debugging.md).",
)
@with_options(url_options)
def sniff(
    names: tuple[str, ...],
    pcap: str | None,
    count: int | None,
    packet_filter: object,
    url: tuple[str, ...],
    url_file: str | None,
    exchange: str,
    ca_file: str | None,
    stats: float,
    verbose: int,
    quiet: int,
) -> None:
    """Watch a session's packets on the bus (no root, no TUN): one line per packet."""
    setup_logging(2 if verbose >= 2 else 0, quiet)  # -v: dump each packet; -vv: debug logs
    amqp = _url(url, url_file)
    from agent.inspect.sniff import Sniffer

    try:
        sniffer = Sniffer(
            amqp,
            exchange,
            names=names,
            pcap=pcap,
            count=count,
            packet_filter=packet_filter,  # type: ignore[arg-type]
            ca_file=ca_file,
            stats_interval=stats,
            full_dump=verbose > 0,
        )
    except OSError as exc:
        from agent.inspect.taps import file_error_hint

        raise click.FileError(pcap or "", hint=file_error_hint(exc)) from None
    _run(sniffer.run)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (routers, agents).")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.2),
    default=None,
    help="Ask again every N seconds, in place, until Ctrl-C.",
)
@with_options(url_options[:4])
def status(
    as_json: bool, watch: float | None, url: tuple[str, ...], url_file: str | None,
    exchange: str, ca_file: str | None,
) -> None:
    """The session at a glance, as its active router sees it (the observer URL will do)."""
    setup_logging(0, 2)  # pika's and our log lines stay out of the table
    amqp = _url(url, url_file)
    from agent.router.ask import Asker, StatusError, run

    try:
        asker = Asker(amqp, exchange, ca_file)
        try:
            code = run(asker, as_json, watch or 0.0)
        finally:
            asker.close()
    except StatusError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = 1
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


from agent.session.cli import session as _session  # noqa: E402  (`agent session ...`)

cli.add_command(_session)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # SIGUSR1 prints the counters once the loop runs; before that it must not kill us
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    cli(prog_name="agent")
