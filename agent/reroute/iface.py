"""The interface port: a network interface (e.g. eth1) as one more port of the agent.

The device network (the --re-route-prefix networks) sits behind the interface. The agent,
not the kernel, forwards between that network and the session; no forwarding sysctl is
touched.

Sockets (all made inside the agent's namespace, driven by the agent's loop, no threads):

* receive: one AF_PACKET/SOCK_DGRAM socket bound to the interface. It hands over IP
  packets without their link header, with the packet type (host, broadcast, outgoing...)
  and, through PACKET_AUXDATA, whether the transport checksum is still partial (a packet
  from a veth or tap), which is then completed here. Our own sends come back as
  PACKET_OUTGOING; they are ignored (and not even queued where PACKET_IGNORE_OUTGOING
  exists), so nothing loops.
* send: one raw L3 socket per IP version (IPPROTO_RAW: the header is ours, source address
  included), bound to the interface with SO_BINDTODEVICE. The kernel routes the packet
  out of that interface and does the link-layer addressing itself: neighbour discovery /
  ARP with its neighbour table, a short queue while a neighbour is resolved, retries and
  unreachability, as for any packet it sends. Nothing is added to the neighbour table by
  the agent.

Routes: when no route to a re-route network leads out of the interface (a bare cable with
only link-local addresses), the agent adds an on-link route for it there and deletes it
when it stops (agent.reroute.onlink).

What enters the switch from the interface (`accept_from_link`): unicast packets for this
host's link-layer address, from an address inside a re-route network, to an address that
is neither multicast nor one of this namespace's own addresses (those are the kernel's,
which answers them itself). Link-local scope (neighbour discovery, router solicitations,
fe80::/10, 169.254.0.0/16) is the switch's rule, the same for every re-route port
(`agent.switch.DROP_LINK_LOCAL`): it never reaches the bus.

If the kernel of the namespace forwards a family itself (forwarding sysctl on), packets of
that family from the interface are left to it: it routes them into the TUN, where the
agent reads them, and a second copy from here would duplicate them.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Sequence

from pyroute2.netlink.exceptions import NetlinkError

from agent.config import AddressPlan, ConfigError, IPNetwork
from agent.ipheader import PrefixTable, destination, is_group, source
from agent.port import LINKTYPE_RAW, Deliver
from agent.reroute.checksum import complete_checksum
from agent.reroute.onlink import OnLinkRoutes
from agent.switch import iface_port_name
from agent.tun.netns import Netlink, entered

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
TP_STATUS_CSUMNOTREADY = 1 << 3
AUXDATA = struct.Struct("=IIIHHHH")
IPV6_HDRINCL = 36
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40  # operationally up: carrier present
READ_SIZE = 65536 + 256
MAX_BATCH = 64
WATCH_INTERVAL = 1.0
ADDRESS_REFRESH = 5  # watch ticks between two reads of the namespace's addresses
RCVBUF = 1 << 20

# link states
UP, DOWN, NO_CARRIER, GONE = "up", "down", "no carrier", "gone"


class IfaceError(Exception):
    """The re-route interface cannot be used; str() is one line for the user."""


# -- pure parts --------------------------------------------------------------------------


port_name = iface_port_name  # the switch's name for an interface (agent.switch)


def accept_from_link(packet: bytes, networks: PrefixTable[bool], local: set[bytes]) -> str | None:
    """None if a packet received on the interface goes into the switch, else the reason."""
    dst = destination(packet)
    src = source(packet)
    if dst is None or src is None:
        return "not ip"
    version, addr = dst
    if is_group(version, addr):
        return "multicast"
    if addr in local:
        return "for the host"
    if networks.lookup(*src) is None:
        return "not from the network"
    return None


def link_state(ifname: str) -> tuple[str, int]:
    """(state, ifindex) of ifname in the current namespace (GONE, 0 when missing)."""
    try:
        index = socket.if_nametoindex(ifname)
    except OSError:
        return GONE, 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            ifr = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", ifname.encode(), 0))
        except OSError:
            return GONE, 0
    flags = struct.unpack_from("H", ifr, 16)[0]
    if not flags & IFF_UP:
        return DOWN, index
    if not flags & IFF_RUNNING:
        return NO_CARRIER, index
    return UP, index


def _read_flag(path: str) -> bool:
    try:
        with open(path) as f:
            return f.read().strip() not in ("", "0")
    except OSError:
        return False


def kernel_forwarding(ifname: str) -> set[int]:
    """IP versions the kernel of the current namespace forwards for packets from ifname."""
    out: set[int] = set()
    if _read_flag(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding"):
        out.add(4)
    if _read_flag("/proc/sys/net/ipv6/conf/all/forwarding") or _read_flag(
        f"/proc/sys/net/ipv6/conf/{ifname}/force_forwarding"
    ):
        out.add(6)
    return out


def state_word(state: str) -> str:
    return "down" if state == DOWN else "without carrier" if state == NO_CARRIER else state


def state_message(ifname: str, where: str, state: str) -> str:
    """Why an interface cannot be used at start (one line)."""
    if state == GONE:
        return f"re-route interface {ifname} does not exist{where}"
    if state == DOWN:
        return f"re-route interface {ifname}{where} is down (ip link set {ifname} up)"
    return f"re-route interface {ifname}{where} has no carrier (cable? peer up?)"


def open_sockets(ifname: str) -> tuple[socket.socket, dict[int, socket.socket]]:
    """The receive socket and the send socket per IP version of an interface (made in the
    current namespace)."""
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    tx: dict[int, socket.socket] = {}
    try:
        rx.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        try:
            rx.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # older kernels: outgoing copies are filtered below
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        rx.bind((ifname, ETH_P_ALL))
        rx.setblocking(False)
        for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            s = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
            tx[version] = s
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            if version == 6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
            s.setblocking(False)
    except BaseException:
        rx.close()
        for s in tx.values():
            s.close()
        raise
    return rx, tx


def _describe(nets: Iterable[IPNetwork]) -> str:
    return ", ".join(str(n) for n in nets) or "nothing"


# -- the port ----------------------------------------------------------------------------


class IfacePort:
    """The agent's port for a network interface (see the module docstring).

    A `Port` (agent/port.py). `check()` checks the interface and makes the sockets
    (IfaceError with one line when it is missing, down or without carrier, or when we may
    not open it), before the TUN is made; `open(deliver, key)` starts reading on the
    agent's loop; `close()` undoes everything.
    """

    def __init__(
        self,
        ifname: str,
        netns: str | None,
        prefixes: Iterable[IPNetwork],
    ) -> None:
        self.ifname = ifname
        self.name = port_name(ifname)
        self.netns = netns
        self.prefixes: tuple[IPNetwork, ...] = tuple(dict.fromkeys(prefixes))
        self.linktype = LINKTYPE_RAW
        self.deliver: Deliver = _nowhere
        self.key = self.name
        self.networks: PrefixTable[bool] = PrefixTable()
        for net in self.prefixes:
            self.networks.add(net, True)
        self.local: set[bytes] = set()
        self.state = GONE
        self.index = 0
        self.kernel_forwards: set[int] = set()
        self.ignored: dict[str, int] = {}
        self._rx: socket.socket | None = None
        self._tx: dict[int, socket.socket] = {}
        self._netlink: Netlink | None = None  # of the interface's namespace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task[None] | None = None
        self._send_errors: set[int] = set()
        self._where = f" in namespace {netns}" if netns else ""
        self.onlink = OnLinkRoutes(ifname, self._where, self.prefixes)  # removed on stop

    # -- open / start / close -------------------------------------------------------------

    def check(self) -> None:
        """Check the interface and make the sockets; IfaceError (one line) if unusable."""
        if not self.prefixes:
            raise IfaceError(
                f"re-route interface {self.ifname}: no --re-route-prefix to send to it"
            )
        try:
            with entered(self.netns):
                state, index = link_state(self.ifname)
                if state != UP:
                    raise IfaceError(state_message(self.ifname, self._where, state))
                self._open_sockets()
                self.kernel_forwards = kernel_forwarding(self.ifname)
                self._netlink = self.onlink.netlink = Netlink()
        except PermissionError:
            self._close_sockets()
            raise IfaceError(
                f"not permitted to open re-route interface {self.ifname}: needs root, or "
                "CAP_NET_RAW besides CAP_NET_ADMIN"
            ) from None
        except (OSError, ConfigError) as exc:
            self._close_sockets()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise IfaceError(f"cannot open re-route interface {self.ifname}: {reason}") from None
        self.state, self.index = UP, index

    def _open_sockets(self) -> None:
        """Make the receive and send sockets (inside the namespace)."""
        self._rx, self._tx = open_sockets(self.ifname)

    async def open(self, deliver: Deliver, key: str) -> None:
        """Start reading on the running loop (after check()): packets go to deliver."""
        self._loop = asyncio.get_running_loop()
        self.deliver, self.key = deliver, key
        await self._refresh_addresses()
        await self.onlink.ensure(self.index)
        self._add_reader()
        self._watch = self._loop.create_task(self._watch_loop())
        log.info(
            "re-route interface %s%s: %s leave by it, packets from there enter the session",
            self.ifname,
            self._where,
            _describe(self.prefixes),
        )
        for version in sorted(self.kernel_forwards):
            log.info(
                "IPv%d forwarding is on%s: the kernel forwards IPv%d packets from %s itself",
                version,
                self._where,
                version,
                self.ifname,
            )

    def routed(self, networks: Sequence[IPNetwork]) -> None:
        """Nothing to do: the interface takes its networks from the plan (on-link routes)."""

    def flush(self) -> None:
        """Nothing waits: every send() is one sendto()."""

    async def close(self) -> None:
        await self.onlink.remove()  # the on-link routes we added, if any
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._close_sockets()
        if self._netlink is not None:
            self._netlink.close()
        if self.ignored:
            log.debug("%s: ignored %s", self.ifname, self.ignored)

    def _add_reader(self) -> None:
        if self._loop is not None and self._rx is not None:
            self._loop.add_reader(self._rx.fileno(), self.on_readable)

    def _close_sockets(self) -> None:
        if self._rx is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._rx.fileno())
            self._rx.close()
            self._rx = None
        for s in self._tx.values():
            s.close()
        self._tx = {}

    # -- packets ---------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Read what is waiting on the interface; hand accepted packets to the switch."""
        rx = self._rx
        if rx is None:
            return
        networks, local = self.networks, self.local
        skip_versions = self.kernel_forwards
        packets: list[bytes] = []
        for _ in range(MAX_BATCH):
            try:
                packet, anc, _flags, addr = rx.recvmsg(READ_SIZE, socket.CMSG_SPACE(AUXDATA.size))
            except BlockingIOError:
                break
            except OSError as exc:
                self._on_error(exc)
                break
            if addr[2] != socket.PACKET_HOST or addr[1] not in (ETH_P_IPV6, ETH_P_IP):
                continue  # ours going out, broadcast, multicast, others', ARP...
            reason = accept_from_link(packet, networks, local)
            if reason is None and packet[0] >> 4 in skip_versions:
                reason = "kernel forwards"
            if reason is not None:
                self.ignored[reason] = self.ignored.get(reason, 0) + 1
                continue
            for level, kind, data in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
                    if AUXDATA.unpack_from(data)[0] & TP_STATUS_CSUMNOTREADY:
                        packet = complete_checksum(packet)
            packets.append(packet)
        if packets:
            self.deliver(packets, self.key)

    def _drop_reason(self) -> str:
        """Why a send() failed (the agent counts it as a drop)."""
        if self.state != UP:
            return f"{self.name} {self.state}"
        return f"{self.name} unsent"

    def send(self, packet: bytes) -> str | None:
        """Send packet out of the interface; a drop reason if it cannot go (down, gone,
        unroutable)."""
        version = packet[0] >> 4
        s = self._tx.get(version)
        if s is None:
            return self._drop_reason()
        if version == 6:
            dst = (socket.inet_ntop(socket.AF_INET6, packet[24:40]), 0, 0, 0)
        else:
            dst = (socket.inet_ntop(socket.AF_INET, packet[16:20]), 0)
        try:
            s.sendto(packet, dst)
        except BlockingIOError:
            return self._drop_reason()
        except OSError as exc:
            self._on_send_error(exc, packet)
            return self._drop_reason()
        return None

    def _on_send_error(self, exc: OSError, packet: bytes) -> None:
        code = exc.errno or 0
        if code in (errno.ENODEV, errno.ENXIO):
            self._set_state(GONE, 0)
            return
        if code in self._send_errors or code == errno.ENETDOWN:
            return
        self._send_errors.add(code)  # one line per kind of error, not one per packet
        dst = destination(packet)
        where = f" to {ipaddress.ip_address(dst[1])}" if dst else ""
        hint = ""
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            hint = f" (does {self.ifname} have a route to {_describe(self.prefixes)}?)"
        elif code == errno.EMSGSIZE:
            hint = f" (bigger than the MTU of {self.ifname})"
        log.warning("cannot send%s out of %s: %s%s", where, self.ifname, exc.strerror, hint)

    def _on_error(self, exc: OSError) -> None:
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            self._set_state(GONE, 0)
        elif exc.errno == errno.ENETDOWN:
            self._set_state(self._probe()[0], self.index)
        else:
            log.debug("%s: receive error %s", self.ifname, exc)

    # -- watching the link -------------------------------------------------------------------

    def _probe(self) -> tuple[str, int]:
        with entered(self.netns):
            state, index = link_state(self.ifname)
            self.kernel_forwards = kernel_forwarding(self.ifname) if state != GONE else set()
        return state, index

    async def _watch_loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            tick += 1
            try:
                before = self.state
                self._set_state(*self._probe())
                if self.state == UP and before != UP:
                    # taking a link down deletes its IPv6 routes, ours too: add it again
                    await self.onlink.ensure(self.index)
                if tick % ADDRESS_REFRESH == 0 and self.state != GONE:
                    await self._refresh_addresses()
            except Exception:  # the watch must not die and take the port with it
                log.exception("watching %s", self.ifname)

    def _set_state(self, state: str, index: int) -> None:
        """Log a change of the link once; drop the sockets when it is gone, reopen later."""
        if state != GONE and self.state != GONE and index != self.index:
            self._set_state(GONE, 0)  # deleted and made again: the old sockets are dead
        if state == self.state:
            return
        old, self.state = self.state, state
        if state == GONE:
            self._close_sockets()
            self.index = 0
            log.error(
                "re-route interface %s%s disappeared: packets for %s are dropped until it is "
                "back; the tunnel goes on",
                self.ifname,
                self._where,
                _describe(self.prefixes),
            )
            return
        if old == GONE:
            try:
                with entered(self.netns):
                    self._open_sockets()
            except OSError as exc:
                log.warning(
                    "re-route interface %s is back but cannot be opened: %s",
                    self.ifname,
                    exc.strerror,
                )
                self.state = GONE
                return
            self.index = index
            self._add_reader()
            if state == UP:
                log.warning("re-route interface %s%s is back and up", self.ifname, self._where)
                return
        if state == UP:
            log.warning("re-route interface %s%s is up again", self.ifname, self._where)
        else:
            log.error(
                "re-route interface %s%s is %s: packets for %s are dropped until it is up",
                self.ifname,
                self._where,
                state_word(state),
                _describe(self.prefixes),
            )

    async def _refresh_addresses(self) -> None:
        """The addresses of this namespace: packets for them are the kernel's to answer."""
        if self._netlink is not None and self._netlink.is_open:
            local = await namespace_addresses(self._netlink)
            if local is not None:
                self.local = local


async def namespace_addresses(netlink: Netlink) -> set[bytes] | None:
    """Every address of the namespace netlink belongs to (None if they cannot be read)."""
    try:
        ipr = await netlink.ipr()
        local: set[bytes] = set()
        async for msg in await ipr.addr("dump"):
            value = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")  # not a peer's
            if value:
                local.add(ipaddress.ip_address(value).packed)
    except (NetlinkError, OSError, ValueError) as exc:
        log.debug("cannot read the addresses of the namespace: %s", exc)
        return None
    return local


def _nowhere(packets: list[bytes], came_from: str) -> None:
    """Where packets go before open()."""


def open_for_plan(plan: AddressPlan, netns: str | None) -> IfacePort | None:
    """The interface port a plan names (re_route_packets_if), opened; None if it names none.

    IfaceError (one line) when the interface cannot be used.
    """
    if not plan.reroute_if or plan.reroute_if == "serial":
        return None  # no interface, or the serial line's port (agent.slip.link)
    port = IfacePort(plan.reroute_if, netns, plan.reroute_prefixes)
    port.check()
    return port
