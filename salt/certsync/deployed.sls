{#- The consumer's deploys alone, one per route it takes (`default`:
    certsync:hostname's; the state id of another ends in `-<route>`): the
    certificate from the source's mine entry validated, installed,
    reloaded and verified on the wire. certsync.consumer includes it and
    orders it after the recipient key and acme-mailcow. Its arguments come
    from certsync_settings.deploy_args, as those the runner sends the
    consumers on a renewal (certsync_deploy.deployed: the same deploy,
    without a state run). #}
{%- from "certsync/map.jinja" import consumer, routes with context %}

include:
  - certsync.settings
{%- if consumer %}
{#-   a route its settings give no place: the settings check names it #}
{%-   set taken = salt["certsync_settings.routes"]().consumer %}
{%-   for route in routes.consumer if taken[route].dest %}

certsync-deployed{{ "" if route == "default" else "-" ~ route }}:
  certsync.deployed:
{%-     for key, value in salt["certsync_settings.deploy_args"](route=route) | dictsort %}
    - {{ key }}: {{ value | json }}
{%-     endfor %}
{%-   endfor %}
{%- else %}

certsync-deployed:
  test.fail_without_changes:
    - name: This minion is no certsync consumer in pillar (certsync:consumers).
{%- endif %}
