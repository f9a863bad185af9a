{#- The source's publication alone: the certificate sealed for every
    consumer in the mine, certsync/published when it changed, and, when
    certsync:source:reuse_key says so (auto: a consumer has DANE on), certbot
    told again to keep the key (a re-issue from NPM's UI rewrites the
    lineage's renewal file without reuse_key). What a renewal triggers (the reactor
    applies certsync.published); certsync.source includes it. #}
{%- from "certsync/map.jinja" import certsync, role with context %}
{%- set src = certsync.source %}
{%- if role == "source" %}

certsync-published:
  certsync.published:
    - name: {{ certsync.hostname | json }}
    - consumers: {{ certsync.consumers.keys() | list | json }}
{%- if src.dir %}
    - source: {{ (src.live_dir ~ "/" ~ src.dir) | json }}
{%- else %}
    - live_dir: {{ src.live_dir | json }}
{%- endif %}
{%- if salt["certsync_settings.reuse_key_wanted"]()["wanted"] %}

certsync-key-reused:
  certsync.key_reused:
{%-   if src.dir %}
    - name: {{ (src.live_dir ~ "/" ~ src.dir) | json }}
{%-   else %}
    - name: {{ src.live_dir | json }}
    - hostname: {{ certsync.hostname | json }}
{%-   endif %}
{%- endif %}
{%- else %}

certsync-published:
  test.fail_without_changes:
    - name: This minion is not the certsync source in pillar (certsync:source:minion).
{%- endif %}
