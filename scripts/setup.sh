#!/usr/bin/env bash
# Creates .venv and installs the service with its dev and optional extras. Idempotent: re-runs only
# when pyproject.toml changed. torch is installed first, pinned to the CPU build this project tests
# with, so that resolving the other packages never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,ct2,bench,eval,scale,trim}

stamp="$VENV/.installed-$( (cat pyproject.toml; echo "$TORCH_SPEC $EXTRAS") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "installed into $VENV"
