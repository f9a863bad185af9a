#!/usr/bin/env bash
# Run the main job: a local demo of certsync's pipeline on this host.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/venv.sh" 3008
exec "$repo/.venv/salt3008/bin/python" "$repo/demo/local_pipeline.py" "$@"
