#!/usr/bin/env bash
# The README's test command: a fresh virtual environment, fastbp with its test extra, pytest.
# pytest's exit 5 ("no tests collected") is a failure here, as any non-zero exit is.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -m pytest -q "$@"
