#!/bin/sh
# The test smarthost: dovecot's auth service for SASL, then postfix in the
# foreground on port 2525 (STARTTLS and AUTH required, mail discarded).
set -e
cp /conf/main.cf /conf/master.cf /etc/postfix/
mkdir -p /var/spool/postfix/private
dovecot -c /conf/dovecot.conf
newaliases 2>/dev/null || true
exec postfix start-fg
