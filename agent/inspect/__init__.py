"""Looking at packets: one-line summaries, pcapng, libpcap filters, taps, agent sniff."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def _usable_scapy_cache() -> None:
    """Scapy (imported only below this package) reads its cache under $XDG_CACHE_HOME/scapy
    (default ~/.cache/scapy) at import, and raises PermissionError when that folder exists
    but belongs to someone else (e.g. a root run with the same HOME before an unprivileged
    one). Then give this process a private cache folder instead, removed at exit."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "scapy")
    try:
        os.stat(folder)
        usable = os.access(folder, os.R_OK | os.W_OK | os.X_OK)
    except FileNotFoundError:
        usable = True  # Scapy makes it
    except OSError:  # a parent folder we may not enter
        usable = False
    if not usable:
        private = tempfile.mkdtemp(prefix="agent-scapy-cache-")
        atexit.register(shutil.rmtree, private, True)
        os.environ["XDG_CACHE_HOME"] = private


_usable_scapy_cache()
