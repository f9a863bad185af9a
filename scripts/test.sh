#!/usr/bin/env bash
# Run the whole test suite: lint; the docs site (warnings as errors); then
# every test (unit, functional, integration with real daemons and Docker) on
# Salt 3008, and on Salt 3006 LTS all but those marked one_release: every
# Docker-heavy integration test (the bus, the engine, the secrets over the bus,
# the fault campaign, the look-alike's wire, the systemd hosts, Caddy over the
# bus, the relay, MTA-STS, the rsync migration, the DANE rollovers), the racing
# installs, and the functional tests whose subject is a DNS server, an API or
# certbot rather than the release (the DANE gate against Knot, the Cloudflare
# rollover, errors and hostile API, certbot's key continuity, the egress rules).
# Builds and starts what it needs on a fresh machine (venvs; Debian's
# docker.io, debootstrap, nsd, knot, certbot and pebble; dockerd; the
# mailcow-like test image, a systemd host image).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

scripts/venv.sh 3008
scripts/venv.sh 3006
v3008=.venv/salt3008/bin
v3006=.venv/salt3006/bin

echo "== system packages, the Docker engine and the mailcow-like image"
scripts/test-deps.sh
harness/docker/build-image.sh
harness/docker/build-image.sh systemd-host

echo "== lint"
"$v3008/ruff" check .
"$v3008/ruff" format --check .
mapfile -t sls < <(find salt pillar -name '*.sls' 2>/dev/null | sort)
if [ "${#sls[@]}" -gt 0 ]; then
    "$v3008/salt-lint" "${sls[@]}"
fi

echo "== the documentation site (sphinx-build -W)"
scripts/docs.sh

echo "== Salt 3006 LTS: every test but the one_release ones (see pyproject.toml)"
"$v3006/python" -m pytest -p no:cacheprovider --durations=25 -m "not one_release" tests "$@"

echo "== Salt 3008: every test"
"$v3008/python" -m pytest -p no:cacheprovider --durations=25 tests "$@"
