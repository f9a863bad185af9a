{#- The consumer's deploy alone: the certificate from the source's mine
    entry validated, installed, reloaded and verified on the wire. What a
    renewal triggers (the reactor applies certsync.deployed); certsync.consumer
    includes it and orders it after the recipient key and acme-mailcow. #}
{%- from "certsync/map.jinja" import certsync, consumer with context %}
{%- set announced = salt["pillar.get"]("certsync_event", {}) %}
{%- if consumer %}

certsync-deployed:
  certsync.deployed:
    - name: {{ (consumer.mailcow_dir ~ "/data/assets/ssl") | json }}
    - hostname: {{ certsync.hostname | json }}
    - source_minion: {{ certsync.source.minion | json }}
{%- if announced.get("source") == certsync.source.minion and announced.get("fingerprint") %}
    - fingerprint: {{ announced.fingerprint | json }}
{%- endif %}
    - min_days: {{ consumer.min_days }}
    - sni: {{ consumer.sni | json }}
    - mailcow_dir: {{ consumer.mailcow_dir | json }}
    - services: {{ consumer.services | json }}
{%- if consumer.reload_commands %}
    - reload_commands: {{ consumer.reload_commands | json }}
{%- endif %}
    - endpoints: {{ consumer.endpoints | json }}
    - probe_address: {{ consumer.probe_address | json }}
    - verify_timeout: {{ consumer.verify_timeout }}
    - dane: {{ consumer.dane | json }}
{%- if consumer.mail_domains %}
    - mail_domains: {{ consumer.mail_domains | json }}
{%- endif %}
{%- else %}

certsync-deployed:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- endif %}
