{#- The safety net on both roles: `state.apply certsync` again every
    certsync:schedule interval, with splay, and at minion start, so a renewal
    is picked up when an event was lost. The interval is the units the pillar
    sets (seconds, minutes, hours, days: Salt adds them up), or the defaults'
    30 minutes when it sets none. Whole numbers only, and not zero: a zero
    interval would run the formula back to back. #}
{%- from "certsync/map.jinja" import certsync with context %}

include:
  - certsync.settings
{%- set units = ["seconds", "minutes", "hours", "days"] %}
{%- set given = salt["pillar.get"]("certsync:schedule", {}) %}
{%- set given = given if given is mapping else {} %}
{%- set chosen = given if given | select("in", units) | list else certsync.schedule %}
{%- set every = {} %}
{%- set bad = [] %}
{%- for unit in units if unit in chosen %}
{%-   if chosen[unit] is integer and chosen[unit] >= 0 %}
{%-     if chosen[unit] %}{% do every.update({unit: chosen[unit]}) %}{% endif %}
{%-   else %}
{%-     do bad.append(unit ~ " " ~ chosen[unit] | string) %}
{%-   endif %}
{%- endfor %}
{%- set splay = certsync.schedule.get("splay", 0) %}
{%- if splay is not integer or splay < 0 %}
{%-   do bad.append("splay " ~ splay | string) %}
{%- endif %}
{%- if every and not bad %}

certsync-schedule:
  schedule.present:
    - name: certsync
    - function: state.apply
    - job_args:
      - certsync
{%-   for unit, value in every | dictsort %}
    - {{ unit }}: {{ value }}
{%-   endfor %}
    - splay: {{ splay }}
    - run_on_start: true
{%- else %}

certsync-schedule:
  test.fail_without_changes:
    - name: >-
        certsync:schedule in pillar must give a whole, non-zero interval (seconds,
        minutes, hours, days) and a whole splay{{ (", not " ~ bad | join(", ")) if bad else "" }}
{%- endif %}
