"""The accounts of a session and what the broker lets each do. Pure: no I/O.

A session is a vhost. Each participant gets a user whose permissions are exactly what our
agent, router or sniffer does on the bus (agent.bus.connection, agent.node, agent.router.router,
agent.inspect.sniff, agent.slip.probe), checked by the broker:

- resource permissions (configure/write/read) on queue and exchange names: each account
  may declare, bind and consume only its own queue, publish and bind only on the session
  exchange (never the default exchange, so never straight into another's queue);
- topic permissions on the exchange: the routing keys it may publish (write) and bind
  (read; the binding key is compared as written, `*` and `#` included).

The regular expressions are PCRE (the broker's); names are routing-key words, so they only
need `-` escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from agent.bus import wire
from agent.router.status import STATUS_KEY, STATUS_QUEUE  # `agent status` (agent.router.edge)

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
WORD = r"[A-Za-z0-9_-]+"  # one routing-key word (an agent name), as a broker regex
SNIFF_QUEUE_RE = r"[0-9a-f]{16}@sniff"  # agent.inspect.sniff: `<16 random hex digits>@sniff`
ROUTER_QUEUE = "packetrouting@router"  # agent.router.router
DEFAULT_EXCHANGE = "amq.default"  # what the broker checks for a publish to exchange ""
RESERVED = ("router", "observer")  # account names of the session's non-agents
MARKER = "agent session"  # vhost description prefix: this vhost is ours to delete


class AccountError(ValueError):
    """Bad input for a session; the message is one line for the user."""


def check_word(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise AccountError(
            f"{kind} {name!r} is not one routing-key word "
            "(1 to 64 letters, digits, '_' or '-'; no '.', '*', '#' or spaces)"
        )
    return name


def check_agents(names: list[str]) -> list[str]:
    """Agent names from --agents (comma separated, repeatable): words, no duplicates."""
    out: list[str] = []
    for name in names:
        check_word("agent name", name)
        if name in RESERVED:
            raise AccountError(f"agent name {name!r} is reserved for the session's {name} account")
        if name in out:
            raise AccountError(f"agent name {name!r} is given twice")
        out.append(name)
    if not out:
        raise AccountError("no agent names given (--agents agent_1,agent_2)")
    return out


def user_name(session: str, account: str) -> str:
    """The broker user of one account: `<session>.<account>` (unique across sessions)."""
    return f"{session}.{account}"


def _any(*alternatives: str) -> str:
    return "^(" + "|".join(alternatives) + ")$"


def _lit(text: str) -> str:
    return re.escape(text)


def declared(exchange: str, compat: bool = False) -> list[str]:
    """The exchange in the configure permission when clients declare it: ours declare
    every exchange but the `amq.*` ones (agent.bus.connection), the original agent (kombu) all of
    them. The broker then also lets that account delete it: least privilege is only
    complete on `amq.topic`."""
    return [_lit(exchange)] if compat or not exchange.startswith("amq.") else []


@dataclass(frozen=True)
class Grant:
    """One account: its user and the five regular expressions the broker checks."""

    account: str  # agent name, "router" or "observer"
    user: str
    configure: str
    write: str
    read: str
    topic_write: str
    topic_read: str

    def allows(self, what: str, name: str) -> bool:
        """Would the broker allow `what` (a field name) on `name`? (PCRE ~ Python re here)"""
        return re.search(getattr(self, what), name) is not None


def agent_grant(
    session: str, name: str, exchange: str = "amq.topic", compat: bool = False
) -> Grant:
    """Our agent `name` (IP tunnel and 802.15.4 probe): its queues `<name>@agent(.control)`,
    publishes ready and its own fromAgent keys, binds its own toAgent keys, everyone's
    tun.started (`fromAgent.*.ip.tun.started`, for announced routes) and ready."""
    n, x = _lit(name), _lit(exchange)
    # its packet queue and, beside it, its announcements' queue (control_queue_name)
    queues = [_lit(f"{name}@agent"), _lit(f"{name}@agent.control")]
    if compat:  # the original agent: kombu queues, one per topic
        queues.append(rf"consumer: {n}\..*")
    configure = [*queues, *declared(exchange, compat)]
    ready = _lit(wire.READY_KEY)
    return Grant(
        account=name,
        user=user_name(session, name),
        configure=_any(*configure),
        write=_any(*queues, x),
        read=_any(*queues, x),
        topic_write=_any(
            rf"fromAgent\.{n}\.ip\.tun\.(packet\.raw|started|stopped)",
            rf"fromAgent\.{n}\.802154\.serial\.(packet\.raw|started)",
            ready,
        ),
        topic_read=_any(
            rf"toAgent\.{n}\.ip\.tun\.(packet\.raw|start)",
            rf"toAgent\.{n}\.802154\.serial\.packet\.raw",
            r"fromAgent\.\*\.ip\.tun\.started",
            ready,
        ),
    )


def router_grant(session: str, exchange: str = "amq.topic", compat: bool = False) -> Grant:
    """Our router: queue `packetrouting@router`, binds every agent's packets, tun.started
    and tun.stopped, every ready and routing.lossy.link.start, publishes packets to any
    agent (so agents added later need no change) and its ready. `agent status`: its queue
    `packetrouting@router.status` bound to routing.status.request, and the replies, which
    go by the default exchange to the asker's direct reply-to (write on `amq.default`:
    only the router may answer, docs/security.md). compat: also ioppytest's router
    (`<key>@packet_router` queues, one per agent)."""
    x = _lit(exchange)
    queues = [_lit(ROUTER_QUEUE), _lit(f"{ROUTER_QUEUE}.control"), _lit(STATUS_QUEUE)]
    if compat:
        queues.append(rf"fromAgent\.{WORD}\.ip\.tun\.packet\.raw@packet_router")
    configure = [*queues, *declared(exchange, compat)]
    # every agent's packets and tun.started; the coordinator's lossy-context command
    reads = [
        r"fromAgent\.\*\.ip\.tun\.(packet\.raw|started|stopped)",
        _lit(wire.READY_KEY),
        _lit(wire.LOSSY_KEY),
        _lit(STATUS_KEY),
    ]
    if compat:
        reads.append(rf"fromAgent\.{WORD}\.ip\.tun\.packet\.raw")
    return Grant(
        account="router",
        user=user_name(session, "router"),
        configure=_any(*configure),
        write=_any(*queues, x, _lit(DEFAULT_EXCHANGE)),
        read=_any(*queues, x),
        topic_write=_any(rf"toAgent\.{WORD}\.ip\.tun\.packet\.raw", _lit(wire.READY_KEY)),
        topic_read=_any(*reads),
    )


def observer_grant(session: str, exchange: str = "amq.topic") -> Grant:
    """`agent sniff`: its own exclusive queue, binds fromAgent/toAgent of all or some
    agents, ready and terminate. `agent status`: publishes its request, and nothing else
    (the one routing key; the answer comes by direct reply-to, which needs no permission)."""
    x = _lit(exchange)
    return Grant(
        account="observer",
        user=user_name(session, "observer"),
        configure=_any(SNIFF_QUEUE_RE, *declared(exchange)),
        write=_any(SNIFF_QUEUE_RE, x),  # bind needs write on the queue; publish on x...
        read=_any(SNIFF_QUEUE_RE, x),
        topic_write=_any(_lit(STATUS_KEY)),  # ...of the status request only
        topic_read=_any(
            rf"(fromAgent|toAgent)\.(#|{WORD}\.#)",
            _lit(wire.READY_KEY),
            _lit(wire.TERMINATE_KEY),
        ),
    )


def session_grants(
    session: str, agents: list[str], exchange: str = "amq.topic", compat: bool = False
) -> list[Grant]:
    """The accounts `session create` makes: the agents, the router, the observer."""
    return [
        *(agent_grant(session, a, exchange, compat) for a in agents),
        router_grant(session, exchange, compat),
        observer_grant(session, exchange),
    ]


# -- URLs ----------------------------------------------------------------------------------


def check_url_base(base: str) -> tuple[str, str]:
    """`amqp[s]://host[:port]` -> (scheme, netloc); no user, path or query allowed."""
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as exc:
        raise AccountError(f"--amqp-url-base {base!r} is not a URL: {exc}") from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise AccountError(
            f"--amqp-url-base must be amqp://host[:port] or amqps://host[:port], not {base!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise AccountError("--amqp-url-base takes no user or password (each account gets its own)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise AccountError("--amqp-url-base takes no vhost or query (the session is the vhost)")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return parts.scheme, host if port is None else f"{host}:{port}"


def account_url(base: str, user: str, password: str, vhost: str) -> str:
    """The URL an account's participant passes to --url-file (percent-encoded)."""
    scheme, netloc = check_url_base(base)
    enc = lambda s: quote(s, safe="")  # noqa: E731
    return f"{scheme}://{enc(user)}:{enc(password)}@{netloc}/{enc(vhost)}"
