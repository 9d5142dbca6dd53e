"""The broker's own limit: a bare pika relay of the tunnel's message bodies.

Three processes, as in the tunnel (agent_1, router, agent_2), each with its own
connection on the local RabbitMQ:

    publisher --fromAgent.bench_x...raw--> relay --toAgent.bench_y...raw--> consumer
        ^                                                                      |
        +--toAgent.bench_x...raw-- relay <--fromAgent.bench_y...raw--(echo)----+

The relay is router-like and nothing more: one queue bound to the two uplink keys
(bounded like the router's), prefetch 512, acks batched once per read burst, every body
republished unchanged to the other side's downlink key. No parsing, no routing table.

* throughput: the publisher keeps at most `window` messages in flight (sent minus
  counted by the consumer, through shared memory), so the chain runs at its own limit
  without overflowing queues; the parent reads the consumer's count over a timed window.
* round trip: one message at a time, the consumer echoes it back through the relay,
  the publisher times each round trip (like ping through the tunnel: four broker hops).

All three use pika's SelectConnection (its own poll loop, the leanest pika adapter): the
plain pika relay. With lean=True they use the agent's own bus code instead (agent.bus.connection.Bus
in an asyncio loop: pika for the connection, agent.bus.frames for the messages), which
shows what the broker does with clients as lean as ours.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika

from agent.bus import wire
from agent.bus.connection import JSON_PROPS, Bus, QueueSpec
from agent.bus.url import parse_url
from bench.common import Stack, cpu_seconds, percentile

EXCHANGE = "amq.topic"
KEY_X_UP = "fromAgent.bench_x.ip.tun.packet.raw"
KEY_Y_UP = "fromAgent.bench_y.ip.tun.packet.raw"
KEY_X_DOWN = "toAgent.bench_x.ip.tun.packet.raw"
KEY_Y_DOWN = "toAgent.bench_y.ip.tun.packet.raw"
RELAY_MAP = {KEY_X_UP: KEY_Y_DOWN, KEY_Y_UP: KEY_X_DOWN}
PROPS = pika.BasicProperties(content_type=wire.CONTENT_TYPE, content_encoding=wire.CONTENT_ENCODING)
# queue arguments as the agent's and router's (bounded, drop oldest, short TTL)
ROUTER_QUEUE_ARGS = {"x-message-ttl": 5000, "x-max-length": 10000, "x-overflow": "drop-head"}
AGENT_QUEUE_ARGS = {"x-message-ttl": 5000, "x-max-length": 1000, "x-overflow": "drop-head"}


def ipv6_udp_packet(size: int, seed: int = 7) -> bytes:
    """A well-formed-looking IPv6/UDP packet of `size` bytes, bbbb::1 -> bbbb::2, random payload.

    Random payload, as iperf3 sends, so the JSON int array has a realistic length.
    """
    rng = random.Random(seed)
    payload = bytes(rng.getrandbits(8) for _ in range(size - 48))
    src = bytes.fromhex("bbbb" + "00" * 13 + "01")
    dst = bytes.fromhex("bbbb" + "00" * 13 + "02")
    header = struct.pack("!IHBB", 6 << 28, size - 40, 17, 64) + src + dst
    udp = struct.pack("!HHHH", 40000, 5201, size - 40, 0)
    return header + udp + payload


def ping_sized_packet() -> bytes:
    """An IPv6 ICMPv6 echo request as `ping -6` sends it by default (56 data bytes, 104 B)."""
    data = bytes(range(56))
    src = bytes.fromhex("bbbb" + "00" * 13 + "01")
    dst = bytes.fromhex("bbbb" + "00" * 13 + "02")
    header = struct.pack("!IHBB", 6 << 28, 8 + len(data), 58, 64) + src + dst
    return header + struct.pack("!BBHHH", 128, 0, 0, 1, 1) + data


# -- the three roles (each runs in its own process) ----------------------------------------


class _Role:
    """One relay process's part: its queue (exclusive) bound to `keys`, and callbacks."""

    def __init__(
        self,
        url: str,
        queue: str,
        keys: list[str],
        args: dict[str, Any],
        prefetch: int,
        on_body: Callable[[Any, str, bytes], None],
        on_ready: Callable[[], None],
    ) -> None:
        self.url, self.queue, self.keys, self.args = url, queue, keys, args
        self.prefetch, self.on_body, self.on_ready = prefetch, on_body, on_ready


