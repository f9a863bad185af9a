{#- The consumer's dovecot keeps its users' sessions through the deploy's
    reload: dovecot's default (shutdown_clients = yes) ends every IMAP, POP3
    and ManageSieve session, logged in or not, 6 s after a reload. Included
    by certsync.consumer when dovecot-mailcow is among its services.
    certsync:consumers:<id>:dovecot_keep_sessions true (the default) writes
    "shutdown_clients = no" in a block of its own in mailcow's
    data/conf/dovecot/extra.conf (mailcow's dovecot.conf includes it last,
    for overrides; the operator's lines stay), false takes the block out; a
    change reloads dovecot once (that reload still ends the sessions open). #}
{%- from "certsync/map.jinja" import consumer, dovecot_block, dovecot_block_removed with context %}

include:
  - certsync.settings
{%- if not consumer %}

certsync-dovecot-keeps-sessions:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- else %}
{%- if consumer.dovecot_keep_sessions is sameas true %}

certsync-dovecot-extra-conf:
  file.managed:
    - name: {{ dovecot_block.path | json }}
    - replace: false

certsync-dovecot-keeps-sessions:
  file.blockreplace:
    - name: {{ dovecot_block.path | json }}
    - marker_start: {{ dovecot_block.start | json }}
    - marker_end: {{ dovecot_block.end | json }}
    - content: {{ dovecot_block.content | json }}
    - append_if_not_found: true
    - require:
      - file: certsync-dovecot-extra-conf
{%- elif consumer.dovecot_keep_sessions is sameas false %}
{{ dovecot_block_removed("certsync-dovecot-keeps-sessions") }}
{%- else %}

certsync-dovecot-keeps-sessions:
  test.fail_without_changes:
{%-   set given = consumer.dovecot_keep_sessions | string | truncate(40) %}
    - name: {{ ("certsync:consumers:" ~ grains.id ~ ":dovecot_keep_sessions must be true or false, not '" ~ given ~ "'") | json }}
{%- endif %}

# the setting applies from this reload on: the sessions open now end once more
certsync-dovecot-reloaded:
  mailcow.reloaded:
    - name: {{ consumer.mailcow_dir | json }}
    - services: [dovecot-mailcow]
    - watch:
      - certsync-dovecot-keeps-sessions
{%- endif %}
