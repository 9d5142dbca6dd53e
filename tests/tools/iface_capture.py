"""Print, as hex lines, every packet seen on an interface for some seconds.

Run inside a namespace: ip netns exec NS python tests/tools/iface_capture.py IFACE SECONDS
Prints "ready" first (once the socket is bound), then one hex line per packet.
"""

import socket
import sys
import time

ETH_P_ALL = 0x0003


def main() -> None:
    iface, seconds = sys.argv[1], float(sys.argv[2])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.1)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        direction = "out" if addr[2] == socket.PACKET_OUTGOING else "in"
        print(direction, data.hex(), flush=True)


if __name__ == "__main__":
    main()
