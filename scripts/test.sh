#!/usr/bin/env bash
# The README's test command: a fresh virtual environment, fastbp with its test extra, pytest.
# pytest's exit 5 ("no tests collected") is a failure here, as any non-zero exit is.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# Two pytest processes (pytest-xdist; FASTBP_TEST_WORKERS=0 for one): most of the suite's
# time is Numba compiling kernels, one function at a time per process. Each test file stays
# in one process (--dist loadfile), so a file's kernels are compiled or loaded once.
.venv/bin/python -m pytest -q -n "${FASTBP_TEST_WORKERS:-2}" --dist loadfile "$@"
