{#- Apply the certsync role of this minion, as the pillar names it, after
    checking the pillar: keys the formula does not know, a missing hostname, a
    pillar that names other minions but not this one, a credential of another
    minion fail certsync-settings (certsync_settings.check, certsync.settings),
    and the run stops there: nothing that changes anything is applied. #}
{%- from "certsync/map.jinja" import roles with context %}

include:
  - certsync.settings
{%- for role in roles %}
  - certsync.{{ role }}
{%- endfor %}
