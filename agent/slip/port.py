"""The serial line edge: one pyserial port, SLIP frames in and out, on the asyncio loop.

`SerialPort` opens the device once (non-blocking, exclusive), lets the event loop watch its
file descriptor (``loop.add_reader``; no polling thread) and hands every decoded SLIP frame
to a callback. Outgoing payloads are SLIP-encoded into a small bounded queue that is
written as the line accepts it (``loop.add_writer`` on a full kernel buffer), optionally
with a pause between frames scheduled by ``loop.call_later`` (`--slip-pace-us`).

When the device vanishes (USB unplugged, pty master closed) the loss is logged once, the
port is closed and reopening is tried every second until it works; everything else in the
agent keeps running. Failure to open at start is a `SerialPortError` with a one-line
reason (missing device, held by another process, no permission, not a tty).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import serial

from agent.slip.framing import DEFAULT_MTU, SlipDecoder, encode_frame

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 115200
REOPEN_INTERVAL = 1.0  # seconds between attempts to reopen a vanished port
QUEUE_FRAMES = 64  # outgoing frames waiting for the line before send() refuses more
READ_SIZE = 65536
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit

_IN_USE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}
_GONE = {errno.ENOENT, errno.ENODEV, errno.ENXIO}


class SerialPortError(Exception):
    """The serial port cannot be used; str() is a one-line reason for the user."""


@dataclass(frozen=True)
class SerialSettings:
    """How to open and drive one serial line."""

    device: str
    baudrate: int = DEFAULT_BAUDRATE
    rtscts: bool = False
    xonxoff: bool = False
    pace_us: int = 0  # pause between frames on write (0: none)
    leading_end: bool = True  # END payload END (False: payload END, --slip-framing end-only)
    mtu: int = DEFAULT_MTU  # decoded frames above this are dropped
    queue_frames: int = QUEUE_FRAMES


def describe_open_error(device: str, exc: BaseException) -> str:
    """One line for the user from a pyserial/OS error raised while opening `device`."""
    code = getattr(exc, "errno", None)
    if code in _GONE:
        return f"serial port {device} does not exist (is the device plugged in?)"
    if code in _IN_USE:
        return f"serial port {device} is in use by another process"
    if code in _NO_PERMISSION:
        return (
            f"no permission to open serial port {device} "
            "(add the user to the group owning it, often 'dialout', or run as root)"
        )
    if code == errno.EISDIR:
        return f"serial port {device} is a directory, not a serial device"
    text = str(exc)
    if code == errno.ENOTTY or "configure port" in text:
        return f"{device} is not a serial device (cannot set its line parameters)"
    if isinstance(exc, ValueError):
        return f"cannot open serial port {device}: {text}"
    reason = os.strerror(code) if isinstance(code, int) else text
    return f"cannot open serial port {device}: {reason}"


def open_serial(settings: SerialSettings) -> serial.Serial:
    """Open the device non-blocking and exclusively; SerialPortError if that fails."""
    try:
        return serial.Serial(
            port=settings.device,
            baudrate=settings.baudrate,
            rtscts=settings.rtscts,
            xonxoff=settings.xonxoff,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(describe_open_error(settings.device, exc)) from None


def frame_airtime(size: int, baudrate: int) -> float:
    """Seconds a frame of `size` bytes takes on the line at `baudrate` (8N1)."""
    return size * BITS_PER_BYTE / baudrate


@dataclass
class PortStats:
    """Counters of one serial port (the decoder keeps its own, see `SerialPort.decoder`)."""

    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0  # refused: queue full or port down
    losses: int = 0  # times the device vanished
    reopens: int = 0


FrameHandler = Callable[[bytes], None]


class SerialPort:
    """One serial line carrying SLIP frames, driven by the running asyncio loop.

    `open()` may be called before the loop runs (to fail early with a clear error);
    `start()` must be called from the loop. `on_frame(frame)` gets each decoded, non-empty
    frame of at most `settings.mtu` bytes. `on_open()` is called after each (re)open once
    the port is watched. `on_drop(reason, count)` learns of frames the decoder dropped:
    "bad frame" (invalid escape) or "too big" (over the MTU).
    """

    def __init__(
        self,
        settings: SerialSettings,
        on_frame: FrameHandler,
        on_open: Callable[[], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
        reopen_interval: float = REOPEN_INTERVAL,
    ) -> None:
        self.settings = settings
        self.device = settings.device
        self._on_frame = on_frame
        self._on_open = on_open
        self._on_drop = on_drop
        self._seen_invalid = 0
        self._seen_too_big = 0
        self.reopen_interval = reopen_interval
        self.decoder = SlipDecoder(settings.mtu)
        self.stats = PortStats()
        self._pace = settings.pace_us / 1_000_000
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: deque[bytes] = deque()
        self._current: memoryview | None = None  # rest of the frame being written
        self._writer = False  # waiting for the fd to become writable
        self._pace_timer: asyncio.TimerHandle | None = None
        self._next_write = 0.0  # loop time before which no new frame starts (pacing)
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open the device now; SerialPortError with a one-line reason if it cannot be."""
        if self._serial is None:
            self._set_serial(open_serial(self.settings))

    def start(self) -> None:
        """Watch the port from the running loop (opening it first if needed)."""
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self.open()
        self._watch()

    def close(self) -> None:
        """Stop watching, cancel timers, drop queued frames and close the device."""
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._release()

    def _set_serial(self, ser: serial.Serial) -> None:
        self._serial = ser
        self._fd = ser.fileno()
        self.decoder.reset()

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None and self._serial is not None
        loop.add_reader(self._fd, self._on_readable)
        if self._on_open is not None:
            self._on_open()

    def _release(self) -> None:
        """Forget the device: remove watches and timers, drop pending output, close."""
        loop = self._loop
        if self._fd >= 0 and loop is not None:
            loop.remove_reader(self._fd)
            if self._writer:
                loop.remove_writer(self._fd)
        self._writer = False
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None
        self.stats.tx_dropped += len(self._out) + (self._current is not None)
        self._out.clear()
        self._current = None
        ser, self._serial, self._fd = self._serial, None, -1
        if ser is not None:
            try:
                ser.close()
            except (OSError, serial.SerialException):
                pass
        self.decoder.reset()

    def _lost(self, reason: str) -> None:
        """The device went away: log once, keep the agent up, retry every second."""
        if self._serial is None:
            return
        self._release()
        self.stats.losses += 1
        log.warning(
            "serial port %s lost (%s); the rest of the tunnel stays up, "
            "reopening it when it reappears",
            self.device,
            reason,
        )
        self._schedule_reopen()

    def _schedule_reopen(self) -> None:
        if self._closed or self._loop is None:
            return
        self._retry = self._loop.call_later(self.reopen_interval, self._try_reopen)

    def _try_reopen(self) -> None:
        self._retry = None
        if self._closed or self._serial is not None:
            return
        try:
            self._set_serial(open_serial(self.settings))
        except SerialPortError as exc:
            log.debug("serial port %s still unavailable: %s", self.device, exc)
            self._schedule_reopen()
            return
        self.stats.reopens += 1
        log.warning("serial port %s is back", self.device)
        self._watch()

    # -- reading -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc.strerror or str(exc))
            return
        if not data:  # hang-up: the other end of the line is gone
            self._lost("hang-up")
            return
        self.stats.rx_bytes += len(data)
        frames = self.decoder.feed(data)
        if self._on_drop is not None:
            self._report_drops(self._on_drop)
        on_frame = self._on_frame
        for frame in frames:
            on_frame(frame)
            if self._serial is None:  # the handler closed us
                return

    def _report_drops(self, on_drop: Callable[[str, int], None]) -> None:
        stats = self.decoder.stats
        if stats.dropped_invalid != self._seen_invalid:
            on_drop("bad frame", stats.dropped_invalid - self._seen_invalid)
            self._seen_invalid = stats.dropped_invalid
        if stats.dropped_too_big != self._seen_too_big:
            on_drop("too big", stats.dropped_too_big - self._seen_too_big)
            self._seen_too_big = stats.dropped_too_big

    # -- writing -----------------------------------------------------------------------------

    def send(self, payload: bytes) -> bool:
        """Queue one payload as a SLIP frame; False if the port is down or the queue full."""
        if self._serial is None or len(self._out) >= self.settings.queue_frames:
            self.stats.tx_dropped += 1
            return False
        self._out.append(encode_frame(payload, self.settings.leading_end))
        if not self._writer and self._pace_timer is None:
            self._pump()
        return True

    @property
    def queued(self) -> int:
        """Frames waiting to be written (including a partly written one)."""
        return len(self._out) + (self._current is not None)

    def _pump(self) -> None:
        """Write queued frames until the queue is empty, the line is full, or a pause is due."""
        loop = self._loop
        if loop is None or self._serial is None:
            return
        while True:
            if self._current is None:
                if not self._out:
                    return
                if self._pace:
                    wait = self._next_write - loop.time()
                    if wait > 0:
                        self._pace_timer = loop.call_later(wait, self._on_pace)
                        return
                self._current = memoryview(self._out.popleft())
            try:
                written = os.write(self._fd, self._current)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError as exc:
                self._lost(exc.strerror or str(exc))
                return
            self.stats.tx_bytes += written
            rest = self._current[written:]
            if rest:
                self._current = rest
                if not self._writer:
                    self._writer = True
                    loop.add_writer(self._fd, self._on_writable)
                return
            frame_size = len(self._current.obj)  # type: ignore[arg-type]
            self._current = None
            self.stats.tx_frames += 1
            if self._writer:
                self._writer = False
                loop.remove_writer(self._fd)
            if self._pace:
                # the pause starts when the frame has left the line, not the kernel buffer
                airtime = frame_airtime(frame_size, self.settings.baudrate)
                self._next_write = loop.time() + airtime + self._pace

    def _on_writable(self) -> None:
        self._pump()

    def _on_pace(self) -> None:
        self._pace_timer = None
        self._pump()
