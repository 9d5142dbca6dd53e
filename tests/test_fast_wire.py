"""Our fast wire: batch codec (property tests), negotiation, router transcoding (e2e)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bus import port as busport
from agent.bus import wire
from agent.bus.connection import FAST_PROPS, PACE_IDLE_S
from agent.bus.port import BusPort
from agent.bus.url import parse_url
from agent.counters import Counters
from agent.router.router import Router
from tests.conftest import (
    FakeBus,
    PublishTrace,
    Session,
    listening,
    needs_root,
    ns_run,
    ping,
    until,
    wait_for,
)

ip6 = st.binary(min_size=40, max_size=1500).map(lambda b: bytes([0x60]) + b[1:])
ip4 = st.binary(min_size=20, max_size=1500).map(lambda b: bytes([0x45]) + b[1:])


@given(st.lists(ip6 | ip4, min_size=1, max_size=40))
def test_batch_round_trip(packets: list[bytes]) -> None:
    assert wire.decode_batch(wire.encode_batch(packets)) == packets
    assert wire.decode_packets(wire.encode_batch(packets), wire.FAST_CONTENT_TYPE) == packets


@given(st.binary(max_size=300))
def test_batch_decoder_refuses_garbage_cleanly(body: bytes) -> None:
    try:
        packets = wire.decode_batch(body)
    except wire.WireError:
        return
    assert wire.encode_batch(packets) == body  # accepted only if it is a valid batch


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x05\x60", b"\x00\x00", b"\x00\x02ab"])
def test_batch_decoder_errors(body: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(body)


def test_capability_fields() -> None:
    assert wire.speaks_fast({wire.WIRE_FIELD: [wire.FAST_WIRE]})
    assert not wire.speaks_fast({wire.WIRE_FIELD: "batch1"})
    assert not wire.speaks_fast({})
    ready = orjson.loads(wire.encode_ready("packetrouting", **{wire.WIRE_FIELD: ["batch1"]}))
    assert ready["component"] == "packetrouting" and wire.speaks_fast(ready)


def test_busport_batches_one_loop_iteration() -> None:
    """Packets handed in during one loop iteration leave as one message; idle: one each."""
    async def go() -> None:
        bus = FakeBus()
        port = BusPort("fromAgent.a.ip.tun.packet.raw", Counters())
        port.bus = bus  # type: ignore[assignment]
        port.fast = True
        pkts = [bytes([0x60]) + bytes(39 + i) for i in range(5)]
        for p in pkts:
            assert port.send(p) is None
        assert bus.sent == []
        await asyncio.sleep(0)
        assert len(bus.sent) == 1 and bus.sent[0][2] is FAST_PROPS
        assert wire.decode_batch(bus.sent[0][1]) == pkts
        assert bus.paced == 1  # a batch of PACE_FROM or more: the bus turns its confirms on
        port.send(pkts[0])
        await asyncio.sleep(0)
        assert len(bus.sent) == 2 and wire.decode_batch(bus.sent[1][1]) == [pkts[0]]
        assert bus.paced == 1  # a lone packet does not ask for them
        # a full batch goes at once
        big = bytes([0x60]) + bytes(1399)
        for _ in range(wire.MAX_BATCH_BYTES // 1402 + 1):
            port.send(big)
        assert len(bus.sent) == 3

    asyncio.run(go())


def _fast_port_on_our_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[float], FakeBus, BusPort]:
    """A fast-wire BusPort on a FakeBus, the loop's and busport's clock set by now[0]
    (call it inside the running loop)."""
    now = [1000.0]
    asyncio.get_running_loop().time = lambda: now[0]  # type: ignore[method-assign]
    bus = FakeBus()
    port = BusPort("fromAgent.a.ip.tun.packet.raw", Counters())
    port.bus = bus  # type: ignore[assignment]
    port.batcher.clock = lambda: now[0]
    port.fast = True
    return now, bus, port


def test_busport_holds_a_burst_only_amid_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle: a packet leaves at the end of its burst. Right after a message (a stream):
    held up to COALESCE_S so that followers share its message; half a batch goes at once."""
    async def go() -> None:
        now, bus, port = _fast_port_on_our_clock(monkeypatch)
        pkt = bytes([0x60]) + bytes(99)
        port.send(pkt)
        port.flush()  # idle: sent at once
        assert len(bus.sent) == 1
        now[0] += busport.STREAM_GAP_S / 2
        port.send(pkt)
        port.flush()  # right after the previous message: held
        now[0] += busport.COALESCE_S / 2
        port.send(pkt)  # a follower in the window joins it
        port.flush()
        await asyncio.sleep(0)
        assert len(bus.sent) == 1
        now[0] += busport.COALESCE_S / 2 + 1e-6  # the window closes
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(bus.sent) == 2 and wire.decode_batch(bus.sent[1][1]) == [pkt, pkt]
        big = bytes([0x60]) + bytes(1399)
        for _ in range(wire.MAX_BATCH_BYTES // 2 // 1402 + 1):
            port.send(big)
        port.flush()  # half a batch: no reason to wait
        assert len(bus.sent) == 3
        now[0] += busport.STREAM_GAP_S * 2
        port.send(pkt)
        port.flush()  # the stream paused: no hold
        assert len(bus.sent) == 4
        now[0] += busport.STREAM_GAP_S / 2
        port.send(pkt)
        port.flush()  # held...
        port.drain()  # ...but the agent stops or switches wires: out now
        assert len(bus.sent) == 5

    asyncio.run(go())


def test_busport_holds_batches_while_the_broker_has_not_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Window closed (our messages not confirmed yet): packets wait and join one batch,
    which leaves at the confirm that opens it (Bus.before_flush), or after HOLD_MAX_S;
    a full batch never waits. Window open: a lone packet leaves at the end of its burst."""
    async def go() -> None:
        now, bus, port = _fast_port_on_our_clock(monkeypatch)
        bus.before_flush = port.release  # type: ignore[attr-defined]  # as agent.node does
        pkt = bytes([0x60]) + bytes(99)
        bus.window_open = False  # type: ignore[misc]
        for _ in range(3):
            port.send(pkt)
            port.flush()
            await asyncio.sleep(0)
        assert bus.sent == []
        bus.flush()  # a read from the broker without a confirm: still held
        assert bus.sent == []
        bus.window_open = True  # type: ignore[misc]
        bus.flush()  # the confirm
        assert len(bus.sent) == 1 and wire.decode_batch(bus.sent[0][1]) == [pkt] * 3
        now[0] += 1
        port.send(pkt)
        port.flush()  # window open: at once
        assert len(bus.sent) == 2
        bus.window_open = False  # type: ignore[misc]
        port.send(pkt)
        port.flush()
        now[0] += busport.HOLD_MAX_S / 2
        await asyncio.sleep(0)
        assert len(bus.sent) == 2
        now[0] += busport.HOLD_MAX_S / 2 + 1e-6  # no confirm in HOLD_MAX_S: out anyway
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(bus.sent) == 3
        big = bytes([0x60]) + bytes(1399)
        for _ in range(wire.MAX_BATCH_BYTES // 1402 + 1):
            port.send(big)
        assert len(bus.sent) == 4  # a full batch does not wait for the window

    asyncio.run(go())


def test_router_transcodes_between_wires() -> None:
    """A fast packet to a JSON-only agent goes as JSON; to a fast agent as a batch."""
    async def go() -> None:
        router = Router(parse_url("amqp://guest:guest@127.0.0.1:1/x"))
        bus = FakeBus()
        router.bus = router.batcher.bus = bus  # type: ignore[assignment]
        bus.before_flush = router._flush  # type: ignore[attr-defined]
        started = {"ipv6_host": "1", "ipv4_address": "10.2.0.1", wire.WIRE_FIELD: ["batch1"]}
        router._on_message("fromAgent.agent_1.ip.tun.started", orjson.dumps(started), None)
        router._on_message("fromAgent.agent_2.ip.tun.started",
                           orjson.dumps({"ipv6_host": "2", "ipv4_address": "10.2.0.2"}), None)
        assert router.fast_agents == {"agent_1"}
        bus.sent.clear()
        to2 = bytes([0x60, 0, 0, 0, 0, 0, 59, 64]) + bytes.fromhex("bbbb" + "00" * 13 + "01") \
            + bytes.fromhex("bbbb" + "00" * 13 + "02")
        to1 = to2[:8] + to2[24:40] + to2[8:24]
        props = wire.FAST_CONTENT_TYPE
        router._on_message("fromAgent.agent_1.ip.tun.packet.raw", wire.encode_batch([to2, to2]),
                           props)
        assert [k for k, _, _ in bus.sent] == ["toAgent.agent_2.ip.tun.packet.raw"] * 2
        assert all(wire.decode_packet(b) == to2 for _, b, _ in bus.sent)
        bus.sent.clear()
        json_body = wire.encode_packet(to1, "tun0")
        router._on_message("fromAgent.agent_2.ip.tun.packet.raw", json_body, None)
        assert bus.sent == []  # held until the end of this read from the broker...
        bus.flush()
        assert len(bus.sent) == 1  # ...and sent with it: no added latency
        key, body, p = bus.sent[0]
        assert key == "toAgent.agent_1.ip.tun.packet.raw" and p is FAST_PROPS
        assert wire.decode_batch(body) == [to1]
        # a fast batch in for a fast target leaves as one batch
        bus.sent.clear()
        router._on_message("fromAgent.agent_3.ip.tun.started", orjson.dumps(
            {"ipv6_host": "3", wire.WIRE_FIELD: ["batch1"]}), None)
        await asyncio.sleep(0)  # the router's ready for the new agent (one per loop turn)
        bus.sent.clear()
        to1_from3 = to1[:8] + bytes.fromhex("bbbb" + "00" * 13 + "03") + to1[24:]
        router._on_message("fromAgent.agent_3.ip.tun.packet.raw",
                           wire.encode_batch([to1_from3] * 3), props)
        bus.flush()
        assert len(bus.sent) == 1 and wire.decode_batch(bus.sent[0][1]) == [to1_from3] * 3
        await asyncio.sleep(0)
        assert len(bus.sent) == 1
        # uplink messages of two agents read together: one downlink message per target
        bus.sent.clear()
        router._on_message("fromAgent.agent_3.ip.tun.packet.raw",
                           wire.encode_batch([to1_from3] * 2), props)
        router._on_message("fromAgent.agent_2.ip.tun.packet.raw", json_body, None)
        bus.flush()
        assert len(bus.sent) == 1 and bus.sent[0][0] == "toAgent.agent_1.ip.tun.packet.raw"
        assert wire.decode_batch(bus.sent[0][1]) == [to1_from3, to1_from3, to1]
        # the broker has not confirmed our last messages: downlink batches wait (and grow)
        # until a read from the broker opens the window, or for HOLD_MAX_S at most
        bus.sent.clear()
        bus.window_open = False  # type: ignore[misc]
        for _ in range(2):
            router._on_message("fromAgent.agent_3.ip.tun.packet.raw",
                               wire.encode_batch([to1_from3] * 2), props)
            bus.flush()
        assert bus.sent == []
        bus.window_open = True  # type: ignore[misc]
        bus.flush()
        assert len(bus.sent) == 1 and wire.decode_batch(bus.sent[0][1]) == [to1_from3] * 4
        bus.sent.clear()
        bus.window_open = False  # type: ignore[misc]
        router._on_message("fromAgent.agent_3.ip.tun.packet.raw",
                           wire.encode_batch([to1_from3]), props)
        loop = asyncio.get_running_loop()
        held_at = loop.time()
        bus.flush()
        assert await until(lambda: len(bus.sent) == 1, 10 * busport.HOLD_MAX_S)
        assert loop.time() - held_at >= busport.HOLD_MAX_S * 0.9  # no confirm came: out anyway

    asyncio.run(go())


@pytest.mark.e2e
@needs_root
def test_json_agent_and_fast_agent_ping(session: Session) -> None:
    """One agent forced to JSON (like the original agent), one on the fast wire."""
    router = session.start_router()
    fast = session.start_agent("agent_1")  # --wire auto
    session.start_agent("agent_2", "--wire", "json")
    assert session.learned("agent_1", "agent_2")
    assert fast.wait_log("uplink wire: fast", 10), fast.output
    assert ping(session.ns["agent_1"], "bbbb::2", count=4)
    assert ping(session.ns["agent_2"], "10.2.0.1", count=4, version=4)
    router.send(signal.SIGUSR1)
    assert router.wait_log("status:", 5)
    line = [ln for ln in router.output.splitlines() if "status:" in ln][-1]
    counts = {k: int(v) for k, v in re.findall(r"(rx fast|rx json|tx fast|tx json) (\d+)p", line)}
    assert counts.get("rx fast", 0) >= 8 and counts.get("tx fast", 0) >= 1, line
    assert counts.get("rx json", 0) >= 8 and counts.get("tx json", 0) >= 8, line


@pytest.mark.e2e
@needs_root
def test_router_json_only_keeps_everyone_on_json(session: Session) -> None:
    session.start_router("--wire", "json")
    a1 = session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    assert ping(session.ns["agent_1"], "bbbb::2", count=3)
    assert not wait_for(lambda: "uplink wire: fast" in a1.output, 1)


@given(st.lists(ip6 | ip4, max_size=120))
def test_batches_split_by_the_one_rule(packets: list[bytes]) -> None:
    """Bodies carry every packet in order; each closes once it reaches the limit, so each
    but the last is at or over it by less than one packet, and none is empty."""
    out = list(wire.batches(packets))
    assert [p for body, _ in out for p in wire.decode_batch(body)] == packets
    assert [len(wire.decode_batch(body)) for body, _ in out] == [n for _, n in out]
    for i, (body, n) in enumerate(out):
        assert n >= 1
        last_size = len(wire.decode_batch(body)[-1]) + 2
        assert len(body) - last_size < wire.MAX_BATCH_BYTES  # not full before its last one
        if i < len(out) - 1:
            assert wire.batch_full(len(body))


CONFIRMS_ON = "publisher confirms on"


@pytest.mark.e2e
@needs_root
def test_confirms_turn_on_with_a_stream_not_with_pings(session: Session) -> None:
    """Lone packets (pings) never turn publisher confirms on; a TCP stream's batches do,
    in the sending agent and the router, and the stream and later pings get through.
    The broker's firehose shows the move: pings are published on the agent's first
    channel, the stream's batches on its confirm channel, and once the stream is over
    (PACE_IDLE_S without one, all confirmed) pings are on the first channel again."""
    router = session.start_router()
    a1 = session.start_agent("agent_1")
    session.start_agent("agent_2")
    assert session.learned("agent_1", "agent_2")
    assert a1.wait_log("uplink wire: fast", 10), a1.output
    ns1, ns2 = session.ns["agent_1"], session.ns["agent_2"]
    trace = PublishTrace(session.url)
    up = wire.uplink_key("agent_1")
    try:
        assert ping(ns1, "bbbb::2", count=5)
        assert CONFIRMS_ON not in a1.output and CONFIRMS_ON not in router.output
        channels = {ch for _k, ch, _b in trace.drain(up)}
        assert len(channels) == 1, channels  # ICMPv6 NS/NA may go too: all on one channel
        (first,) = channels
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "bbbb::2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda: listening(ns2, 5201), 10), "iperf3 server did not start"
            out = ns_run(ns1, "iperf3", "-c", "bbbb::2", "-t", "2", "-J", timeout=30)
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr
            sent = orjson.loads(out.stdout)["end"]["sum_received"]["bytes"]
            # a stream (hundreds of full segments, batches of many), whatever the load: the
            # router logs each packet (-v) and the broker copies each message (the trace)
            assert sent > 300_000, sent
        finally:
            if server.poll() is None:
                server.kill()
            server.wait()
        assert wait_for(lambda: CONFIRMS_ON in a1.output, 5), a1.output[-2000:]
        assert CONFIRMS_ON in router.output
        assert a1.output.count(CONFIRMS_ON) == 1  # once per connection
        stream = {ch for _k, ch, _b in trace.drain(up)}
        assert stream - {first}, stream  # the batches went by the confirm channel

        def pings_on_first_channel() -> bool:
            assert ping(ns1, "bbbb::2", count=1)
            return {ch for _k, ch, _b in trace.drain(up)} == {first}

        # no stream: publishes go back to the first channel (within 2 PACE_IDLE_S)
        assert wait_for(pings_on_first_channel, 4 * PACE_IDLE_S, interval=0.2)
        assert ping(ns1, "bbbb::2", count=3)
        assert {ch for _k, ch, _b in trace.drain(up)} == {first}
    finally:
        trace.close()
    assert "Traceback" not in a1.output and "Traceback" not in router.output
