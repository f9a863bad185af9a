#!/bin/sh
# Run dovecot in the foreground; `doveadm reload` re-reads the pair.
set -e
cp /conf/dovecot.conf /etc/dovecot/dovecot.conf
exec dovecot -F
