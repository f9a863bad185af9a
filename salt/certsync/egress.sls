{#- The way out of a mailcow host whose firewall denies outbound by default:
    allow rules for the relay's port and the Salt master's ports (Salt's own
    nftables states, in the chain the pillar names; only with
    relay.firewall.manage), then a check that both are reachable. #}
{%- from "certsync/map.jinja" import consumer with context %}
{%- set relay = consumer.relay %}
{%- set firewall = relay.firewall %}
{%- set master_ports = [salt["config.get"]("publish_port", 4505), salt["config.get"]("master_port", 4506)] %}
{%- set allowed = [] %}
{%- if firewall.manage %}
{%-   for port in [relay.port] + master_ports %}
{%-     do allowed.append("certsync-egress-allow-" ~ port) %}

certsync-egress-allow-{{ port }}:
  nftables.append:
    - table: {{ firewall.table | json }}
    - chain: {{ firewall.chain | json }}
    - family: {{ firewall.family | json }}
    - proto: tcp
    - dport: {{ port }}
    - jump: accept
    - save: {{ firewall.save | json }}
{%-   endfor %}
{%- endif %}

certsync-egress:
  certsync_egress.reachable:
    - relay: {{ (relay.host ~ ":" ~ relay.port) | json }}
{%- if relay.address %}
    - relay_address: {{ relay.address | json }}
{%- endif %}
{%- if relay.cafile %}
    - cafile: {{ relay.cafile | json }}
{%- endif %}
{%- if relay.master_address %}
    - master: {{ relay.master_address | json }}
{%- endif %}
{%- if allowed %}
    - require:
{%-   for id in allowed %}
      - nftables: {{ id }}
{%-   endfor %}
{%- endif %}
