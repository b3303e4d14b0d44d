#!/usr/bin/env bash
# One command from a fresh clone: set up, then run a real LeNet-300-100 ticket search on
# Fashion-MNIST that shows the lottery ticket: 6 rounds of global pruning at 40% (dense -> 4.7%
# of the weights), 5,000 iterations each, with the reinit control (the same masks, fresh
# weights) beside the ticket; about 4.5 minutes on 2 CPU cores. Results and plots land in
# runs/quickstart/, a report of it in runs/quickstart-report.html. Extra arguments go to `lth find-ticket`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
echo "quickstart: 6 pruning rounds with the reinit control (13 trainings of 5,000 iterations)"
.venv/bin/lth find-ticket lenet-300-100 fashion-mnist \
  --rounds 6 --scope global --prune-rate 0.4 --iterations 5000 --eval-every 250 --controls reinit \
  --out runs/quickstart --overwrite "$@"
.venv/bin/lth report runs/quickstart --out runs/quickstart-report.html >/dev/null
echo "quickstart: the ticket (w_0 under its mask) against the reinit control (fresh weights under the same"
echo "  mask): runs/quickstart/accuracy_vs_weights_remaining.png; everything on one page: runs/quickstart-report.html"
