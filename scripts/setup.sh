#!/usr/bin/env bash
# Create .venv and install lth into it (idempotent). Sourced by quickstart.sh and test.sh.
#   LTH_VENV   where the virtual environment goes (default: .venv in the repository)
#   LTH_EXTRAS pip extras to install, e.g. "test" (default: none)
#   LTH_NO_UV  set to install with pip alone (default: pip for torch and uv, uv for the rest)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LTH_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

# Fashion-MNIST from Debian's package when we can install packages; elsewhere lth downloads it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }) \
    && echo "setup: installed Debian's dataset-fashion-mnist" \
    || echo "setup: dataset-fashion-mnist not installable here; lth will download Fashion-MNIST"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtual environment $venv"
  "$python" -m venv "$venv"
fi
echo "setup: installing lth${LTH_EXTRAS:+[$LTH_EXTRAS]} and its dependencies (torch among them; a minute or two the first time)"
spec="$repo"
[ -n "${LTH_EXTRAS:-}" ] && spec="$repo[${LTH_EXTRAS}]"
# constraints/ci.txt pins the torch build that this project's machines keep on disk. pip installs
# torch (only pip looks in that local store) and uv; uv then installs lth and the rest, with
# parallel downloads (about 1 minute instead of 4 for the CI extras). Where any of that cannot be
# had (another Python or OS, no uv), plain pip installs everything, pinned if it can be, else not.
constraints="$repo/constraints/ci.txt"
pip=("$venv/bin/pip" install -q --disable-pip-version-check)
if [ -z "${LTH_NO_UV:-}" ] && "${pip[@]}" torch uv -c "$constraints" 2>/dev/null \
  && "$venv/bin/uv" pip install -q --python "$venv/bin/python" -e "$spec" -c "$constraints"; then
  :
else
  "${pip[@]}" -e "$spec" -c "$constraints" 2>/dev/null || "${pip[@]}" -e "$spec"
fi
echo "setup: lth installed in $venv"
