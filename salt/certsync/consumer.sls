{#- The mailcow minion: a recipient key for the sealed private key,
    SKIP_LETS_ENCRYPT=y and acme-mailcow recreated to honour it, dovecot
    told to keep its users' sessions through a reload (certsync.dovecot), the
    certificate from the source's mine entry deployed (certsync.deployed),
    alerts, and a schedule that re-converges when an event was lost. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}

include:
  - certsync.settings
  - certsync.rsync_retired
  - certsync.schedule
  - certsync.deployed
{%- if certsync.dns.domain %}
  - certsync.dns
{%- endif %}
{%- if consumer.relay.host %}
  - certsync.egress
{%- endif %}
{%- set mailcow = consumer.kind == "mailcow" %}
{%- if mailcow and "dovecot-mailcow" in consumer.services %}
  - certsync.dovecot
{%- endif %}

extend:
  certsync-deployed:
    certsync.deployed:
      - require:
        - certsync: certsync-recipient-key
{%- if mailcow and consumer.services %}
        - mailcow: certsync-acme-stood-down
{%- elif not mailcow %}
        - file: certsync-pair-dir
{%- endif %}

certsync-recipient-key:
  certsync.recipient_published:
    - name: certsync-recipient
    - sources:
      - {{ certsync.source.minion | json }}
{%- if mailcow %}

certsync-mailcow-conf:
  mailcow.conf_set:
    - name: {{ consumer.mailcow_dir | json }}
    - settings: {{ consumer.mailcow_conf | json }}
{%- else %}

# Where certsync keeps the pair the service's files are written from.
certsync-pair-dir:
  file.directory:
    - name: {{ salt["certsync_settings.dest"]() | json }}
    - mode: '0755'
    - makedirs: true
{%- endif %}
{%- if mailcow and consumer.services %}

certsync-acme-stood-down:
  mailcow.acme_stood_down:
    - name: {{ consumer.mailcow_dir | json }}
    - require:
      - mailcow: certsync-mailcow-conf
{%- endif %}

certsync-alerts:
  beacon.present:
    - name: certsync
    - save: true
    - interval: {{ consumer.alerts.interval }}
    - alert_days: {{ consumer.alerts.days }}
    - grace: {{ consumer.alerts.grace }}
{%- if consumer.alerts.textfile %}
    - textfile: {{ consumer.alerts.textfile | json }}
{%- endif %}
{%- if consumer.alerts.event_log %}

# The event log's directory (alerts and deploy results as JSON lines, for a SIEM).
certsync-event-log-dir:
  file.directory:
    - name: {{ salt['file.dirname'](consumer.alerts.event_log) | json }}
    - mode: '0750'
    - makedirs: true
{%- endif %}
