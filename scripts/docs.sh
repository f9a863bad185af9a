#!/usr/bin/env bash
# Build the documentation site (docs/, Sphinx + MyST) into .cache/docs/, warnings as
# errors: what scripts/test.sh runs. Open .cache/docs/index.html.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/venv.sh 3008
exec .venv/salt3008/bin/python -m sphinx -E -W --keep-going -q -b html docs .cache/docs