class _Client(_Role):
    """The role on one SelectConnection and one channel, consuming."""

    def __init__(self, *role: Any) -> None:
        super().__init__(*role)
        self.channel: Any = None
        self._ack_tag = 0
        self._ack_scheduled = False
        self.conn = pika.SelectConnection(
            pika.URLParameters(self.url),
            on_open_callback=lambda c: c.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda _c, exc: self._fail(exc),
            on_close_callback=lambda _c, _exc: self.conn.ioloop.stop(),
        )

    def _fail(self, exc: BaseException) -> None:
        self.conn.ioloop.stop()
        raise SystemExit(f"relay benchmark: cannot connect: {exc}")

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.queue_declare(
            self.queue,
            exclusive=True,
            auto_delete=True,
            arguments=self.args,
            callback=lambda _f: self._bind(list(self.keys)),
        )

    def _bind(self, keys: list[str]) -> None:
        if not keys:
            self.channel.basic_qos(prefetch_count=self.prefetch, callback=self._consume)
            return
        key = keys.pop()
        self.channel.queue_bind(
            self.queue, EXCHANGE, routing_key=key, callback=lambda _f: self._bind(keys)
        )

    def _consume(self, _frame: Any) -> None:
        self.channel.basic_consume(self.queue, self._deliver, auto_ack=False)
        self.on_ready()

    def _deliver(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        self._ack_tag = method.delivery_tag
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self.conn.ioloop.call_later(0, self._flush_ack)
        self.on_body(channel, method.routing_key, body)

    def _flush_ack(self) -> None:
        self._ack_scheduled = False
        if self._ack_tag and self.channel.is_open:
            self.channel.basic_ack(self._ack_tag, multiple=True)
        self._ack_tag = 0

    def publish(self, key: str, body: bytes) -> None:
        self.channel.basic_publish(EXCHANGE, key, body, PROPS)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        return self.conn.ioloop.call_later(delay, fn)

    def cancel(self, handle: Any) -> None:
        self.conn.ioloop.remove_timeout(handle)

    def close(self) -> None:
        if not (self.conn.is_closing or self.conn.is_closed):
            self.conn.close()

    def run(self, stop: Any) -> None:
        def check() -> None:
            if stop.is_set():
                self.close()
            else:
                self.conn.ioloop.call_later(0.05, check)

        self.conn.ioloop.call_later(0.05, check)
        self.conn.ioloop.start()


class _LeanClient(_Role):
    """The role on agent.bus.connection.Bus (the agent's data path), in its own asyncio loop."""

    def __init__(self, *role: Any) -> None:
        super().__init__(*role)
        self.spec = QueueSpec(
            name=self.queue, bindings=self.keys, arguments=self.args, prefetch=self.prefetch
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bus: Bus | None = None
        self._closing = False
        self._readied = False

    def _up(self) -> None:
        if not self._readied:
            self._readied = True
            self.on_ready()

    def _fatal(self, reason: str) -> None:
        self._closing = True
        print(f"relay benchmark: {reason}", flush=True)

    def publish(self, key: str, body: bytes) -> None:
        assert self.bus is not None
        self.bus.publish(key, body, JSON_PROPS)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        assert self.loop is not None
        return self.loop.call_later(delay, fn)

    def cancel(self, handle: Any) -> None:
        handle.cancel()

    def close(self) -> None:
        self._closing = True

    def run(self, stop: Any) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.bus = Bus(
                parse_url(self.url),
                EXCHANGE,
                self.spec,
                on_message=lambda key, body, _ctype: self.on_body(None, key, body),
                on_up=self._up,
                on_fatal=self._fatal,
            )
            self.bus.start()
            while not (self._closing or stop.is_set()):
                await asyncio.sleep(0.05)
            await self.bus.close()

        asyncio.run(main())


def _client(lean: bool, *args: Any) -> Any:
    return (_LeanClient if lean else _Client)(*args)


def _child_signals() -> None:
    # the parent ends us (by PID); a terminal Ctrl-C is the parent's to handle
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def relay_main(url: str, ready: Any, stop: Any, relayed: Any, lean: bool) -> None:
    _child_signals()

    def on_body(_ch: Any, key: str, body: bytes) -> None:
        client.publish(RELAY_MAP[key], body)
        relayed.value += 1

    client = _client(
        lean, url, "bench_relay@router", [KEY_X_UP, KEY_Y_UP], ROUTER_QUEUE_ARGS, 512, on_body,
        ready.set,
    )
    client.run(stop)


def consumer_main(url: str, ready: Any, stop: Any, received: Any, echo: bool, lean: bool) -> None:
    _child_signals()

    def on_body(_ch: Any, _key: str, body: bytes) -> None:
        received.value += 1
        if echo:
            client.publish(KEY_Y_UP, body)

    client = _client(
        lean, url, "bench_y@agent", [KEY_Y_DOWN], AGENT_QUEUE_ARGS, 256, on_body, ready.set
    )
    client.run(stop)


def publisher_main(
    url: str,
    ready: Any,
    go: Any,
    stop: Any,
    body: bytes,
    window: int,
    sent: Any,
    received: Any,
    rtt_count: int,
    rtt_interval: float,
    rtts: Any,
    lean: bool,
) -> None:
    """Throughput mode (rtt_count == 0): keep `window` in flight until stop.

    Round-trip mode: rtt_count messages, one at a time, every rtt_interval seconds;
    rtts[i] is the i-th round trip in seconds (-1 if lost: no answer within 1 s).
    """
    _child_signals()
    state: dict[str, Any] = {"t0": 0.0, "i": 0, "waiting": False}

    def pump() -> None:
        if stop.is_set():
            client.close()
            return
        if not go.is_set():
            client.call_later(0.005, pump)
            return
        n = sent.value
        budget = window - (n - received.value)
        if budget > 0:
            for _ in range(min(budget, 64)):
                client.publish(KEY_X_UP, body)
            sent.value = n + min(budget, 64)
            client.call_later(0, pump)
        else:
            client.call_later(0.001, pump)

    def send_one() -> None:
        if stop.is_set() or state["i"] >= rtt_count:
            client.close()
            return
        if not go.is_set():
            client.call_later(0.005, send_one)
            return
        if state["waiting"]:  # previous one lost
            rtts[state["i"]] = -1.0
            state["i"] += 1
        state["waiting"] = True
        state["t0"] = time.perf_counter()
        client.publish(KEY_X_UP, body)
        sent.value += 1
        state["timer"] = client.call_later(1.0, send_one)

    def on_echo(_ch: Any, _key: str, _body: bytes) -> None:
        if not state["waiting"]:
            return  # a late answer to a message already counted lost
        rtts[state["i"]] = time.perf_counter() - state["t0"]
        state["waiting"] = False
        state["i"] += 1
        client.cancel(state["timer"])
        wait = max(0.0, state["t0"] + rtt_interval - time.perf_counter())
        state["timer"] = client.call_later(wait, send_one)

    def on_ready() -> None:
        ready.set()
        if rtt_count:
            client.call_later(0, send_one)
        else:
            client.call_later(0, pump)

    client = _client(
        lean, url, "bench_x@agent", [KEY_X_DOWN], AGENT_QUEUE_ARGS, 256, on_echo, on_ready
    )
    client.run(stop)


# -- the parent's side ------------------------------------------------------------------


def _start(stack: Stack, name: str, target: Callable[..., None], *args: Any) -> Any:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=target, args=args, name=name, daemon=True)
    p.start()

    def end() -> None:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
            p.join(3)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(3)

    stack.push(f"end {name} (pid {p.pid})", end)
    return p


def _wait(events: list[Any], procs: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(e.is_set() for e in events):
        dead = [p.name for p in procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"relay benchmark: {', '.join(dead)} exited early")
        if time.monotonic() > deadline:
            raise RuntimeError("relay benchmark: processes not ready in time")
        time.sleep(0.02)


@dataclass
class Pipeline:
    """publisher -> relay -> consumer processes, all ready; the publisher waits for `go`."""

    procs: dict[str, Any]
    go: Any
    stop: Any
    received: Any
    rtts: Any


@contextmanager
def _pipeline(
    url: str,
    body: bytes,
    window: int,
    count: int,
    interval: float,
    rtts_init: Any,
    echo: bool,
    lean: bool = False,
) -> Iterator[Pipeline]:
    """Start the three processes (each with its own connection); stop them at exit."""
    ctx = mp.get_context("fork")
    stop, go = ctx.Event(), ctx.Event()
    r_ready, c_ready, p_ready = ctx.Event(), ctx.Event(), ctx.Event()
    sent, received, relayed = (ctx.Value("q", 0, lock=False) for _ in range(3))
    rtts = ctx.Array("d", rtts_init, lock=False)
    with Stack() as stack:
        stack.push("stop relay processes", stop.set)
        relay = _start(stack, "relay", relay_main, url, r_ready, stop, relayed, lean)
        cons = _start(stack, "consumer", consumer_main, url, c_ready, stop, received, echo, lean)
        _wait([r_ready, c_ready], [relay, cons], 15)
        pub = _start(
            stack, "publisher", publisher_main, url, p_ready, go, stop, body, window, sent,
            received, count, interval, rtts, lean,
        )
        procs = {"publisher": pub, "relay": relay, "consumer": cons}
        _wait([p_ready], list(procs.values()), 15)
        yield Pipeline(procs, go, stop, received, rtts)


def throughput(
    url: str,
    packet_size: int,
    seconds: float,
    warmup: float = 1.0,
    window: int = 512,
    lean: bool = False,
) -> dict[str, Any]:
    """Messages/s through publisher -> relay -> consumer with the tunnel's JSON bodies."""
    body = wire.encode_packet(ipv6_udp_packet(packet_size), "tun0")
    with _pipeline(url, body, window, 0, 0.0, 1, echo=False, lean=lean) as pipe:
        procs, received = pipe.procs, pipe.received
        pipe.go.set()
        time.sleep(warmup)
        c0, t0 = received.value, time.monotonic()
        cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        bpid = broker_pid()
        broker0 = cpu_seconds(bpid)
        time.sleep(seconds)
        c1, t1 = received.value, time.monotonic()
        cpu1 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        broker1 = cpu_seconds(bpid)
        pipe.stop.set()
        for p in procs.values():
            p.join(3)
    n = c1 - c0
    rate = n / (t1 - t0)
    cpu = {k: cpu1[k] - cpu0[k] for k in procs}
    if broker0 is not None and broker1 is not None:
        cpu["broker"] = broker1 - broker0
    return {
        "packet_size": packet_size,
        "body_size": len(body),
        "messages": n,
        "seconds": t1 - t0,
        "msgs_per_s": rate,
        "mbit_per_s": rate * packet_size * 8 / 1e6,
        "window": window,
        "client": "agent.bus (lean frames)" if lean else "pika SelectConnection",
        "cpu_s": cpu,
        "cpu_s_per_10k": {k: v * 10000 / n if n else None for k, v in cpu.items()},
    }


def round_trip(url: str, count: int, interval: float) -> dict[str, Any]:
    """One message at a time out and back through the relay, every `interval` s (like ping)."""
    body = wire.encode_packet(ping_sized_packet(), "tun0")
    with _pipeline(url, body, 1, count, interval, [-2.0] * count, echo=True) as pipe:
        pipe.go.set()
        pipe.procs["publisher"].join(count * (interval + 1.0) + 10)
        rtts = list(pipe.rtts)
    times = [t * 1000 for t in rtts if t >= 0]
    lost = sum(1 for t in rtts if t == -1.0)
    done = sum(1 for t in rtts if t != -2.0)
    return {
        "packet_size": len(ping_sized_packet()),
        "body_size": len(body),
        "sent": done,
        "received": len(times),
        "loss_pct": 100.0 * lost / done if done else None,
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "mean_ms": sum(times) / len(times) if times else None,
    }


def broker_pid() -> int | None:
    """PID of the local RabbitMQ node (beam.smp running `-s rabbit`), read-only use."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"beam.smp") and b"rabbit" in argv and b"-s" in argv:
            return int(entry)
    return None
