"""Send a paced stream of numbered UDP datagrams to an echo service; count what comes back.

    python tests/tools/udp_stream.py HOST PORT --total 65536 --size 1024 --rate 9000

--rate is the payload rate in bytes per second (pace it below the serial line rate).
Prints one line: ``sent N received M bytes B`` and exits 0 if every datagram came back
intact, 1 otherwise.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def payload(seq: int, size: int) -> bytes:
    head = seq.to_bytes(4, "big")
    body = bytes((seq + i) & 0xFF for i in range(size - 4))
    return head + body


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--total", type=int, default=65536)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=9000.0, help="payload bytes per second")
    parser.add_argument("--wait", type=float, default=5.0, help="for late echoes, seconds")
    args = parser.parse_args()
    count = (args.total + args.size - 1) // args.size
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect((args.host, args.port))
    sock.setblocking(False)
    interval = args.size / args.rate
    received: dict[int, bool] = {}
    got_bytes = 0

    def drain() -> None:
        nonlocal got_bytes
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue
            if len(data) >= 4:
                seq = int.from_bytes(data[:4], "big")
                if data == payload(seq, args.size):
                    received[seq] = True
                    got_bytes += len(data)

    start = time.monotonic()
    for seq in range(count):
        due = start + seq * interval
        while (now := time.monotonic()) < due:
            drain()
            time.sleep(min(0.005, due - now))
        try:
            sock.send(payload(seq, args.size))
        except ConnectionRefusedError:
            pass
    deadline = time.monotonic() + args.wait
    while len(received) < count and time.monotonic() < deadline:
        drain()
        time.sleep(0.01)
    print(f"sent {count} received {len(received)} bytes {got_bytes}")
    return 0 if len(received) == count else 1


if __name__ == "__main__":
    sys.exit(main())
