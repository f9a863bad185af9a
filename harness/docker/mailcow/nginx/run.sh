#!/bin/sh
# nginx-mailcow stand-in. As mailcow's bootstrap does at container start: the
# default server (also autodiscover.*, autoconfig.*, mta-sts.*) uses the
# top-level pair; one server block per /etc/ssl/mail/<dir>/ with a domains
# file, named by it, except the dir whose domains holds MAILCOW_HOSTNAME.
# nginx listens on HTTPS_PORT inside the container, as mailcow's does.
# TLS_SECLEVEL sets OpenSSL's security level (Debian's default: 2).
# /web is mailcow's data/web: an MTA-STS policy placed at
# .well-known/mta-sts.txt there is served as text/plain.
set -e
conf=/etc/nginx/nginx.conf
port=${HTTPS_PORT:-443}
{
  echo "worker_processes 1; error_log stderr; pid /run/nginx.pid;"
  echo "events { worker_connections 64; }"
  echo "http { access_log off;"
  echo "  ssl_ciphers DEFAULT:@SECLEVEL=${TLS_SECLEVEL:-2};"
  echo "  server { listen $port ssl default_server; server_name _;"
  echo "    ssl_certificate /etc/ssl/mail/cert.pem; ssl_certificate_key /etc/ssl/mail/key.pem;"
  echo "    location = /.well-known/mta-sts.txt { root /web; default_type text/plain; }"
  echo "    location / { return 200 'mailcow-like'; } }"
  for dir in /etc/ssl/mail/*/; do
    [ -f "${dir}domains" ] && [ -f "${dir}cert.pem" ] && [ -f "${dir}key.pem" ] || continue
    names=$(cat "${dir}domains")
    case " $names " in *" ${MAILCOW_HOSTNAME} "*) continue ;; esac
    echo "  server { listen $port ssl; server_name $names;"
    echo "    ssl_certificate ${dir}cert.pem; ssl_certificate_key ${dir}key.pem;"
    echo "    return 200 'mailcow-like $names'; }"
  done
  echo "}"
} > "$conf"
exec nginx -g 'daemon off;'
