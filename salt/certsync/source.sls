{#- The NPM minion: publish the certificate for the consumers and make
    certbot keep the key across renewals (certsync.published), watch for
    renewals with the beacon, re-publish on a schedule as a safety net. #}
{%- from "certsync/map.jinja" import certsync with context %}
{%- set src = certsync.source %}

include:
  - certsync.published

certsync-beacon:
  beacon.present:
    - name: certsync
    - save: true
    - interval: {{ src.beacon_interval }}
    - hostname: {{ certsync.hostname | json }}
{%- if src.dir %}
    - source: {{ (src.live_dir ~ "/" ~ src.dir) | json }}
{%- else %}
    - live_dir: {{ src.live_dir | json }}
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
