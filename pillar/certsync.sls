# The system certsync replaces: Nginx Proxy Manager on the minion `npm`
# issues mail.wittenberger.us (its cert dir is live/npm-5); mailcow-dockerized
# on the minion `mailcow` serves it on every mail protocol and its web UI.
# The master's reactor routes by this pillar alone (salt-run certsync.routes).
# Every key is documented in pillar.example.
certsync:
  hostname: mail.wittenberger.us
  source:
    minion: npm
    live_dir: /etc/nginx/letsencrypt/live
    dir: npm-5
  consumers:
    mailcow:
      mailcow_dir: /opt/mailcow-dockerized
      services:
        - postfix-mailcow
        - dovecot-mailcow
        - nginx-mailcow
      probe_address: 127.0.0.1
      min_days: 14
      # Outbound mail leaves through SMTP2GO (mailcow's relayhost): watched
      # by the relay_failing alert, certsync.status and the egress check.
      relay:
        host: mail.smtp2go.com
        port: 2525
