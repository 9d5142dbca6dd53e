"""agent.bus.pikaedge: pika's frames built from our reader's frames equal pika's own decoding,
and a pika without the internals we use gives one WARNING and pika's path, never an
exception. (That the lean path IS active on the pinned pika: test_bus_datapath.py.)"""

from __future__ import annotations

import logging
import socket

import pika
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pika import frame as pika_frame
from pika import spec

from agent.bus import pikaedge

METHODS = st.one_of(
    st.builds(spec.Basic.Ack, st.integers(0, 2**64 - 1), st.booleans()),
    st.builds(spec.Basic.QosOk),
    st.builds(spec.Channel.Close, st.integers(0, 999), st.text(max_size=50), st.integers(0, 99),
              st.integers(0, 99)),
    st.builds(spec.Connection.Blocked, st.text(max_size=50)),
    st.builds(spec.Queue.DeclareOk, st.text(max_size=50), st.integers(0, 2**31),
              st.integers(0, 2**31)),
    st.builds(spec.Basic.ConsumeOk, st.text(min_size=1, max_size=50)),
)
FRAMES = st.one_of(
    st.builds(pika_frame.Method, st.integers(0, 65535), METHODS),
    st.builds(
        pika_frame.Header,
        st.integers(0, 65535),
        st.integers(0, 2**40),
        st.builds(spec.BasicProperties, content_type=st.none() | st.text(max_size=30),
                  delivery_mode=st.none() | st.sampled_from([1, 2])),
    ),
    st.builds(pika_frame.Body, st.integers(0, 65535), st.binary(max_size=200)),
    st.just(pika_frame.Heartbeat()),
)


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and repr(a) == repr(b) and (
        getattr(a, "marshal", None) is None or a.marshal() == b.marshal()  # type: ignore[attr-defined]
    )


@given(FRAMES)
def test_frames_built_once_equal_pikas_decoding(frame: object) -> None:
    raw = frame.marshal()  # type: ignore[attr-defined]
    _n, theirs = pika_frame.decode_frame(raw)
    ours = pikaedge.pika_frame_of(raw)
    assert _same(ours, theirs)


def test_unknown_frame_type_is_pikas_error() -> None:
    with pytest.raises(pika.exceptions.InvalidFrameError):
        pikaedge.pika_frame_of(bytes([9, 0, 1, 0, 0, 0, 0, 0xCE]))


class BareConnection:
    """A pika connection as a future pika might have it: none of the internals."""

    is_closed = False
    bytes_sent = 0
    bytes_received = 0


class _AsyncPlaintextTransport:  # noqa: N801 (the name pika gives its plain transport)
    """A plain transport that lost its write-queue attributes (renamed, say)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    pikaedge._warned.clear()


def test_missing_internals_fall_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.bus")
    for _ in range(3):
        assert pikaedge.take_over(BareConnection()) is None
        assert pikaedge.writer(BareConnection()) is None
        pikaedge.tune_reads(BareConnection())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # receiving, publishing: once each
    assert all(pika.__version__ in r.getMessage() for r in warnings)


def test_renamed_transport_state_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    """Without `_state`/`_tx_buffers` the bytes go through the transport's write()."""
    caplog.set_level(logging.WARNING, logger="agent.bus")
    a, b = socket.socketpair()
    try:
        conn = BareConnection()
        conn._transport = _AsyncPlaintextTransport(a)  # type: ignore[attr-defined]
        w = pikaedge.writer(conn)
        assert w is not None and not w.lean
        w.write(b"frame")
        assert conn._transport.written == [b"frame"]  # type: ignore[attr-defined]
        assert conn.bytes_sent == 5
        assert "direct send" in caplog.text
    finally:
        a.close()
        b.close()
