#!/usr/bin/env bash
# Run every benchmark under benchmarks/ and print its figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/venv.sh" 3008
"$repo/scripts/test-deps.sh"
for bench in "$repo"/benchmarks/bench_*.py; do
    echo "== $(basename "$bench")"
    "$repo/.venv/salt3008/bin/python" "$bench"
done
