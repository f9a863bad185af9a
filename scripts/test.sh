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

# pytest, where "no test selected" (exit 5: the arguments picked none of a
# phase's tests) is no failure.
run_pytest() {
    local python=$1
    shift
    "$python" -m pytest -p no:cacheprovider --durations=25 "$@" || {
        local rc=$?
        [ "$rc" -eq 5 ] || return "$rc"
    }
}

# The tests on both releases run two at a time (pytest-xdist, one worker per core:
# each has its own temp dirs and free ports); the one_release ones, which share
# dockerd, the look-alike's containers and the systemd hosts, one at a time.
echo "== Salt 3006 LTS: every test but the one_release ones (see pyproject.toml)"
run_pytest "$v3006/python" -n 2 -m "not one_release" tests "$@"

echo "== Salt 3008: the same tests"
run_pytest "$v3008/python" -n 2 -m "not one_release" tests "$@"

echo "== Salt 3008: the one_release tests"
run_pytest "$v3008/python" -m one_release tests "$@"
