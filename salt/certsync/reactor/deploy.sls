{#- On `certsync/published`: the consumers the sender's own pillar names
    for the route the event names (compiled by the master, never read from
    the event; a route whose source is not the sender is not followed)
    deploy it (certsync_deploy.deployed: the deploy itself, without a state
    run), told which certificate to expect. A sender that is no source does
    nothing. #}
{%- set sender = data.get("id", "") %}
{%- set announced = (data.get("data") or {}).get("fingerprint") %}
{%- set route = (data.get("data") or {}).get("route") %}
{%- if sender is string and sender %}
certsync-deploy:
  runner.certsync.on_published:
    - args:
      - source: {{ sender | json }}
      - fingerprint: {{ (announced if announced is string else "") | json }}
{%- if route is string and route %}
      - route: {{ route | json }}
{%- endif %}
{%- endif %}
