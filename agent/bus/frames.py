"""AMQP 0-9-1 frames of the data path, sans-I/O: publishes out, deliveries in.

pika drives the connection (handshake, channel, declarations, heartbeats, close); the
per-packet traffic takes a shorter road than pika's generic frame objects:

* `PublishEncoder` turns (routing key, properties, body) into the bytes of the three
  frames of a Basic.Publish (method, content header, body frames), with the constant
  parts (method frame per routing key, encoded properties) built once;
* `FrameReader` splits the bytes from the broker into frames; Basic.Deliver on the
  data channel with its content header and body frames becomes one `Delivery`, a
  publisher confirm (Basic.Ack / Basic.Nack) on it one `Confirm`, every other frame is
  handed on unchanged as `Passthrough` (for pika to process, in order).

No I/O, no pika objects at run time: both are tested against pika's own marshalling.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = 0xCE
FRAME_OVERHEAD = 8  # type (1) + channel (2) + size (4) + frame-end (1)
BASIC = 60
BASIC_PUBLISH, BASIC_DELIVER, BASIC_ACK, BASIC_NACK = 40, 60, 80, 120
FLAG_CONTENT_TYPE = 0x8000

_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_START = struct.Struct(">HHQ")  # class, weight, body size
_LONGLONG = struct.Struct(">Q")
_END = bytes([FRAME_END])
_DELIVER_ID = struct.pack(">HH", BASIC, BASIC_DELIVER)  # class and method of basic.deliver
_CONFIRM_IDS = (struct.pack(">HH", BASIC, BASIC_ACK), struct.pack(">HH", BASIC, BASIC_NACK))
MAX_CACHED_KEYS = 4096


class FrameError(Exception):
    """The byte stream is not AMQP frames (or breaks the content rules)."""


def _shortstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {text[:40]!r}...")
    return bytes([len(raw)]) + raw


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(frame_type, channel, len(payload)) + payload + _END


def encode_properties(
    content_type: str | None = None, content_encoding: str | None = None
) -> bytes:
    """The property flags and list of a content header with these two properties."""
    flags, values = 0, b""
    if content_type is not None:
        flags |= FLAG_CONTENT_TYPE
        values += _shortstr(content_type)
    if content_encoding is not None:
        flags |= 0x4000
        values += _shortstr(content_encoding)
    return struct.pack(">H", flags) + values


class PublishEncoder:
    """Bytes of Basic.Publish messages on one channel, split to the negotiated frame_max."""

    def __init__(self, channel: int, frame_max: int, exchange: str) -> None:
        if frame_max <= FRAME_OVERHEAD:
            raise ValueError(f"frame_max {frame_max} too small")
        self.channel = channel
        self.body_max = frame_max - FRAME_OVERHEAD
        self._exchange = _shortstr(exchange)
        self._methods: dict[str, bytes] = {}

    def method_frame(self, routing_key: str) -> bytes:
        m = self._methods.get(routing_key)
        if m is None:
            payload = (
                struct.pack(">HHH", BASIC, BASIC_PUBLISH, 0)
                + self._exchange
                + _shortstr(routing_key)
                + b"\x00"  # mandatory, immediate: off
            )
            m = frame(FRAME_METHOD, self.channel, payload)
            if len(self._methods) >= MAX_CACHED_KEYS:
                self._methods.clear()
            self._methods[routing_key] = m
        return m

    def publish(self, routing_key: str, properties: bytes, body: bytes) -> list[bytes]:
        """The pieces (to join or send in order) of one message; properties from
        `encode_properties`."""
        ch, size = self.channel, len(body)
        header = _HEADER_START.pack(BASIC, 0, size) + properties
        pieces = [
            self.method_frame(routing_key),
            _FRAME_HEAD.pack(FRAME_HEADER, ch, len(header)),
            header,
            _END,
        ]
        step = self.body_max
        for start in range(0, size, step):
            chunk = body[start : start + step] if size > step else body
            pieces += (_FRAME_HEAD.pack(FRAME_BODY, ch, len(chunk)), chunk, _END)
        return pieces

    def ack(self, delivery_tag: int, multiple: bool = True) -> bytes:
        payload = struct.pack(">HHQB", BASIC, BASIC_ACK, delivery_tag, 1 if multiple else 0)
        return frame(FRAME_METHOD, self.channel, payload)


class Delivery(NamedTuple):
    delivery_tag: int
    routing_key: str
    content_type: str | None
    body: bytes


class Confirm(NamedTuple):
    """The broker took (or, nack, refused) our publishes up to delivery_tag (multiple),
    or only that one."""

    delivery_tag: int
    multiple: bool
    nack: bool


class Passthrough(NamedTuple):
    """One whole frame (header to frame-end) that is not a data-channel delivery."""

    raw: bytes


Event = Delivery | Confirm | Passthrough


def _confirm(buf: bytes, start: int) -> Confirm:
    """The Confirm of a Basic.Ack/Nack method frame whose payload starts at start."""
    (tag,) = _LONGLONG.unpack_from(buf, start + 4)
    return Confirm(tag, bool(buf[start + 12] & 1), buf[start + 3] == BASIC_NACK)


class FrameReader:
    """Frames from a byte stream fed in any chunks; deliveries on `channel` assembled,
    confirms on `channel` and `confirm_channel` read."""

    def __init__(self, channel: int, frame_max: int = 131072) -> None:
        self.channel = channel
        # publisher confirms (Basic.Ack/Nack) are read on this channel too, when set: the
        # one our paced publishes go on (agent.bus.connection)
        self.confirm_channel: int | None = None
        self.frame_max = frame_max  # as negotiated: a bigger frame is a broken stream
        # bytes of an incomplete frame, in the chunks they came in, and how many the
        # frame needs in all: joined once, when it is complete (not once per chunk)
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0
        # the delivery being assembled: tag, key, content type, body size (-1: no header
        # yet), body parts, bytes so far
        self._tag = 0
        self._key = ""
        self._ctype: str | None = None
        self._size = -1
        self._parts: list[bytes] = []
        self._got = 0
        self._assembling = False

    @property
    def buffered(self) -> int:
        return self._have

    def feed(self, data: bytes) -> list[Event]:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = data
        events: list[Event] = []
        pos, n, ch = 0, len(buf), self.channel
        unpack_head = _FRAME_HEAD.unpack_from
        while n - pos >= 8:
            ftype, fch, size = unpack_head(buf, pos)
            if size + FRAME_OVERHEAD > self.frame_max:
                raise FrameError(f"frame of {size} B over frame_max {self.frame_max}")
            end = pos + 7 + size
            if end >= n:
                break
            if buf[end] != FRAME_END:
                raise FrameError(f"frame without frame-end byte (type {ftype}, {size} B)")
            start = pos + 7
            if fch == ch:
                if self._assembling:
                    self._content(ftype, buf, start, end, events)
                elif (
                    ftype == FRAME_METHOD
                    and size >= 4
                    and buf[start : start + 4] == _DELIVER_ID
                ):
                    self._deliver(buf, start, end)
                elif (
                    ftype == FRAME_METHOD
                    and size == 13
                    and buf[start : start + 4] in _CONFIRM_IDS
                ):
                    events.append(_confirm(buf, start))
                else:
                    events.append(Passthrough(buf[pos : end + 1]))
            elif (
                fch == self.confirm_channel
                and ftype == FRAME_METHOD
                and size == 13
                and buf[start : start + 4] in _CONFIRM_IDS
            ):
                events.append(_confirm(buf, start))
            else:
                events.append(Passthrough(buf[pos : end + 1]))
            pos = end + 1
        self._keep(buf[pos:] if pos < n else b"")
        return events

    def _keep(self, rest: bytes) -> None:
        """The start of a frame not complete yet (or b""): kept until the rest comes."""
        if not rest:
            self._have = 0
            return
        self._chunks = [rest]
        self._have = len(rest)
        # a whole frame: its 7-byte header, payload and frame-end (8 bytes at least)
        size = _FRAME_HEAD.unpack_from(rest)[2] if len(rest) >= 7 else 0
        if size + FRAME_OVERHEAD > self.frame_max:
            raise FrameError(f"frame of {size} B over frame_max {self.frame_max}")
        self._need = size + FRAME_OVERHEAD

    def _deliver(self, buf: bytes, start: int, end: int) -> None:
        try:
            off = start + 4
            off += 1 + buf[off]  # consumer tag
            (self._tag,) = _LONGLONG.unpack_from(buf, off)
            off += 9  # delivery tag, redelivered
            off += 1 + buf[off]  # exchange
            klen = buf[off]
            if off + 1 + klen > end:
                raise IndexError
            self._key = buf[off + 1 : off + 1 + klen].decode()
        except (IndexError, struct.error, UnicodeDecodeError):
            raise FrameError("malformed basic.deliver") from None
        self._assembling, self._size, self._ctype = True, -1, None

    def _content(self, ftype: int, buf: bytes, start: int, end: int, events: list[Event]) -> None:
        if self._size < 0:
            if ftype != FRAME_HEADER or end - start < 14:
                raise FrameError("basic.deliver not followed by a content header")
            _cls, _weight, size = _HEADER_START.unpack_from(buf, start)
            ctype = None
            if buf[start + 12] & (FLAG_CONTENT_TYPE >> 8):  # high byte of the property flags
                clen = buf[start + 14]
                if start + 15 + clen > end:
                    raise FrameError("content header shorter than its content type")
                try:
                    ctype = buf[start + 15 : start + 15 + clen].decode()
                except UnicodeDecodeError:
                    ctype = None
            self._ctype = ctype
            if size == 0:
                self._done(b"", events)
                return
            self._size, self._parts, self._got = size, [], 0
            return
        if ftype != FRAME_BODY:
            raise FrameError("content body interrupted by another frame")
        part = buf[start:end]
        self._parts.append(part)
        self._got += len(part)
        if self._got >= self._size:
            if self._got > self._size:
                raise FrameError("content body longer than its header said")
            parts = self._parts
            self._done(parts[0] if len(parts) == 1 else b"".join(parts), events)

    def _done(self, body: bytes, events: list[Event]) -> None:
        events.append(Delivery(self._tag, self._key, self._ctype, body))
        self._assembling, self._size, self._parts = False, -1, []
