#!/usr/bin/env bash
# One command from a fresh clone: set up, then run a real LeNet-300-100 ticket search on
# Fashion-MNIST (7 pruning rounds of 10,000 iterations; about 4 minutes on 2 CPU cores).
# Results and plots land in runs/quickstart/. Extra arguments go to `lth find-ticket`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
.venv/bin/lth find-ticket lenet-300-100 fashion-mnist \
  --rounds 7 --iterations 10000 --eval-every 250 --out runs/quickstart --overwrite "$@"
