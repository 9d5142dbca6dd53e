"""A small client of RabbitMQ's management HTTP API (the rabbitmq_management plugin).

Only what `agent session` needs. Every failure is a `MgmtError` with one line for the
user, naming the API's host:port and never the admin password.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    import urllib.error

DEFAULT_ADMIN_URL = "http://guest:guest@localhost:15672"


class MgmtError(Exception):
    """The management API cannot do what was asked; one line for the user."""


class NotFound(MgmtError):
    pass


def _q(name: str) -> str:
    return quote(name, safe="")


class Management:
    def __init__(self, admin_url: str | None = None, timeout: float = 10.0) -> None:
        url = admin_url or os.environ.get("RABBITMQ_ADMIN_URL") or DEFAULT_ADMIN_URL
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 15672)
        except ValueError:
            raise MgmtError("--admin-url is not a URL (http://user:password@host:15672)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MgmtError("--admin-url must be http[s]://user:password@host:15672")
        self.admin_user = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.host = parts.hostname
        self.where = f"{parts.scheme}://{host}:{port}"
        self._base = self.where + parts.path.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{self.admin_user}:{password}".encode()).decode()
        self._password = password
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        # imported here: urllib.request (http.client, email, tempfile...) costs the agent
        # and the router about 3 MiB of RSS, and only `agent session` needs it
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        url = self._base + "/api/" + path  # http(s) only: checked in __init__
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        req.add_header("Authorization", self._auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, method, path) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                why = "connection refused (is the rabbitmq_management plugin enabled?)"
            elif isinstance(reason, socket.gaierror):
                why = f"cannot resolve host {self.host!r}"
            elif isinstance(reason, (TimeoutError, socket.timeout)):
                why = "timed out"
            else:
                why = str(reason).replace(self._password, "***") if self._password else str(reason)
            raise MgmtError(
                f"cannot reach the RabbitMQ management API at {self.where}: {why}"
            ) from None
        return json.loads(raw) if raw else None

    def _http_error(self, exc: urllib.error.HTTPError, method: str, path: str) -> MgmtError:
        if exc.code == 401:
            return MgmtError(
                f"the management API at {self.where} refused admin user {self.admin_user!r} "
                "(wrong user or password; guest works only from localhost)"
            )
        if exc.code == 403:
            return MgmtError(
                f"admin user {self.admin_user!r} may not use the management API at {self.where} "
                "(needs the administrator tag)"
            )
        try:
            reason = json.loads(exc.read()).get("reason", "")
        except (ValueError, AttributeError, OSError):
            reason = ""
        text = f"management API at {self.where}: {method} /api/{path} failed: {exc.code} {reason}"
        return NotFound(text) if exc.code == 404 else MgmtError(text.rstrip())

    # -- the calls `agent session` makes ----------------------------------------------------

    def overview(self) -> dict[str, Any]:
        return self.request("GET", "overview")  # type: ignore[no-any-return]

    def vhosts(self) -> list[dict[str, Any]]:
        return self.request("GET", "vhosts")  # type: ignore[no-any-return]

    def vhost(self, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"vhosts/{_q(name)}")  # type: ignore[no-any-return]
        except NotFound:
            return None

    def put_vhost(self, name: str, description: str) -> None:
        self.request(
            "PUT", f"vhosts/{_q(name)}", {"description": description, "tags": "agent-session"}
        )

    def delete_vhost(self, name: str) -> None:
        self.request("DELETE", f"vhosts/{_q(name)}")

    def user(self, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"users/{_q(name)}")  # type: ignore[no-any-return]
        except NotFound:
            return None

    def put_user(self, name: str, password: str) -> None:
        self.request("PUT", f"users/{_q(name)}", {"password": password, "tags": ""})

    def delete_user(self, name: str) -> None:
        try:
            self.request("DELETE", f"users/{_q(name)}")
        except NotFound:
            pass

    def vhost_permissions(self, vhost: str) -> list[dict[str, Any]]:
        return self.request("GET", f"vhosts/{_q(vhost)}/permissions")  # type: ignore[no-any-return]

    def put_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        body = {"configure": configure, "write": write, "read": read}
        self.request("PUT", f"permissions/{_q(vhost)}/{_q(user)}", body)

    def put_topic_permissions(
        self, vhost: str, user: str, exchange: str, write: str, read: str
    ) -> None:
        body = {"exchange": exchange, "write": write, "read": read}
        self.request("PUT", f"topic-permissions/{_q(vhost)}/{_q(user)}", body)

    def put_exchange(self, vhost: str, name: str) -> None:
        body = {"type": "topic", "durable": True, "auto_delete": False, "internal": False}
        self.request("PUT", f"exchanges/{_q(vhost)}/{_q(name)}", body)
