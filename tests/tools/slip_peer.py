"""A fake mote / border router on the far end of a serial line, for tests and the demo.

    python tests/tools/slip_peer.py DEVICE [--address cccc::1] [--leading-end] [--garbage]

It opens DEVICE (one end of a socat pty pair, or a real serial port), speaks SLIP with
its own small RFC 1055 codec (deliberately not the agent's) and behaves like a Contiki
border router or a RIOT node:

* boots as a mote does: its receiver does not know where it is in the byte stream, so
  it discards everything up to the first END (RIOT's UNKNOWN state; Contiki-NG's slip.c
  glues what came before the first END to the frame it ends, which then fails), and,
  0.5 s (--rs-delay) after boot, sends one Router Solicitation from its link-local
  address (fe80::<id>) to ff02::2, as GNRC and Contiki-NG's IPv6 stacks do;
  --no-boot-discard and --rs-delay -1 turn these off;
* SIGUSR1 is a reset (a watchdog, the reset button): what it was receiving is lost, it
  boots again (discard until END, a Router Solicitation, the ?P prefix request again),
  and says ``reset``;
* no neighbour discovery: SLIP has no link-layer addresses, the mote never sends a
  Neighbour Solicitation and answers none;

* answers ICMPv6/ICMP echo requests and UDP datagrams to --udp-port (echo) addressed
  to one of its --address es;
* every --interval seconds writes a Contiki-like debug text line and, until answered,
  a tunslip6 prefix request ``?P``;
* with --garbage, also writes a frame with an invalid escape, a binary non-IP frame, an
  oversized frame and line noise;
* frames are ``payload END`` (RIOT style) or, with --leading-end, ``END payload END``;
* with --chatty N, after every Nth reply writes ``debug: mote says hello\\r\\n`` with no
  SLIP framing at all, as a Contiki mote printing on its SLIP UART does.

Events go to stdout, one line each, flushed: ``ready``, ``prefix <16 hex digits>``,
``echo6 <src>``, ``echo4 <src>``, ``udp <src> <length>``, ``frame <length> <hex>`` (any
other frame), ``synced <n>`` (the first END after boot or reset, n bytes discarded before
it), ``rs <src>`` (a Router Solicitation sent), ``reset``, ``gone`` (the line hung up;
the peer then exits).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import signal
import sys
import termios
import time
import tty

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_RS, IPv6

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

DEBUG_LINE = b"Contiki-NG: rpl-border-router waiting for prefix\r\n"
BARE_LINE = b"[INFO: BR] Server IPv6 addresses: fe80::212:4b00:f24:8385\r\n"
CHATTY_LINE = b"debug: mote says hello\r\n"


def slip_encode(payload: bytes, leading_end: bool) -> bytes:
    """RFC 1055 SEND_PACKET: END bytes and ESC bytes are escaped, END closes the frame."""
    out = bytearray([END]) if leading_end else bytearray()
    for byte in payload:
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


class SlipReader:
    """RFC 1055 RECV_PACKET, incremental; frames with a bad escape are dropped.

    With `discarding` (a receiver that just booted), every byte up to the first END is
    thrown away (`discarded` counts them); the END ends the discarding, not a frame."""

    def __init__(self, discarding: bool = False) -> None:
        self.buf = bytearray()
        self.escaped = False
        self.bad = False
        self.discarding = discarding
        self.discarded = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for byte in data:
            if self.discarding:
                if byte == END:
                    self.discarding = False
                    say(f"synced {self.discarded}")
                else:
                    self.discarded += 1
                continue
            if byte == END:
                if self.buf and not self.bad:
                    frames.append(bytes(self.buf))
                self.buf.clear()
                self.escaped = self.bad = False
            elif self.escaped:
                self.escaped = False
                if byte == ESC_END:
                    self.buf.append(END)
                elif byte == ESC_ESC:
                    self.buf.append(ESC)
                else:
                    self.bad = True
            elif byte == ESC:
                self.escaped = True
            else:
                self.buf.append(byte)
        return frames


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def router_solicitation(link_local: str) -> bytes:
    """What an IPv6 host sends when its interface comes up (RFC 4861 6.3.7): no source
    link-layer address option, SLIP has no link-layer addresses."""
    return bytes(IPv6(src=link_local, dst="ff02::2", hlim=255) / ICMPv6ND_RS())


class Mote:
    def __init__(self, fd: int, args: argparse.Namespace) -> None:
        self.fd = fd
        self.args = args
        self.addresses = {ipaddress.ip_address(a) for a in args.address}
        self.link_local = args.link_local
        self.reader = SlipReader()
        self.prefix: bytes | None = None
        self.replies = 0
        self.solicit_at: float | None = None
        self.boot()

    def boot(self) -> None:
        """Power on or reset: receive state unknown, nothing of the last life kept."""
        self.reader = SlipReader(discarding=self.args.boot_discard)
        self.prefix = None
        if self.args.rs_delay >= 0:
            self.solicit_at = time.monotonic() + self.args.rs_delay

    def solicit(self) -> None:
        self.solicit_at = None
        self.write(router_solicitation(self.link_local))
        say(f"rs {self.link_local}")

    def write(self, payload: bytes) -> None:
        self.write_raw(slip_encode(payload, self.args.leading_end))

    def write_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]

    def hello(self) -> None:
        self.write(DEBUG_LINE)
        if self.args.leading_end:  # a bare text line, delimited by the next frame's END
            self.write_raw(BARE_LINE)
        if self.prefix is None:
            self.write(b"?P")
        if self.args.garbage:
            self.write_raw(bytes([ESC, 0x01]) + b"junk" + bytes([END]))  # invalid escape
            self.write(b"\x00\x01\x02\x03 binary, not IP")
            self.write(b"\x00" * 3000)  # longer than any MTU
            self.write_raw(b"\xff\xfe\x13\x37" * 8)  # noise, ended by the next frame

    def on_frame(self, frame: bytes) -> None:
        if frame.startswith(b"!P") and len(frame) >= 10:
            self.prefix = frame[2:10]
            say(f"prefix {self.prefix.hex()}")
            return
        reply = self.answer(frame)
        if reply is None:
            say(f"frame {len(frame)} {frame[:48].hex()}")
        else:
            self.write(reply)
            self.replies += 1
            if self.args.chatty and self.replies % self.args.chatty == 0:
                self.write_raw(CHATTY_LINE)

    def answer(self, frame: bytes) -> bytes | None:
        version = frame[0] >> 4 if frame else 0
        if version == 6 and len(frame) >= 40:
            pkt = IPv6(frame)
            if ipaddress.ip_address(pkt.dst) not in self.addresses:
                return None
            if ICMPv6EchoRequest in pkt:
                req = pkt[ICMPv6EchoRequest]
                say(f"echo6 {pkt.src}")
                reply = IPv6(src=pkt.dst, dst=pkt.src, hlim=64) / ICMPv6EchoReply(
                    id=req.id, seq=req.seq, data=req.data
                )
                return bytes(reply)
            if UDP in pkt and pkt[UDP].dport == self.args.udp_port:
                data = bytes(pkt[UDP].payload)
                say(f"udp {pkt.src} {len(data)}")
                udp = UDP(sport=pkt[UDP].dport, dport=pkt[UDP].sport)
                return bytes(IPv6(src=pkt.dst, dst=pkt.src, hlim=64) / udp / data)
            return None
        if version == 4 and len(frame) >= 20:
            pkt4 = IP(frame)
            if ipaddress.ip_address(pkt4.dst) not in self.addresses:
                return None
            if ICMP in pkt4 and pkt4[ICMP].type == 8:
                say(f"echo4 {pkt4.src}")
                icmp = pkt4[ICMP]
                reply4 = (
                    IP(src=pkt4.dst, dst=pkt4.src, ttl=64)
                    / ICMP(type=0, id=icmp.id, seq=icmp.seq)
                    / bytes(icmp.payload)
                )
                return bytes(reply4)
            if UDP in pkt4 and pkt4[UDP].dport == self.args.udp_port:
                data = bytes(pkt4[UDP].payload)
                say(f"udp {pkt4.src} {len(data)}")
                udp = UDP(sport=pkt4[UDP].dport, dport=pkt4[UDP].sport)
                return bytes(IP(src=pkt4.dst, dst=pkt4.src, ttl=64) / udp / data)
        return None

    def run(self, wakeup: int) -> int:
        say("ready")
        next_hello = time.monotonic() + self.args.delay
        while True:
            deadlines = [self.solicit_at] if self.solicit_at is not None else []
            if self.args.interval > 0:
                deadlines.append(next_hello)
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            readable, _, _ = select.select([self.fd, wakeup], [], [], timeout)
            if wakeup in readable:
                if signal.SIGUSR1 in os.read(wakeup, 64):
                    self.boot()
                    say("reset")
                    next_hello = time.monotonic() + self.args.delay
            if self.fd in readable:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data is not None and not data:
                    say("gone")
                    return 0
                for frame in self.reader.feed(data or b""):
                    self.on_frame(frame)
            now = time.monotonic()
            try:
                if self.solicit_at is not None and now >= self.solicit_at:
                    self.solicit()
                if self.args.interval > 0 and now >= next_hello:
                    self.hello()
                    next_hello = time.monotonic() + self.args.interval
            except OSError:
                say("gone")
                return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("device")
    parser.add_argument("--address", action="append", default=[], help="repeatable")
    parser.add_argument("--leading-end", action="store_true")
    parser.add_argument("--garbage", action="store_true")
    parser.add_argument("--udp-port", type=int, default=7)
    parser.add_argument("--chatty", type=int, default=0, help="text line after every Nth reply")
    parser.add_argument("--interval", type=float, default=1.0, help="0: no hello lines")
    parser.add_argument("--delay", type=float, default=0.5, help="before the first hello")
    parser.add_argument(
        "--boot-discard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after boot and reset, discard input up to the first END (default: on)",
    )
    parser.add_argument(
        "--rs-delay", type=float, default=0.5, help="Router Solicitation after boot (-1: none)"
    )
    parser.add_argument("--link-local", default="fe80::2", help="the mote's fe80:: address")
    args = parser.parse_args()
    if not args.address:
        args.address = ["cccc::1"]
    fd = os.open(args.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    wakeup, wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)  # a reset: see Mote.run
    try:
        if os.isatty(fd):
            tty.setraw(fd, termios.TCSANOW)
        return Mote(fd, args).run(wakeup)
    except KeyboardInterrupt:
        return 0
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
