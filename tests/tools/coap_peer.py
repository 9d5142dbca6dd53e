"""A tiny CoAP (RFC 7252) client and server over plain UDP sockets, for the lossy test.

    python tests/tools/coap_peer.py server [--port 5683]
    python tests/tools/coap_peer.py client HOST [--port 5683] [--ack-timeout 1.0]

The server answers each confirmable GET with a piggybacked ACK 2.05 "hello" and prints
``request <message id> <peer>`` per datagram received. The client sends one CON GET
/test and retransmits it after ack-timeout, doubling, up to MAX_RETRANSMIT (4) times, as
RFC 7252 section 4.2 says (without the random factor, to keep the test quick); it prints
``sent <n>`` per transmission, then ``answered after <n> transmissions: <payload>`` and
exits 0, or ``no answer`` and exits 1. Events are flushed, one line each.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

MAX_RETRANSMIT = 4
CON, ACK = 0, 2
GET, CONTENT = 0x01, 0x45


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def message(mtype: int, code: int, mid: int, token: bytes, rest: bytes = b"") -> bytes:
    return bytes([0x40 | mtype << 4 | len(token), code]) + mid.to_bytes(2, "big") + token + rest


def parse(data: bytes) -> tuple[int, int, int, bytes, bytes] | None:
    """(type, code, message id, token, options+payload) of a version-1 message."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return None
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        return None
    return (
        (data[0] >> 4) & 3,
        data[1],
        int.from_bytes(data[2:4], "big"),
        data[4 : 4 + tkl],
        data[4 + tkl :],
    )


def server(port: int) -> int:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    say("ready")
    while True:
        data, peer = sock.recvfrom(2048)
        msg = parse(data)
        if msg is None:
            continue
        mtype, code, mid, token, _ = msg
        say(f"request {mid} {peer[0]}")
        if mtype == CON and code == GET:
            sock.sendto(message(ACK, CONTENT, mid, token, b"\xff" + b"hello"), peer)


def client(host: str, port: int, ack_timeout: float) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect((host, port))
    mid, token = int.from_bytes(os.urandom(2), "big"), os.urandom(4)
    request = message(CON, GET, mid, token, bytes([0xB4]) + b"test")  # Uri-Path "test"
    timeout = ack_timeout
    for n in range(1, MAX_RETRANSMIT + 2):
        sock.send(request)
        say(f"sent {n}")
        sock.settimeout(timeout)
        try:
            while True:
                msg = parse(sock.recv(2048))
                if msg and msg[0] == ACK and msg[2] == mid and msg[3] == token:
                    payload = msg[4].split(b"\xff", 1)[-1]
                    say(f"answered after {n} transmissions: {payload.decode(errors='replace')}")
                    return 0
        except TimeoutError:
            timeout *= 2
        except OSError as exc:  # e.g. ICMP unreachable
            say(f"error {exc}")
            timeout *= 2
    say("no answer")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("host", nargs="?")
    parser.add_argument("--port", type=int, default=5683)
    parser.add_argument("--ack-timeout", type=float, default=1.0)
    args = parser.parse_args()
    try:
        if args.role == "server":
            return server(args.port)
        return client(args.host, args.port, args.ack_timeout)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
