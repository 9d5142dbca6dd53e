"""`agent session create|add|delete|list` on a RabbitMQ broker, through its management API.

A session's vhost carries a marker in its description (`agent session; exchange=...;
compat=...`): only such a vhost is ever deleted, and `add` reads the session's exchange
and account shape from it. A session's users are the users named `<session>.<account>`
with permissions on its vhost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.session.accounts import (
    MARKER,
    AccountError,
    Grant,
    account_url,
    agent_grant,
    check_agents,
    check_url_base,
    check_word,
    session_grants,
)
from agent.session.mgmt import Management

PASSWORD_BYTES = 24  # 192 random bits, URL-safe base64 (32 characters)


@dataclass(frozen=True)
class Made:
    grant: Grant
    url: str  # with the password: for the file, and for the terminal only with --show
    path: Path


@dataclass(frozen=True)
class SessionInfo:
    name: str
    exchange: str
    compat: bool
    accounts: list[str]


def describe(exchange: str, compat: bool) -> str:
    return f"{MARKER}; exchange={exchange}; compat={int(compat)}"


def parse_description(text: str) -> tuple[str, bool] | None:
    """(exchange, compat) of a session vhost's description, None if not a session."""
    if not text.startswith(MARKER + ";"):
        return None
    fields = dict(
        part.strip().split("=", 1) for part in text[len(MARKER) + 1 :].split(";") if "=" in part
    )
    return fields.get("exchange", "amq.topic"), fields.get("compat") == "1"


def _session(mgmt: Management, session: str) -> tuple[str, bool]:
    vhost = mgmt.vhost(session)
    if vhost is None:
        raise AccountError(f"unknown session {session!r} (no such vhost on {mgmt.where})")
    shape = parse_description(vhost.get("description") or "")
    if shape is None:
        raise AccountError(f"vhost {session!r} is not an agent session (made by something else)")
    return shape


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise AccountError(f"cannot create {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise AccountError(f"cannot write URL files into {out}: permission denied")


def write_secret(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600), also when it existed before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _check_users(mgmt: Management, session: str, grants: list[Grant], reset: bool) -> None:
    """Refuse before anything is made: accounts that exist without --reset, users of the
    same name that are not this session's."""
    ours = {p["user"] for p in mgmt.vhost_permissions(session)} if mgmt.vhost(session) else set()
    for g in grants:
        if mgmt.user(g.user) is None:
            continue
        if g.user not in ours:
            raise AccountError(
                f"user {g.user!r} already exists on the broker "
                f"and is not an account of session {session!r}"
            )
        if not reset:
            raise AccountError(
                f"account {g.account!r} of session {session!r} exists "
                "(--reset gives it a new password)"
            )


def _make(
    mgmt: Management, session: str, grants: list[Grant], exchange: str, out: Path, url_base: str
) -> list[Made]:
    made = []
    for g in grants:
        import secrets  # here: hashlib/OpenSSL only for `agent session`, not in every agent

        password = secrets.token_urlsafe(PASSWORD_BYTES)
        mgmt.put_user(g.user, password)
        mgmt.put_permissions(session, g.user, g.configure, g.write, g.read)
        mgmt.put_topic_permissions(session, g.user, exchange, g.topic_write, g.topic_read)
        url = account_url(url_base, g.user, password, session)
        path = out / f"{g.account}.url"
        try:
            write_secret(path, url + "\n")
        except OSError as exc:
            raise AccountError(f"cannot write {path}: {exc.strerror}") from None
        made.append(Made(g, url, path))
    return made


def default_url_base(mgmt: Management) -> str:
    host = mgmt.host
    return f"amqp://[{host}]" if ":" in host else f"amqp://{host}"


def create(
    mgmt: Management,
    session: str,
    agents: list[str],
    out: Path,
    url_base: str | None = None,
    exchange: str = "amq.topic",
    reset: bool = False,
    compat: bool = False,
) -> list[Made]:
    check_word("session name", session)
    agents = check_agents(agents)
    url_base = url_base or default_url_base(mgmt)
    check_url_base(url_base)
    mgmt.overview()  # the API answers and the admin may use it
    vhost = mgmt.vhost(session)
    if vhost is not None:
        shape = parse_description(vhost.get("description") or "")
        if shape is None:
            raise AccountError(f"vhost {session!r} exists and is not an agent session")
        if shape != (exchange, compat):
            raise AccountError(
                f"session {session!r} exists with exchange {shape[0]} and compat {int(shape[1])}; "
                "delete it first to change them"
            )
    grants = session_grants(session, agents, exchange, compat)
    _check_users(mgmt, session, grants, reset)
    _prepare_out(out)
    mgmt.put_vhost(session, describe(exchange, compat))
    if not exchange.startswith("amq."):
        mgmt.put_exchange(session, exchange)
    return _make(mgmt, session, grants, exchange, out, url_base)


def add(
    mgmt: Management,
    session: str,
    agents: list[str],
    out: Path,
    url_base: str | None = None,
    reset: bool = False,
) -> list[Made]:
    """New agent accounts in a running session; the other accounts are not touched."""
    check_word("session name", session)
    agents = check_agents(agents)
    url_base = url_base or default_url_base(mgmt)
    check_url_base(url_base)
    exchange, compat = _session(mgmt, session)
    grants = [agent_grant(session, a, exchange, compat) for a in agents]
    _check_users(mgmt, session, grants, reset)
    _prepare_out(out)
    return _make(mgmt, session, grants, exchange, out, url_base)


def session_users(mgmt: Management, session: str) -> list[str]:
    prefix = session + "."
    return sorted(
        p["user"] for p in mgmt.vhost_permissions(session) if p["user"].startswith(prefix)
    )


def delete(mgmt: Management, session: str) -> list[str]:
    """Delete the session's users and its vhost (with its queues); nothing else."""
    check_word("session name", session)
    _session(mgmt, session)
    users = session_users(mgmt, session)
    for user in users:
        mgmt.delete_user(user)
    mgmt.delete_vhost(session)
    return users


def sessions(mgmt: Management) -> list[SessionInfo]:
    out = []
    for v in sorted(mgmt.vhosts(), key=lambda v: v["name"]):
        shape = parse_description(v.get("description") or "")
        if shape is None:
            continue
        prefix = v["name"] + "."
        accounts = [u[len(prefix) :] for u in session_users(mgmt, v["name"])]
        out.append(SessionInfo(v["name"], shape[0], shape[1], accounts))
    return out
