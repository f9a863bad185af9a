{#- The NPM minion: publish the certificate for the consumers and make
    certbot keep the key across renewals (certsync.published), watch for
    renewals with the beacon, re-publish on a schedule as a safety net. #}
{%- from "certsync/map.jinja" import certsync with context %}
{%- set src = certsync.source %}
{#- The source's kind and its settings of that kind (certsync_source). #}
{%- set where = salt["certsync_settings.source"]() %}

include:
  - certsync.rsync_retired
  - certsync.schedule
  - certsync.published

certsync-beacon:
  beacon.present:
    - name: certsync
    - save: true
    - interval: {{ src.beacon_interval }}
    - hostname: {{ certsync.hostname | json }}
    - kind: {{ where.kind | json }}
{%- for key, value in where.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%- endfor %}
