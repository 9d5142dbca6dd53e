"""AMQP URL parsing (pure) and its redacted form for logs and errors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_URL = "amqp://guest:guest@localhost/"

_INT_PARAMS = {
    "heartbeat": (0, 3600),
    "connection_attempts": (1, 100),
    "channel_max": (1, 65535),
    "frame_max": (4096, 131072),  # pika.spec.FRAME_MAX_SIZE
}
_FLOAT_PARAMS = {
    "retry_delay": (0.0, 300.0),
    "socket_timeout": (0.1, 300.0),
    "blocked_connection_timeout": (0.1, 3600.0),
    "stack_timeout": (0.1, 300.0),
}


class UrlError(ValueError):
    """The URL cannot be used; the message never contains the password."""


@dataclass(frozen=True)
class AmqpUrl:
    scheme: str
    host: str
    port: int
    vhost: str
    user: str
    password: str = field(repr=False)
    params: dict[str, float | int] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.scheme == "amqps"

    @property
    def where(self) -> str:
        """host:port, with brackets for IPv6 literals."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted(self) -> str:
        """The URL as it may appear in a log line: no password."""
        vhost = "%2F" if self.vhost == "/" else self.vhost
        return f"{self.scheme}://{self.user}:***@{self.where}/{vhost}"


# what the services take: one URL, or the nodes of a cluster in order
Urls = AmqpUrl | Sequence[AmqpUrl]


def as_list(urls: Urls) -> list[AmqpUrl]:
    return [urls] if isinstance(urls, AmqpUrl) else list(urls)


def resolve_url(cli_value: str | Sequence[str] | None, env: dict[str, str] | None = None) -> str:
    """--url (each may be a ';' list), else env AMQP_URL, else the local default."""
    env = os.environ if env is None else env
    if cli_value is not None and not isinstance(cli_value, str):
        cli_value = ";".join(cli_value)
    return cli_value or env.get("AMQP_URL") or DEFAULT_URL


def parse_urls(text: str, one_vhost: bool = True) -> list[AmqpUrl]:
    """Several complete URLs separated by ';' (kombu's failover convention).

    Blank entries are skipped, duplicates dropped (the first stays), and all must name
    the same vhost (one session) unless one_vhost is False (the router: see by_vhost).
    An error names the entry by position, password masked.
    """
    entries = [e.strip() for e in text.split(";")] if isinstance(text, str) else []
    entries = [e for e in entries if e]
    if len(entries) <= 1:
        return [parse_url(entries[0] if entries else "")]
    urls: list[AmqpUrl] = []
    for i, entry in enumerate(entries, 1):
        try:
            url = parse_url(entry)
        except UrlError as exc:
            raise UrlError(f"AMQP URL {i} of {len(entries)} ({mask(entry)}): {exc}") from None
        if one_vhost and urls and url.vhost != urls[0].vhost:
            raise UrlError(
                f"AMQP URL {i} of {len(entries)} ({url.redacted()}) names vhost {url.vhost!r}, "
                f"URL 1 vhost {urls[0].vhost!r}: all URLs of a list must name the same vhost"
            )
        if url not in urls:
            urls.append(url)
    return urls


def by_vhost(urls: Sequence[AmqpUrl]) -> list[list[AmqpUrl]]:
    """The URLs grouped by the vhost (session) they name, in order of first mention:
    each group is one session's failover list."""
    groups: dict[str, list[AmqpUrl]] = {}
    for url in urls:
        groups.setdefault(url.vhost, []).append(url)
    return list(groups.values())


def mask(entry: str) -> str:
    """entry with whatever may be a password replaced by ***, even if it does not parse."""
    start = entry.find("://")
    start = start + 3 if start >= 0 else 0
    at = entry.rfind("@")
    if at < start:
        return entry
    colon = entry.find(":", start, at)
    if colon < 0:
        return entry
    return f"{entry[: colon + 1]}***{entry[at:]}"


def parse_url(url: str) -> AmqpUrl:
    if not isinstance(url, str) or not url.strip():
        raise UrlError("empty AMQP URL")
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _split_error(url, exc) from None
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # a raw '/', '?' or '#' in the password: what follows it is not the host
        raise UrlError(
            "malformed AMQP URL: '@' after the host; percent-encode '/', '?', '#' and '@' "
            "in the user name and password (%2F, %3F, %23, %40)"
        )
    try:
        port = parts.port  # only the part after the last '@' is read: no userinfo in errors
        host = parts.hostname
    except ValueError as exc:
        raise UrlError(f"malformed AMQP URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise UrlError(f"AMQP URL must start with amqp:// or amqps://, not {scheme or '?'}://")
    if not host:
        raise UrlError("AMQP URL has no host")
    if port is None:
        port = 5671 if scheme == "amqps" else 5672
    path = parts.path
    if path in ("", "/"):
        vhost = "/"
    else:
        raw = path[1:]
        if "/" in raw:
            raise UrlError("AMQP URL path must be one vhost name (write '/' inside it as %2F)")
        vhost = unquote(raw)
    user = unquote(parts.username) if parts.username is not None else "guest"
    password = unquote(parts.password) if parts.password is not None else "guest"
    params: dict[str, float | int] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        params[key] = _param(key, value)
    return AmqpUrl(scheme, host, port, vhost, user, password, params)


def _param(key: str, value: str) -> float | int:
    if key in _INT_PARAMS:
        lo, hi = _INT_PARAMS[key]
        try:
            number: float | int = int(value)
        except ValueError:
            raise UrlError(f"URL parameter {key}={value!r} is not an integer") from None
    elif key in _FLOAT_PARAMS:
        lo, hi = _FLOAT_PARAMS[key]
        try:
            number = float(value)
        except ValueError:
            raise UrlError(f"URL parameter {key}={value!r} is not a number") from None
    else:
        known = ", ".join(sorted([*_INT_PARAMS, *_FLOAT_PARAMS]))
        raise UrlError(f"unknown URL parameter {key!r} (known: {known})")
    if not lo <= number <= hi:
        raise UrlError(f"URL parameter {key}={value} out of range {lo}..{hi}")
    return number


def _split_error(url: str, exc: ValueError) -> UrlError:
    """The urlsplit error of url without its userinfo (urllib quotes netloc pieces)."""
    start = url.find("//") + 2
    at = url.rfind("@")
    if 2 <= start <= at:
        try:
            urlsplit(url[:start] + url[at + 1 :])
        except ValueError as host_exc:
            return UrlError(f"malformed AMQP URL: {host_exc}")
        return UrlError(
            "malformed AMQP URL: percent-encode special characters of the user name and password"
        )
    return UrlError(f"malformed AMQP URL: {exc}")
