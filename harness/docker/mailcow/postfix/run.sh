#!/bin/sh
# postfix-mailcow stand-in. As mailcow's postfix.sh does at container start:
# one sni.map line per name in each /etc/ssl/mail/<dir>/domains (that dir's
# key and cert), then `postmap -F`, which copies the files' contents into
# sni.map.db. `postfix reload` re-reads the top-level pair, not the map.
set -e
cp /conf/main.cf /conf/master.cf /etc/postfix/
mkdir -p /opt/postfix/conf
map=/opt/postfix/conf/sni.map
: > "$map"
for dir in /etc/ssl/mail/*/; do
  [ -f "${dir}domains" ] && [ -f "${dir}cert.pem" ] && [ -f "${dir}key.pem" ] || continue
  for name in $(cat "${dir}domains"); do
    echo "${name} ${dir}key.pem ${dir}cert.pem" >> "$map"
  done
done
postmap -F "hash:$map"
# A relayhost (mailcow's admin UI or API sets one): /relay holds its
# [host]:port and password map, written by the test.
if [ -f /relay/relayhost ]; then
  grep -v '^#' /conf/relay.cf | while read -r line; do postconf -e "$line"; done
  postconf -e "relayhost = $(cat /relay/relayhost)"
fi
newaliases 2>/dev/null || true
exec postfix start-fg
