#!/usr/bin/env bash
# Build (or reuse) a test image: a Debian bookworm root filesystem made by
# debootstrap, imported with `docker import`. No registry is needed.
#
#   build-image.sh [mailcow-like]   real postfix (and the SASL client mechanisms
#                                   a relayhost login needs), dovecot and nginx
#   build-image.sh systemd-host     systemd (run as PID 1) and python3: a host
#                                   on which Salt's service states drive systemd,
#                                   with Debian's postfix, dovecot, nginx and
#                                   haproxy as units (a plain service host)
#
# The image tag and the cached root filesystem tarball are keyed on a hash of
# this script, so changing a recipe rebuilds it; configuration is bind-
# mounted at run time (harness/docker/mailcow/) and is not part of the image.
#
# Prints the image tag on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CERTSYNC_CACHE:-$repo/.cache}/images
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
recipe=${1:-mailcow-like}
case "$recipe" in
    mailcow-like)
        packages=postfix,libsasl2-modules,dovecot-imapd,dovecot-pop3d,dovecot-managesieved,nginx-light,ca-certificates,procps
        command='["/bin/bash"]' ;;
    systemd-host)
        packages=systemd,systemd-sysv,dbus,python3,passwd,postfix,dovecot-imapd,dovecot-pop3d,nginx-light,haproxy
        command='["/lib/systemd/systemd"]' ;;
    *) echo "build-image.sh: unknown recipe $recipe (mailcow-like, systemd-host)" >&2; exit 2 ;;
esac

key=$(sha256sum "$0" | cut -c1-12)
tag="certsync/$recipe:$key"
tarball="$cache/$recipe-$key.tar"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    echo "certsync: debootstrap $suite with $packages (a few minutes, cached after)" >&2
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase \
        --include="$packages" "$suite" "$rootfs" "$mirror" > "$cache/debootstrap-$recipe.log" 2>&1 \
        || { tail -30 "$cache/debootstrap-$recipe.log" >&2; exit 1; }
    # Services run in the foreground under the container's own command;
    # nothing may start at image build time.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
docker import --change "CMD $command" "$tarball" "$tag" >/dev/null
echo "$tag"
