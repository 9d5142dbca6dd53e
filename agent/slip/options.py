"""The `--serial-*` options of `agent connect`: validation and wiring, without click.

cli.py declares the options and passes their values on; `serial_choice()` validates them
(with the original agent's environment variables as fallbacks), then either
`serial_reroute()` makes the line the port of the re-route networks and `serial_link()`
builds that port, "serial", which cli.py adds to the agent (IP mode), or
`probe_runner()` builds the 802.15.4 probe. Bad values raise `SerialOptionError` (a
ConfigError naming the option, if one), a device that cannot be opened SerialPortError;
cli.py turns both into one line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError
from agent.reroute.options import RerouteOptions
from agent.slip.port import DEFAULT_BAUDRATE, SerialSettings
from agent.switch import SERIAL

if TYPE_CHECKING:
    from agent.bus.url import Urls
    from agent.counters import Counters
    from agent.slip.link import SerialLink

log = logging.getLogger(__name__)

SERIAL_PORT_ENV = "FINTEROP_CONNECTOR_SERIAL_PORT"
BAUDRATE_ENV = "FINTEROP_CONNECTOR_BAUDRATE"
MODE_IP = "ip"
MODE_802154 = "802154"
MIN_BAUD, MAX_BAUD = 50, 4_000_000
FRAMING_BOTH = "both"  # END payload END: the default (RFC 1055; current RIOT, Contiki-NG)
FRAMING_END_ONLY = "end-only"  # payload END: RIOT before its 2024 SLIP rewrite
FRAMINGS = (FRAMING_BOTH, FRAMING_END_ONLY)



class SerialOptionError(ConfigError):
    """A serial option is not acceptable; `option` names it (None: a wrong combination)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


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
        raise SerialOptionError(
            f"{BAUDRATE_ENV}={raw!r} is not a baud rate ({MIN_BAUD}-{MAX_BAUD})", "--baudrate"
        )
    return value


def _framing(values: dict[str, Any]) -> str:
    """--slip-framing (default both); the old --slip-leading-end flag means both."""
    framing = values.get("slip_framing") or FRAMING_BOTH
    if framing not in FRAMINGS:
        raise SerialOptionError(
            f"unknown SLIP framing {framing!r} (one of: {', '.join(FRAMINGS)})", "--slip-framing"
        )
    if values.get("slip_leading_end") and framing != FRAMING_BOTH:
        raise SerialOptionError(
            "--slip-leading-end (END payload END) contradicts --slip-framing end-only: give one"
        )
    return str(framing)


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
                ("--slip-framing", "slip_framing"),
            )
            if values.get(key)
        ]
        if mode == MODE_802154:
            given.insert(0, "--serial-mode 802154")
        if given:
            raise SerialOptionError(
                f"{', '.join(given)} needs a serial device: give --serial-port"
                + (f" (or env {SERIAL_PORT_ENV})" if mode == MODE_802154 else "")
            )
        return None
    if not device or "\0" in device:
        raise SerialOptionError(f"invalid serial device {device!r}", "--serial-port")
    baudrate = values.get("baudrate")
    if baudrate is None:
        baudrate = _env_baudrate() or DEFAULT_BAUDRATE
    settings = SerialSettings(
        device=device,
        baudrate=baudrate,
        rtscts=bool(values.get("rtscts")),
        xonxoff=bool(values.get("xonxoff")),
        pace_us=int(values.get("slip_pace_us") or 0),
        leading_end=_framing(values) == FRAMING_BOTH,
        mtu=mtu,
    )
    return SerialChoice(mode, settings)


def serial_reroute(choice: SerialChoice | None, reroute: RerouteOptions) -> RerouteOptions:
    """The re-route options with the line as the port of the networks (IP mode)."""
    if choice is None or choice.mode != MODE_IP:
        return reroute
    if reroute.ifname is not None:
        raise SerialOptionError(
            "--serial-port and --re-route-if both want the --re-route-prefix networks: "
            "give one of them (run two agents for two devices)"
        )
    return dataclasses.replace(reroute, port=SERIAL)


def serial_link(choice: SerialChoice, counters: Counters) -> SerialLink:
    """IP mode: the port "serial", its device opened (SerialPortError if it cannot be)."""
    from agent.slip.link import SerialLink

    link = SerialLink(choice.settings, counters)
    link.check()  # SerialPortError: missing, busy, not a tty
    s = choice.settings
    log.info("serial port %s open at %d baud (SLIP, IP mode)", s.device, s.baudrate)
    return link


def probe_runner(
    name: str,
    url: Urls,
    choice: SerialChoice,
    exchange: str,
    ca_file: str | None,
    stats_interval: float,
    trace: Callable[[bytes, str], None] | None = None,
) -> Coroutine[Any, Any, int]:
    """802.15.4 mode: open the device (SerialPortError if it cannot be); the probe's run().
    ``trace``: `-v`'s per-frame lines (agent.inspect.taps.WpanTrace), None without -v."""
    from agent.slip.probe import SerialProbe

    probe = SerialProbe(name, url, choice.settings, exchange, ca_file, stats_interval)
    probe.trace = trace
    probe.open()  # SerialPortError: missing, busy, not a tty
    return probe.run()
