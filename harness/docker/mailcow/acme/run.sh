#!/bin/sh
# acme-mailcow stand-in. SKIP_LETS_ENCRYPT reaches it only as an environment
# variable when the container is created. Without y it does what bites
# another deployer: every few seconds it copies ssl/<MAILCOW_HOSTNAME>/ over
# the top-level pair (mounted read-write at /var/lib/acme).
case "${SKIP_LETS_ENCRYPT}" in
  y|Y|yes|YES|Yes) echo "SKIP_LETS_ENCRYPT=y, skipping Let's Encrypt..."; exec sleep 31536000 ;;
esac
trap 'exit 0' TERM
base=/var/lib/acme
while true; do
  if [ -f "$base/$MAILCOW_HOSTNAME/cert.pem" ] && [ -f "$base/$MAILCOW_HOSTNAME/key.pem" ]; then
    cp "$base/$MAILCOW_HOSTNAME/cert.pem" "$base/cert.pem"
    cp "$base/$MAILCOW_HOSTNAME/key.pem" "$base/key.pem"
  fi
  sleep 2
done
