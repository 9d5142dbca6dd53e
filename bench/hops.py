"""Where a ping's time goes, hop by hop: agent -> broker -> router -> broker -> agent, both ways.

    sudo .venv/bin/python -m bench.hops DIR      # re-read the captures bench.quiet --hops kept

Used by `python -m bench.quiet --hops` (which makes the captures). The method: tcpdump on
both agents' TUNs (in their namespaces) and on loopback port 5672 (only the quiet
session's three AMQP connections: agent_1, agent_2, its router), the echo requests and
replies of one `ping` found at each point by their ICMPv6 id and sequence number (the bus
message body carries the IP packet as it is, on the fast wire after a 2-byte length), and
the time between consecutive points taken as the delay that hop added:

    request: tun_a -> agent_1>broker -> broker>router -> router>broker -> broker>agent_2 -> tun_b
    reply:   tun_b -> agent_2>broker -> broker>router -> router>broker -> broker>agent_1 -> tun_a

`x>broker` is the moment the segment carrying the packet left process x for the broker on
loopback (the send system call), `broker>x` the moment the broker wrote it to x. So an
agent hop is its wake-up, parse and publish; a broker hop is the broker reading the
socket, routing through its queue and writing to the consumer. The pcap reading, the TCP
reassembly, the matching and the delays are pure functions (tests/test_bench_quiet.py).

Also here: the broker-side samplers the quiet benchmark's diagnostic mode runs beside the
ping (queue depths and the Erlang run queue from the management API, a publisher-confirm
delay probe, `rabbitmq-diagnostics runtime_thread_stats` once, with its own CPU cost).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Proc, Stack, check, netns_exec, percentile, run, table

AMQP_PORT = 5672
ECHO_REQUEST, ECHO_REPLY = 128, 129
# an IPv6 packet carrying ICMPv6 (next header 58 at byte 6) echo request or reply (type at
# byte 40, code 0), then checksum, identifier, sequence number
_ECHO = re.compile(rb"[\x60-\x6f].{5}\x3a.{33}([\x80\x81])\x00..(..)(..)", re.S)

Key = tuple[int, int, int]  # (ICMPv6 type, identifier, sequence)

REQUEST_PATH = ("tun_a", "agent_1>broker", "broker>router", "router>broker", "broker>agent_2",
                "tun_b")
REPLY_PATH = ("tun_b", "agent_2>broker", "broker>router", "router>broker", "broker>agent_1",
              "tun_a")
HOP_NAMES = (
    "request: agent_1 (TUN read -> publish)",
    "request: broker (agent_1 -> router)",
    "request: router",
    "request: broker (router -> agent_2)",
    "request: agent_2 (delivery -> TUN write)",
    "echo: agent_2's kernel",
    "reply: agent_2 (TUN read -> publish)",
    "reply: broker (agent_2 -> router)",
    "reply: router",
    "reply: broker (router -> agent_1)",
    "reply: agent_1 (delivery -> TUN write)",
    "round trip on agent_1's TUN",
)


# -- pure: pcap, TCP, echoes, delays -----------------------------------------------------


def read_pcap(data: bytes) -> tuple[int, list[tuple[float, bytes]]]:
    """(link type, [(timestamp s, frame bytes)]) of a classic pcap file (tcpdump -w).

    A record cut short at the end (tcpdump stopped mid-write) is left out."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file (pcapng is not read here)")
    if len(data) < 24:
        raise ValueError("pcap file shorter than its header")
    scale = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(endian + "IIII")
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = record.unpack_from(data, pos)
        pos += 16
        if pos + incl > len(data):
            break
        out.append((sec + frac * scale, data[pos : pos + incl]))
        pos += incl
    return linktype, out


