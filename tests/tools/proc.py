"""Ending a test's own subprocess: a signal, a bounded wait, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def end_process(popen: subprocess.Popen, sig: int = signal.SIGTERM,
                timeout: float = 5.0) -> int | None:
    """Send sig to popen (if it still runs) and wait up to timeout s; kill it after that.
    Returns its exit code, or None if it had to be killed."""
    if popen.poll() is not None:
        return popen.returncode
    popen.send_signal(sig)
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
        return None
