"""Capabilities instead of uid 0 (agent.tun.caps), and `agent --version` (pure: no root)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import agent
from agent import DISTRIBUTION
from agent.cli import cli
from agent.tun.caps import (
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_SYS_ADMIN,
    connect_problem,
    holds,
    parse_cap_eff,
)
from tests.conftest import ROOT

STATUS = """Name:\tpython3
Uid:\t65534\t65534\t65534\t65534
CapInh:\t0000000000001000
CapPrm:\t0000000000001000
CapEff:\t0000000000001000
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000001000
"""

ADMIN = 1 << CAP_NET_ADMIN
ROOT_CAPS = 0x000001FFFFFFFFFF


def test_parse_cap_eff_reads_the_effective_line() -> None:
    assert parse_cap_eff(STATUS) == ADMIN
    assert parse_cap_eff(STATUS.replace("CapEff:\t0000000000001000", "CapEff:\t000001ffffffffff")) \
        == ROOT_CAPS
    assert parse_cap_eff("Name:\tx\n") == 0
    assert parse_cap_eff("CapEff:\tzz\n") == 0


@given(st.integers(0, (1 << 41) - 1))
def test_parse_round_trip(mask: int) -> None:
    assert parse_cap_eff(f"CapPrm:\t{(1 << 41) - 1:016x}\nCapEff:\t{mask:016x}\n") == mask


def test_net_admin_alone_is_enough_for_a_plain_connect() -> None:
    assert connect_problem(ADMIN, 65534) is None
    assert connect_problem(ROOT_CAPS, 0, netns="ns1", reroute_if="eth1") is None


def test_missing_net_admin_names_root_or_the_capability() -> None:
    for uid, who in ((0, "root"), (1000, "uid 1000")):
        problem = connect_problem(ROOT_CAPS & ~ADMIN, uid)
        assert problem is not None
        assert "root or CAP_NET_ADMIN" in problem and f"({who})" in problem
        assert "\n" not in problem


def test_netns_needs_sys_admin_or_ip_netns_exec() -> None:
    problem = connect_problem(ADMIN, 65534, netns="lab")
    assert problem is not None
    assert "CAP_SYS_ADMIN" in problem and "ip netns exec lab agent connect" in problem
    assert connect_problem(ADMIN | 1 << CAP_SYS_ADMIN, 65534, netns="lab") is None


def test_reroute_if_needs_net_raw() -> None:
    problem = connect_problem(ADMIN, 65534, reroute_if="eth1")
    assert problem is not None and "CAP_NET_RAW" in problem and "eth1" in problem
    assert connect_problem(ADMIN | 1 << CAP_NET_RAW, 65534, reroute_if="eth1") is None


@given(st.integers(0, (1 << 41) - 1), st.booleans(), st.booleans())
def test_problem_iff_a_needed_capability_is_missing(mask: int, ns: bool, reroute: bool) -> None:
    needed = [CAP_NET_ADMIN] + [CAP_SYS_ADMIN] * ns + [CAP_NET_RAW] * reroute
    problem = connect_problem(mask, 1000, "ns1" if ns else None, "eth1" if reroute else None)
    assert (problem is None) == all(holds(mask, c) for c in needed)


def test_version_comes_from_the_installed_package() -> None:
    out = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    expected = f"agent {version(DISTRIBUTION)} ({DISTRIBUTION}, Python "
    assert out.stdout.startswith(expected), out.stdout
    assert out.stdout.count("\n") == 1


def test_version_of_a_tree_never_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "DISTRIBUTION", "ip-over-amqp-never-installed")
    assert agent.version() is None
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0
    assert out.output.startswith("agent: version unknown (ip-over-amqp-never-installed is "
                                 "not installed; code from "), out.output
