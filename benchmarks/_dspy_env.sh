#!/usr/bin/env bash
# Create (once) a separate virtual environment with DSPy for the head-to-head benchmarks,
# and print its interpreter's path. DSPy is never a dependency of lmforge itself.
#
#   DSPY_PYTHON=$(bash benchmarks/_dspy_env.sh) python benchmarks/overhead.py
#
# DSPY_VENV (default /tmp/dspy-venv) and DSPY_SPEC (default "dspy") choose where and what.
set -euo pipefail
venv="${DSPY_VENV:-/tmp/dspy-venv}"
spec="${DSPY_SPEC:-dspy}"
if ! "$venv/bin/python" -c "import dspy" >/dev/null 2>&1; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet "$spec" >&2
fi
echo "$venv/bin/python"
