#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the checks and the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh --transport memory`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
.venv/bin/ruff check actors transport tests bench
.venv/bin/ruff format --check actors transport tests bench
.venv/bin/mypy
# Most tests wait on a broker, a timer or a process, not on the CPU: four test
# processes (ACTORS_TEST_PROCESSES) overlap those waits even on two cores.
# Work stealing keeps one process from ending up with every long scenario.
.venv/bin/python -m pytest -n "${ACTORS_TEST_PROCESSES:-4}" --dist worksteal "$@"
