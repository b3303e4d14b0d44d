#!/usr/bin/env bash
# One command from a fresh clone: set up (with the test extra) and run the whole test suite,
# including the slow end-to-end tests on real Fashion-MNIST (skipped where the data is absent).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LTH_EXTRAS=test,tensorboard,mlflow,ray bash "$repo/scripts/setup.sh"
cd "$repo"
# -n auto --maxprocesses 4: one worker per core, at most 4 (each test's torch uses one thread).
.venv/bin/python -m pytest -m "slow or not slow" -n auto --maxprocesses 4 --durations=10 "$@"
