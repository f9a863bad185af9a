{#- The source's publication alone: the certificate sealed for every
    consumer in the mine, certsync/published when it changed, and, when
    certsync:source:reuse_key says so (auto: a consumer has DANE on), the
    source told again to keep the key (for NPM: a re-issue from its UI
    rewrites the lineage's renewal file without reuse_key). What a renewal triggers (the reactor
    applies certsync.published); certsync.source includes it. #}
{%- from "certsync/map.jinja" import certsync, role with context %}

include:
  - certsync.settings
{#- The source's kind and its settings of that kind (certsync_source). #}
{%- set where = salt["certsync_settings.source"]() %}
{%- if role == "source" %}

certsync-published:
  certsync.published:
    - name: {{ certsync.hostname | json }}
    - consumers: {{ certsync.consumers.keys() | list | json }}
    - kind: {{ where.kind | json }}
{%- for key, value in where.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%- endfor %}
{%- if salt["certsync_settings.reuse_key_wanted"]()["wanted"] %}

certsync-key-kept:
  certsync.key_kept:
    - name: {{ certsync.hostname | json }}
    - kind: {{ where.kind | json }}
{%-   for key, value in where.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%-   endfor %}
{%- endif %}
{%- else %}

certsync-published:
  test.fail_without_changes:
    - name: This minion is not the certsync source in pillar (certsync:source:minion).
{%- endif %}
