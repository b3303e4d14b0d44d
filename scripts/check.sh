#!/usr/bin/env bash
# The code checks: ruff (lint and format) and mypy on src/, configured in pyproject.toml.
# Assumes the environment of scripts/setup.sh with the lint extra (scripts/test.sh runs it).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin="${LTH_VENV:-$repo/.venv}/bin"
status=0
echo "check: ruff check"; "$bin/ruff" check src tests benchmarks scripts docs/_hooks || status=1
echo "check: ruff format --check"; "$bin/ruff" format --check --quiet src tests benchmarks scripts docs/_hooks || status=1
echo "check: mypy"; "$bin/mypy" || status=1
exit "$status"
