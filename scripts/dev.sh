#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the main job on the embedded default:
# the dev server (python -m actors dev): a local nats-server with JetStream in
# ./data, the orchestrator, a worker serving actors/examples/ and the HTTP API, with
# the example workflows run once; Ctrl-C stops it all. Extra arguments go to
# `python -m actors dev` (e.g. --once to stop after the examples).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/python -m actors dev "$@"
