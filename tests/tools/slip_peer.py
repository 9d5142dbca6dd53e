"""A fake mote / border router on the far end of a serial line, for tests and the demo.

    python tests/tools/slip_peer.py DEVICE [--address cccc::1] [--leading-end] [--garbage]

It opens DEVICE (one end of a socat pty pair, or a real serial port), speaks SLIP with
its own small RFC 1055 codec (deliberately not the agent's) and behaves like a Contiki
border router or a RIOT node:

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
other frame), ``gone`` (the line hung up; the peer then exits).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import sys
import termios
import time
import tty

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6

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
    """RFC 1055 RECV_PACKET, incremental; frames with a bad escape are dropped."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.escaped = False
        self.bad = False

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for byte in data:
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


class Mote:
    def __init__(self, fd: int, args: argparse.Namespace) -> None:
        self.fd = fd
        self.args = args
        self.addresses = {ipaddress.ip_address(a) for a in args.address}
        self.reader = SlipReader()
        self.prefix: bytes | None = None
        self.replies = 0

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

    def run(self) -> int:
        say("ready")
        next_hello = time.monotonic() + self.args.delay
        while True:
            timeout = None
            if self.args.interval > 0:
                timeout = max(0.0, next_hello - time.monotonic())
            readable, _, _ = select.select([self.fd], [], [], timeout)
            if readable:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    say("gone")
                    return 0
                for frame in self.reader.feed(data):
                    self.on_frame(frame)
            if self.args.interval > 0 and time.monotonic() >= next_hello:
                try:
                    self.hello()
                except OSError:
                    say("gone")
                    return 0
                next_hello = time.monotonic() + self.args.interval


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
    args = parser.parse_args()
    if not args.address:
        args.address = ["cccc::1"]
    fd = os.open(args.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            tty.setraw(fd, termios.TCSANOW)
        return Mote(fd, args).run()
    except KeyboardInterrupt:
        return 0
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
