#!/usr/bin/env bash
# What the tests need from the system: Debian's docker.io (a Docker engine),
# debootstrap (to build the mailcow-like image), nsd (an authoritative DNS
# server), knot (an authoritative server taking RFC 2136 updates), certbot and
# pebble (NPM's ACME client against Let's Encrypt's test server), docker-compose
# (mailcow's documented way to recreate acme-mailcow), promtool (Debian's
# prometheus), nftables and iproute2 (the egress tests' firewall and network
# namespaces), unbound and ldnsutils (a validating resolver, a zone signer),
# faketime (the fault campaign's clock skew), caddy (the second certificate
# source, against pebble), ufw (the egress tests' other firewall, only ever
# enabled inside a test's network and mount namespaces), haproxy (a consumer taking
# certificates through its runtime API), installed when missing;
# dockerd started (as root) when no
# engine answers. Idempotent.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log="$repo/.cache/dockerd.log"

engine_answers() {
    "$repo/.venv/salt3008/bin/python" -c 'import docker; docker.from_env(timeout=5).ping()' \
        >/dev/null 2>&1
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -x /usr/sbin/nsd ] || missing+=(nsd)
[ -x /usr/sbin/knotd ] || missing+=(knot)
command -v certbot >/dev/null 2>&1 || missing+=(certbot)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ -x /usr/sbin/unbound ] || missing+=(unbound)
command -v ldns-signzone >/dev/null 2>&1 || missing+=(ldnsutils)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
[ -x /usr/sbin/ufw ] || missing+=(ufw)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "certsync: ${missing[*]} missing; run as root or install them" >&2
        exit 1
    fi
    echo "certsync: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool (rule checks and unit tests) from Debian's prometheus, without the
# exporters it recommends.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "certsync: promtool missing; run as root or install Debian's prometheus" >&2
        exit 1
    fi
    echo "certsync: installing prometheus (for promtool)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >/dev/null
fi

if engine_answers; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "certsync: no Docker engine answers and only root can start dockerd" >&2
    exit 1
fi
mkdir -p "$(dirname "$log")"
echo "certsync: starting dockerd (log: $log)" >&2
# --live-restore: containers keep running while dockerd restarts (the fault campaign
# restarts it during a deploy's reload)
nohup dockerd --live-restore >"$log" 2>&1 &
for _ in $(seq 1 120); do
    if engine_answers; then
        exit 0
    fi
    sleep 0.5
done
echo "certsync: dockerd did not answer within 60 s; its log:" >&2
tail -20 "$log" >&2
exit 1