def ip_of_frame(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet in a captured frame (Ethernet as on lo, raw IP as on a TUN, Linux
    cooked captures), or None for anything else."""
    if linktype in (12, 101, 228, 229):
        return frame
    if linktype == 1:
        off, proto = 14, frame[12:14]
        while proto == b"\x81\x00" and len(frame) >= off + 4:  # VLAN tags
            proto, off = frame[off + 2 : off + 4], off + 4
    elif linktype == 113:
        off, proto = 16, frame[14:16]
    elif linktype == 276:
        off, proto = 20, frame[0:2]
    else:
        return None
    return frame[off:] if proto in (b"\x08\x00", b"\x86\xdd") else None


def tcp_segment(packet: bytes) -> tuple[int, int, int, bytes] | None:
    """(source port, destination port, sequence number, payload) of a TCP/IP packet."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] != 6 or ihl < 20:
            return None
        end = min(len(packet), struct.unpack_from("!H", packet, 2)[0])
        tcp = packet[ihl:end]
    elif version == 6 and len(packet) >= 40:
        if packet[6] != 6:
            return None
        tcp = packet[40 : 40 + struct.unpack_from("!H", packet, 4)[0]]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from("!HHI", tcp, 0)
    return sport, dport, seq, tcp[(tcp[12] >> 4) * 4 :]


@dataclass
class Stream:
    """One direction of a TCP connection, reassembled from the segments captured: the
    bytes, and for each segment where it starts in them and when it was captured."""

    data: bytearray = field(default_factory=bytearray)
    starts: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    next_seq: int | None = None
    gaps: int = 0  # bytes the capture missed (dropped by the kernel), counted as holes

    def add(self, seq: int, payload: bytes, t: float) -> None:
        if not payload:
            return
        if self.next_seq is not None:
            ahead = (seq - self.next_seq + 2**31) % 2**32 - 2**31  # signed, wraps at 2^32
            if ahead < 0:  # a retransmission: keep only what is new
                payload = payload[-ahead:]
                if not payload:
                    return
            elif ahead > 0:
                self.gaps += 1
            seq = (self.next_seq + max(ahead, 0)) % 2**32
        self.starts.append(len(self.data))
        self.times.append(t)
        self.data += payload
        self.next_seq = (seq + len(payload)) % 2**32

    def time_at(self, offset: int) -> float:
        """When the segment holding byte `offset` was captured."""
        return self.times[bisect.bisect_right(self.starts, offset) - 1]


def streams_of(frames: list[tuple[float, bytes]], linktype: int,
               roles: dict[int, str]) -> dict[str, Stream]:
    """The AMQP streams to and from each role's connection: {"agent_1>broker": ...,
    "broker>agent_1": ...}; roles maps a connection's client port to its role."""
    out: dict[str, Stream] = {}
    for t, frame in frames:
        packet = ip_of_frame(linktype, frame)
        seg = tcp_segment(packet) if packet is not None else None
        if seg is None:
            continue
        sport, dport, seq, payload = seg
        if dport == AMQP_PORT and sport in roles:
            name = f"{roles[sport]}>broker"
        elif sport == AMQP_PORT and dport in roles:
            name = f"broker>{roles[dport]}"
        else:
            continue
        out.setdefault(name, Stream()).add(seq, payload, t)
    return out


@dataclass
class Seen:
    """An echo at one point: when, and (in an AMQP stream) the channel of the body frame
    that carried it, if it was the first packet of that body."""

    t: float
    channel: int | None = None


def echo_key(packet: bytes, start: int = 0) -> Key | None:
    m = _ECHO.match(packet, start)
    if m is None:
        return None
    return m.group(1)[0], int.from_bytes(m.group(2), "big"), int.from_bytes(m.group(3), "big")


def echoes_in_packets(frames: list[tuple[float, bytes]], linktype: int) -> dict[Key, Seen]:
    """Echo requests and replies among captured IP packets (a TUN): first sighting each."""
    out: dict[Key, Seen] = {}
    for t, frame in frames:
        packet = ip_of_frame(linktype, frame)
        key = echo_key(packet) if packet is not None else None
        if key is not None:
            out.setdefault(key, Seen(t))
    return out


def body_channel(data: bytes | bytearray, packet_at: int) -> int | None:
    """The channel of the AMQP body frame whose body starts with this packet (fast wire:
    frame header of 7 bytes, then the packet's 2-byte length), else None."""
    head = packet_at - 9
    if head < 0 or data[head] != 3:
        return None
    length = int.from_bytes(data[packet_at - 2 : packet_at], "big")
    size = int.from_bytes(data[head + 3 : head + 7], "big")
    return int.from_bytes(data[head + 1 : head + 3], "big") if size >= length + 2 else None


def echoes_in_stream(stream: Stream) -> dict[Key, Seen]:
    """Echo requests and replies found in a reassembled AMQP stream (in message bodies),
    each timed by the segment that carried its ICMPv6 header."""
    out: dict[Key, Seen] = {}
    data = bytes(stream.data)
    for m in _ECHO.finditer(data):
        key = (m.group(1)[0], int.from_bytes(m.group(2), "big"), int.from_bytes(m.group(3), "big"))
        if key not in out:
            out[key] = Seen(stream.time_at(m.end() - 1), body_channel(data, m.start()))
    return out


def hop_delays(points: dict[str, dict[Key, Seen]]) -> dict[str, list[float]]:
    """Milliseconds each hop added, per echo seen at both of its ends (HOP_NAMES order)."""
    ids = {(i, s) for p in points.values() for (_t, i, s) in p}
    pairs: list[tuple[str, str, int, str, int]] = []
    for path, kind, names in ((REQUEST_PATH, ECHO_REQUEST, HOP_NAMES[:5]),
                              (REPLY_PATH, ECHO_REPLY, HOP_NAMES[6:11])):
        pairs += [(n, a, kind, b, kind) for n, a, b in zip(names, path[:-1], path[1:], strict=True)]
    pairs.append((HOP_NAMES[5], "tun_b", ECHO_REQUEST, "tun_b", ECHO_REPLY))
    pairs.append((HOP_NAMES[11], "tun_a", ECHO_REQUEST, "tun_a", ECHO_REPLY))
    out: dict[str, list[float]] = {n: [] for n in HOP_NAMES}
    for name, a, ka, b, kb in pairs:
        pa, pb = points.get(a, {}), points.get(b, {})
        for i, s in sorted(ids):
            sa, sb = pa.get((ka, i, s)), pb.get((kb, i, s))
            if sa is not None and sb is not None:
                out[name].append((sb.t - sa.t) * 1000)
    return out


def summarize(delays: dict[str, list[float]]) -> dict[str, dict[str, float | int | None]]:
    return {n: {"n": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99),
                "mean_ms": sum(v) / len(v) if v else None}
            for n, v in delays.items()}


