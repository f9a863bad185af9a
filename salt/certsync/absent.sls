{#- Uninstall certsync from this minion, by the role the pillar gives it:
    `salt <id> state.apply certsync.absent`. Removes the beacon, the
    certsync_watch engine's configuration, the
    schedule (and their minion.d entries), the mine entries, the recipient
    key, certsync's files beside mailcow's pair and in the cachedir, its block
    in dovecot's extra.conf, and (npm
    source) the reuse_key line it wrote in certbot's renewal file. Leaves mailcow's own
    files as they are, including SKIP_LETS_ENCRYPT=y and the deployed pair,
    and the egress rules (relay.firewall.manage), which it names.
    Remove the minion from the certsync pillar afterwards. #}
{%- from "certsync/map.jinja" import certsync, consumer, dovecot_block_removed, egress_targets, role, routes with context %}
{%- set src = certsync.source %}
{#- The consumers of every route this minion is the source of, and those routes
    beside the default one: whose mine entries it withdraws. #}
{%- set published_for = [] %}
{%- for route in routes.source %}
{%-   set named = certsync.consumers if route == "default" else certsync.certificates[route].get("consumers") %}
{%-   do published_for.extend(named.keys() | list if named is mapping else []) %}
{%- endfor %}

certsync-beacon-absent:
  beacon.absent:
    - name: certsync
    - save: true

certsync-watch-absent:
  file.absent:
    - name: {{ (salt["file.dirname"](opts.conf_file) ~ "/" ~ salt["file.dirname"](opts.default_include) ~ "/certsync-watch.conf") | json }}

# the engine sees its configuration gone and stops at its next wake-up (writing
# nothing more); the minion's restart takes it out of the process
certsync-watch-stopped:
  cmd.run:
    - name: salt-call --local service.restart salt-minion
    - bg: true
    - onlyif: systemctl is-active --quiet salt-minion
    - onchanges:
      - file: certsync-watch-absent

certsync-watch-restart-needed:
  test.show_notification:
    - text: >-
        The certsync_watch engine's configuration is removed: it writes nothing more,
        and leaves this minion at its next restart (this minion is not the salt-minion
        systemd service, so the formula cannot restart it).
    - unless: systemctl is-active --quiet salt-minion
    - onchanges:
      - file: certsync-watch-absent

certsync-schedule-absent:
  schedule.absent:
    - name: certsync

certsync-mine-entries-removed:
  certsync_removed.mine_entries:
    - consumers: {{ published_for | unique | sort | list | json }}
    - routes: {{ routes.source | reject("equalto", "default") | list | json }}
{%- if role == "source" and (src.kind or "npm") == "npm" %}

certsync-reuse-key-removed:
  certsync_removed.reuse_key:
{%-   if src.dir %}
    - name: {{ (src.live_dir ~ "/" ~ src.dir) | json }}
{%-   else %}
    - name: {{ src.live_dir | json }}
    - hostname: {{ certsync.hostname | json }}
{%-   endif %}
{%- elif role == "consumer" %}

certsync-recipient-key-absent:
  file.absent:
    - name: {{ (opts.pki_dir ~ "/certsync_recipient.pem") | json }}
    - require:
      - certsync_removed: certsync-mine-entries-removed

{%-   for route in routes.consumer %}

certsync-leftovers-removed{{ "" if route == "default" else "-" ~ route }}:
  certsync_removed.leftovers:
    - name: {{ salt["certsync_settings.dest"](route=route) | json }}
{%-   endfor %}
{%-   if consumer.kind == "mailcow" %}

certsync-mailcow-conf-left:
  test.show_notification:
    - text: >-
        mailcow.conf keeps SKIP_LETS_ENCRYPT={{ consumer.mailcow_conf.get("SKIP_LETS_ENCRYPT", "y") }}
        and the deployed pair: to have mailcow's own ACME client issue again, set
        SKIP_LETS_ENCRYPT=n and run `docker compose up -d` in {{ consumer.mailcow_dir }}
{%-   endif %}
{%-   if egress_targets %}
{%-     set firewall = consumer.relay.firewall %}
{%-     set rules = [] %}
{%-     for port, address, what in egress_targets %}
{%-       do rules.append(port ~ " to " ~ (address or "any")) %}
{%-     endfor %}

certsync-egress-rules-left:
  test.show_notification:
    - text: >-
        the egress rules certsync.egress added stay (tcp out on port {{ rules | join(", ") }}):
        without the master's ports this minion could not reach the master. Take them off
        when they are no longer needed: `certsync_ufw.delete_out <port> address=<address>`
        (ufw), or delete the `tcp dport <port> accept` rules from the {{ firewall.family }}
        {{ firewall.table }} {{ firewall.chain }} chain (nftables)
{%-   endif %}
{%-   if consumer.kind == "mailcow" %}
{{ dovecot_block_removed("certsync-dovecot-block-removed") }}
{%-   endif %}
{%-   if consumer.kind == "mailcow" and "dovecot-mailcow" in consumer.services %}

certsync-dovecot-reloaded:
  mailcow.reloaded:
    - name: {{ consumer.mailcow_dir | json }}
    - services: [dovecot-mailcow]
    - watch:
      - file: certsync-dovecot-block-removed
{%-   endif %}
{%- endif %}

certsync-cachedir-absent:
  file.absent:
    - name: {{ (opts.cachedir ~ "/certsync") | json }}
    - require:
      - certsync_removed: certsync-mine-entries-removed
{%- if role == "source" %}
      - certsync_removed: certsync-reuse-key-removed
{%- endif %}
