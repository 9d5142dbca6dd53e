"""What `agent connect` may do: the capabilities this process holds (CapEff in
/proc/self/status) against what its options need, as a one-line reason when one is missing.

Root is not required: CAP_NET_ADMIN makes the TUN, its addresses and routes; --netns also
needs CAP_SYS_ADMIN (setns); --re-route-if also needs CAP_NET_RAW (packet sockets). A
service runs as an unprivileged user holding only those (docs/services.md).
"""

from __future__ import annotations

import os

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21

NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_NET_RAW: "CAP_NET_RAW", CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}


def parse_cap_eff(status: str) -> int:
    """The effective capability mask from the text of /proc/PID/status (0 if absent)."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                return 0
    return 0


def effective() -> int:
    """This process's effective capabilities (0 if /proc cannot be read)."""
    try:
        with open("/proc/self/status") as f:
            return parse_cap_eff(f.read())
    except OSError:
        return 0


def holds(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def _who(uid: int) -> str:
    return "root" if uid == 0 else f"uid {uid}"


def connect_problem(
    mask: int, uid: int, netns: str | None = None, reroute_if: str | None = None
) -> str | None:
    """Why `agent connect` with these options cannot run with capabilities `mask` (one
    line naming what is missing and what to do), or None. Pure."""
    if not holds(mask, CAP_NET_ADMIN):
        return (
            f"not permitted: creating the TUN needs root or CAP_NET_ADMIN, and this process "
            f"({_who(uid)}) does not hold CAP_NET_ADMIN: run it with sudo -E, or give it that "
            "capability (systemd: AmbientCapabilities=CAP_NET_ADMIN; see docs/services.md)"
        )
    if netns is not None and not holds(mask, CAP_SYS_ADMIN):
        return (
            f"not permitted: --netns needs CAP_SYS_ADMIN to enter namespace {netns!r}, and this "
            f"process ({_who(uid)}) does not hold it: run it as root, or start the agent inside "
            f"the namespace without --netns (ip netns exec {netns} agent connect ...)"
        )
    if reroute_if is not None and not holds(mask, CAP_NET_RAW):
        return (
            f"not permitted: --re-route-if needs CAP_NET_RAW (packet sockets on {reroute_if}) "
            f"besides CAP_NET_ADMIN, and this process ({_who(uid)}) does not hold it: run it "
            "as root, or give it both capabilities"
        )
    return None


def check_connect(netns: str | None = None, reroute_if: str | None = None) -> str | None:
    """connect_problem for this process."""
    return connect_problem(effective(), os.geteuid(), netns, reroute_if)