def shares(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean ms per kind of hop (the broker's four passes, the router's two, the agents'
    four, the far end's echo) and the mean round trip: means add up, so for echoes seen
    at every point the parts sum to the round trip (percentiles do not)."""
    kinds = {"broker": (1, 3, 7, 9), "router": (2, 8), "agents": (0, 4, 6, 10), "echo": (5,)}
    out = dict.fromkeys(kinds, 0.0)
    for kind, indexes in kinds.items():
        for i in indexes:
            mean = summary.get(HOP_NAMES[i], {}).get("mean_ms")
            out[kind] += mean or 0.0
    out["round trip"] = summary.get(HOP_NAMES[-1], {}).get("mean_ms") or 0.0
    return out


def publish_channels(points: dict[str, dict[Key, Seen]]) -> dict[str, dict[int, int]]:
    """Per process: how many of its echo publishes went on which channel (a paced
    publisher, confirms on, uses its second channel; see agent/bus/connection.py)."""
    out: dict[str, dict[int, int]] = {}
    for name, seen in points.items():
        if name.endswith(">broker"):
            counts: dict[int, int] = {}
            for s in seen.values():
                if s.channel is not None:
                    counts[s.channel] = counts.get(s.channel, 0) + 1
            out[name[: -len(">broker")]] = counts
    return out


def analyse(files: dict[str, Path], roles: dict[int, str]) -> dict[str, Any]:
    """Read the captures of one phase: {"tun_a": pcap, "tun_b": pcap, "lo": pcap}."""
    points: dict[str, dict[Key, Seen]] = {}
    gaps: dict[str, int] = {}
    for name in ("tun_a", "tun_b"):
        if name in files and files[name].exists():
            linktype, frames = read_pcap(files[name].read_bytes())
            points[name] = echoes_in_packets(frames, linktype)
    if "lo" in files and files["lo"].exists():
        linktype, frames = read_pcap(files["lo"].read_bytes())
        for name, stream in streams_of(frames, linktype, roles).items():
            points[name] = echoes_in_stream(stream)
            gaps[name] = stream.gaps
    delays = hop_delays(points)
    return {
        "hops": summarize(delays),
        "seen": {n: len(p) for n, p in points.items()},
        "stream_gaps": gaps,
        "publish_channels": publish_channels(points),
    }


# -- capture -----------------------------------------------------------------------------


_DROPPED = re.compile(r"(\d+) packets? dropped by kernel")


@dataclass
class Capture:
    """tcpdump writing a pcap until stopped (SIGINT, by PID)."""

    proc: Proc
    path: Path

    @classmethod
    def start(cls, stack: Stack, name: str, argv: list[str], path: Path, logdir: Path,
              timeout: float = 10.0) -> Capture:
        # --immediate-mode: each packet to the file as it comes (else the last second's
        # packets may still sit in the kernel's ring when tcpdump is stopped)
        full = [*argv[:-1], "-n", "-U", "--immediate-mode", "-Z", "root", "-B", "4096",
                "-w", str(path), argv[-1]]
        proc = Proc(stack, name, full, logdir)
        deadline = time.monotonic() + timeout
        while "listening on" not in proc.text():
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump {name} did not start: {proc.tail(3)}")
            time.sleep(0.05)
        return cls(proc, path)

    def stop(self) -> int | None:
        """Stop it; the packets the kernel dropped (None if tcpdump did not say)."""
        self.proc.stop()
        m = _DROPPED.search(self.proc.text())
        return int(m.group(1)) if m else None


def tun_name(ns: str) -> str:
    """The one interface in ns that is not lo (the agent's TUN)."""
    for line in check(["ip", "-n", ns, "-o", "link", "show"]).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            return name
    raise RuntimeError(f"no TUN in namespace {ns}")


def connection_ports(vhost: str, pids: dict[str, int]) -> dict[int, str]:
    """{client port: role} of the connections to the broker of the processes in pids
    ({role: pid}) that are in vhost (a router may serve several vhosts)."""
    try:
        conns = api(f"/api/vhosts/{urllib.parse.quote(vhost, '')}/connections")
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"--hops needs the management API on {API}: {exc}") from None
    in_vhost = {c.get("peer_port") for c in conns}
    by_pid = {pid: role for role, pid in pids.items()}
    out: dict[int, str] = {}
    for line in run(["ss", "-Htnp", f"dport = :{AMQP_PORT}"], timeout=10).stdout.splitlines():
        m = re.search(rf":(\d+)\s+\S+:{AMQP_PORT}\b.*pid=(\d+)", line)
        if m and int(m.group(2)) in by_pid and int(m.group(1)) in in_vhost:
            out[int(m.group(1))] = by_pid[int(m.group(2))]
    missing = set(pids) - set(out.values())
    if missing:
        raise RuntimeError(f"no connection of {', '.join(sorted(missing))} found in {vhost}")
    return out


@dataclass
class HopCapture:
    """The three captures of one phase of the quiet session's ping."""

    files: dict[str, Path]
    captures: dict[str, Capture]

    @classmethod
    def start(cls, stack: Stack, ns_a: str, ns_b: str, roles: dict[int, str], outdir: Path,
              phase: str) -> HopCapture:
        ports = " or ".join(f"tcp port {p}" for p in sorted(roles))
        spec = {
            "tun_a": netns_exec(ns_a, "tcpdump", "-i", tun_name(ns_a), "icmp6"),
            "tun_b": netns_exec(ns_b, "tcpdump", "-i", tun_name(ns_b), "icmp6"),
            "lo": ["tcpdump", "-i", "lo", f"tcp port {AMQP_PORT} and ({ports})"],
        }
        files, caps = {}, {}
        for name, argv in spec.items():
            files[name] = outdir / f"{phase}-{name}.pcap"
            caps[name] = Capture.start(stack, f"tcpdump-{phase}-{name}", argv, files[name],
                                       outdir)
        return cls(files, caps)

    def stop(self) -> dict[str, int | None]:
        """Stop all three; packets each one's kernel buffer dropped."""
        return {name: c.stop() for name, c in self.captures.items()}


# -- the broker, seen from outside ------------------------------------------------------

API = "http://127.0.0.1:15672"


def api(path: str, timeout: float = 5.0) -> Any:
    """GET from the local broker's management API as guest (the test broker's account)."""
    req = urllib.request.Request(API + path)  # noqa: S310 (a fixed http:// address)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
        return json.loads(r.read())


def unread_kb(ss_output: str) -> int:
    """KB waiting in the receive queues of the sockets `ss -Htn` listed (Recv-Q column)."""
    total = 0
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            total += int(fields[1])
    return total // 1024


def queue_depths(queues: list[dict[str, Any]], quiet_vhost: str,
                 bulk_vhosts: set[str]) -> dict[str, int]:
    """Messages queued in the broker, summed for the quiet session and the bulk ones."""
    out = {"quiet": 0, "bulk": 0, "bulk_max_queue": 0}
    for q in queues:
        n = int(q.get("messages") or 0)
        if q.get("vhost") == quiet_vhost:
            out["quiet"] += n
        elif q.get("vhost") in bulk_vhosts:
            out["bulk"] += n
            out["bulk_max_queue"] = max(out["bulk_max_queue"], n)
    return out


class BrokerWatch:
    """In a thread: every `period` s the queue depths and the Erlang run queue (management
    API; the broker refreshes these figures every 5 s by default, so they are samples),
    and a publisher-confirm delay probe (one message every 0.1 s on a connection of its
    own: what a paced publisher sees)."""

    def __init__(self, url: str, quiet_vhost: str, bulk_vhosts: set[str], period: float = 2.5):
        self.url, self.quiet, self.bulk, self.period = url, quiet_vhost, bulk_vhosts, period
        self.samples: list[dict[str, Any]] = []
        self.confirm_ms: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]

    def __enter__(self) -> BrokerWatch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                depths = queue_depths(api("/api/queues?columns=name,vhost,messages"),
                                      self.quiet, self.bulk)
                nodes = api("/api/nodes?columns=name,run_queue")
                depths["run_queue"] = max(int(n.get("run_queue") or 0) for n in nodes)
                # bytes sent to the broker it has not read yet, and the other way round
                for k, flt in (("broker_unread_kb", f"sport = :{AMQP_PORT}"),
                               ("clients_unread_kb", f"dport = :{AMQP_PORT}")):
                    depths[k] = unread_kb(run(["ss", "-Htn", flt], timeout=10).stdout)
                self.samples.append(depths)
            except (OSError, ValueError) as exc:
                self.errors.append(f"management API: {exc}")
            self._stop.wait(self.period)

    def _probe(self) -> None:
        import pika  # the bench's own client, as in bench.relay

        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
        except Exception as exc:  # noqa: BLE001 (reported, the bench goes on)
            self.errors.append(f"confirm probe: {type(exc).__name__}")
            return
        try:
            ch = conn.channel()
            q = ch.queue_declare("", exclusive=True, auto_delete=True,
                                 arguments={"x-max-length": 1}).method.queue
            ch.confirm_delivery()
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ch.basic_publish("", q, b"probe")
                self.confirm_ms.append((time.perf_counter() - t0) * 1000)
                self._stop.wait(0.1)
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"confirm probe: {type(exc).__name__}: {exc}")
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001, S110 (already gone)
                pass

    def result(self) -> dict[str, Any]:
        def col(k: str) -> list[float]:
            return [float(s[k]) for s in self.samples if k in s]

        out: dict[str, Any] = {"samples": len(self.samples), "errors": self.errors[:3]}
        for k in ("quiet", "bulk", "bulk_max_queue", "run_queue", "broker_unread_kb",
                  "clients_unread_kb"):
            v = col(k)
            out[k] = {"mean": sum(v) / len(v) if v else None, "max": max(v) if v else None}
        out["confirm_ms"] = {"n": len(self.confirm_ms),
                             "p50": percentile(self.confirm_ms, 50),
                             "p99": percentile(self.confirm_ms, 99)}
        return out


