"""Packet inspection for the agent and the router: `-v` trace lines and `--pcap` capture.

A tap is a callable `(packet, from_port, to_port)` in `Agent.taps`, called for every
forwarded packet. Taps are only installed when asked for (`-v`, `--pcap`), so without
them the per-packet path pays nothing. Ports are named by their key in `Agent.ports`
("tun", "bus", "eth1", "serial"...); what a trace line or a capture shows is the port
object's `name` (the TUN's device name, e.g. tun0) and its `linktype` (agent/port.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.inspect.pcapng import (
    INBOUND,
    LINKTYPE_IEEE802_15_4_NOFCS,
    LINKTYPE_RAW,
    OUTBOUND,
    PcapNgWriter,
)
from agent.inspect.summary import dump, summarize
from agent.soon import Soon

if TYPE_CHECKING:
    from agent.port import Port

log = logging.getLogger(__name__)
trace = logging.getLogger("agent.packets")

BUS = "bus"  # the bus port's key (agent.switch.BUS)

_LINKTYPE_SUFFIX = {LINKTYPE_IEEE802_15_4_NOFCS: "wpan"}


def direction(from_port: str, to_port: str) -> str:
    """up: towards the bus; down: from the bus; side: between two local ports."""
    if to_port == BUS:
        return "up"
    if from_port == BUS:
        return "down"
    return "side"


def trace_line(packet: bytes, from_label: str, to_label: str, way: str) -> str:
    """`up   tun0>bus  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request (id 0x1c seq 3) 104 B`."""
    return f"{way:<4} {from_label + '>' + to_label:<9} {summarize(packet)}"


def router_line(agent: str, targets: list[str] | None, packet: bytes) -> str:
    """`agent_1 > agent_2  IPv6 bbbb::1 > bbbb::2 ICMPv6 Echo Request ... 104 B`;
    targets None: dropped as spoofed, [] dropped for want of a route."""
    if targets is None:
        where = "- (spoofed source, dropped)"
    else:
        where = ",".join(targets) or "- (no route)"
    return f"{agent} > {where}  {summarize(packet)}"


def _label(ports: Mapping[str, Port], key: str) -> str:
    port = ports.get(key)
    return port.name if port is not None and port.name else key


class TraceTap:
    """`-v`: one log line per packet on the logger agent.packets; `-vv` adds the dump."""

    def __init__(
        self, ports: Mapping[str, Port], full_dump: bool = False, logger: logging.Logger = trace
    ) -> None:
        self.ports = ports
        self.full_dump = full_dump
        self.log = logger

    def line(self, packet: bytes, from_port: str, to_port: str) -> str:
        return trace_line(
            packet,
            _label(self.ports, from_port),
            _label(self.ports, to_port),
            direction(from_port, to_port),
        )

    def __call__(self, packet: bytes, from_port: str, to_port: str) -> None:
        line = self.line(packet, from_port, to_port)
        if self.full_dump:
            self.log.info("%s\n%s", line, dump(packet))
        else:
            self.log.info("%s", line)


    def close(self) -> None:
        """Nothing pending: each line is logged as it comes."""


class WpanTrace:
    """`-v` in the 802.15.4 probe mode: one line per frame, read down to the IPv6 packet
    inside (agent.inspect.sixlowpan), `up   serial>bus 802.15.4 0x1234 > 0xffff 6LoWPAN
    IPHC ...`; `-vv` adds the dump. Fragments are reassembled per direction."""

    def __init__(self, full_dump: bool = False, logger: logging.Logger = trace) -> None:
        from agent.inspect.sixlowpan import WpanDecoder  # Scapy: only when asked for

        self.full_dump = full_dump
        self.log = logger
        self._decoders = {"up": WpanDecoder(), "down": WpanDecoder()}

    def line(self, frame: bytes, way: str) -> tuple[str, bytes | None]:
        decoded = self._decoders["up" if way == "up" else "down"].decode(frame)
        path = "serial>bus" if way == "up" else "bus>serial"
        return f"{way:<4} {path} {decoded.text} {len(frame)} B", decoded.ipv6

    def __call__(self, frame: bytes, way: str) -> None:
        line, ipv6 = self.line(frame, way)
        if self.full_dump:
            from agent.inspect.sixlowpan import dump_wpan

            self.log.info("%s\n%s", line, dump_wpan(frame, ipv6))
        else:
            self.log.info("%s", line)


class PcapTap:
    """`--pcap FILE`: every forwarded packet, written twice like `tcpdump -i any` sees a
    routed packet: inbound on the interface of the port it came from, outbound on the one
    it left by (epb_flags says which). One pcapng interface per port, made on the port's
    first packet, named after the port. Blocks are buffered and written once per event
    loop iteration, so the file is readable live (tshark -r) at a cost of one write()
    per batch of packets.
    """

    def __init__(self, writer: PcapNgWriter, ports: Mapping[str, Port], owner: str = "") -> None:
        self.writer = writer
        self.ports = ports
        self.owner = owner
        self.packets = 0
        self._ifaces: dict[tuple[str, int], int] = {}
        self._flush_soon = Soon(self.flush)
        self._failed = False

    @classmethod
    def open(cls, path: str, ports: Mapping[str, Port], owner: str = "") -> PcapTap:
        """Create (truncate) path; OSError with a one-line message if it cannot be."""
        return cls(PcapNgWriter(path, autoflush=False), ports, owner)

    def _linktype(self, key: str) -> int:
        port = self.ports.get(key)
        return port.linktype if port is not None else LINKTYPE_RAW

    def _iface(self, key: str, linktype: int) -> int:
        iface = self._ifaces.get((key, linktype))
        if iface is None:
            name = _label(self.ports, key)
            if linktype != self._linktype(key):  # e.g. 802.15.4 frames crossing the bus
                name += "-" + _LINKTYPE_SUFFIX.get(linktype, f"lt{linktype}")
            what = f"port {key} of {self.owner}" if self.owner else f"port {key}"
            iface = self.writer.add_interface(name, linktype, description=what)
            self._ifaces[(key, linktype)] = iface
        return iface

    def __call__(self, packet: bytes, from_port: str, to_port: str) -> None:
        if self._failed:
            return
        linktype = self._linktype(from_port)
        if linktype == LINKTYPE_RAW:
            linktype = self._linktype(to_port)
        now = time.time()
        try:
            write = self.writer.write
            write(self._iface(from_port, linktype), packet, now, flags=INBOUND)
            write(self._iface(to_port, linktype), packet, now, flags=OUTBOUND)
        except (OSError, ValueError) as exc:
            self._fail(exc)
            return
        self.packets += 1
        self._flush_soon()  # at the end of this loop turn (no loop: now)

    def flush(self) -> None:
        self._flush_soon.cancel()
        if self._failed:
            return
        try:
            self.writer.flush()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        log.warning("capture to %s stopped: %s", self.writer.name, exc)
        try:
            self.writer.close()
        except OSError:
            pass

    def close(self) -> None:
        """Flush and close; idempotent. Called from the agent's shutdown."""
        if self.writer.closed:
            return
        try:
            self.writer.close()
        except OSError as exc:
            log.warning("capture to %s: %s", self.writer.name, exc)
            return
        log.info("wrote %d packets to %s", self.packets, self.writer.name)


def install(agent: Any, verbose: int = 0, pcap: PcapTap | None = None) -> None:
    """Add the taps asked for to an Agent (anything with `.ports` and `.taps`)."""
    if pcap is not None:
        agent.taps.append(pcap)
    if verbose:
        agent.taps.append(TraceTap(agent.ports, full_dump=verbose >= 2))


def file_error_hint(exc: OSError) -> str:
    """The reason alone (e.g. "No such file or directory"), without the path again."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def install_cli(agent: Any, verbose: int, pcap_path: str | None) -> None:
    """`agent connect -v / --pcap`: install the taps; a capture file that cannot be
    created raises its OSError (cli.py says it in one line), before anything is started."""
    pcap = None
    if pcap_path:
        pcap = PcapTap.open(pcap_path, agent.ports, owner=agent.name)
    install(agent, verbose, pcap)
