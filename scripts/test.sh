#!/usr/bin/env bash
# Run the whole test suite (unit, property and end-to-end) as root on a Debian machine.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tunnel
# The fast slice (-m "not e2e": no root, no broker, CPU-bound property tests) runs beside
# the end-to-end tests (which mostly wait on namespaces, brokers and pings); its output is
# printed when both are done. Both must pass.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
.venv/bin/ruff check agent tests bench
fast_log=$(mktemp)
trap 'rm -f "$fast_log"' EXIT
.venv/bin/python -m pytest -p no:cacheprovider -m "not e2e" "$@" >"$fast_log" 2>&1 &
fast=$!
e2e_rc=0
.venv/bin/python -m pytest -p no:cacheprovider -m e2e "$@" || e2e_rc=$?
fast_rc=0
wait "$fast" || fast_rc=$?
echo "== the fast slice (-m 'not e2e'):"
cat "$fast_log"
# exit code 5 is "no tests collected" (e.g. -k selected only one slice's tests)
[ "$e2e_rc" -eq 5 ] && [ "$fast_rc" -ne 5 ] && e2e_rc=0
[ "$fast_rc" -eq 5 ] && [ "$e2e_rc" -ne 5 ] && fast_rc=0
[ "$e2e_rc" -eq 0 ] && [ "$fast_rc" -eq 0 ] && { echo "test.sh: both slices passed"; exit 0; }
echo "test.sh: end-to-end slice exit $e2e_rc, fast slice exit $fast_rc" >&2
exit 1
