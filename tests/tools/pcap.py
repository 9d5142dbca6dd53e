"""Reading back the pcapng files the tests make: Scapy's raw reader, and tshark's fields."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scapy.utils import RawPcapNgReader

TSHARK = shutil.which("tshark")


def read_raw(path: Path) -> list[tuple[bytes, object]]:
    """(packet bytes, metadata) of every record."""
    reader = RawPcapNgReader(str(path))
    try:
        return list(reader)
    finally:
        reader.close()


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    """tshark's -T fields output, one list per packet; tshark must exist and succeed."""
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields"]
    for field in fields:
        cmd += ["-e", field]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines() if line]
