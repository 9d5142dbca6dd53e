"""Per-packet cost of `sniff --filter` (libpcap's compiled BPF, called through ctypes).

    .venv/bin/python bench/filter.py [--packets 200000] [--rounds 5]

For a few filters and packets, the median over rounds of the nanoseconds one
Filter.matches() call takes, beside two references measured the same way on this
machine at the same time: an empty Python loop iteration and one trivial ctypes call
(libc abs), so that figures from a loaded machine can be read relative to them.
No network, no broker.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections.abc import Callable

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.packet import Raw

from agent.inspect.filter import Filter

PACKETS = {
    "coap6": bytes(
        IPv6(src="bbbb::1", dst="bbbb::2") / UDP(sport=40000, dport=5683) / Raw(b"\x40\x01" * 20)
    ),
    "echo6": bytes(IPv6(src="bbbb::1", dst="bbbb::2") / ICMPv6EchoRequest() / Raw(b"x" * 56)),
    "echo4": bytes(IP(src="10.2.0.1", dst="10.2.0.2") / ICMP() / Raw(b"x" * 56)),
}
FILTERS = [
    "coap",
    "icmp6 and host bbbb::2",
    "icmp or udp and port 53",
    "(udp or tcp) and portrange 5000-6000 and not net 10.0.0.0/8",
]


def per_call_ns(fn: Callable[[], object], n: int, rounds: int) -> float:
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        results.append((time.perf_counter_ns() - start) / n)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = args.packets, args.rounds
    libc = ctypes.CDLL(None)
    libc.abs.argtypes = [ctypes.c_int]
    print(f"{'what':<64}{'ns/packet':>10}")
    empty = per_call_ns(lambda: None, n, rounds)
    call = per_call_ns(lambda: libc.abs(-3), n, rounds)
    print(f"{'(reference) empty Python loop iteration':<64}{empty:>10.0f}")
    print(f"{'(reference) one ctypes call, libc abs()':<64}{call:>10.0f}")
    for text in FILTERS:
        f = Filter(text)
        for name, pkt in PACKETS.items():
            ns = per_call_ns(lambda f=f, pkt=pkt: f.matches(pkt), n, rounds)
            print(f"{text + '  on ' + name:<64}{ns:>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
