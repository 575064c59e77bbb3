#!/usr/bin/env bash
# The test command: install (if needed), build the tiny test models (if needed), run the test suite.
# Works offline except for the package registries. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/model-server build-tiny --models-dir models
exec .venv/bin/python -m pytest "$@"
