"""Packet, byte and drop counters: plain dict increments on the hot path."""

from __future__ import annotations

from collections import Counter


class Counters:
    def __init__(self) -> None:
        self.packets: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    def count(self, path: str, size: int) -> None:
        self.packets[path] += 1
        self.bytes[path] += size

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def status_line(self) -> str:
        parts = [f"{p} {self.packets[p]}p/{self.bytes[p]}B" for p in sorted(self.packets)]
        drops = ", ".join(f"{r} {n}" for r, n in sorted(self.drops.items()))
        return " | ".join(parts or ["no packets"]) + (f" | drops: {drops}" if drops else "")

    def table(self) -> str:
        rows = [f"  {'path':<16}{'packets':>10}{'bytes':>14}"]
        for path in sorted(self.packets):
            rows.append(f"  {path:<16}{self.packets[path]:>10}{self.bytes[path]:>14}")
        for reason, n in sorted(self.drops.items()):
            rows.append(f"  {'drop ' + reason:<16}{n:>10}")
        return "\n".join(rows)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "packets": dict(self.packets),
            "bytes": dict(self.bytes),
            "drops": dict(self.drops),
        }
