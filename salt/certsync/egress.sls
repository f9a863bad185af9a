{#- The way out of a mailcow host whose firewall denies outbound by default:
    allow rules for the relay's port and the Salt master's ports (only with
    relay.firewall.manage), through ufw (certsync_ufw, when ufw is the host's
    firewall) or Salt's own nftables states, then a check that both are
    reachable. #}
{%- from "certsync/map.jinja" import consumer, egress_targets with context %}

include:
  - certsync.settings
{%- set relay = consumer.relay %}
{%- set firewall = relay.firewall %}
{%- set backend = firewall.get("backend", "auto") %}
{%- if firewall.manage and backend == "auto" %}
{%-   set backend = "ufw" if salt["certsync_ufw.active"]() else "nftables" %}
{%- endif %}
{%- set allowed = [] %}
{%- if firewall.manage and backend not in ["ufw", "nftables"] %}

certsync-egress-firewall-backend:
  test.fail_without_changes:
    - name: {{ ("relay:firewall:backend is " ~ backend ~ ": it must be ufw, nftables or auto") | json }}
{%-   do allowed.append(("test", "certsync-egress-firewall-backend")) %}
{%- elif firewall.manage %}
{%-   for port, address, what in egress_targets %}
{%-     set id = "certsync-egress-allow-" ~ port %}

{{ id }}:
{%-     if backend == "ufw" %}
{%-       do allowed.append(("certsync_ufw", id)) %}
  certsync_ufw.allowed_out:
    - port: {{ port }}
{%-       if address %}
    - address: {{ address | json }}
{%-       endif %}
    - comment: {{ ("certsync: " ~ what) | json }}
{%-     else %}
{%-       do allowed.append(("nftables", id)) %}
  nftables.append:
    - table: {{ firewall.table | json }}
    - chain: {{ firewall.chain | json }}
    - family: {{ firewall.family | json }}
    - proto: tcp
    - dport: {{ port }}
    - jump: accept
    - save: {{ firewall.save | json }}
{%-     endif %}
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
{%-   for module, id in allowed %}
      - {{ module }}: {{ id }}
{%-   endfor %}
{%- endif %}
