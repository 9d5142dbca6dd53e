"""`agent sniff`: watch a session from the bus side. No root, no TUN.

An exclusive, auto-delete queue `<16 random hex digits>@sniff` (a name that an observer
account can be limited to, see agent.session) is bound to `fromAgent.#` and `toAgent.#`
(or to `fromAgent.<name>.#` / `toAgent.<name>.#` for each `--name`), plus
`testingtool.component.ready` and `testingtool.terminate`. Every packet message gives
one line on stdout:

    11:21:35.123456 agent_1       up    IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c ...

(up: the agent published it, fromAgent; down: it was sent to the agent, toAgent).
Control messages (tun.start, tun.started, ready, serial.started, terminate) and malformed
messages get a readable line too; they are not counted by `--count` nor filtered.
`--pcap` writes the packets to pcapng, one interface per agent and direction, named
after the routing key (`fromAgent.agent_1`, `toAgent.agent_1`; 802.15.4 frames of the
serial mode on `fromAgent.<name>.802154` with linktype 230). 802.15.4 frames are read down
to the IPv6 packet inside (6LoWPAN, agent.inspect.sixlowpan), and `--filter`'s IP words
match that packet. Logs go to stderr.

Stops on SIGINT/SIGTERM, after `--count` packets, or on `testingtool.terminate`.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from typing import Any, TextIO

from agent.bus import wire
from agent.bus.connection import Bus, QueueSpec
from agent.bus.dispatch import dispatcher
from agent.bus.url import Urls
from agent.config import ConfigError, plan_from_bus
from agent.inspect.filter import Filter
from agent.inspect.pcapng import LINKTYPE_IEEE802_15_4_NOFCS, LINKTYPE_RAW, PcapNgWriter
from agent.inspect.sixlowpan import WpanDecoder, dump_wpan
from agent.inspect.summary import dump, summarize
from agent.service import Service
from agent.soon import Soon

log = logging.getLogger(__name__)

MAX_QUEUE = 100_000  # messages the broker keeps for a slow sniffer (oldest dropped)
IP_PACKET = wire.IP_PACKET_KIND
WPAN_PACKET = wire.WPAN_PACKET_KIND
WHO_WIDTH = 13  # fits "packetrouting" (the router's ready)


def bindings(names: tuple[str, ...] | list[str] = ()) -> list[str]:
    keys = ["fromAgent.#", "toAgent.#"]
    if names:
        keys = [f"{d}.{n}.#" for n in names for d in ("fromAgent", "toAgent")]
    return [*keys, wire.READY_KEY, wire.TERMINATE_KEY]


def _printable(text: object, limit: int = 120) -> str:
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."


def timestamp(now: float) -> str:
    micros = int(round(now * 1_000_000))
    secs, micros = divmod(micros, 1_000_000)
    return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{micros:06d}"


def line(now: float, who: str, way: str, text: str) -> str:
    """`11:21:35.123456 agent_1       up    <text>`."""
    return f"{timestamp(now)} {who:<{WHO_WIDTH}} {way:<4}  {text}"


def _who(agent: str | None, uplink: bool) -> tuple[str, str]:
    """The agent and the direction a line shows ("?" and "" for keys of no agent)."""
    if agent is None:
        return "?", ""
    return _printable(agent, 40), "up" if uplink else "down"


def describe_plan(msg: dict[str, Any]) -> str:
    """tun.start / tun.started as `bbbb::2/64, fe80::2/64, 10.2.0.2/24, re-route cccc::/64 ...`."""
    try:
        plan = plan_from_bus(msg)
    except ConfigError as exc:
        return f"invalid: {_printable(exc)}"
    parts = [str(i) for i in plan.interfaces()]
    if plan.reroute_prefixes:
        text = "re-route " + " ".join(str(p) for p in plan.reroute_prefixes)
        if plan.reroute_if:
            text += f" via {plan.reroute_if}"
        if plan.reroute_host:
            text += f" host {plan.reroute_host}"
        parts.append(text)
    return ", ".join(parts)


class Sniffer(Service):
    def __init__(
        self,
        url: Urls,
        exchange: str = "amq.topic",
        names: tuple[str, ...] | list[str] = (),
        pcap: str | None = None,
        count: int | None = None,
        packet_filter: Filter | None = None,
        ca_file: str | None = None,
        stats_interval: float = 0.0,
        full_dump: bool = False,
        out: TextIO | None = None,
    ) -> None:
        super().__init__(log, stats_interval)
        self.url = url
        self.names = tuple(names)
        self.count = count
        self.filter = packet_filter
        self.full_dump = full_dump
        self.out = out if out is not None else sys.stdout
        self.packets = 0
        self.writer = PcapNgWriter(pcap, autoflush=False) if pcap else None  # OSError to caller
        self._ifaces: dict[tuple[str, str, int], int] = {}
        self._decoders: dict[tuple[str, str], WpanDecoder] = {}  # 802.15.4, per stream
        self._done = False
        self._flush_soon = Soon(self._flush)
        self._dispatch = dispatcher(self._show, self.counters, log, self._malformed)
        self.bus = Bus(
            url,
            exchange,
            QueueSpec(
                name=f"{secrets.token_hex(8)}@sniff",  # agent.session.accounts.SNIFF_QUEUE_RE
                bindings=bindings(self.names),
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": MAX_QUEUE, "x-overflow": "drop-head"},
                prefetch=1000,
            ),
            on_message=self._on_message,
            on_up=self._on_up,
            on_fatal=self.on_fatal,
            ca_file=ca_file,
        )

    # -- run / stop ---------------------------------------------------------------------

    # -- start / stop (the run loop is agent.service.Service.run) -------------------------

    async def start(self) -> None:
        log.info("connecting to %s", self.bus.url.redacted())
        self.bus.start()

    async def cleanup(self) -> None:
        await self.bus.close(timeout=1.0)
        self._flush()
        if self.writer is not None:
            self.writer.close()
            log.info("wrote %d packets to %s", self.packets, self.writer.name)

    def stop(self) -> None:
        self._done = True
        self._stop.set()

    def on_fatal(self, reason: str) -> None:
        self._fatal = reason
        self.stop()

    def _on_up(self) -> None:
        what = ", ".join(self.names) if self.names else "all agents"
        log.info("sniffing %s on %s (queue %s)", what, self.bus.url.where, self.bus.queue_name)

    # -- output -------------------------------------------------------------------------

    def _emit(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
        except BrokenPipeError:  # `agent sniff | head`: the reader is gone
            self._out_gone()
            return
        self._flush_soon()

    def _flush(self) -> None:
        """Once per loop iteration: push lines and capture blocks out together."""
        self._flush_soon.cancel()
        try:
            self.out.flush()
        except BrokenPipeError:
            self._out_gone()
        except ValueError:  # closed
            pass
        if self.writer is not None and not self.writer.closed:
            try:
                self.writer.flush()
            except OSError as exc:
                log.error("capture to %s failed: %s", self.writer.name, exc)
                self._fatal = f"cannot write {self.writer.name}: {exc}"
                self.stop()

    def _out_gone(self) -> None:
        try:  # keep Python's exit-time flush of stdout from failing again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        self.stop()

    def _decoder(self, agent: str, way: str) -> WpanDecoder:
        """One decoder (fragment table) per agent and direction: a stream of frames."""
        decoder = self._decoders.get((agent, way))
        if decoder is None:
            decoder = self._decoders[(agent, way)] = WpanDecoder()
        return decoder

    def _capture(self, agent: str, way: str, packet: bytes, now: float, wpan: bool) -> None:
        writer = self.writer
        if writer is None or writer.closed:
            return
        linktype = LINKTYPE_IEEE802_15_4_NOFCS if wpan else LINKTYPE_RAW
        key = (agent, way, linktype)
        iface = self._ifaces.get(key)
        if iface is None:
            prefix = "fromAgent" if way == "up" else "toAgent"
            kind = WPAN_PACKET if wpan else IP_PACKET
            name = f"{prefix}.{agent}" + (".802154" if wpan else "")
            iface = writer.add_interface(name, linktype, description=f"{prefix}.{agent}.{kind}")
            self._ifaces[key] = iface
        writer.write(iface, packet, now)

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, key: str, body: bytes, content_type: str | None) -> None:
        if not self._done:
            self._dispatch(key, body, content_type)

    def _malformed(self, key: str, exc: wire.WireError) -> None:
        topic = wire.topic(key)
        who, way = _who(topic.agent, topic.uplink)
        self._emit(line(time.time(), who, way, f"malformed message on {_printable(key)}: {exc}"))

    def _show(self, msg: wire.Message) -> None:
        """One line per message (agent.bus.dispatch counts and logs what this raises)."""
        now = time.time()
        if isinstance(msg, wire.Terminate):
            desc = msg.fields.get("description")
            self._emit(line(now, "testingtool", "", f"terminate: {_printable(desc)}"))
            log.info("testingtool.terminate received; stopping")
            self.stop()
        elif isinstance(msg, wire.Ready):
            if self.names and msg.component not in self.names:
                return
            self._emit(line(now, _printable(msg.component, 40), "up", "ready"))
        elif isinstance(msg, wire.Packets):  # JSON, or our fast wire (several a message)
            who, way = _who(msg.agent, msg.uplink)
            for packet in msg.packets():
                if self._done:
                    break
                self._packet(msg.agent, who, way, packet, now, wpan=False)
        elif isinstance(msg, wire.Frames):
            who, way = _who(msg.agent, msg.uplink)
            self._packet(msg.agent, who, way, msg.frame(), now, wpan=True)
        elif isinstance(msg, wire.TunStart | wire.TunStarted | wire.SerialStarted):
            who, way = _who(msg.agent, msg.uplink)
            if isinstance(msg, wire.SerialStarted):
                port = _printable(msg.fields.get("port"))
                baud = _printable(msg.fields.get("boudrate"))
                text = f"serial.started: {port} at {baud} baud"
            else:
                kind = "tun.start" if isinstance(msg, wire.TunStart) else "tun.started"
                text = f"{kind}: {describe_plan(msg.fields)}"
            self._emit(line(now, who, way, text))
        elif isinstance(msg, wire.Other):
            if msg.topic.agent is None:
                self._emit(line(now, "?", "", f"{_printable(msg.topic.kind)} ({msg.size} B)"))
            else:
                who, way = _who(msg.topic.agent, msg.topic.uplink)
                text = f"{_printable(msg.topic.kind)} ({msg.size} B)"
                self._emit(line(now, who, way, text))

    def _packet(
        self, agent: str, who: str, way: str, packet: bytes, now: float, wpan: bool
    ) -> None:
        inner, text = None, ""
        if wpan:  # decoded before the filter: fragments are remembered even if filtered out
            decoded = self._decoder(agent, way).decode(packet)
            text, inner = f"{decoded.text} {len(packet)} B", decoded.ipv6
        if self.filter is not None and not self.filter.matches(packet, wpan, inner):
            self.counters.drop("filtered out")
            return
        self.counters.count(f"{agent}>" if way == "up" else f">{agent}", len(packet))
        self.packets += 1
        if not wpan:
            text = summarize(packet)
        self._emit(line(now, who, way, text))
        if self.full_dump:
            full = dump_wpan(packet, inner) if wpan else dump(packet)
            self._emit("\n".join("    " + row for row in full.splitlines()))
        try:
            self._capture(agent, way, packet, now, wpan)
        except (OSError, ValueError) as exc:
            self._fatal = f"cannot write the capture: {exc}"
            self.stop()
            return
        if self.count is not None and self.packets >= self.count:
            log.info("%d packets seen; stopping", self.packets)
            self.stop()
