{#- After `certsync.rollback`: let the deploys of every route run again, and
    deploy now. #}
{%- from "certsync/map.jinja" import consumer, routes with context %}

include:
  - certsync.settings
  - certsync.deployed
{%- if consumer %}
{%-   for route in routes.consumer %}
{%-     set suffix = "" if route == "default" else "-" ~ route %}

certsync-resumed{{ suffix }}:
  certsync.resumed:
    - name: {{ salt["certsync_settings.dest"](route=route) | json }}
    - require_in:
      - certsync: certsync-deployed{{ suffix }}
{%-   endfor %}
{%- endif %}
