#!/usr/bin/env bash
# One entry point for a fresh machine (only Python 3.11 needed); every command sets up the environment first and
# is safe to repeat.
#   bash run.sh demo   set up, build the demo set if missing, restore its test images and print the results table
#   bash run.sh test   set up, lint, and run the test suite
# The MONAI Deploy SDK (with Holoscan and CuPy) gets its own environment, .venv-deploy: once installed, `import monai`
# imports it in every process, so it stays out of .venv, where the bundle runs. MONAI Label gets .venv-label: it
# needs numpy<2 and pydicom<3 where .venv pins numpy 2 and pydicom 3 (tests/test_label_server.py uses it).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=.venv
DEPLOY_VENV=.venv-deploy
LABEL_VENV=.venv-label

# Disk each environment takes once installed (du in a fresh clone: 3.1, 3.6 and 8.2 GB), in GB rounded up.
declare -A SIZE_GB=([$VENV]=4 [$DEPLOY_VENV]=4 [$LABEL_VENV]=9)

# need_disk VENV...: stop before any install when the environments not made yet would not fit on this disk (pip
# fails minutes in otherwise, with one environment half installed).
need_disk() {
  local need=0 missing=() venv free
  for venv in "$@"; do
    if [[ ! -x $venv/bin/python ]]; then
      need=$((need + SIZE_GB[$venv]))
      missing+=("$venv")
    fi
  done
  # no df, or no answer from it: no check (pip then says itself what failed)
  free=$(df -Pk . 2>/dev/null | awk 'NR == 2 {print int($4 / 1048576)}') || return 0
  [[ -n $free ]] || return 0
  if ((need > free)); then
    echo "error: ${missing[*]} need about $need GB of disk to install, and $free GB are free here; free some space and run again" >&2
    exit 1
  fi
}

# setup VENV ARGS...: create the environment VENV if missing, then pip install ARGS into it. pip resolves instantly
# when everything is already installed, so this stays idempotent and quick.
setup() {
  local venv=$1
  if [[ ! -x $venv/bin/python ]]; then
    "$PYTHON" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${@:2}"
}

case "${1:-}" in
  demo)
    need_disk "$VENV"
    setup "$VENV" -r requirements.txt
    cd bundle && exec "../$VENV/bin/python" -m scripts.demo "${@:2}"
    ;;
  test)
    need_disk "$VENV" "$DEPLOY_VENV" "$LABEL_VENV"
    setup "$VENV" -r requirements.txt -r requirements-dev.txt
    setup "$DEPLOY_VENV" -r requirements.txt -r deploy/requirements.txt
    setup "$LABEL_VENV" -r deploy/requirements-label.txt
    "$VENV/bin/ruff" check bundle tests bench deploy
    "$VENV/bin/ruff" format --check bundle tests bench deploy
    exec "$VENV/bin/python" -m pytest "${@:2}"
    ;;
  *)
    echo "usage: bash run.sh demo|test" >&2
    exit 2
    ;;
esac
