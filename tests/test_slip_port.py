"""The serial port edge (agent.slip.port) against real ptys, in process, without a broker.

A pty pair stands in for the line: the test holds the master, the port opens the slave
(through a symlink when the test needs to "unplug" and "replug" the device).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from agent.slip.port import (
    SerialPort,
    SerialPortError,
    SerialSettings,
    describe_open_error,
    frame_airtime,
    open_serial,
)
from tests.conftest import until

END = b"\xc0"


class Pty:
    """One pty pair; `path` is a symlink to the slave that can be re-pointed."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.plug()

    def plug(self) -> None:
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)  # the port opens it by name; the master keeps the pty alive
        os.set_blocking(master, False)
        tmp = self.link.with_suffix(".new")
        os.symlink(name, tmp)
        os.replace(tmp, self.link)
        self.master = master

    def unplug(self) -> None:
        os.unlink(self.link)
        os.close(self.master)
        self.master = -1

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_available(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                return out
            if not chunk:
                return out
            out += chunk

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.link.is_symlink():
            os.unlink(self.link)


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[Pty]:
    p = Pty(tmp_path / "ttyFAKE")
    yield p
    p.close()


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- open errors


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SerialPortError, match=r"does not exist"):
        open_serial(SerialSettings(str(tmp_path / "ttyUSB9")))


def test_regular_file_is_not_a_serial_device(tmp_path: Path) -> None:
    f = tmp_path / "notatty"
    f.write_text("x")
    with pytest.raises(SerialPortError, match=r"not a serial device"):
        open_serial(SerialSettings(str(f)))


def test_port_held_by_another_opener_is_in_use(pty: Pty) -> None:
    holder = serial.Serial(str(pty.link), exclusive=True)
    try:
        with pytest.raises(SerialPortError) as info:
            open_serial(SerialSettings(str(pty.link)))
        assert str(info.value) == f"serial port {pty.link} is in use by another process"
    finally:
        holder.close()
    open_serial(SerialSettings(str(pty.link))).close()  # free again


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENOENT, "does not exist"),
        (errno.ENODEV, "does not exist"),
        (errno.EAGAIN, "in use by another process"),
        (errno.EBUSY, "in use by another process"),
        (errno.EACCES, "no permission"),
        (errno.EPERM, "no permission"),
        (errno.EISDIR, "is a directory"),
        (errno.ENOTTY, "not a serial device"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_describe_open_error(code: int, expected: str) -> None:
    line = describe_open_error("/dev/ttyX", serial.SerialException(code, "whatever"))
    assert expected in line and "/dev/ttyX" in line and "\n" not in line


def test_frame_airtime_8n1() -> None:
    assert frame_airtime(11520, 115200) == pytest.approx(1.0)
    assert frame_airtime(0, 9600) == 0


# ----------------------------------------------------------------------------- reading


def test_frames_split_across_reads_with_garbage(pty: Pty) -> None:
    frames: list[bytes] = []
    drops: list[tuple[str, int]] = []

    async def main() -> None:
        port = SerialPort(
            SerialSettings(str(pty.link), mtu=100),
            frames.append,
            on_drop=lambda r, n: drops.append((r, n)),
        )
        port.start()
        try:
            pty.write(b"noise before the first END" + END)  # a frame of text (no leading END)
            pty.write(b"\xdb\x01bad" + END)  # invalid escape
            pty.write(b"x" * 300 + END)  # over the MTU
            wire = b"one\xdb\xdcwith END" + END + END + b"two" + END
            for i in range(len(wire)):
                pty.write(wire[i : i + 1])
                await asyncio.sleep(0)
            assert await until(lambda: len(frames) >= 3)
        finally:
            port.close()

    run(main)
    assert frames == [b"noise before the first END", b"one\xc0with END", b"two"]
    assert sorted(drops) == [("bad frame", 1), ("too big", 1)]


def test_no_thread_is_started(pty: Pty) -> None:
    async def main() -> None:
        before = threading.active_count()
        frames: list[bytes] = []
        port = SerialPort(SerialSettings(str(pty.link)), frames.append)
        port.start()
        pty.write(b"abc" + END)
        assert await until(lambda: frames == [b"abc"])  # read, on the loop
        assert threading.active_count() == before
        port.close()

    run(main)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("leading_end", [False, True])
def test_send_writes_slip_frames_byte_exact(pty: Pty, leading_end: bool) -> None:
    got = bytearray()
    lead = END if leading_end else b""
    expected = lead + b"a\xdb\xdcb\xdb\xddc" + END + lead + b"\x60" * 40 + END

    async def main() -> None:
        port = SerialPort(SerialSettings(str(pty.link), leading_end=leading_end), lambda f: None)
        port.start()
        try:
            assert port.send(b"a\xc0b\xdbc")
            assert port.send(b"\x60" * 40)
            assert await until(
                lambda: got.extend(pty.read_available()) or len(got) >= len(expected)
            )
            assert port.stats.tx_frames == 2
        finally:
            port.close()

    run(main)
    assert bytes(got) == expected


def test_pacing_spaces_frames_and_queue_is_bounded(pty: Pty) -> None:
    arrivals: list[tuple[float, bytes]] = []

    async def main() -> None:
        settings = SerialSettings(str(pty.link), pace_us=80_000, queue_frames=3)
        port = SerialPort(settings, lambda f: None)
        port.start()
        try:
            accepted = [port.send(bytes([0x41 + i])) for i in range(6)]
            # the first frame is written at once, three wait, the rest is refused
            assert accepted == [True, True, True, True, False, False]
            assert port.stats.tx_dropped == 2

            def poll() -> bool:
                data = pty.read_available()
                if data:
                    arrivals.append((time.monotonic(), data))
                return sum(len(d) for _, d in arrivals) >= 12

            assert await until(poll, timeout=3)
        finally:
            port.close()

    run(main)
    # END payload END by default (docs/serial.md)
    assert b"".join(d for _, d in arrivals) == b"\xc0A\xc0\xc0B\xc0\xc0C\xc0\xc0D\xc0"
    times = [t for t, _ in arrivals]
    assert len(times) == 4, arrivals  # one frame per pause
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= 0.07 for g in gaps), gaps


