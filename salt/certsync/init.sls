{#- Apply the certsync role of this minion, as the pillar names it, after
    checking the pillar: keys the formula does not know, a missing hostname, a
    pillar that names other minions but not this one fail certsync-settings
    (certsync_settings.check), and the role's states that change anything
    wait for it. #}
{%- from "certsync/map.jinja" import role with context %}
{%- if role %}

include:
  - certsync.{{ role }}
{%- endif %}

certsync-settings:
  certsync.settings_valid:
    - order: 1
{%- if role == "consumer" %}
    - require_in:
      - certsync: certsync-recipient-key
      - mailcow: certsync-mailcow-conf
      - beacon: certsync-alerts
{%- elif role == "source" %}
    - require_in:
      - certsync: certsync-published
      - beacon: certsync-beacon
{%- endif %}
