#!/bin/sh
# Run nginx in the foreground on 443. Like mailcow with ENABLE_SSL_SNI=y, a
# server block is generated at start for each /etc/ssl/mail/<name>/ holding
# a pair. TLS_SECLEVEL sets OpenSSL's security level (Debian's default: 2).
set -e
conf=/etc/nginx/nginx.conf
{
  echo "worker_processes 1; error_log stderr; pid /run/nginx.pid;"
  echo "events { worker_connections 64; }"
  echo "http { access_log off;"
  echo "  ssl_ciphers DEFAULT:@SECLEVEL=${TLS_SECLEVEL:-2};"
  echo "  server { listen 443 ssl default_server; server_name _;"
  echo "    ssl_certificate /etc/ssl/mail/cert.pem; ssl_certificate_key /etc/ssl/mail/key.pem;"
  echo "    return 200 'mailcow-like'; }"
  for dir in /etc/ssl/mail/*/; do
    [ -f "$dir/cert.pem" ] || continue
    name=$(basename "$dir")
    echo "  server { listen 443 ssl; server_name $name;"
    echo "    ssl_certificate $dir/cert.pem; ssl_certificate_key $dir/key.pem;"
    echo "    return 200 'mailcow-like $name'; }"
  done
  echo "}"
} > "$conf"
exec nginx -g 'daemon off;'
