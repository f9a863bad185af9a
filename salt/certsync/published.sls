{#- The source's publication alone: for each route whose source this
    minion is (certsync_settings.routes; `default` is certsync:hostname's),
    the certificate sealed for every consumer in the mine,
    certsync/published when it changed, and, when
    certsync:source:reuse_key says so (auto: a consumer of the route has
    DANE on), the source told again to keep the key (for NPM: a re-issue
    from its UI rewrites the lineage's renewal file without reuse_key).
    What a renewal triggers (the reactor applies certsync.published);
    certsync.source includes it. The state ids of a route other than the
    default end in `-<route>`. #}
{%- from "certsync/map.jinja" import routes with context %}

include:
  - certsync.settings
{%- if routes.source %}
{%-   for route, source in salt["certsync_settings.routes"]().source | dictsort %}
{%-     set suffix = "" if route == "default" else "-" ~ route %}

certsync-published{{ suffix }}:
  certsync.published:
    - name: {{ source.hostname | json }}
    - consumers: {{ source.consumers | json }}
    - kind: {{ source.kind | json }}
{%-     if suffix %}
    - route: {{ route | json }}
{%-     endif %}
{%-     for key, value in source.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%-     endfor %}
{%-     if source.keep_key %}

certsync-key-kept{{ suffix }}:
  certsync.key_kept:
    - name: {{ source.hostname | json }}
    - kind: {{ source.kind | json }}
{%-       for key, value in source.settings | dictsort %}
    - {{ key }}: {{ value | json }}
{%-       endfor %}
{%-     endif %}
{%-   endfor %}
{%- else %}

certsync-published:
  test.fail_without_changes:
    - name: This minion is not the certsync source in pillar (certsync:source:minion).
{%- endif %}
