"""Everything the bus takes from pika's internals, in one place, each use guarded.

pika (pinned `>=1.3,<2` in setup.py) runs the connection: handshake, channel,
declarations, consume, heartbeats, close. The bus's lean data path needs a few of its
private attributes, all listed in `INTERNALS` and only touched here:

- the connection's transport (`conn._transport`): its socket (`_sock`), its write queue
  (`_tx_buffers`, `_state` / `_STATE_ACTIVE`) and its read size (`_MAX_RECV_BYTES`);
- the transport's protocol shim (`_protocol.data_received`), where the bus's own frame
  reader takes over the incoming bytes, after the bytes pika had buffered
  (`conn._frame_buffer`);
- `conn._process_frame`, through which every frame that is not a delivery still reaches
  pika, in order; `conn.bytes_received` / `bytes_sent`, which pika's heartbeat checker
  watches.

When a future pika lacks one of them, the bus says so once, as a WARNING, and uses
pika's own path for what is missing (deliveries through pika's consumer callback,
publishes and acks through the transport's write). Nothing here raises because an
attribute was renamed. `tests/test_bus_datapath.py` fails when the lean path is not
active on the pinned pika.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

import pika
from pika import frame as pika_frame
from pika import spec

log = logging.getLogger("agent.bus")

READ_SIZE = 16384
"""bytes per recv(): pika's 4 KiB is less than one JSON packet message; 64 KiB reads
fragmented the JSON router's heap (its RSS grew 7 % in 5 minutes under load)"""

INTERNALS = {
    "read": ("conn._transport._protocol.data_received", "conn._frame_buffer",
             "conn._process_frame"),
    "write": ("conn._transport.write", "conn._transport.get_write_buffer_size"),
    "direct send": ("conn._transport._sock", "conn._transport._tx_buffers",
                    "conn._transport._state", "conn._transport._STATE_ACTIVE"),
}

_warned: set[str] = set()


def _fallback(what: str, missing: str) -> None:
    """One WARNING per kind of fallback and process."""
    if what in _warned:
        return
    _warned.add(what)
    log.warning(
        "pika %s has no %s: the bus's %s falls back to pika's own path (slower); "
        "agent.bus.pikaedge needs updating for this pika",
        pika.__version__, missing, what,
    )


def transport_of(conn: Any) -> Any:
    return getattr(conn, "_transport", None)


def tune_reads(conn: Any) -> None:
    """Read READ_SIZE bytes per recv() where pika lets us say so."""
    transport = transport_of(conn)
    if transport is not None and hasattr(transport, "_MAX_RECV_BYTES"):
        transport._MAX_RECV_BYTES = READ_SIZE


class Writer:
    """Bytes we encoded (publishes, acks) to the broker: one send() on the socket when
    pika has nothing queued, else after pika's queue (its transport's write)."""

    def __init__(self, conn: Any, transport: Any, sock: socket.socket | None) -> None:
        self.conn = conn
        self.transport = transport
        self.sock = sock
        self._active = getattr(transport, "_STATE_ACTIVE", None)

    @property
    def lean(self) -> bool:
        return self.sock is not None

    def backlog(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def write(self, data: bytes) -> None:
        conn, transport = self.conn, self.transport
        if conn.is_closed:
            return
        conn.bytes_sent += len(data)  # a public counter pika's heartbeat checker reads
        sock = self.sock
        if sock is not None and not transport._tx_buffers:
            if transport._state != self._active:
                return  # closing: pika drops writes now too
            try:
                sent = sock.send(data)
            except OSError:  # would block, or an error pika meets and reports on its write
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)


def writer(conn: Any) -> Writer | None:
    """How to write our frames on this connection; None (and a WARNING once) if pika's
    transport is not reachable: then publishes go through pika's channel."""
    transport = transport_of(conn)
    if transport is None or not all(
        callable(getattr(transport, a, None)) for a in ("write", "get_write_buffer_size")
    ):
        _fallback("publishing", "transport with write()")
        return None
    sock: socket.socket | None = None
    if type(transport).__name__ == "_AsyncPlaintextTransport":  # TLS: the SSL object owns it
        candidate = getattr(transport, "_sock", None)
        if isinstance(candidate, socket.socket) and all(
            hasattr(transport, a) for a in ("_tx_buffers", "_state", "_STATE_ACTIVE")
        ):
            sock = candidate
        else:
            _fallback("direct send", "transport socket and write queue")
    return Writer(conn, transport, sock)


class Reader:
    """The incoming bytes of a connection, taken over from pika (see `take_over`)."""

    def __init__(self, conn: Any, shim: Any) -> None:
        self.conn = conn
        self.shim = shim

    def install(self, data_received: Callable[[bytes], None]) -> bytes:
        """Route the socket's bytes to data_received; the bytes pika had buffered but not
        used yet (a partial frame) are returned, to be fed first."""
        leftover, self.conn._frame_buffer = self.conn._frame_buffer, b""
        self.shim.data_received = data_received
        return bytes(leftover)

    def count(self, n: int) -> None:
        self.conn.bytes_received += n  # pika's heartbeat checker watches this

    def to_pika(self, raw: bytes) -> None:
        """A whole frame that is not a delivery, to pika, built from the header our
        reader has already checked (not parsed again)."""
        self.conn._process_frame(pika_frame_of(raw))

    def abort(self) -> None:
        transport = transport_of(self.conn)
        if transport is not None:
            transport.abort()


def take_over(conn: Any) -> Reader | None:
    """A Reader for conn's incoming bytes; None (and a WARNING once) when pika's
    internals are not what this module knows: deliveries then stay on pika's path."""
    shim = getattr(transport_of(conn), "_protocol", None)
    if shim is None or not hasattr(shim, "data_received"):
        _fallback("receiving", "transport protocol shim")
        return None
    if not hasattr(conn, "_frame_buffer") or not callable(getattr(conn, "_process_frame", None)):
        _fallback("receiving", "connection frame buffer / _process_frame")
        return None
    return Reader(conn, shim)


_HEADER = struct.Struct(">HHQ")
_METHOD_ID = struct.Struct(">I")


def pika_frame_of(raw: bytes) -> Any:
    """pika's frame object for one whole frame (7-byte header, payload, frame-end)."""
    ftype = raw[0]
    channel = (raw[1] << 8) | raw[2]
    payload = raw[7:-1]
    if ftype == spec.FRAME_METHOD:
        method = spec.methods[_METHOD_ID.unpack_from(payload)[0]]()
        method.decode(payload, 4)
        return pika_frame.Method(channel, method)
    if ftype == spec.FRAME_HEADER:
        class_id, _weight, body_size = _HEADER.unpack_from(payload)
        properties = spec.props[class_id]()
        properties.decode(payload[12:])
        return pika_frame.Header(channel, body_size, properties)
    if ftype == spec.FRAME_BODY:
        return pika_frame.Body(channel, payload)
    if ftype == spec.FRAME_HEARTBEAT:
        return pika_frame.Heartbeat()
    raise pika.exceptions.InvalidFrameError(f"Unknown frame type: {ftype}")
