"""The host's broker inside a network namespace: a TCP port on the namespace's loopback
forwarded to the same port on the host's loopback.

For a process started inside a namespace (`ip netns exec NS ...`) that must reach the
RabbitMQ on the host's 127.0.0.1 (where guest may log in). The listening socket is made
inside the namespace (setns on this thread only, then back); connections to the host are
made from the host's namespace. Threads pump bytes both ways until close().
"""

from __future__ import annotations

import contextlib
import socket
import threading

from agent.tun.netns import entered


class NsForward:
    def __init__(self, ns: str, port: int) -> None:
        self.port = port
        with entered(ns):
            self._listener = socket.create_server(("127.0.0.1", port))
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inner, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                outer = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                outer.settimeout(None)
            except OSError:
                inner.close()
                continue
            with self._lock:
                if self._closed:
                    inner.close()
                    outer.close()
                    return
                self._socks += [inner, outer]
            for src, dst in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        self._listener.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
