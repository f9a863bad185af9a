{#- Apply the certsync role of this minion, as the pillar names it. #}
{%- from "certsync/map.jinja" import role with context %}
{%- if role %}
include:
  - certsync.{{ role }}
{%- else %}
certsync-no-role:
  test.show_notification:
    - text: This minion is neither the certsync source nor a consumer in pillar.
{%- endif %}
