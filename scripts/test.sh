#!/usr/bin/env bash
# One command from a fresh clone: set up (with the test, docs and lint extras), run the code
# checks (scripts/check.sh: ruff, mypy) and the whole test suite, including the documentation
# (the site built strictly, its tutorial notebooks executed, every command of the docs run) and
# the slow end-to-end tests on real Fashion-MNIST (skipped where the data is absent).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LTH_EXTRAS=test,docs,lint,tensorboard,mlflow,ray bash "$repo/scripts/setup.sh"
cd "$repo"
# The code checks run beside the tests (they fill the cores the tests leave idle); their output
# follows the tests'.
check_log="$(mktemp)"
trap 'rm -f "$check_log"' EXIT
bash scripts/check.sh >"$check_log" 2>&1 &
checker=$!
# -n auto --maxprocesses 4: one worker per core, at most 4 (each test's torch uses one thread);
# --dist loadgroup: the documentation's tests share one worker (its notebooks execute once).
tests=0
.venv/bin/python -m pytest -m "slow or not slow" -n auto --maxprocesses 4 --dist loadgroup --durations=10 "$@" || tests=$?
checks=0
wait "$checker" || checks=$?
cat "$check_log"
[ "$checks" -eq 0 ] || echo "test.sh: the code checks failed (scripts/check.sh)" >&2
exit $(( tests != 0 ? tests : checks ))
