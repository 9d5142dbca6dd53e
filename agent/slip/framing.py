"""Pure SLIP (RFC 1055) framing: encoding, incremental decoding and frame classification.

No I/O happens here. The byte-level escape codec is two ``bytes.replace`` calls each
way (:func:`escape` / :func:`unescape`, with a check for invalid escapes); this module
adds the parts a serial line needs on top of it: splitting a byte stream on ``END``
bytes across arbitrary read boundaries, a bounded receive buffer, per-frame error
isolation and counters, and recovering a packet that follows a line of unframed text
(:func:`split_text`).

Decoder behaviour (see :class:`SlipDecoder`):

* Frames are delimited by ``END``. Runs of ``END`` bytes (``END END``, a leading
  ``END``) only produce empty frames, which are ignored and counted in
  :attr:`DecoderStats.empty`.
* Bytes received before the first ``END`` are treated as an ordinary frame: the
  decoder cannot tell a line joined mid-frame from a peer that never sends a leading
  ``END`` (RIOT, tunslip6). Such a partial frame is delivered if it is a valid escape sequence
  (:func:`classify` will then normally say ``OTHER`` or ``TEXT``), and dropped as
  invalid or too big otherwise.
* A frame with an invalid escape (``ESC`` followed by anything other than
  ``ESC_END``/``ESC_ESC``, including ``ESC END``) is dropped; later frames decode.
* A frame whose decoded length exceeds ``mtu`` is dropped. The buffer holding the
  partial (still escaped) frame never grows beyond ``2 * mtu`` bytes: once that is
  exceeded the frame can only decode to more than ``mtu`` bytes, so the rest of it
  is discarded up to the next ``END``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "END",
    "ESC",
    "ESC_END",
    "ESC_ESC",
    "DecoderStats",
    "FrameKind",
    "SlipDecoder",
    "classify",
    "encode_frame",
    "escape",
    "prefix_answer",
    "split_text",
    "unescape",
]

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

_END_BYTE = bytes((END,))
_ESC_BYTE = bytes((ESC,))
_ESCAPED_END = bytes((ESC, ESC_END))
_ESCAPED_ESC = bytes((ESC, ESC_ESC))
_BAD_ESCAPE = re.compile(rb"\xdb(?![\xdc\xdd])")


class SlipError(ValueError):
    """An escaped frame that is not valid SLIP (ESC followed by neither ESC_END nor ESC_ESC)."""


def escape(payload: bytes) -> bytes:
    """RFC 1055 byte stuffing, without any END: ESC -> ESC ESC_ESC, END -> ESC ESC_END."""
    return payload.replace(_ESC_BYTE, _ESCAPED_ESC).replace(_END_BYTE, _ESCAPED_END)


def unescape(body: bytes) -> bytes:
    """Undo :func:`escape`; :class:`SlipError` if an ESC is not followed by ESC_END/ESC_ESC.

    In a valid body every ESC starts a two-byte pair whose second byte is never ESC,
    so replacing the ``ESC ESC_END`` pairs first cannot match across a pair boundary.
    """
    if _BAD_ESCAPE.search(body):
        raise SlipError("invalid SLIP escape")
    return body.replace(_ESCAPED_END, _END_BYTE).replace(_ESCAPED_ESC, _ESC_BYTE)

DEFAULT_MTU = 1500

# Contiki tunslip6 prefix request ("?P") and prefix answer ("!P" + 8 prefix bytes).
PREFIX_REQUEST_MARKER = b"?P"
PREFIX_ANSWER_MARKER = b"!P"

# Minimum share of printable bytes for a frame to be classified as TEXT.
_TEXT_MIN_RATIO = 0.9
_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def encode_frame(payload: bytes, leading_end: bool = False) -> bytes:
    """SLIP-encode one payload: ``payload END``, or ``END payload END`` with ``leading_end``.

    The serial line sends ``END payload END`` unless told otherwise
    (``SerialSettings.leading_end``, ``--slip-framing``): the leading ``END`` ends whatever
    a mote that just booted or reset holds (noise, half a frame), so the frame after it is
    not lost; current RIOT and Contiki-NG ignore the empty frame it makes (docs/serial.md).
    """
    body = escape(bytes(payload)) + _END_BYTE
    return _END_BYTE + body if leading_end else body


class FrameKind(enum.Enum):
    """What a decoded SLIP frame carries."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"
    PREFIX_REQUEST = "prefix_request"  # "?P" (Contiki tunslip6)
    PREFIX_ANSWER = "prefix_answer"  # "!P" + 8 bytes (Contiki tunslip6)
    TEXT = "text"  # printable debug output, e.g. Contiki log lines ending "\r\n"
    OTHER = "other"  # anything else (non-IP binary, empty)


def ip_length(data: bytes) -> int | None:
    """The length an IP packet at the start of data says it has (None: not an IP header).

    IPv6: 40 + payload length; IPv4: total length, with a header length of at least 20
    bytes that fits in it. Nothing is checked against ``len(data)``.
    """
    if len(data) >= 40 and data[0] >> 4 == 6:
        return 40 + int.from_bytes(data[4:6], "big")
    if len(data) >= 20 and data[0] >> 4 == 4:
        header_length = (data[0] & 0x0F) * 4
        total_length = int.from_bytes(data[2:4], "big")
        if 20 <= header_length <= total_length:
            return total_length
    return None