_TYPE_LINE = re.compile(r"^\s*(scheduler|dirty_cpu_sche\w*|poll|aux)\s+(.*)$")


def thread_stats(text: str) -> dict[str, dict[str, float]]:
    """`rabbitmq-diagnostics runtime_thread_stats` "Stats per type" lines:
    {type: {column: percent}} (columns aux, check_io, emulator, gc, other, port, sleep)."""
    out: dict[str, dict[str, float]] = {}
    header: list[str] = []
    in_types = False
    for line in text.splitlines():
        if line.strip().startswith("Thread") and not header:
            header = line.split()[1:]
        if line.startswith("Stats per type"):
            in_types = True
            continue
        m = _TYPE_LINE.match(line) if in_types else None
        if m and header:
            values = [float(v.rstrip("%")) for v in m.group(2).split()]
            out[m.group(1)] = dict(zip(header, values, strict=False))
    return out


def runtime_thread_stats(seconds: int = 5) -> dict[str, Any]:
    """Run `rabbitmq-diagnostics runtime_thread_stats` once; its result and its own cost
    (the CLI starts an Erlang VM of its own: CPU seconds of the child)."""
    argv = ["rabbitmq-diagnostics", "-q", "runtime_thread_stats", "--sample-interval",
            str(seconds)]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        out = p.stdout.read() if p.stdout else ""
        _pid, _status, usage = os.wait4(p.pid, 0)
        p.returncode = 0
    except BaseException:
        p.kill()
        p.wait()
        raise
    stats = thread_stats(out)
    sched = stats.get("scheduler", {})
    return {
        "per_type": stats,
        "scheduler_busy_pct": 100 - sched["sleep"] if "sleep" in sched else None,
        "cli_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "cli_wall_s": round(time.monotonic() - t0, 1),
    }