def test_send_while_down_is_refused(tmp_path: Path) -> None:
    port = SerialPort(SerialSettings(str(tmp_path / "none")), lambda f: None)
    assert not port.is_open
    assert port.send(b"x") is False
    assert port.stats.tx_dropped == 1


# ----------------------------------------------------------------------------- unplug


def test_unplug_is_logged_once_and_port_reopens(pty: Pty, caplog: pytest.LogCaptureFixture) -> None:
    frames: list[bytes] = []
    opened: list[float] = []
    caplog.set_level(logging.DEBUG, logger="agent.slip.port")

    async def main() -> None:
        port = SerialPort(
            SerialSettings(str(pty.link)),
            frames.append,
            on_open=lambda: opened.append(time.monotonic()),
            reopen_interval=0.05,
        )
        port.start()
        try:
            pty.write(b"before" + END)
            assert await until(lambda: frames == [b"before"])
            pty.unplug()
            assert await until(lambda: not port.is_open)
            assert port.send(b"lost") is False
            await asyncio.sleep(0.4)  # several failed reopen attempts
            assert not port.is_open
            pty.plug()
            assert await until(lambda: port.is_open, timeout=2)
            pty.write(b"after" + END)
            assert await until(lambda: frames == [b"before", b"after"])
            assert port.send(b"back")
            got = bytearray()
            assert await until(
                lambda: got.extend(pty.read_available()) or bytes(got) == b"\xc0back\xc0"
            )
            assert port.stats.losses == 1 and port.stats.reopens == 1
        finally:
            port.close()

    run(main)
    assert len(opened) == 2
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert len(back) == 1
    retries = [r for r in caplog.records if "still unavailable" in r.getMessage()]
    assert len(retries) >= 3 and all(r.levelno == logging.DEBUG for r in retries)


def test_close_stops_reopening(pty: Pty) -> None:
    async def main() -> None:
        port = SerialPort(SerialSettings(str(pty.link)), lambda f: None, reopen_interval=0.02)
        port.start()
        pty.unplug()
        assert await until(lambda: not port.is_open)
        port.close()
        pty.plug()
        await asyncio.sleep(0.1)  # five reopen intervals, in which a reopen would show
        assert not port.is_open

    run(main)
