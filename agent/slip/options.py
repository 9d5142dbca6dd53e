"""Command-line options of `agent connect` for a SLIP serial device, and their wiring.

cli.py applies `serial_options` to `connect` and passes the values on as keyword
arguments; `serial_choice()` validates them (with the original agent's environment
variables as fallbacks), then either `attach_serial()` adds the line to an Agent as its
re-route port "serial" (IP mode) or `probe_runner()` builds the 802.15.4 probe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from agent.reroute.options import RerouteOptions
from agent.slip.port import DEFAULT_BAUDRATE, SerialPortError, SerialSettings

if TYPE_CHECKING:
    from agent.node import Agent
    from agent.slip.link import SerialLink
    from agent.url import AmqpUrl

log = logging.getLogger(__name__)

SERIAL_PORT_ENV = "FINTEROP_CONNECTOR_SERIAL_PORT"
BAUDRATE_ENV = "FINTEROP_CONNECTOR_BAUDRATE"
MODE_IP = "ip"
MODE_802154 = "802154"
MIN_BAUD, MAX_BAUD = 50, 4_000_000

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
        "--slip-leading-end",
        is_flag=True,
        help="Start each frame with END too (RFC 1055 style; RIOT discards such frames).",
    ),
    click.option(
        "--serial-mode",
        type=click.Choice([MODE_IP, MODE_802154]),
        default=MODE_IP,
        show_default=True,
        help="ip: IP packets in SLIP, the line is a re-route port; 802154: raw 802.15.4 "
        "frames on the 802154.serial bus keys, no TUN.",
    ),
]


@dataclass(frozen=True)
class SerialChoice:
    mode: str
    settings: SerialSettings


def _env_baudrate() -> int | None:
    raw = os.environ.get(BAUDRATE_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not MIN_BAUD <= value <= MAX_BAUD:
        raise click.BadParameter(
            f"{BAUDRATE_ENV}={raw!r} is not a baud rate ({MIN_BAUD}-{MAX_BAUD})",
            param_hint="--baudrate",
        )
    return value


def serial_choice(values: dict[str, Any], mtu: int = 1500) -> SerialChoice | None:
    """Validate the serial options; None when no serial device is used."""
    mode = values.get("serial_mode") or MODE_IP
    device = values.get("serial_port")
    if device is None and mode == MODE_802154:
        device = os.environ.get(SERIAL_PORT_ENV, "").strip() or None
    if device is None:
        given = [
            opt
            for opt, key in (
                ("--baudrate", "baudrate"),
                ("--rtscts", "rtscts"),
                ("--xonxoff", "xonxoff"),
                ("--slip-pace-us", "slip_pace_us"),
                ("--slip-leading-end", "slip_leading_end"),
            )
            if values.get(key)
        ]
        if mode == MODE_802154:
            given.insert(0, "--serial-mode 802154")
        if given:
            raise click.UsageError(
                f"{', '.join(given)} needs a serial device: give --serial-port"
                + (f" (or env {SERIAL_PORT_ENV})" if mode == MODE_802154 else "")
            )
        return None
    if not device or "\0" in device:
        raise click.BadParameter(f"invalid serial device {device!r}", param_hint="--serial-port")
    baudrate = values.get("baudrate")
    if baudrate is None:
        baudrate = _env_baudrate() or DEFAULT_BAUDRATE
    settings = SerialSettings(
        device=device,
        baudrate=baudrate,
        rtscts=bool(values.get("rtscts")),
        xonxoff=bool(values.get("xonxoff")),
        pace_us=int(values.get("slip_pace_us") or 0),
        leading_end=bool(values.get("slip_leading_end")),
        mtu=mtu,
    )
    return SerialChoice(mode, settings)


def attach_serial(
    agent: Agent,
    choice: SerialChoice | None,
    reroute: RerouteOptions | None = None,
) -> SerialLink | None:
    """IP mode: open the device (a click error if it cannot be); the agent's port."""
    if choice is None:
        return None
    reroute = reroute or RerouteOptions()
    if reroute.ifname is not None:
        raise click.UsageError(
            "--serial-port and --re-route-if both want the --re-route-prefix networks: "
            "give one of them (run two agents for two devices)"
        )
    from agent.slip.link import SerialLink

    link = SerialLink(choice.settings, agent.counters)
    try:
        link.check()
    except SerialPortError as exc:
        raise click.ClickException(str(exc)) from None
    agent.attach_serial(link)
    s = choice.settings
    log.info("serial port %s open at %d baud (SLIP, IP mode)", s.device, s.baudrate)
    if not reroute.prefixes:
        log.warning(
            "no --re-route-prefix: nothing is routed to the serial port until a tun.start "
            "names one (packets from the line still reach the session)"
        )
    return link


def probe_runner(
    name: str,
    url: AmqpUrl,
    choice: SerialChoice,
    exchange: str,
    ca_file: str | None,
    stats_interval: float,
) -> Coroutine[Any, Any, int]:
    """802.15.4 mode: open the device (a click error if it cannot be); the probe's run()."""
    from agent.slip.probe import SerialProbe

    probe = SerialProbe(name, url, choice.settings, exchange, ca_file, stats_interval)
    try:
        probe.open()
    except SerialPortError as exc:
        raise click.ClickException(str(exc)) from None
    return probe.run()
