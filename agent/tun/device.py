"""The TUN edge: create the device (optionally inside a namespace), configure it by
netlink, read and write packets, and remove everything on close.

The device is not persistent: closing its file descriptor deletes it, with its
addresses and routes, so even a killed agent leaves nothing behind. Routes we add
are still deleted explicitly on a clean stop.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
from collections.abc import Sequence

from pyroute2.netlink.exceptions import NetlinkError

from agent.config import AddressPlan, IPNetwork
from agent.counters import Counters
from agent.port import LINKTYPE_RAW, Deliver
from agent.tun.caps import check_connect
from agent.tun.gro import merge_segments
from agent.tun.netns import Netlink, entered, netns_path

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFA_F_NODAD = 0x02
READ_SIZE = 65536
MAX_BATCH = 64
TUN_DEVICE = "/dev/net/tun"


class TunError(Exception):
    """The TUN cannot be created or configured; str() is one line for the user."""


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        log.debug("cannot set %s: %s", path, exc)


def open_device(path: str = TUN_DEVICE) -> int:
    """Open the TUN clone device (non-blocking); TunError with what to do if it cannot be."""
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TunError(f"{path} is missing: load the tun module (modprobe tun)") from None
    except PermissionError:
        try:
            st = os.stat(path)
            mode = f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
        except OSError as exc:
            mode = exc.strerror or "cannot stat it"
        raise TunError(
            f"not permitted: {path} is not accessible to uid {os.geteuid()} ({mode}): run "
            f"as root, or make it mode 0666 as Debian, Ubuntu and Fedora ship it "
            f"(see docs/services.md)"
        ) from None
    except OSError as exc:
        raise TunError(f"cannot open {path}: {exc.strerror}") from None


def check_device(path: str = TUN_DEVICE) -> None:
    """Fail early (TunError) if the TUN clone device cannot be opened; opening it alone
    creates nothing."""
    os.close(open_device(path))


def open_tun(name: str | None, netns: str | None) -> tuple[int, str, Netlink, str | None]:
    """Create a TUN device (in netns if given).

    Returns (tun fd, ifname, a netlink socket of the same namespace, netns). The netlink
    socket is made here, on this thread, so that no child process is forked for it.
    """
    problem = check_connect(netns)
    if problem:
        raise TunError(problem)
    if netns is not None:
        netns_path(netns)  # clear error if missing
    with entered(netns):
        if name is not None:
            try:
                socket.if_nametoindex(name)
            except OSError:
                pass
            else:
                where = f" in namespace {netns}" if netns else ""
                raise TunError(f"interface name {name!r} is already taken{where}")
        fd = open_device()
        try:
            ifr = struct.pack("16sH", (name or "").encode(), IFF_TUN | IFF_NO_PI)
            ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise TunError(
                    "not permitted to create a TUN: needs root or CAP_NET_ADMIN"
                    + (f" in namespace {netns}" if netns else "")
                ) from None
            raise TunError(f"cannot create TUN {name or ''}: {exc.strerror}") from None
        ifname = ifr[:16].rstrip(b"\0").decode()
        # Per-interface settings only: never process-wide sysctls.
        _write_sysctl(f"/proc/sys/net/ipv4/conf/{ifname}/send_redirects", "0")
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/addr_gen_mode", "1")
        # no router on the session link: do not flood it with router solicitations
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{ifname}/router_solicitations", "0")
        netlink = Netlink()
    return fd, ifname, netlink, netns


class Tun:
    """A configured TUN device, the agent's port "tun" (agent/port.py): `open` reads
    bursts of packets on the loop, `send` writes one."""

    linktype = LINKTYPE_RAW

    def __init__(self, fd: int, name: str, netlink: Netlink, netns: str | None) -> None:
        self.fd = fd
        self.name = name
        self._reading = False
        self.netns = netns
        self._netlink = netlink
        self.index = 0
        self._routes: list[IPNetwork] = []
        self.gro = True
        """merge TCP segments to our own addresses before writing them (agent.tun.gro)"""
        self._local: frozenset[bytes] = frozenset()
        self._pending: list[bytes] = []
        self.counters: Counters | None = None
        """where a flush counts merged segments and failed writes (the agent's)"""

    @classmethod
    def create(cls, name: str | None, netns: str | None) -> Tun:
        return cls(*open_tun(name, netns))

    async def configure(self, plan: AddressPlan, mtu: int) -> None:
        ipr = await self._netlink.ipr()
        try:
            found = await ipr.link_lookup(ifname=self.name)
            if not found:
                raise TunError(f"TUN {self.name} vanished before it could be configured")
            self.index = found[0]
            await ipr.link("set", index=self.index, mtu=mtu)
            await ipr.link("set", index=self.index, state="up")
            self._local = frozenset(i.ip.packed for i in plan.interfaces())
            for iface in plan.interfaces():
                await ipr.addr(
                    "add",
                    index=self.index,
                    address=str(iface.ip),
                    prefixlen=iface.network.prefixlen,
                    flags=IFA_F_NODAD if iface.version == 6 else 0,
                )
        except NetlinkError as exc:
            raise TunError(f"cannot configure {self.name}: {os.strerror(exc.code)}") from None

    async def add_route(self, network: IPNetwork) -> bool:
        """Route network into the TUN; False if it could not be added."""
        if network in self._routes:
            return True
        self._routes.append(network)  # before the await: a second call does not add it twice
        ipr = await self._netlink.ipr()
        try:
            await ipr.route("add", dst=str(network), oif=self.index)
        except NetlinkError as exc:
            if network in self._routes:
                self._routes.remove(network)  # not ours to delete later
            if exc.code == errno.EEXIST:
                log.info("route %s exists already: left as it is", network)
                return True
            log.warning("cannot add route %s dev %s: %s", network, self.name, os.strerror(exc.code))
            return False
        log.info("route %s dev %s added", network, self.name)
        return True

    async def remove_route(self, network: IPNetwork) -> None:
        if network not in self._routes:
            return
        self._routes.remove(network)
        ipr = await self._netlink.ipr()
        try:
            await ipr.route("del", dst=str(network), oif=self.index)
        except NetlinkError as exc:
            log.debug("route %s already gone: %s", network, os.strerror(exc.code))

    @property
    def routes(self) -> list[IPNetwork]:
        return list(self._routes)

    def read_batch(self) -> list[bytes]:
        """Up to MAX_BATCH packets that are waiting; never blocks."""
        out: list[bytes] = []
        read, fd = os.read, self.fd
        try:
            for _ in range(MAX_BATCH):
                out.append(read(fd, READ_SIZE))
        except BlockingIOError:
            pass
        return out

    async def open(self, deliver: Deliver, key: str) -> None:
        """Read on the running loop: each burst of waiting packets goes to deliver."""
        read_batch = self.read_batch

        def on_readable() -> None:
            packets = read_batch()
            if packets:
                deliver(packets, key)

        asyncio.get_running_loop().add_reader(self.fd, on_readable)
        self._reading = True

    def send(self, packet: bytes) -> str | None:
        if self.gro and self._local:
            self._pending.append(packet)  # written by flush(), at the end of the burst
            return None
        try:
            os.write(self.fd, packet)
        except OSError:
            return "tun down"
        return None

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """Nothing to do: re-route networks never leave by the TUN."""

    def flush(self) -> None:
        """Write the burst send() queued, TCP segments to us merged (agent.tun.gro). A failed
        write counts one "tun down" drop (the packets were counted as sent by the agent)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        write, fd = os.write, self.fd
        out = merge_segments(pending, self._local)
        counters = self.counters
        if counters is not None:
            counters.merged += len(pending) - len(out)
        for packet in out:
            try:
                write(fd, packet)
            except OSError:
                if counters is not None:
                    counters.drop("tun down")

    async def close(self) -> None:
        """Stop reading; delete our routes, then the device (by closing its descriptor)."""
        if self._reading and self.fd >= 0:
            self._reading = False
            asyncio.get_running_loop().remove_reader(self.fd)
        for network in list(self._routes):
            await self.remove_route(network)
        self._netlink.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
