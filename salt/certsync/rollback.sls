{#- The way back on a consumer: `salt <id> state.apply certsync.rollback`
    undoes the last deploy (the previous pair back in data/assets/ssl and in
    every per-name dir the same deploy changed), reloads, checks on the wire,
    and pauses the deploys (schedule and reactor) until
    `state.apply certsync.resume`. test=True shows the plan. On a DANE host
    the previous pair must match a published TLSA record, as a deploy's must;
    `pillar='{certsync_force: true}'` rolls back all the same. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}

include:
  - certsync.settings
{%- if consumer %}

certsync-rolled-back:
  certsync.rolled_back:
    - name: {{ salt["certsync_settings.dest"](consumer.mailcow_dir) | json }}
    - hostname: {{ certsync.hostname | json }}
    - mailcow_dir: {{ consumer.mailcow_dir | json }}
    - services: {{ consumer.services | json }}
{%- if consumer.reload_commands %}
    - reload_commands: {{ consumer.reload_commands | json }}
{%- endif %}
    - endpoints: {{ consumer.endpoints | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - verify_timeout: {{ consumer.verify_timeout | json }}
    - dane: {{ salt["certsync_settings.deploy_args"]().dane | json }}
    - force: {{ salt["pillar.get"]("certsync_force", false) is sameas true }}
{%- else %}

certsync-rolled-back:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- endif %}
