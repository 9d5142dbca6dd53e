"""`agent status`: the router's answer (`snapshot`) and its plain-text form. Pure.

The schema (docs/operating.md): one object, `routers` (a list: the router that answered)
and `agents` (one object per live agent incarnation).
"""

from __future__ import annotations

from typing import Any

from agent.counters import Counters
from agent.router.session import Session

STATUS_KEY = "routing.status.request"  # agent status -> the active router
STATUS_QUEUE = "packetrouting@router.status"  # the active router's, exclusive
SCHEMA = 1


def snapshot(session: Session, counters: Counters, now: float, url: Any) -> dict[str, Any]:
    """The session as the router sees it now (monotonic `now`; `url`: its AmqpUrl)."""
    agents = []
    for r in sorted(session.agents.values(), key=lambda r: r.name):
        base = r.base or (0, 0, 0, 0, 0)
        sent, got = f"{r.name}>", f">{r.name}"
        agents.append({
            "name": r.name,
            "incarnation": r.incarnation,
            "addresses": list(r.addresses),
            "networks": list(r.networks),
            "wire": r.wire,
            "since_s": round(now - r.since, 3),
            "last_seen_s": round(now - r.last_seen, 3),
            "packets_in": counters.packets[sent] - base[0],
            "bytes_in": counters.bytes[sent] - base[1],
            "packets_out": counters.packets[got] - base[2],
            "bytes_out": counters.bytes[got] - base[3],
            "drops": counters.drops[f"spoofed by {r.name}"] - base[4],
        })
    router = {
        "vhost": url.vhost,
        "node": url.where,
        "epoch": session.epoch,
        "up_s": round(now - session.up_since, 3),
        "standbys": None,  # a standby is invisible to the active router (docs/operating.md)
        "agents": len(agents),
        "drops": sum(counters.drops.values()),
    }
    return {"schema": SCHEMA, "routers": [router], "agents": agents}


def duration(seconds: float) -> str:
    """3 s, 4 min 10 s, 2 h 05 min, 3 d 4 h: what a table cell needs."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


COLUMNS = ("name", "addresses", "networks", "wire", "up for", "last packet",
           "packets in/out", "bytes in/out", "drops")


def router_line(status: dict[str, Any]) -> str:
    parts = []
    for r in status.get("routers", []):
        standbys = r.get("standbys")
        parts.append(
            f"router on {r.get('vhost')} at {r.get('node')}, up for {duration(r.get('up_s', 0))}, "
            f"{r.get('agents', 0)} agents"
            + ("" if standbys is None else f", {standbys} standby")
        )
    return "; ".join(parts) or "no router"


def rows(status: dict[str, Any]) -> list[tuple[str, ...]]:
    """One tuple of cells per agent, in COLUMNS' order."""
    out = []
    for a in status.get("agents", []):
        out.append((
            str(a.get("name")),
            " ".join(a.get("addresses") or []) or "-",
            " ".join(a.get("networks") or []) or "-",
            str(a.get("wire")),
            duration(a.get("since_s", 0)),
            f"{duration(a.get('last_seen_s', 0))} ago",
            f"{a.get('packets_in', 0)}/{a.get('packets_out', 0)}",
            f"{size(a.get('bytes_in', 0))}/{size(a.get('bytes_out', 0))}",
            str(a.get("drops", 0)),
        ))
    return out


def plain(status: dict[str, Any]) -> str:
    """The router line and the agents as an aligned text table (output not a terminal)."""
    table = [COLUMNS, *rows(status)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [router_line(status)]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
