#!/usr/bin/env bash
# Run the whole test suite (unit, property and end-to-end) as root on a Debian machine.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tunnel
# The fast slice (-m "not e2e": no root, no broker, CPU-bound property tests) runs beside
# the end-to-end tests (which mostly wait on namespaces, brokers and pings), followed by
# scripts/pythons.sh (the wheel on each other Python 3.10-3.13: its fast slice, and, once
# the end-to-end slice is over, one tunnel test on the oldest; AGENT_PYTHONS=0 leaves it
# out); their output is printed when all are done. All must pass.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
.venv/bin/ruff check agent tests bench
fast_log=$(mktemp)
py_log=$(mktemp)
e2e_done="$fast_log.e2e-done"
trap 'rm -f "$fast_log" "$py_log" "$e2e_done"' EXIT
started=$SECONDS
(
    rc=0
    .venv/bin/python -m pytest -p no:cacheprovider -m "not e2e" "$@" >"$fast_log" 2>&1 || rc=$?
    echo "(the fast slice took $((SECONDS - started)) s)" >>"$fast_log"
    exit "$rc"
) &
fast=$!
(
    wait_for=$fast  # not a child of this subshell: poll until the fast slice is done
    while kill -0 "$wait_for" 2>/dev/null; do sleep 2; done
    if [ "${AGENT_PYTHONS:-1}" = 0 ]; then
        echo "pythons: skipped (AGENT_PYTHONS=0)"
    else
        # niced: the end-to-end slice beside it has timing checks (stops within 2 s...)
        nice -n 10 bash scripts/pythons.sh --e2e-after "$e2e_done" "$@"
    fi
) >"$py_log" 2>&1 &
pythons=$!
e2e_rc=0
.venv/bin/python -m pytest -p no:cacheprovider -m e2e "$@" || e2e_rc=$?
echo "(the end-to-end slice took $((SECONDS - started)) s)"
touch "$e2e_done"  # scripts/pythons.sh's tunnel test on the oldest Python may start
fast_rc=0
wait "$fast" || fast_rc=$?
py_rc=0
wait "$pythons" || py_rc=$?
echo "== the fast slice (-m 'not e2e'):"
cat "$fast_log"
echo "== other Pythons (scripts/pythons.sh, done $((SECONDS - started)) s after the start):"
cat "$py_log"
# exit code 5 is "no tests collected" (e.g. -k selected only one slice's tests)
[ "$e2e_rc" -eq 5 ] && [ "$fast_rc" -ne 5 ] && e2e_rc=0
[ "$fast_rc" -eq 5 ] && [ "$e2e_rc" -ne 5 ] && fast_rc=0
if [ "$e2e_rc" -eq 0 ] && [ "$fast_rc" -eq 0 ] && [ "$py_rc" -eq 0 ]; then
    echo "test.sh: both slices and the other Pythons passed"
    exit 0
fi
echo "test.sh: end-to-end slice exit $e2e_rc, fast slice exit $fast_rc, other Pythons exit $py_rc" >&2
exit 1
