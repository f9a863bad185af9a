{#- The consumer's deploy alone: the certificate from the source's mine
    entry validated, installed, reloaded and verified on the wire.
    certsync.consumer includes it and orders it after the recipient key and
    acme-mailcow. On a renewal the runner sends the consumers the deploy this
    state runs (certsync_deploy.deploy) with the same arguments, without a
    state run (certsync_deploy.deployed; the runner's _deploy_args mirrors
    this file). #}
{%- from "certsync/map.jinja" import certsync, consumer, dane_args with context %}
{%- if consumer %}

certsync-deployed:
  certsync.deployed:
    - name: {{ (consumer.mailcow_dir ~ "/data/assets/ssl") | json }}
    - hostname: {{ certsync.hostname | json }}
    - source_minion: {{ certsync.source.minion | json }}
    - min_days: {{ consumer.min_days | json }}
    - sni: {{ consumer.sni | json }}
    - mailcow_dir: {{ consumer.mailcow_dir | json }}
    - services: {{ consumer.services | json }}
{%- if consumer.reload_commands %}
    - reload_commands: {{ consumer.reload_commands | json }}
{%- endif %}
    - endpoints: {{ consumer.endpoints | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - verify_timeout: {{ consumer.verify_timeout | json }}
    - dane: {{ dane_args | json }}
{%- if consumer.mail_domains %}
    - mail_domains: {{ consumer.mail_domains | json }}
{%- endif %}
{%- if consumer.allow_older %}
    - allow_older: {{ consumer.allow_older | json }}
{%- endif %}
{%- if consumer.paused %}
    - paused: {{ consumer.paused | json }}
{%- endif %}
{%- else %}

certsync-deployed:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- endif %}
