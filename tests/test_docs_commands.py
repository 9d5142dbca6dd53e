"""Every command shown in README.md and docs/ runs as written.

Commands are taken from code blocks (fenced or indented) and from inline code spans of
the Markdown files. Each `agent ...` command is parsed against the real click commands
(the subcommand exists, every option exists, values of choice/range options are valid,
no synopsis brackets); `python -m bench.X` / `python tests/tools/X.py` options must be
in that program's --help; scripts and examples must exist. Other tools (ip, tshark...)
must be ones the docs are known to use, so that a typo'd command is noticed.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from agent.cli import cli as agent_cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Programs whose commands are checked in depth.
PYTHONS = {"python", "python3", ".venv/bin/python"}
CHECKED = {"agent", "bash", *PYTHONS}
# Other programs the docs may show; their arguments are theirs to check.
TOOLS = {
    "ip",
    "tshark",
    "capinfos",
    "wireshark",
    "tail",
    "ping",
    "socat",
    "kill",
    "pgrep",
    "sysctl",
    "ethtool",
    "systemctl",
    "usermod",
    "dmesg",
    "ls",
    "apt",
    "apt-get",
    "export",
    "iperf3",
    "rabbitmqctl",
    ".venv/bin/pip",
    "pip",
    "cat",
    "ss",
    "echo",
}
ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    where: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.words)}"


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced or 4-space indented code block."""
    out: list[tuple[int, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append((i + 2, lines[i + 1 : j]))
            i = j + 1
            continue
        if line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append((i + 1, [x[4:] for x in lines[i:j]]))
            i = j
            continue
        i += 1
    return out


def _join_continuations(lines: list[str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf = ""
    start = 0
    for n, line in enumerate(lines):
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _strip_prefix(words: list[str]) -> list[str]:
    """Drop `$ `, `sudo [-E]` and VAR=value in front of the program."""
    while words:
        if words[0] == "$":
            words = words[1:]
        elif words[0] == "sudo":
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[1:]
        elif ENV_ASSIGN.match(words[0]):
            words = words[1:]
        else:
            break
    return words


def _pipeline(line: str) -> list[list[str]] | None:
    """The simple commands of a shell line (split at |, &&, ;, &), comments dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:
        return None
    cmds: list[list[str]] = [[]]
    for tok in tokens:
        if tok in {"|", "||", "&&", ";", "&"}:
            cmds.append([])
        else:
            cmds[-1].append(tok)
    return [c for c in cmds if c]


def _is_command(words: list[str], prompted: bool) -> bool:
    words = _strip_prefix(list(words))
    if not words:
        return False
    if words[0] in CHECKED:
        # `agent_1 in namespace ...` is output; `agent` must be followed by a word or option
        return True
    return prompted


def commands() -> list[Command]:
    found: list[Command] = []
    for path in DOCS:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for first, block in _blocks(text):
            if any("+--" in line or "-->" in line for line in block):
                continue  # a drawing
            for offset, line in _join_continuations(block):
                stripped = line.strip()
                prompted = stripped.startswith("$ ")
                cmds = _pipeline(stripped)
                if not cmds or not _is_command(cmds[0], prompted):
                    continue
                for words in cmds:
                    found.append(Command(f"{rel}:{first + offset}", tuple(_strip_prefix(words))))
        for n, line in enumerate(text.splitlines(), 1):
            for span in re.findall(r"`([^`]+)`", line):
                cmds = _pipeline(span)
                if not cmds:
                    continue
                words = _strip_prefix(list(cmds[0]))
                if words and words[0] in CHECKED and len(words) > 1:
                    found.append(Command(f"{rel}:{n} (inline)", tuple(words)))
    return found


ALL = commands()


def test_the_docs_show_commands() -> None:
    """The extraction itself works: the README's two commands and the everyday ones."""
    shown = {" ".join(c.words) for c in ALL}
    assert "bash examples/two_agents_one_host.sh" in shown
    assert "bash scripts/test.sh" in shown
    assert any(c.words[:2] == ("agent", "connect") for c in ALL)
    assert any(c.words[:2] == ("agent", "router") for c in ALL)
    assert any(c.words[:2] == ("agent", "sniff") for c in ALL)
    assert len(ALL) > 40


def _placeholder(value: str) -> bool:
    return "$" in value or value.isupper() or value in {"NS", "FILE", "N"}


def check_agent(words: tuple[str, ...]) -> None:
    """`agent SUB [SUB...] [options] [arguments]` against the click commands."""
    cmd: click.Command = agent_cli
    args = list(words[1:])
    path = "agent"
    while isinstance(cmd, click.Group):
        if args in ([], ["--help"], ["-h"]):
            return
        if args[0].startswith("-"):  # the group's own flags (`agent --version`)
            flags = {o for p in cmd.params if isinstance(p, click.Option) and p.is_flag
                     for o in p.opts}
            assert args[0] in flags, f"{path}: no option {args[0]}"
            args = args[1:]
            continue
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"{path}: no subcommand {args[0]!r}"
        cmd, path, args = sub, f"{path} {args[0]}", args[1:]
    by_name: dict[str, click.Parameter] = {}
    for p in cmd.params:
        for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
            by_name[opt] = p
    by_name.setdefault("--help", click.Option(["--help"], is_flag=True))
    by_name.setdefault("-h", by_name["--help"])
    positional = [p for p in cmd.params if isinstance(p, click.Argument)]
    i = 0
    while i < len(args):
        tok = args[i]
        assert "[" not in tok and "..." not in tok, f"synopsis, not a command: {tok!r}"
        if not tok.startswith("-"):
            assert positional, f"{path}: unexpected argument {tok!r}"
            if positional[0].nargs == 1:
                positional.pop(0)
            i += 1
            continue
        value: str | None = None
        if tok.startswith("--") and "=" in tok:
            tok, value = tok.split("=", 1)
        if not tok.startswith("--") and len(tok) > 2:
            for ch in tok[1:]:  # -vv, -qv
                opt = by_name.get(f"-{ch}")
                assert isinstance(opt, click.Option), f"{path}: no option -{ch}"
                assert opt.is_flag or opt.count, f"-{ch} takes a value"
            i += 1
            continue
        param = by_name.get(tok)
        assert param is not None, f"{path}: no option {tok}"
        i += 1
        if isinstance(param, click.Option) and (param.is_flag or param.count):
            continue
        if value is None:
            assert i < len(args), f"{tok} needs a value"
            value = args[i]
            i += 1
        assert "..." not in value and "<" not in value, f"{tok} {value}: not a real value"
        if _placeholder(value) or isinstance(param.type, click.File | click.Path):
            continue
        param.type.convert(value, param, None)


@functools.cache
def _help_of(target: tuple[str, ...]) -> str:
    out = subprocess.run(
        [sys.executable, *target, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, f"{' '.join(target)} --help failed: {out.stderr[-300:]}"
    return out.stdout


def _check_options_in_help(target: tuple[str, ...], args: list[str]) -> None:
    text = _help_of(target)
    for tok in args:
        assert "[" not in tok and "..." not in tok, f"synopsis, not a command: {tok!r}"
        if tok.startswith("--"):
            assert tok.split("=")[0] in text, f"{' '.join(target)} has no option {tok}"


def check_python(words: tuple[str, ...]) -> None:
    args = list(words[1:])
    if args[:1] == ["-m"]:
        module = args[1]
        if module == "agent":
            check_agent(("agent", *args[2:]))
            return
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        if module.startswith("bench."):
            _check_options_in_help(("-m", module), args[2:])
        return
    script = ROOT / args[0]
    assert script.is_file(), f"no script {args[0]}"
    _check_options_in_help((str(script),), args[1:])


def check(cmd: Command) -> None:
    words = cmd.words
    prog = words[0]
    if prog == "agent":
        check_agent(words)
    elif prog in PYTHONS:
        check_python(words)
    elif prog == "bash":
        assert (ROOT / words[1]).is_file(), f"no script {words[1]}"
    else:
        assert prog in TOOLS, f"unknown program {prog!r} (a typo, or add it to TOOLS)"


@pytest.mark.parametrize("cmd", ALL, ids=str)
def test_command_runs_as_written(cmd: Command) -> None:
    check(cmd)


@pytest.mark.parametrize(
    "line",
    [
        "agent connect --nmae agent_1",
        "agent connect --name agent_1 --wire fastest",
        "agent connect --name agent_1 --mtu 100",
        "agent routr",
        "agent --versoin",
        "agent connect --name agent_1 extra",
        "agent sniff --url URL [--name NAME ...]",
        "python -m bench.tunnel --quik",
        "bash examples/no_such_demo.sh",
        "agent router --url ...",
        "tcpdmp -i any",
    ],
)
def test_the_check_catches_drift(line: str) -> None:
    """A wrong option, value, subcommand, script or program is reported."""
    cmds = _pipeline(line)
    assert cmds
    with pytest.raises((AssertionError, click.BadParameter)):
        check(Command("example", tuple(_strip_prefix(cmds[0]))))


PATH_RX = re.compile(r"`((?:agent|tests|bench|examples|scripts|docs)/[\w./-]*\w)`")
LINK_RX = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")


def test_files_the_docs_name_exist() -> None:
    """Every `agent/...`, `tests/...`, `examples/...` path and every relative link resolves."""
    missing = []
    for path in DOCS:
        text = path.read_text()
        for name in PATH_RX.findall(text):
            if not (ROOT / name).exists():
                missing.append(f"{path.name}: {name}")
        for link in LINK_RX.findall(text):
            if not (path.parent / link).exists():
                missing.append(f"{path.name}: link {link}")
    assert not missing, missing


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
