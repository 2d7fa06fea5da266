#!/usr/bin/env bash
# Set up (a .venv in the checkout) and run the main job on the embedded default:
# a local nats-server with JetStream in ./data, the orchestrator and a worker
# serving examples/, and the example workflows run through the client.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/python -m actors demo "$@"
