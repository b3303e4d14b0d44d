#!/usr/bin/env bash
# One command from a fresh clone: set up (with the test extra) and run the whole test suite,
# including the slow end-to-end tests on real Fashion-MNIST (skipped where the data is absent).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LTH_EXTRAS=test,tensorboard,mlflow,ray bash "$repo/scripts/setup.sh"
cd "$repo"
.venv/bin/python -m pytest -m "slow or not slow" --durations=5 "$@"
