#!/usr/bin/env bash
# Run the main job: the whole certsync pipeline on this host (a salt-master,
# the npm and mailcow minions, mailcow-like containers), a renewal, and the
# timeline until the new certificate is served. Sets up what it needs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/venv.sh" 3008
"$repo/scripts/test-deps.sh"
exec "$repo/.venv/salt3008/bin/python" "$repo/demo/pipeline.py" "$@"
