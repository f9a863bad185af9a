#!/bin/sh
# dovecot-mailcow stand-in. As mailcow's entrypoint does at container start:
# one `local_name` block per name in each /etc/ssl/mail/<dir>/domains;
# `doveadm reload` re-reads the files those blocks name.
set -e
cp /conf/dovecot.conf /etc/dovecot/dovecot.conf
install -d -m 1777 /tmp/mail  # the homes of logged-in users (dovecot.conf)
sni=/etc/dovecot/sni.conf
: > "$sni"
for dir in /etc/ssl/mail/*/; do
  [ -f "${dir}domains" ] && [ -f "${dir}cert.pem" ] && [ -f "${dir}key.pem" ] || continue
  for name in $(cat "${dir}domains"); do
    printf 'local_name %s {\n  ssl_cert = <%scert.pem\n  ssl_key = <%skey.pem\n}\n' \
      "$name" "$dir" "$dir" >> "$sni"
  done
done
exec dovecot -F
