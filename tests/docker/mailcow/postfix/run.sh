#!/bin/sh
# Run postfix in the foreground; `postfix reload` re-reads the pair.
set -e
cp /conf/main.cf /conf/master.cf /etc/postfix/
newaliases 2>/dev/null || true
exec postfix start-fg
