{#- The way back on a consumer: `salt <id> state.apply certsync.rollback`
    undoes the last deploy (the previous pair back where certsync keeps it and
    in every per-name dir the same deploy changed), reloads, checks on the wire,
    and pauses the deploys (schedule and reactor) until
    `state.apply certsync.resume`. test=True shows the plan. On a DANE host
    the previous pair must match a published TLSA record, as a deploy's must;
    `pillar='{certsync_force: true}'` rolls back all the same. A consumer of
    several routes rolls back one: `pillar='{certsync_route: <route>}'`
    (default: the default route, or its first). #}
{%- from "certsync/map.jinja" import consumer with context %}
{%- set route = salt["pillar.get"]("certsync_route", none) %}

include:
  - certsync.settings
{%- if consumer %}

certsync-rolled-back:
  certsync.rolled_back:
{%- for key, value in salt["certsync_settings.rollback_args"](route=route) | dictsort %}
    - {{ key }}: {{ value | json }}
{%- endfor %}
    - force: {{ salt["pillar.get"]("certsync_force", false) is sameas true }}
{%- else %}

certsync-rolled-back:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- endif %}
