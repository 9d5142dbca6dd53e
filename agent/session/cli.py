"""`agent session ...`: the click commands (one line per error, exit status 1)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from agent.session import ops
from agent.session.accounts import AccountError
from agent.session.mgmt import Management, MgmtError

admin_option = click.option(
    "--admin-url",
    default=None,
    help="Management API http[s]://user:password@host:15672 (default: env "
    "RABBITMQ_ADMIN_URL, else http://guest:guest@localhost:15672).",
)


def _one_line(f: Callable[..., None]) -> Callable[..., None]:
    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            f(*args, **kwargs)
        except (AccountError, MgmtError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # an unexpected answer
            click.echo(f"Error: unexpected answer from the management API: {exc!r}", err=True)
            sys.exit(1)

    return run


def _agents(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",")]


def _commands(made: list[ops.Made], show: bool) -> None:
    for m in made:
        f = shlex.quote(str(m.path))
        role = m.grant.account
        if role == "router":
            cmd = f"agent router --url-file {f}"
        elif role == "observer":
            cmd = f"agent sniff --url-file {f}"
        else:
            cmd = f"sudo agent connect --name {role} --url-file {f}"
        click.echo(f"  {role:<12} {cmd}")
        if show:
            click.echo(f"  {'':<12} {m.url}")


agents_option = click.option(
    "--agents",
    multiple=True,
    required=True,
    callback=_agents,
    help="Agent names, comma separated (repeatable): one account each.",
)
out_option = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the URL files (mode 0600; default ./SESSION).",
)
base_option = click.option(
    "--amqp-url-base",
    default=None,
    help="Broker address in the URL files, amqp://host[:port] or amqps://host[:port] "
    "(default: amqp:// and the --admin-url host).",
)
reset_option = click.option("--reset", is_flag=True, help="New passwords for accounts that exist.")
show_option = click.option("--show", is_flag=True, help="Also print the URLs, passwords included.")


@click.group()
def session() -> None:
    """Least-privilege sessions: one vhost, one broker account per participant."""


@session.command()
@click.argument("name")
@agents_option
@out_option
@base_option
@click.option("--exchange", default="amq.topic", show_default=True)
@reset_option
@click.option(
    "--compat", is_flag=True, help="Accounts the original agent and ioppytest's router can use too."
)
@show_option
@admin_option
@_one_line
def create(
    name: str,
    agents: list[str],
    out: Path | None,
    amqp_url_base: str | None,
    exchange: str,
    reset: bool,
    compat: bool,
    show: bool,
    admin_url: str | None,
) -> None:
    """Make session NAME: its vhost, an account per agent, a router and an observer."""
    mgmt = Management(admin_url)
    out = out or Path(name)
    made = ops.create(mgmt, name, agents, out, amqp_url_base, exchange, reset, compat)
    click.echo(
        f"session {name}: {len(made)} accounts on {mgmt.host} (vhost {name}, exchange "
        f"{exchange}); URL files in {out}/ (mode 0600). Run:"
    )
    _commands(made, show)


@session.command()
@click.argument("name")
@agents_option
@out_option
@base_option
@reset_option
@show_option
@admin_option
@_one_line
def add(
    name: str,
    agents: list[str],
    out: Path | None,
    amqp_url_base: str | None,
    reset: bool,
    show: bool,
    admin_url: str | None,
) -> None:
    """Add agent accounts to the running session NAME (the others are not touched)."""
    mgmt = Management(admin_url)
    out = out or Path(name)
    made = ops.add(mgmt, name, agents, out, amqp_url_base, reset)
    click.echo(f"session {name}: {len(made)} more accounts; URL files in {out}/ (mode 0600). Run:")
    _commands(made, show)


@session.command()
@click.argument("name")
@admin_option
@_one_line
def delete(name: str, admin_url: str | None) -> None:
    """Delete session NAME: its vhost (queues included) and its users, nothing else."""
    users = ops.delete(Management(admin_url), name)
    click.echo(f"session {name} deleted: vhost {name} and {len(users)} users ({', '.join(users)})")


@session.command(name="list")
@admin_option
@_one_line
def list_(admin_url: str | None) -> None:
    """List the sessions on the broker and their accounts."""
    found = ops.sessions(Management(admin_url))
    if not found:
        click.echo("no agent sessions on this broker")
    for s in found:
        compat = " compat" if s.compat else ""
        click.echo(
            f"{s.name}  exchange {s.exchange}{compat}  accounts: {', '.join(s.accounts) or '-'}"
        )
