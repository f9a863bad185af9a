{#- The mailcow minion: a recipient key for the sealed private key,
    SKIP_LETS_ENCRYPT=y and acme-mailcow recreated to honour it, and the
    certificate from the source's mine entry
    deployed, reloaded and verified on the wire; a schedule re-converges when
    an event was lost. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}
{%- set announced = salt["pillar.get"]("certsync_event", {}) %}
{%- if certsync.dns.domain or consumer.relay.host %}
include:
{%-   if certsync.dns.domain %}
  - certsync.dns
{%-   endif %}
{%-   if consumer.relay.host %}
  - certsync.egress
{%-   endif %}
{%- endif %}

certsync-recipient-key:
  certsync.recipient_published:
    - name: certsync-recipient
    - sources:
      - {{ certsync.source.minion | json }}

certsync-mailcow-conf:
  mailcow.conf_set:
    - name: {{ consumer.mailcow_dir | json }}
    - settings: {{ consumer.mailcow_conf | json }}
{%- if consumer.services %}

certsync-acme-stood-down:
  mailcow.acme_stood_down:
    - name: {{ consumer.mailcow_dir | json }}
    - require:
      - mailcow: certsync-mailcow-conf
{%- endif %}

certsync-deployed:
  certsync.deployed:
    - name: {{ (consumer.mailcow_dir ~ "/data/assets/ssl") | json }}
    - hostname: {{ certsync.hostname | json }}
    - source_minion: {{ certsync.source.minion | json }}
{%- if announced.get("source") == certsync.source.minion and announced.get("fingerprint") %}
    - fingerprint: {{ announced.fingerprint | json }}
{%- endif %}
    - min_days: {{ consumer.min_days }}
    - sni: {{ consumer.sni | json }}
    - mailcow_dir: {{ consumer.mailcow_dir | json }}
    - services: {{ consumer.services | json }}
{%- if consumer.reload_commands %}
    - reload_commands: {{ consumer.reload_commands | json }}
{%- endif %}
    - endpoints: {{ consumer.endpoints | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - verify_timeout: {{ consumer.verify_timeout }}
    - dane: {{ consumer.dane | json }}
{%- if consumer.mail_domains %}
    - mail_domains: {{ consumer.mail_domains | json }}
{%- endif %}
    - require:
      - certsync: certsync-recipient-key
{%- if consumer.services %}
      - mailcow: certsync-acme-stood-down
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

certsync-schedule:
  schedule.present:
    - name: certsync
    - function: state.apply
    - job_args:
      - certsync
    - minutes: {{ certsync.schedule.minutes }}
    - splay: {{ certsync.schedule.splay }}
    - run_on_start: true
