"""Packet, byte and drop counters: plain dict increments on the hot path.

A path is "<in port>><out port>" (agent: "tun>bus"; router: "agent_1>" for what an agent
sent, ">agent_2" for what was delivered to one). Reading them (status line, table) is
off the hot path.
"""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self.packets: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.merged = 0
        """TCP segments the TUN wrote merged into the one before (agent.tun.gro)"""
        self.batches: Counter[int] = Counter()
        """fast-wire messages published, by the number of packets in each (--metrics)"""

    def count(self, path: str, size: int) -> None:
        self.packets[path] += 1
        self.bytes[path] += size

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def _paths(self) -> list[str]:
        """Sorted by port, a port's "in" before its "out" (router: agent_1>, >agent_1...)."""
        return sorted(self.packets, key=lambda p: (p.strip(">"), p.startswith(">")))

    def status_line(self) -> str:
        parts = [f"{p} {self.packets[p]}p/{self.bytes[p]}B" for p in self._paths()]
        drops = ", ".join(f"{r} {n}" for r, n in sorted(self.drops.items()))
        merged = f" | merged {self.merged}" if self.merged else ""
        return (
            " | ".join(parts or ["no packets"])
            + merged
            + (f" | drops: {drops}" if drops else "")
        )

    def per_port(self) -> dict[str, tuple[int, int, int, int]]:
        """port -> (packets in, bytes in, packets out, bytes out), summed over the paths."""
        ports: dict[str, list[int]] = {}
        for path, n in self.packets.items():
            src, _, dst = path.partition(">")
            size = self.bytes[path]
            if src:
                row = ports.setdefault(src, [0, 0, 0, 0])
                row[0] += n
                row[1] += size
            if dst:
                row = ports.setdefault(dst, [0, 0, 0, 0])
                row[2] += n
                row[3] += size
        return {port: (r[0], r[1], r[2], r[3]) for port, r in sorted(ports.items())}

    def table(self) -> str:
        """Paths, then per-port totals when they add something (a port on several paths),
        then drops by reason."""
        rows = [f"  {'path':<20}{'packets':>10}{'bytes':>14}"]
        for path in self._paths():
            rows.append(f"  {path:<20}{self.packets[path]:>10}{self.bytes[path]:>14}")
        pairs = [p.split(">", 1) for p in self.packets if ">" in p]
        pairs = [(src, dst) for src, dst in pairs if src and dst]
        shared = len({s for s, _ in pairs}) < len(pairs) or len({d for _, d in pairs}) < len(pairs)
        if shared:
            for port, (pin, bin_, pout, bout) in self.per_port().items():
                if pin:
                    rows.append(f"  {'in  ' + port:<20}{pin:>10}{bin_:>14}")
                if pout:
                    rows.append(f"  {'out ' + port:<20}{pout:>10}{bout:>14}")
        if self.merged:
            rows.append(f"  {'merged into one':<20}{self.merged:>10}")
        for reason, n in sorted(self.drops.items()):
            rows.append(f"  {'drop ' + reason:<20}{n:>10}")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "packets": dict(self.packets),
            "bytes": dict(self.bytes),
            "drops": dict(self.drops),
            "merged": self.merged,
        }
