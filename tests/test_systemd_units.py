"""examples/systemd/: the units pass `systemd-analyze verify` (no running systemd needed),
run the agent unprivileged with CAP_NET_ADMIN only, and name only options the agent has."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNITS = ROOT / "examples" / "systemd"
INSTALLED = "/opt/ip-over-amqp/bin/agent"  # where docs/services.md installs it
AGENT = Path(sys.executable).parent / "agent"  # this venv's console script

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="no systemd-analyze (Debian: apt-get install systemd; scripts/setup.sh does)",
)


def service(path: Path) -> dict[str, list[str]]:
    """The [Service] section's settings (key -> values in order)."""
    section, out = "", {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The units as shipped, but for the path of the agent (verify checks that it is an
    executable): this venv's console script stands in for the installed one."""
    assert AGENT.exists(), AGENT
    names = {"agent@.service": "agent@agent_1.service", "agent-router.service":
             "agent-router.service"}
    for src, dst in names.items():
        text = (UNITS / src).read_text()
        assert text.count(INSTALLED) == 1, src
        (tmp_path / dst).write_text(text.replace(INSTALLED, str(AGENT)))
    out = subprocess.run(
        ["systemd-analyze", "verify", *(f"./{n}" for n in names.values())],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    about_ours = [line for line in (out.stdout + out.stderr).splitlines()
                  if any(n.split("@")[0].split(".")[0] in line for n in names.values())]
    assert out.returncode == 0 and not about_ours, out.stdout + out.stderr


def test_agent_unit_holds_net_admin_only_and_is_hardened() -> None:
    unit = service(UNITS / "agent@.service")
    assert unit["AmbientCapabilities"] == ["CAP_NET_ADMIN"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert unit.get("DynamicUser") == ["yes"] or "User" in unit
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("Restart", "on-failure")):
        assert unit[key] == [value], key
    # it writes its TUN's settings under /proc/sys/net: that must stay writable
    assert "ProtectKernelTunables" not in unit


def test_router_unit_holds_no_capability() -> None:
    unit = service(UNITS / "agent-router.service")
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit.get("AmbientCapabilities", [""]) == [""]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]


@pytest.mark.parametrize("unit, command", [("agent@.service", "connect"),
                                           ("agent-router.service", "router")])
def test_exec_start_names_only_options_the_agent_has(unit: str, command: str) -> None:
    words = shlex.split(service(UNITS / unit)["ExecStart"][0])
    assert words[0] == INSTALLED and words[1] == command, words
    options = [w for w in words[2:] if w.startswith("--")]
    assert options, words
    helptext = subprocess.run([sys.executable, "-m", "agent", command, "--help"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    for option in options:
        assert f"{option} " in helptext, option
