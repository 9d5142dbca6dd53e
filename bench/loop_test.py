"""Run one test many times in a row in one pytest process; count passes and failures.

    sudo .venv/bin/python -m bench.loop_test --runs 30 \\
        tests/test_e2e_cluster.py::test_failover_on_node_and_router_faults

The test is parametrized with a run number (1..N) by a small pytest plugin, so fixtures of
a wider scope are made once for all runs (the cluster of tests/test_e2e_cluster.py starts
once, not 30 times). Prints one line per run (outcome, seconds) and a summary; `--json
FILE` also writes them; the pytest output goes to `--log FILE` (default: a temporary
file, named at the end) so that failed runs can be read afterwards. Exits 0 only if every
run passed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

RUN_ARG = "loop_run"


class Loop:
    """The pytest plugin: N runs of each selected test, and what each came to."""

    def __init__(self, runs: int, stop_after: int | None = None) -> None:
        self.runs = runs
        self.stop_after = stop_after
        self.results: dict[str, dict[str, Any]] = {}  # nodeid -> outcome, seconds, run
        self.failures = 0

    @pytest.hookimpl(trylast=True)
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        metafunc.fixturenames.append(RUN_ARG)
        metafunc.parametrize(RUN_ARG, range(1, self.runs + 1), ids=lambda n: f"run{n}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.results.setdefault(
            report.nodeid, {"outcome": "passed", "seconds": 0.0, "started": time.time()}
        )
        entry["seconds"] += report.duration
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else f"error ({report.when})"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
        if report.when == "teardown":
            run = len([r for r in self.results.values() if "done" in r]) + 1
            entry["done"] = run
            line = f"run {run:3d}/{self.runs}: {entry['outcome']:8s} {entry['seconds']:7.1f} s"
            print(line, file=sys.__stdout__, flush=True)
            if entry["outcome"] != "passed":
                self.failures += 1

    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        if self.stop_after is not None and self.failures >= self.stop_after:
            item.session.shouldstop = f"{self.failures} failed runs"

    def summary(self) -> dict[str, Any]:
        done = [r for r in self.results.values() if "done" in r]
        passed = [r["seconds"] for r in done if r["outcome"] == "passed"]
        every = [r["seconds"] for r in done]
        return {
            "runs": len(done),
            "passed": len(passed),
            "failed": len(done) - len(passed),
            "seconds_min": min(every, default=0.0),
            "seconds_median": statistics.median(every) if every else 0.0,
            "seconds_max": max(every, default=0.0),
            "per_run": [{"outcome": r["outcome"], "seconds": round(r["seconds"], 1)} for r in done],
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test", help="a pytest node id, e.g. tests/test_x.py::test_y")
    ap.add_argument("--runs", type=int, default=30, help="how many runs (default 30)")
    ap.add_argument("--stop-after", type=int, default=None, metavar="N",
                    help="stop after N failed runs (default: run them all)")
    ap.add_argument("--log", type=Path, default=None, help="pytest's output (default: a temp file)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    log = args.log or Path(tempfile.mkstemp(prefix="loop_test-", suffix=".log")[1])
    loop = Loop(args.runs, args.stop_after)
    start = time.monotonic()
    with open(log, "w") as out:
        sys.stdout = sys.stderr = out  # pytest's report (and failed runs' logs) go to the file
        try:
            pytest.main([args.test, "-p", "no:cacheprovider", "-rfE", "-q"], plugins=[loop])
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    result = loop.summary()
    result.update(test=args.test, wall_seconds=round(time.monotonic() - start, 1),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"{args.test}: {result['passed']}/{result['runs']} passed, {result['failed']} failed; "
          f"per run {result['seconds_min']:.0f}/{result['seconds_median']:.0f}/"
          f"{result['seconds_max']:.0f} s (min/median/max), {result['wall_seconds']:.0f} s "
          f"in all; pytest output in {log}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["runs"] == args.runs and result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
