#!/usr/bin/env bash
# Run the whole test suite (unit, property and end-to-end) as root on a Debian machine.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tunnel
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/setup.sh
.venv/bin/ruff check agent tests bench
exec .venv/bin/python -m pytest "$@"
