{#- After `certsync.rollback`: let the deploys run again, and deploy now. #}
{%- from "certsync/map.jinja" import consumer with context %}

include:
  - certsync.settings
  - certsync.deployed
{%- if consumer %}

certsync-resumed:
  certsync.resumed:
    - name: {{ salt["certsync_settings.dest"]() | json }}
    - require_in:
      - certsync: certsync-deployed
{%- endif %}
