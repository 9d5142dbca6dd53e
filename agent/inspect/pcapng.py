"""A small pcapng writer (no Scapy): files Wireshark and ``tshark -r`` read at any time.

Blocks are only ever written whole and, by default, pushed to the file after every
packet, so the file is readable also while the writer is still open.
"""

from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IEEE802_15_4_NOFCS",
    "LINKTYPE_RAW",
    "INBOUND",
    "OUTBOUND",
    "PcapNgWriter",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4/IPv6, what the tunnel carries
LINKTYPE_IEEE802_15_4_NOFCS = 230  # 802.15.4 MAC frames without FCS (the serial probe mode)

# epb_flags direction bits (pcapng spec): the packet was received / sent on its interface
INBOUND = 1
OUTBOUND = 2


_BT_SHB = 0x0A0D0D0A
_BT_IDB = 0x00000001
_BT_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

_OPT_ENDOFOPT = 0
_OPT_COMMENT = 1
_EPB_FLAGS = 2
_SHB_USERAPPL = 4
_IF_NAME = 2
_IF_DESCRIPTION = 3

_MAX_OPT_LEN = 0xFFFF
_MAX_PENDING = 4096  # blocks buffered with autoflush=False before a forced write
_PAD = b"\x00\x00\x00"


def _pad4(n: int) -> int:
    return -n & 3


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    """Encode a pcapng option list (empty bytes if there are no options)."""
    if not opts:
        return b""
    parts = []
    for code, value in opts:
        value = value[:_MAX_OPT_LEN]
        parts.append(struct.pack("<HH", code, len(value)))
        parts.append(value)
        parts.append(_PAD[: _pad4(len(value))])
    parts.append(struct.pack("<HH", _OPT_ENDOFOPT, 0))
    return b"".join(parts)


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if len(data) > _MAX_OPT_LEN:  # cut on a character boundary
        data = data[:_MAX_OPT_LEN].decode("utf-8", "ignore").encode("utf-8")
    return data


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)  # type + 2 x length + body (body is already 32-bit aligned)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapNgWriter:
    """Minimal pcapng writer (little-endian, microsecond timestamps), no threads.

    ``path_or_file`` is a path (created or truncated) or a binary file object;
    a file object given by the caller is flushed but not closed by :meth:`close`.

    By default every block is written to the file as soon as it is produced, so the
    file is always a complete, readable capture. With ``autoflush=False`` packets stay
    buffered until the caller calls :meth:`flush` (or :meth:`close`): for a caller with
    its own event loop that flushes once per loop iteration. Interface blocks are
    always written at once, and blocks are never split, so the file on disk is always a
    valid pcapng prefix.
    """

    def __init__(
        self,
        path_or_file: str | os.PathLike[str] | BinaryIO,
        autoflush: bool = True,
    ) -> None:
        self._pending: list[bytes] = []
        self._autoflush = autoflush
        self._linktypes: list[int] = []
        self._snaplens: list[int] = []
        self._closed = False
        if isinstance(path_or_file, str | os.PathLike):
            self.name = os.fspath(path_or_file)
            try:
                # Unbuffered: we buffer whole blocks ourselves, so a flush is one write().
                self._file: BinaryIO = open(self.name, "wb", buffering=0)
            except OSError as exc:
                raise _open_error(self.name, exc) from exc
            self._owns_file = True
        else:
            self._file = path_or_file
            self.name = getattr(path_or_file, "name", "<file>")
            self._owns_file = False
        body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        body += _options([(_SHB_USERAPPL, b"ioppytest agent")])
        try:
            self._emit(_block(_BT_SHB, body), force_flush=True)
        except BaseException:
            self._closed = True
            if self._owns_file:
                self._file.close()
            raise

    # -- public API

    def add_interface(
        self,
        name: str,
        linktype: int = LINKTYPE_RAW,
        description: str | None = None,
        snaplen: int = 0,
    ) -> int:
        """Write an Interface Description Block; return the new interface id.

        May be called at any time, also after packets were written.
        ``snaplen`` 0 means unlimited; longer packets are truncated to it.
        """
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"invalid linktype {linktype}")
        if not 0 <= snaplen <= 0xFFFFFFFF:
            raise ValueError(f"invalid snaplen {snaplen}")
        opts = [(_IF_NAME, _text(name))]
        if description is not None:
            opts.append((_IF_DESCRIPTION, _text(description)))
        body = struct.pack("<HHI", linktype, 0, snaplen) + _options(opts)
        self._check_open()
        iface_id = len(self._linktypes)
        self._linktypes.append(linktype)
        self._snaplens.append(snaplen)
        self._emit(_block(_BT_IDB, body), force_flush=True)
        return iface_id

    def write(
        self,
        iface_id: int,
        packet: bytes,
        timestamp: float | None = None,
        comment: str | None = None,
        flags: int | None = None,
    ) -> None:
        """Write one packet as an Enhanced Packet Block.

        ``timestamp`` is in seconds since the epoch (default: now). ``flags`` is the
        epb_flags option (``INBOUND`` / ``OUTBOUND`` direction bits), omitted if None.
        """
        data = bytes(packet)
        if timestamp is None:
            ts = time.time_ns() // 1000
        else:
            ts = round(timestamp * 1_000_000)
            if ts < 0:
                raise ValueError(f"negative timestamp {timestamp}")
        orig_len = len(data)
        opt_list: list[tuple[int, bytes]] = []
        if comment is not None:
            opt_list.append((_OPT_COMMENT, _text(comment)))
        if flags is not None:
            opt_list.append((_EPB_FLAGS, struct.pack("<I", flags & 0xFFFFFFFF)))
        opts = _options(opt_list)
        self._check_open()
        if not 0 <= iface_id < len(self._linktypes):
            raise ValueError(f"unknown interface id {iface_id}")
        snaplen = self._snaplens[iface_id]
        if snaplen and orig_len > snaplen:
            data = data[:snaplen]
        head = struct.pack(
            "<IIIII", iface_id, (ts >> 32) & 0xFFFFFFFF, ts & 0xFFFFFFFF, len(data), orig_len
        )
        body = b"".join((head, data, _PAD[: _pad4(len(data))], opts))
        self._emit(_block(_BT_EPB, body))

    def flush(self) -> None:
        """Write all buffered blocks to the file."""
        if not self._closed:
            self._write_pending()

    def close(self) -> None:
        """Flush and close (the file is only closed if the writer opened it). Idempotent."""
        if self._closed:
            return
        try:
            self._write_pending()
        finally:
            self._closed = True
            if self._owns_file:
                self._file.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PcapNgWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("pcapng writer is closed")

    def _emit(self, block: bytes, force_flush: bool = False) -> None:
        self._pending.append(block)
        if force_flush or self._autoflush or len(self._pending) >= _MAX_PENDING:
            self._write_pending()  # (a caller's late flush must not grow memory unbounded)

    def _write_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if self._owns_file:  # raw FileIO: write() may be partial
                view = memoryview(data)
                while view:
                    view = view[self._file.write(view) :]
            else:
                self._file.write(data)
        if not self._owns_file:
            flush = getattr(self._file, "flush", None)
            if flush is not None:
                flush()


def _open_error(path: str, exc: OSError) -> OSError:
    reason = exc.strerror or str(exc)
    err = type(exc)(f"cannot open capture file {path!r}: {reason}")
    err.errno = exc.errno  # keep errno, but without the "[Errno N]" prefix in str()
    return err