# -- reading it back ---------------------------------------------------------------------


def render(idle: dict[str, Any] | None, loaded: dict[str, Any] | None) -> str:
    """Per hop, p50/p99 of the added delay, idle and loaded."""
    rows = []
    for name in HOP_NAMES:
        row: list[Any] = [name]
        for r in (idle, loaded):
            h = (r or {}).get("hops", {}).get(name, {})
            row += [h.get("p50_ms"), h.get("p99_ms"), h.get("n")]
        rows.append(row)
    lines = [table(["hop", "idle p50 ms", "p99", "n", "loaded p50 ms", "p99", "n"], rows)]
    for phase, r in (("idle", idle), ("loaded", loaded)):
        if r and r.get("hops"):
            parts = shares(r["hops"])
            lines.append(f"{phase}, mean ms: " + ", ".join(f"{k} {v:.2f}"
                                                          for k, v in parts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="a directory bench.quiet --hops --logs DIR wrote (hops-*.json)")
    args = ap.parse_args(argv)
    metas = sorted(Path(args.dir).glob("**/hops-*.json"))
    if not metas:
        print(f"bench.hops: no hops-*.json under {args.dir}", file=sys.stderr)
        return 2
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        roles = {int(p): r for p, r in meta["roles"].items()}
        res = {phase: analyse({k: Path(v) for k, v in files.items()}, roles)
               for phase, files in meta["files"].items()}
        print(f"{meta_path}:\n{render(res.get('idle'), res.get('loaded'))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
