#!/usr/bin/env bash
# The project on every Python from 3.10 to 3.13 this machine has (pyenv builds under
# ~/.pyenv/versions/, else pythonX.Y on PATH); an absent one is skipped with a line saying so.
# For each: a wheel built once (python -m build) is installed into a clean venv, its console
# script must answer `agent --version`, and the fast slice (-m "not e2e") runs there (with
# at most $AGENT_MAX_EXAMPLES examples per property test, default 25: the properties run in
# full on .venv's interpreter). With --e2e, one end-to-end tunnel test runs on the oldest
# (as root, with the broker); with --e2e-after FILE, once FILE exists (scripts/test.sh
# makes it when its end-to-end slice is over: never during its broker restart). Extra
# arguments go to pytest. Run by scripts/test.sh.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
e2e=0 e2e_after=""
if [ "${1:-}" = "--e2e" ]; then e2e=1; shift; fi
if [ "${1:-}" = "--e2e-after" ]; then e2e=1 e2e_after=$2; shift 2; fi
export AGENT_MAX_EXAMPLES=${AGENT_MAX_EXAMPLES:-25}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
main=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

find_python() {  # the newest pyenv build of version $1, else pythonX.Y on PATH
    local found
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".* 2>/dev/null | sort -V \
        | while read -r d; do [ -x "$d/bin/python$1" ] && echo "$d/bin/python$1"; done \
        | tail -n 1) || true
    [ -n "$found" ] || found=$(command -v "python$1" || true)
    echo "$found"
}

counts() {  # pytest's closing line in log $1: "12 passed, 3 deselected in 4.51s"
    grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$1" | tail -n 1 \
        | sed -E 's/^=+ //; s/ =+$//' || true  # none (an import error): the log says why
}

start=$SECONDS
.venv/bin/python -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; echo "pythons: the wheel did not build" >&2; exit 1; }
wheel=$(ls "$work"/dist/*.whl)
version=$(.venv/bin/python -c 'from agent import version; print(version())')
echo "pythons: built $(basename "$wheel") in $((SECONDS - start)) s"

pythons=()
for v in 3.10 3.11 3.12 3.13; do
    py=$(find_python "$v")
    if [ -z "$py" ]; then
        echo "pythons: SKIP Python $v: not on this machine (no ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v.*, no python$v on PATH)"
        continue
    fi
    pythons+=("$v=$py")
done
[ ${#pythons[@]} -gt 0 ] || { echo "pythons: no Python 3.10-3.13 found" >&2; exit 1; }

# clean venvs with the wheel and the test tools, in parallel (mostly downloads)
start=$SECONDS
pids=()
for entry in "${pythons[@]}"; do
    v=${entry%%=*} py=${entry#*=}
    (
        "$py" -m venv "$work/venv-$v" && "$work/venv-$v/bin/pip" install -q "$wheel[test]"
    ) >"$work/install-$v.log" 2>&1 &
    pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
    v=${pythons[$i]%%=*}
    if ! wait "${pids[$i]}"; then
        cat "$work/install-$v.log" >&2
        echo "pythons: FAIL Python $v: the wheel does not install" >&2
        rc=1
        continue
    fi
    # the console script of the installed wheel, away from the source tree
    out=$(cd / && "$work/venv-$v/bin/agent" --version 2>&1) || true
    case "$out" in
        "agent $version (ip-over-amqp, Python $v."*) ;;
        *) echo "pythons: FAIL Python $v: agent --version said: $out" >&2; rc=1 ;;
    esac
done
echo "pythons: ${#pythons[@]} clean venvs with the wheel, agent --version checked, in $((SECONDS - start)) s"
[ "$rc" -eq 0 ] || exit 1

for entry in "${pythons[@]}"; do
    v=${entry%%=*}
    if [ "$v" = "$main" ]; then
        echo "pythons: Python $v: fast slice not repeated (it is .venv's, where it runs in full)"
        continue
    fi
    start=$SECONDS
    slice_rc=0
    "$work/venv-$v/bin/python" -m pytest -p no:cacheprovider -m "not e2e" "$@" \
        >"$work/fast-$v.log" 2>&1 || slice_rc=$?
    summary=$(counts "$work/fast-$v.log")
    if [ "$slice_rc" -ne 0 ] && [ "$slice_rc" -ne 5 ]; then  # 5: -k selected none here
        cat "$work/fast-$v.log"
        echo "pythons: FAIL Python $v fast slice (exit $slice_rc) in $((SECONDS - start)) s"
        rc=1
    else
        echo "pythons: Python $v fast slice: $summary ($((SECONDS - start)) s)"
    fi
done

if [ "$e2e" -eq 1 ]; then
    oldest=${pythons[0]%%=*}
    if [ -n "$e2e_after" ]; then
        while [ ! -e "$e2e_after" ]; do sleep 2; done
    fi
    start=$SECONDS
    test=tests/test_e2e_tunnel.py::test_ping_both_ways_ipv6_and_ipv4
    if "$work/venv-$oldest/bin/python" -m pytest -p no:cacheprovider "$test" \
            >"$work/e2e.log" 2>&1; then
        echo "pythons: Python $oldest end-to-end: $(counts "$work/e2e.log") ($((SECONDS - start)) s)"
    else
        cat "$work/e2e.log"
        echo "pythons: FAIL Python $oldest end-to-end $test"
        rc=1
    fi
fi
exit "$rc"