def split_text(frame: bytes) -> tuple[bytes, bytes] | None:
    """``(text, packet)`` when frame is printable text ending in ``\\n`` then one IP packet.

    A mote printing debug lines on its SLIP line without framing them makes the decoder
    see ``text\\r\\n`` + packet as one frame. The packet is recovered only when the bytes
    after some ``\\n`` of the printable start are exactly one IP packet by its own header
    length; the earliest such ``\\n`` wins. A frame that is itself exactly one IP packet
    by its header length is never split (None), so a packet holding 0x0A is never cut.
    """
    frame = bytes(frame)
    if ip_length(frame) == len(frame):
        return None
    end = 0
    while end < len(frame) and frame[end] in _PRINTABLE:
        end += 1
    newline = frame.find(b"\n", 0, end)
    while newline >= 0:
        rest = frame[newline + 1 :]
        if rest and ip_length(rest) == len(rest):
            return frame[: newline + 1], rest
        newline = frame.find(b"\n", newline + 1, end)
    return None


def _is_ipv6(frame: bytes) -> bool:
    if len(frame) < 40 or frame[0] >> 4 != 6:
        return False
    payload_length = int.from_bytes(frame[4:6], "big")
    return 40 + payload_length <= len(frame)


def _is_ipv4(frame: bytes) -> bool:
    if len(frame) < 20 or frame[0] >> 4 != 4:
        return False
    header_length = (frame[0] & 0x0F) * 4
    total_length = int.from_bytes(frame[2:4], "big")
    return header_length >= 20 and header_length <= total_length <= len(frame)


def _is_text(frame: bytes) -> bool:
    if not frame:
        return False
    printable = sum(1 for b in frame if b in _PRINTABLE)
    return printable >= _TEXT_MIN_RATIO * len(frame)


def classify(frame: bytes) -> FrameKind:
    """Classify a decoded frame.

    IP checks are structural (version nibble, minimum header size, length fields not
    exceeding the frame; trailing bytes are tolerated), then the tunslip6 ``?P``/``!P``
    markers, then text (at least 90 % printable ASCII, counting tab/CR/LF). An empty
    frame is ``OTHER``.
    """
    frame = bytes(frame)
    if _is_ipv6(frame):
        return FrameKind.IPV6
    if _is_ipv4(frame):
        return FrameKind.IPV4
    if frame.startswith(PREFIX_REQUEST_MARKER):
        return FrameKind.PREFIX_REQUEST
    if frame.startswith(PREFIX_ANSWER_MARKER):
        return FrameKind.PREFIX_ANSWER
    if _is_text(frame):
        return FrameKind.TEXT
    return FrameKind.OTHER


def prefix_answer(prefix: ipaddress.IPv6Network) -> bytes:
    """Payload answering a tunslip6 ``?P``: ``b"!P"`` + the first 8 bytes of the network.

    The caller SLIP-encodes it. Raises :class:`ValueError` for prefixes longer than /64,
    which cannot be expressed in 8 bytes.
    """
    if prefix.version != 6:
        raise ValueError(f"not an IPv6 prefix: {prefix}")
    if prefix.prefixlen > 64:
        raise ValueError(f"prefix longer than /64 cannot be announced: {prefix}")
    return PREFIX_ANSWER_MARKER + prefix.network_address.packed[:8]


@dataclass
class DecoderStats:
    """Counters kept by :class:`SlipDecoder`.

    ``frames`` counts delivered frames. ``empty`` counts empty frames (consecutive
    ``END`` bytes); they are not errors, just ignored.
    """

    frames: int = 0
    dropped_invalid: int = 0
    dropped_too_big: int = 0
    empty: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_invalid + self.dropped_too_big


class SlipDecoder:
    """Incremental SLIP decoder with bounded memory.

    ``feed()`` accepts data split at arbitrary points and returns the frames completed
    by it. At most :attr:`max_buffer` (``2 * mtu``) escaped bytes of a partial frame
    are held.
    """

    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < 1:
            raise ValueError(f"mtu must be positive, got {mtu}")
        self.mtu = mtu
        # Every decoded byte takes at most 2 escaped bytes, so an escaped frame longer
        # than 2 * mtu necessarily decodes to more than mtu bytes (or is invalid).
        self.max_buffer = 2 * mtu
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._overflow = False  # current frame exceeded max_buffer; skip to next END

    @property
    def buffered(self) -> int:
        """Number of bytes of the current partial frame held in memory."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """True if bytes of an unterminated frame have been received (held or skipped)."""
        return bool(self._buf) or self._overflow

    def reset(self) -> None:
        """Forget any partial frame (stats are kept)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data`` and return the complete, valid, non-empty frames it finished."""
        frames: list[bytes] = []
        *terminated, tail = bytes(data).split(_END_BYTE)
        for chunk in terminated:
            self._append(chunk)
            frame = self._finish_frame()
            if frame is not None:
                frames.append(frame)
        self._append(tail)
        return frames

    def _append(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        if len(self._buf) + len(chunk) > self.max_buffer:
            self._overflow = True
            self._buf.clear()
            return
        self._buf += chunk

    def _finish_frame(self) -> bytes | None:
        overflow, packet = self._overflow, bytes(self._buf)
        self.reset()
        if overflow:
            self.stats.dropped_too_big += 1
            return None
        if not packet:
            self.stats.empty += 1
            return None
        try:
            frame = unescape(packet)
        except SlipError:
            self.stats.dropped_invalid += 1
            return None
        if len(frame) > self.mtu:
            self.stats.dropped_too_big += 1
            return None
        self.stats.frames += 1
        return frame
