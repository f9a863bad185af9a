{#- On `salt/beacon/*/certsync/renewed` (a source saw a new certificate) and
    `certsync/recipient` (a consumer made a new recipient key): the source
    publishes again. Targets come from the master's `certsync_routes`
    ({source id: [consumer ids]}), never from the event: the sender's id is
    only looked up there. #}
{%- set routes = opts.get("certsync_routes") or {} %}
{%- set sender = data.get("id", "") %}
{%- set sources = [] %}
{%- if tag.startswith("salt/beacon/") %}
{%-   if sender in routes %}{% do sources.append(sender) %}{% endif %}
{%- else %}
{%-   for source, consumers in routes | dictsort if sender in consumers %}{% do sources.append(source) %}{% endfor %}
{%- endif %}
{%- if sources %}
certsync-publish:
  local.state.apply:
    - tgt: {{ sources | json }}
    - tgt_type: list
    - args:
      - mods: certsync
      - queue: true
{%- endif %}
