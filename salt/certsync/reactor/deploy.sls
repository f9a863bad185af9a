{#- On `certsync/published` from a source listed in the master's
    `certsync_routes`: its consumers (from that configuration, never from the
    event) apply their state, told which certificate to expect. An event from
    any other minion does nothing. #}
{%- set routes = opts.get("certsync_routes") or {} %}
{%- set sender = data.get("id", "") %}
{%- set announced = (data.get("data") or {}).get("fingerprint") %}
{%- set consumers = routes.get(sender, []) if sender in routes else [] %}
{%- if consumers %}
certsync-deploy:
  local.state.apply:
    - tgt: {{ consumers | json }}
    - tgt_type: list
    - args:
      - mods: certsync
      - queue: true
      - pillar:
          certsync_event:
            source: {{ sender | json }}
            fingerprint: {{ (announced if announced is string and announced | regex_match("^([0-9a-f]{64})$") else "") | json }}
{%- endif %}
